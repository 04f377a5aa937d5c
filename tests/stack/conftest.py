"""Tiny stacks: specialist projects (the triage example, a two-label `mood` variant, a router whose labels are the
specialists' names), each with a tiny random student run ``r1``, a real ledger whose people sign their acts, and a
signed ship decision; the tiny random teacher is the generalist."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml

from distil.ledger.keys import signer_for, throwaway_keys
from distil.spec.gate import lock_gate
from distil.spec.io import load_project
from distil.spec.templates import write_spec
from tests.conftest import EXAMPLES, build_tiny_causal_lm
from tests.serve.conftest import record_trained

TRIAGE_LABELS = ["billing", "technical", "account"]
MOOD_LABELS = ["calm", "angry"]
PEOPLE = ["maria", "dev", "quinn", "ops"]


def write_student(run_dir: Path, labels: list[str], seed: int) -> None:
    """A run's student/ folder per the contract: a tiny random causal LM and its distil_task.json."""
    from transformers import AutoTokenizer

    from distil.train.students import label_token_ids

    student = build_tiny_causal_lm(run_dir / "student", layers=2, hidden=32, seed=seed)
    tokenizer = AutoTokenizer.from_pretrained(str(student))
    task = {
        "kind": "classify",
        "labels": labels,
        "label_token_ids": label_token_ids(tokenizer, labels),
        "prompt_template": "Text: {input}\nAnswer:",
        "max_length": 128,
        "max_new_tokens": 16,
    }
    (student / "distil_task.json").write_text(json.dumps(task))


def make_specialist(
    folder: Path, teacher_dir: Path, labels: list[str], seed: int, decision: str | None = "ship"
) -> Path:
    """A specialist project in ``folder`` with run ``r1`` trained and, unless ``decision`` is None, decided."""
    shutil.copytree(EXAMPLES / "triage", folder)
    spec = yaml.safe_load((folder / "distil.yaml").read_text())
    spec["name"] = folder.name
    spec["teachers"][0]["source"] = f"hf:{teacher_dir}"
    if labels != TRIAGE_LABELS:  # the seeds' labels are triage's: no few-shot examples for another task
        spec["task"]["labels"] = [{"name": label, "words": [label]} for label in labels]
        spec["task"]["few_shot"] = {"enabled": False}
        spec["task"]["instruction"] = f"Answer with one of: {', '.join(labels)}."
        seeds = [{"input": f"an example of {label} number {i}", "label": label} for label in labels for i in range(3)]
        for name in ("seeds.jsonl", "gold.jsonl"):
            (folder / name).write_text("".join(json.dumps(seed) + "\n" for seed in seeds))
    (folder / "distil.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    _, keys = throwaway_keys(folder, PEOPLE)
    project = load_project(folder / "distil.yaml")
    write_spec(
        folder / "distil.yaml",
        project.spec.model_copy(update={"roles": project.spec.roles.model_copy(update={"keys": keys})}),
    )
    project = load_project(folder / "distil.yaml")
    write_student(folder / ".distil" / "runs" / "r1", labels, seed)
    lock_gate(project, "maria")
    record_trained(project, "r1")
    if decision is not None:
        record_decision(project, "r1", decision)
    return folder / "distil.yaml"


def record_decision(project, run_id: str, decision: str) -> int:
    """A decision row as `distil decide` appends it: bound to its event and signed by the validator."""
    row = {"run_id": run_id, "decision": decision, "validator": "quinn", "driver": "dev", "evaluation_seq": 1}
    return project.ledger.append(
        "decision", dict(row), actor="quinn", table="decisions", row=row, signer=signer_for(project, "quinn")
    ).seq


def write_stack(folder: Path, body: dict) -> Path:
    path = folder / "stack.yaml"
    path.write_text(yaml.safe_dump(body, sort_keys=False))
    return path


@pytest.fixture
def stack_root(tmp_path) -> Path:
    """Three projects: `triage` and `mood` (specialists) and `picker` (the router). Per test: the people's keys live
    in the test's own home."""
    root = tmp_path / "stack"
    teacher = build_tiny_causal_lm(root / "teacher", layers=2, hidden=32, seed=0)
    make_specialist(root / "triage", teacher, TRIAGE_LABELS, seed=1)
    make_specialist(root / "mood", teacher, MOOD_LABELS, seed=2)
    make_specialist(root / "picker", teacher, ["triage", "mood"], seed=3)
    return root


def stack_body(threshold_triage: float = 0.0, threshold_mood: float = 0.0, by: str = "task") -> dict:
    body = {
        "name": "support",
        "specialists": [
            {"name": "triage", "project": "triage/distil.yaml", "threshold": threshold_triage},
            {"name": "mood", "project": "mood/distil.yaml", "run": "r1", "threshold": threshold_mood},
        ],
        "generalist": {"project": "triage/distil.yaml", "teacher": "smollm2"},
        "routing": {"by": by},
    }
    if by == "router":
        body["routing"]["router"] = {"project": "picker/distil.yaml"}
    return body

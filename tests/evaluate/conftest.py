"""A tiny trained-run project on disk: locked gate, curated dataset with a test split, run folders,
ledger rows, and plain numpy predictors standing in for the three models."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from distil.data.records import Record, write_records
from distil.evaluate.run import ModelUnderTest
from distil.spec.gate import lock_gate
from distil.spec.io import load_project

LABELS = ["billing", "technical", "account"]
WORDS = {
    "billing": ["charged", "refund", "invoice"],
    "technical": ["crash", "error", "bug"],
    "account": ["email", "password", "login"],
}


def teacher_probs(text: str) -> np.ndarray:
    """A deterministic 'teacher': keyword votes plus a text-hash jitter, softmaxed. [L]"""
    votes = np.array([sum(w in text for w in WORDS[label]) for label in LABELS], dtype=np.float64)
    jitter = np.frombuffer(hashlib.sha256(text.encode()).digest()[:3], dtype=np.uint8) / 255.0
    e = np.exp(2.0 * votes + jitter)
    return e / e.sum()


def make_inputs(n: int, seed: int = 0) -> list[tuple[str, str, dict[str, str]]]:
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        label = LABELS[i % 3]
        word = WORDS[label][rng.integers(0, 3)]
        tone = "urgent" if i % 4 == 0 else "calm"
        text = f"ticket {i}: {word} {'asap' if tone == 'urgent' else 'please'}"
        out.append((text, label, {"tone": tone}))
    return out


class NumpyPredictor:
    """label_distribution(inputs) -> [n, L]; ``flip`` sends some inputs to the next label."""

    def __init__(self, flip_every: int = 0):
        self.flip_every = flip_every
        self.calls = 0

    def label_distribution(self, inputs):
        self.calls += len(inputs)
        rows = []
        for text in inputs:
            p = teacher_probs(text)
            index = int(text.split(":")[0].split()[-1]) if text.startswith("ticket") else 0
            if self.flip_every and index % self.flip_every == 1:
                p = np.roll(p, 1)
            rows.append(p)
        return np.array(rows)


def numpy_models(
    flip_student: int = 0, flip_baseline: int = 3, prompt_log: list | None = None
) -> dict[str, ModelUnderTest]:
    def teacher_predict(model, batch):
        prompts = [f"Ticket: example\nCategory: billing\n\nTicket: {x}\nCategory:" for x in batch]
        if prompt_log is not None:
            prompt_log.extend(prompts)
        return model.label_distribution(batch)

    return {
        "teacher": ModelUnderTest(lambda: NumpyPredictor(0), teacher_predict, size_bytes=4000, params=1000),
        "student": ModelUnderTest(
            lambda: NumpyPredictor(flip_student), lambda p, b: p.label_distribution(b), size_bytes=1200, params=300
        ),
        "baseline": ModelUnderTest(
            lambda: NumpyPredictor(flip_baseline), lambda p, b: p.label_distribution(b), size_bytes=1200, params=300
        ),
    }


def build_run(
    project, run_id: str = "run-1", n_test: int = 24, seed: int = 0, metrics: dict | None = None, write_model=None
) -> str:
    """Curated dataset (test split) + ledger rows + run folders for ``run_id``; ``metrics`` ({role: {...}}) go into
    the ``run.trained`` rows; ``write_model(folder, role)`` writes each model folder (default: a bare config) before
    its files are recorded."""
    records = []
    for text, label, tags in make_inputs(n_test, seed):
        probs = teacher_probs(text)
        records.append(
            Record(
                input=text,
                source="seed",
                tags=tags,
                gold_label=label,
                label=LABELS[int(probs.argmax())],
                label_probs=[float(x) for x in probs],
                teacher_id="smollm2",
                split="test",
            )
        )
    dataset_hash = f"sha256:{seed:064d}"
    folder = project.data_dir / "curated" / dataset_hash[7:19]
    write_records(records, folder / "test.parquet")
    (folder / "report.json").write_text(
        json.dumps(
            {
                "counts": {"raw": 40, "curated": n_test},
                "filters": {"min_confidence": {"removed": 7, "why": "teacher max probability below 0.4"}},
            }
        )
    )
    if not project.ledger.rows("datasets", "dataset_hash = ?", (dataset_hash,)):
        project.ledger.append(
            "dataset.curated",
            {"dataset_hash": dataset_hash},
            table="datasets",
            row={
                "dataset_hash": dataset_hash,
                "stage": "curated",
                "path": str(folder.relative_to(project.root)),
                "counts": {"test": n_test},
            },
        )
    run_dir = project.runs_dir / run_id
    for role in ("student", "baseline"):
        if write_model is not None:
            write_model(run_dir / role, role)
        else:
            (run_dir / role).mkdir(parents=True, exist_ok=True)
            (run_dir / role / "config.json").write_text("{}")
        project.ledger.append(
            "run.trained",
            {"run_id": run_id},
            files=[run_dir / role],
            table="runs",
            row={
                "run_id": run_id,
                "dataset_hash": dataset_hash,
                "role": role,
                "path": str((run_dir / role).relative_to(project.root)),
                "metrics": (metrics or {}).get(role, {}),
            },
        )
    (run_dir / "curve.json").write_text(
        json.dumps(
            {"student": {"step": [1, 2, 3, 4], "loss": [1.2, 0.8, 0.6, 0.5], "val_agreement": [0.5, 0.7, 0.8, 0.85]}}
        )
    )
    return run_id


@pytest.fixture
def run_project(triage_project: Path):
    """The triage example with its gate locked and one tiny run; returns the Project."""
    project = load_project(triage_project)
    lock_gate(project, "maria")
    build_run(project)
    return project

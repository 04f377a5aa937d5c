"""Tiny training projects: a spec on the tiny random teacher and a curated dataset written per the contract
(shards and the `datasets` ledger row written by distil.data.curate.write_curated)."""

from __future__ import annotations

import dataclasses
import random
from pathlib import Path

import pytest
import yaml

from distil.data.records import Record

LABELS = ["billing", "technical", "account"]
WORDS = {
    "billing": ["charge", "refund", "invoice", "paid"],
    "technical": ["crash", "error", "bug", "slow"],
    "account": ["password", "login", "email", "profile"],
}


def write_spec(
    folder: Path, teacher_dir: Path, kind: str = "classify", train: dict | None = None, student: dict | None = None
) -> Path:
    spec = {
        "name": "tiny",
        "task": {
            "kind": kind,
            **(
                {"labels": [{"name": n} for n in LABELS]}
                if kind == "classify"
                else {"instruction": "Summarise: {input}"}
            ),
        },
        "play": {"kind": "cost"},
        "roles": {"sponsor": "sam", "driver": "dev", "validator": "val"},
        "teachers": [{"id": "tiny", "source": f"hf:{teacher_dir}"}],
        "student": student or {"init": "teacher-layers:2"},
        "train": {"epochs": 2, "batch_size": 4, "lr": 3e-3, "max_length": 64, "patience": 0, **(train or {})},
    }
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "distil.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def classify_records(n: int, seed: int = 0) -> list[Record]:
    rng = random.Random(seed)
    out = []
    for i in range(n):
        label = LABELS[i % 3]
        text = f"ticket {i} " + " ".join(rng.choice(WORDS[label]) for _ in range(3))
        probs = [0.1, 0.1, 0.1]
        probs[LABELS.index(label)] = 0.8
        out.append(
            Record(
                input=text, source="synthetic", label=label, label_probs=probs, gold_label=label if i % 4 == 0 else None
            )
        )
    return out


def generate_records(n: int, seed: int = 0) -> list[Record]:
    rng = random.Random(seed)
    out = []
    for i in range(n):
        words = [rng.choice(sum(WORDS.values(), [])) for _ in range(4)]
        out.append(Record(input=f"note {i}: " + " ".join(words), source="synthetic", teacher_text=" ".join(words[:2])))
    return out


def write_curated(spec_path: Path, train: list[Record], validation: list[Record]) -> str:
    """Shards and the ledger row exactly as curation writes them (validation doubles as test); the dataset hash."""
    from distil.data.curate import write_curated as write_dataset
    from distil.spec.io import load_project

    test = [dataclasses.replace(r) for r in validation]
    return write_dataset(load_project(spec_path), {"train": train, "validation": validation, "test": test})


@pytest.fixture
def classify_project(tmp_path, tiny_teacher_dir) -> Path:
    spec = write_spec(tmp_path / "proj", tiny_teacher_dir)
    write_curated(spec, classify_records(24), classify_records(9, seed=1))
    return spec


@pytest.fixture
def generate_project(tmp_path, tiny_teacher_dir) -> Path:
    spec = write_spec(
        tmp_path / "gen", tiny_teacher_dir, kind="generate", train={"epochs": 1, "topk_cache_k": 8, "alpha": 0.5}
    )
    write_curated(spec, generate_records(12), generate_records(4, seed=1))
    return spec

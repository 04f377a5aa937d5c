"""Projects for reliability tests: a classify spec whose teacher is an OpenAI-compatible server on 127.0.0.1,
seeds whose right label the keyword model knows, and small helpers to run the CLI and read results."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import yaml

from tests.data.helpers import make_project

REPO = Path(__file__).parents[2]
WORDS = {
    "billing": ("invoice", "charge", "refund"),
    "technical": ("crash", "error", "button"),
    "account": ("password", "login", "email"),
}
FILLER = (
    "please help",
    "since monday",
    "on my phone",
    "for the team plan",
    "again today",
    "after the update",
    "urgent!!",
    "hey pls",
)


def tickets(n: int, offset: int = 0) -> list[tuple[str, str]]:
    """``n`` distinct tickets, each with one label's keyword, as (text, label)."""
    labels = list(WORDS)
    out = []
    for i in range(offset, offset + n):
        label = labels[i % 3]
        word = WORDS[label][(i // 3) % 3]
        out.append((f"ticket {i}: the {word} {FILLER[i % len(FILLER)]}", label))
    return out


def fault_project(
    root: Path, source: str, n: int, seeds: list[tuple[str, str]] | None = None, **teacher: object
) -> Path:
    """The triage spec on ``source`` with ``n`` keyword tickets as seeds; ``teacher`` sets teachers[0] fields."""
    path = make_project(root, source, seeds=seeds or tickets(n))
    spec = yaml.safe_load(path.read_text())
    spec["teachers"][0].update(teacher)
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def distil_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "distil", *args]


def cli_env(**extra: str) -> dict[str, str]:
    """The test's environment (isolated HOME and cache from conftest) for a `distil` subprocess."""
    env = {**os.environ, "PYTHONPATH": str(REPO / "src"), "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", **extra}
    env.pop("PYTEST_CURRENT_TEST", None)
    return env


def run_cli(*args: str, timeout: float = 300, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        distil_cmd(*args), capture_output=True, text=True, timeout=timeout, env=cli_env(**env), cwd=REPO
    )


def record_labels(project_root: Path) -> dict[str, str]:
    """record id -> label over every raw shard (asserting no id appears twice)."""
    from distil.data.records import read_records

    records = read_records(project_root / ".distil" / "data" / "raw")
    ids = [r.id for r in records]
    assert len(ids) == len(set(ids)), "a record id appears twice in the raw shards"
    return {r.id: r.label for r in records}


def dataset_counts(project_root: Path) -> list[dict]:
    from distil.ledger.store import Ledger

    return [
        json.loads(r["counts"])
        for r in Ledger(project_root / ".distil" / "ledger.db").rows("datasets", "stage = 'raw'")
    ]

"""A project whose people sign their acts: the triage example with keys for maria (sponsor), dev (driver)
and quinn (validator), its gate locked, one passing evaluation recorded."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from distil.ledger.keys import create_key
from distil.ledger.store import canonical_json, event_hash
from distil.spec.gate import lock_gate
from distil.spec.io import load_project
from distil.spec.templates import write_spec

PASSING = {
    "teacher": {"agreement": 1.0, "quality": 0.9, "p95_ms": 100.0, "params": 1000},
    "student": {
        "agreement": 0.99,
        "quality": 0.9,
        "p95_ms": 10.0,
        "params": 100,
        "min_slice": "tone=calm",
        "min_slice_agreement": 0.97,
    },
    "baseline": {"agreement": 0.5},
    "cost": {"payback_months": 1.0},
}


def record_evaluation(project, run_id: str = "run-1", summary: dict | None = None):
    return project.ledger.append(
        "evaluation",
        {"run_id": run_id, "variant": "distilled"},
        actor="dev",
        table="evaluations",
        row={
            "run_id": run_id,
            "variant": "distilled",
            "path": f".distil/runs/{run_id}/evaluation.json",
            "summary": summary or PASSING,
        },
    )


def with_keys(spec_path: Path, names: list[str]) -> dict[str, str]:
    """Make a key per name (user's config folder) and write the public keys into the spec."""
    keys = {name: create_key(name)[1] for name in names}
    spec = load_project(spec_path).spec
    write_spec(spec_path, spec.model_copy(update={"roles": spec.roles.model_copy(update={"keys": keys})}))
    return keys


@pytest.fixture
def signed_project(triage_project):
    with_keys(triage_project, ["maria", "dev", "quinn"])
    project = load_project(triage_project)
    lock_gate(project, "maria")
    record_evaluation(project)
    return project


@pytest.fixture
def unsigned_project(triage_project):
    project = load_project(triage_project)
    lock_gate(project, "maria")
    record_evaluation(project)
    return project


def forge_event(db: Path, kind: str, actor: str, payload: dict) -> int:
    """Append an event by hand with every hash recomputed, as someone editing the file would."""
    with sqlite3.connect(db) as conn:
        seq, prev = conn.execute("SELECT seq, hash FROM events ORDER BY seq DESC LIMIT 1").fetchone()
        seq += 1
        ts = "2030-01-01T00:00:00.000000+00:00"
        text = canonical_json(payload)
        conn.execute(
            "INSERT INTO events (seq, ts, kind, actor, payload, prev_hash, hash) VALUES (?, ?, ?, ?, ?, ?, ?)",
            (seq, ts, kind, actor, text, prev, event_hash(seq, ts, kind, actor, text, prev)),
        )
    return seq


def typed_row_hash(db: Path, table: str, seq: int) -> str:
    from distil.ledger.store import _typed_row_hash

    with sqlite3.connect(db) as conn:
        conn.row_factory = sqlite3.Row
        return _typed_row_hash(conn, table, seq)


def execute(db: Path, sql: str, args: tuple = ()) -> None:
    with sqlite3.connect(db) as conn:
        conn.execute(sql, args)

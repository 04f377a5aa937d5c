"""Acts of people beyond the gate and the decision: evaluation-set locks are signed by the person who curated."""

from __future__ import annotations

import pytest

from distil.data.evalsets import EVENT, lock_evaluation_sets
from distil.data.records import Record, write_records
from distil.errors import SigningError
from distil.ledger.keys import SIGNED_ACTS
from distil.spec.io import load_project

from .conftest import with_keys


def _test_split(project):
    path = project.data_dir / "curated" / "x" / "test.parquet"
    write_records([Record(input=f"ticket {i}", source="seed", label="billing", split="test") for i in range(3)], path)
    return path


def test_evaluation_set_locks_are_signed_by_the_curator(signed_project):
    locked = lock_evaluation_sets(signed_project, _test_split(signed_project), 1, "first curate", actor="dev")
    events = [signed_project.ledger.event(s.event_seq) for s in locked]
    assert EVENT in SIGNED_ACTS and [e.kind for e in events] == [EVENT] * len(locked)
    assert all(e.actor == "dev" and e.payload["signature"]["alg"] == "ed25519" for e in events)
    result = signed_project.ledger.verify()
    assert result.ok and not result.unsigned, result.problems


def test_a_curator_without_a_key_cannot_lock_the_evaluation_sets(triage_project):
    with_keys(triage_project, ["maria", "quinn"])
    project = load_project(triage_project)
    with pytest.raises(SigningError, match="dev has no public key"):
        lock_evaluation_sets(project, _test_split(project), 1, "first curate", actor="dev")
    assert not project.ledger.rows("evaluation_sets")

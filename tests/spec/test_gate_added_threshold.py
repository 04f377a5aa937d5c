"""A threshold added to the gate (``min_label_recall``) leaves every gate that does not set it as it was locked."""

from __future__ import annotations

import pytest

from distil.errors import GateError
from distil.ledger.store import canonical_json, sha256_text
from distil.spec.gate import gate_hash, lock_gate, require_unchanged_gate, terms_hash
from distil.spec.io import load_project
from distil.spec.models import Cost, Gate, Spec

# Written by the code before min_label_recall existed, for the gate and cost below.
GATE_HASH_BEFORE = "sha256:c55c25a35b3c2c651d108b1fb28598d510cf2512d0258d37dacfc8c8d6b7bc0b"
TERMS_HASH_BEFORE = "sha256:9f635984eaa8a1056971e529471a778b181a584284508d51ea7aa75ee3e29839"


def test_an_unset_added_threshold_leaves_the_hashes_as_they_were(triage_project):
    gate = Gate(fidelity_min=0.9, per_slice_fidelity_min=0.8, beat_baseline=True, size_max_vs_teacher=0.5)
    assert gate_hash(gate) == GATE_HASH_BEFORE
    spec = load_project(triage_project).spec
    spec = Spec.model_validate({**spec.model_dump(), "gate": gate.model_dump(), "cost": Cost(monthly_requests=1000)})
    assert terms_hash(spec) == TERMS_HASH_BEFORE
    assert gate_hash(gate.model_copy(update={"min_label_recall": 0.5})) != GATE_HASH_BEFORE


def _lock_by_hand(project, gate_terms: dict) -> None:
    terms = {"gate": gate_terms, "cost": project.spec.cost.model_dump(mode="json")}
    digest = sha256_text(canonical_json(terms))
    project.ledger.append(
        "gate.locked",
        {"version": 1, "sha256": digest, **terms, "reason": ""},
        actor="maria",
        table="gates",
        row={"version": 1, "sha256": digest, "canonical": canonical_json(terms), "locked_by": "maria", "reason": ""},
    )


@pytest.mark.parametrize("spelled_out", [False, True], ids=["lock without the field", "lock with it unset"])
def test_a_lock_without_the_threshold_holds_until_the_spec_sets_it(triage_project, spelled_out):
    project = load_project(triage_project)
    terms = project.spec.gate.model_dump(mode="json")
    if not spelled_out:
        terms.pop("min_label_recall")
    _lock_by_hand(project, terms)
    assert require_unchanged_gate(project).version == 1
    assert lock_gate(project, "maria")[1] is False  # nothing to lock again
    assert project.ledger.verify(base=project.root).ok
    text = triage_project.read_text()
    triage_project.write_text(text.replace("gate:\n", "gate:\n  min_label_recall: 0.5\n", 1))
    with pytest.raises(GateError, match="min_label_recall None → 0.5"):
        require_unchanged_gate(load_project(triage_project))

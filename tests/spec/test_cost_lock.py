"""A field added to the cost section does not change a lock written before it existed, while it keeps its default."""

from __future__ import annotations

import pytest

from distil.errors import GateError
from distil.ledger.store import canonical_json, sha256_text
from distil.spec.gate import gate_terms, lock_gate, require_unchanged_gate
from distil.spec.io import load_project


def lock_without_machine_hour_price(project) -> None:
    """A lock as written before ``cost.machine_hour_price`` existed."""
    cost = project.spec.cost.model_dump(mode="json")
    cost.pop("machine_hour_price")
    terms = {"gate": gate_terms(project.spec.gate), "cost": cost}
    digest = sha256_text(canonical_json(terms))
    project.ledger.append(
        "gate.locked",
        {"version": 1, "sha256": digest, **terms, "reason": ""},
        actor="maria",
        table="gates",
        row={"version": 1, "sha256": digest, "canonical": canonical_json(terms), "locked_by": "maria", "reason": ""},
    )


def test_an_older_lock_still_holds_while_the_new_field_keeps_its_default(triage_project):
    project = load_project(triage_project)
    lock_without_machine_hour_price(project)
    assert require_unchanged_gate(project).version == 1
    assert lock_gate(project, "maria") == (require_unchanged_gate(project), False)  # nothing to lock again
    text = triage_project.read_text()
    triage_project.write_text(text.replace("  build_cost: 2500\n", "  build_cost: 2500\n  machine_hour_price: 7.5\n"))
    with pytest.raises(GateError, match="cost.machine_hour_price None → 7.5"):
        require_unchanged_gate(load_project(triage_project))


@pytest.mark.parametrize("value", ["-1", ".inf", ".nan"])
def test_the_machine_hour_price_is_finite_and_not_negative(triage_project, value):
    from distil.errors import SpecError

    triage_project.write_text(
        triage_project.read_text().replace(
            "  build_cost: 2500\n", f"  build_cost: 2500\n  machine_hour_price: {value}\n"
        )
    )
    with pytest.raises(SpecError, match="cost.machine_hour_price"):
        load_project(triage_project)

"""``gate.size_max_bytes``: the student as stored (its smallest evaluated export) must fit; old locks keep a hash."""

from __future__ import annotations

import json

import pytest

from distil.decide import record_decision
from distil.errors import GateError
from distil.evaluate.run import evaluate_run
from distil.spec.gate import canonical_gate, lock_gate, require_unchanged_gate
from distil.spec.io import load_project

from .conftest import build_run, numpy_models

GATE_FIELDS_BEFORE_SIZE = {
    "fidelity_min",
    "quality_min_vs_teacher",
    "per_slice_fidelity_min",
    "p95_latency_max_vs_teacher",
    "p95_latency_max_ms",
    "size_max_vs_teacher",
    "payback_months_max",
    "beat_baseline",
    "retraining_path",
    "max_iterations",
}


def _with_size_max(spec_path, size: int) -> None:
    text = spec_path.read_text()
    spec_path.write_text(text.replace("  max_iterations: 3\n", f"  max_iterations: 3\n  size_max_bytes: {size}\n"))


def test_a_gate_without_size_max_bytes_hashes_as_it_did_before_the_field(triage_project):
    project = load_project(triage_project)
    assert set(json.loads(canonical_gate(project.spec.gate))) <= GATE_FIELDS_BEFORE_SIZE
    lock_gate(project, "maria")
    _with_size_max(triage_project, 1000)
    with pytest.raises(GateError, match="size_max_bytes None → 1000"):
        require_unchanged_gate(load_project(triage_project))


def _record_export(project, run_id: str, size_bytes: int, variant: str = "gguf-q8_0") -> None:
    """The ledger row `distil export --quantize` appends for an evaluated variant."""
    summary = {"agreement": 0.9, "size_bytes": size_bytes, "n": 50}
    project.ledger.append(
        "evaluation",
        {"run_id": run_id, "variant": variant, "summary": summary},
        actor="ops",
        table="evaluations",
        row={"run_id": run_id, "variant": variant, "path": f"x/{variant}.json", "summary": summary},
    )


def _size_check(event):
    return next(c for c in event.payload["checks"] if c["name"] == "size_max_bytes")


@pytest.mark.parametrize(("exported", "passes"), [(900, True), (1100, False)])
def test_decide_checks_the_smallest_evaluated_export_against_size_max_bytes(triage_project, exported, passes):
    """The fake student is stored in 1200 bytes; its exports in 5000 (f16) and ``exported`` (q8_0)."""
    _with_size_max(triage_project, 1000)
    project = load_project(triage_project)
    lock_gate(project, "maria")
    build_run(project)
    evaluate_run(project, models=numpy_models(), threads=1)
    _record_export(project, "run-1", 5000, "gguf-f16")
    _record_export(project, "run-1", exported)
    _, _, event = record_decision(project, "quinn")
    check = _size_check(event)
    assert check["value"] == exported and check["passed"] is passes and "gguf-q8_0" in check["detail"]


def test_without_an_export_the_stored_student_is_checked(triage_project):
    _with_size_max(triage_project, 1000)
    project = load_project(triage_project)
    lock_gate(project, "maria")
    build_run(project)
    evaluate_run(project, models=numpy_models(), threads=1)
    decision, _, event = record_decision(project, "quinn")
    check = _size_check(event)
    assert check["value"] == 1200 and check["passed"] is False and "student" in check["detail"]
    assert decision.decision != "ship"


def test_no_size_measured_is_not_passed_and_says_how_to_measure():
    from distil.decide import gate_checks

    (check,) = gate_checks({"size_max_bytes": 1000}, {"student": {"agreement": 0.9}})
    assert check.passed is False and check.value is None and "distil export --format gguf" in check.detail

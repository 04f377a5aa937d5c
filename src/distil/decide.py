"""The gate check and the decision: ship, iterate or kill.

:func:`gate_checks` and :func:`decide_outcome` are pure: they read locked thresholds and evaluation
summaries (see :func:`summarise_evaluation`) and nothing else. :func:`record_decision` is the step:
it checks who is deciding, reads the ledger, decides and appends the decision row.

The rules, in order:
- **ship** when every locked threshold passes;
- **kill** when the iterations are exhausted (``iteration`` events ≥ ``max_iterations``);
- **kill** when the last two rounds moved fidelity (student top-1 agreement) by less than one point,
  or the last round lost fidelity: another round of the same recipe is not expected to pass;
- **iterate** otherwise: some threshold fails, iterations are left, and the last round improved
  (a first round has nothing to compare with and counts as improving).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from distil.errors import EvaluationError, RoleError

PLATEAU = 0.01  # "less than one point" of agreement between the last two rounds
MODELS = ("teacher", "student", "baseline")
SUMMARY_FIELDS = (
    "accuracy", "macro_f1", "agreement", "kl", "js", "ece", "p50_ms", "p95_ms",
    "throughput_per_s", "params", "size_bytes", "peak_memory_bytes",
)  # fmt: skip


@dataclass(frozen=True)
class GateCheck:
    name: str
    value: Any
    threshold: Any
    margin: float | None  # how far inside (positive) or outside (negative) the threshold
    passed: bool
    detail: str = ""


@dataclass(frozen=True)
class Decision:
    decision: str  # ship | iterate | kill
    reason: str
    checks: list[GateCheck] = field(default_factory=list)
    fidelity_by_round: list[float | None] = field(default_factory=list)
    iterations_used: int = 0
    max_iterations: int = 0

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


# --- summaries ---------------------------------------------------------------------------------------


def quality_of(block: Mapping[str, Any]) -> float | None:
    """The quality figure the gate compares: gold-set accuracy, else held-out accuracy against gold
    labels, else macro-F1, else ROUGE-L against the teacher (generation)."""
    gold = block.get("gold") or {}
    for value in (gold.get("accuracy"), block.get("accuracy"), block.get("macro_f1"), block.get("rouge_l")):
        if value is not None:
            return float(value)
    return None


def summarise_evaluation(evaluation: Mapping[str, Any]) -> dict[str, Any]:
    """The compact form stored in the ledger's evaluations row and fed to the rules."""
    out: dict[str, Any] = {}
    for name in MODELS:
        block = evaluation.get(name) or {}
        row = {k: block.get(k) for k in SUMMARY_FIELDS}
        row["quality"] = quality_of(block)
        if name == "teacher" and row["quality"] is None and block.get("rouge_l") is None and evaluation.get("student", {}).get("rouge_l") is not None:
            row["quality"] = 1.0  # generation: the teacher's text is the reference for ROUGE-L
        worst = _worst_slice(block.get("slices") or {})
        row["min_slice"], row["min_slice_agreement"] = worst if worst else (None, None)
        out[name] = row
    cost = evaluation.get("cost") or {}
    out["cost"] = {k: cost.get(k) for k in ("payback_months", "monthly_savings", "currency")}
    return out


def _worst_slice(slices: Mapping[str, Mapping[str, Mapping[str, Any]]]) -> tuple[str, float] | None:
    worst = None
    for name, values in slices.items():
        for value, row in values.items():
            v = row.get("agreement")
            if v is not None and (worst is None or v < worst[1]):
                worst = (f"{name}={value}", float(v))
    return worst


# --- the gate check ----------------------------------------------------------------------------------


def _ratio(a: float | None, b: float | None) -> float | None:
    if a is None or b is None or b == 0:
        return None
    return a / b


def _check(name: str, value: float | None, threshold: float, direction: str, detail: str = "") -> GateCheck:
    if value is None:
        return GateCheck(name, None, threshold, None, False, detail or "not measured")
    margin = value - threshold if direction == "min" else threshold - value
    return GateCheck(name, value, threshold, margin, margin >= 0, detail)


def gate_checks(thresholds: Mapping[str, Any], summary: Mapping[str, Any]) -> list[GateCheck]:
    """Every set threshold of the locked gate against one evaluation summary, in a fixed order."""
    s, t, b = summary.get("student", {}), summary.get("teacher", {}), summary.get("baseline", {})
    checks: list[GateCheck] = []
    if (v := thresholds.get("fidelity_min")) is not None:
        checks.append(_check("fidelity_min", s.get("agreement"), v, "min", "student top-1 agreement with the teacher"))
    if (v := thresholds.get("quality_min_vs_teacher")) is not None:
        checks.append(_check("quality_min_vs_teacher", _ratio(s.get("quality"), t.get("quality")), v, "min", "student quality / teacher quality"))
    if (v := thresholds.get("per_slice_fidelity_min")) is not None:
        where = s.get("min_slice")
        checks.append(_check("per_slice_fidelity_min", s.get("min_slice_agreement"), v, "min", f"worst slice: {where}" if where else "no slices"))
    if (v := thresholds.get("p95_latency_max_vs_teacher")) is not None:
        checks.append(_check("p95_latency_max_vs_teacher", _ratio(s.get("p95_ms"), t.get("p95_ms")), v, "max", "student p95 / teacher p95 at batch 1"))
    if (v := thresholds.get("p95_latency_max_ms")) is not None:
        checks.append(_check("p95_latency_max_ms", s.get("p95_ms"), v, "max", "student p95 at batch 1, ms"))
    if (v := thresholds.get("size_max_vs_teacher")) is not None:
        checks.append(_check("size_max_vs_teacher", _ratio(s.get("params"), t.get("params")), v, "max", "student params / teacher params"))
    if (v := thresholds.get("payback_months_max")) is not None:
        payback = (summary.get("cost") or {}).get("payback_months")
        checks.append(_check("payback_months_max", payback, v, "max", "months until savings repay the build" if payback is not None else "the student saves nothing: never paid back"))
    if thresholds.get("beat_baseline"):
        diff = None if s.get("agreement") is None or b.get("agreement") is None else s["agreement"] - b["agreement"]
        check = _check("beat_baseline", diff, 0.0, "min", "student agreement − baseline agreement")
        if diff is not None and diff <= 0:
            check = GateCheck(check.name, check.value, check.threshold, check.margin, False, "the student does not beat the baseline")
        checks.append(check)
    if (v := thresholds.get("retraining_path")) is not None:
        checks.append(GateCheck("retraining_path", v, "documented", None, bool(str(v).strip()), "stability play: how the student is retrained"))
    return checks


# --- the decision ------------------------------------------------------------------------------------


def decide_outcome(
    thresholds: Mapping[str, Any],
    rounds: Sequence[Mapping[str, Any]],
    max_iterations: int | None = None,
    iterations_used: int | None = None,
) -> Decision:
    """Ship, iterate or kill from the locked ``thresholds`` and evaluation summaries, oldest round first.

    ``iterations_used`` is the number of ``iteration`` events (default: one per round after the first).
    """
    if not rounds:
        raise EvaluationError("decide: no evaluation to decide on", hint="run `distil evaluate` first")
    limit = int(max_iterations if max_iterations is not None else thresholds.get("max_iterations") or 3)
    used = len(rounds) - 1 if iterations_used is None else iterations_used
    checks = gate_checks(thresholds, rounds[-1])
    fidelity = [(r.get("student") or {}).get("agreement") for r in rounds]

    def verdict(decision: str, reason: str) -> Decision:
        return Decision(decision, reason, checks, fidelity, used, limit)

    failed = [c.name for c in checks if not c.passed]
    if not failed:
        return verdict("ship", f"all {len(checks)} gate thresholds pass")
    if used >= limit:
        return verdict("kill", f"{', '.join(failed)} failed and the iterations are exhausted ({used} of {limit})")
    if len(rounds) >= 2 and fidelity[-1] is not None and fidelity[-2] is not None:
        moved = fidelity[-1] - fidelity[-2]
        if abs(moved) < PLATEAU:
            return verdict("kill", f"{', '.join(failed)} failed and fidelity moved {moved * 100:+.2f} points in the last round (< 1 point)")
        if moved < 0:
            return verdict("kill", f"{', '.join(failed)} failed and fidelity fell {moved * 100:+.2f} points in the last round")
        return verdict("iterate", f"{', '.join(failed)} failed; fidelity rose {moved * 100:+.2f} points, {limit - used} iteration(s) left")
    return verdict("iterate", f"{', '.join(failed)} failed; first round, {limit - used} iteration(s) left")


# --- the step ----------------------------------------------------------------------------------------


def require_validator(spec_roles: Any, actor: str) -> None:
    """Only the spec's validator may decide, and the validator must not be the driver (names compared
    NFKC-normalised and case-folded; with keys in the spec, the signature at recording proves who it was)."""
    from distil.spec.names import same_person

    if same_person(actor, spec_roles.driver):
        raise RoleError(
            f"roles.validator: {actor} is the driver and may not sign the decision on their own work",
            hint=f"the validator ({spec_roles.validator}) runs `distil decide --as {spec_roles.validator}`",
        )
    if not same_person(actor, spec_roles.validator):
        raise RoleError(
            f"roles.validator: only the validator ({spec_roles.validator}) may decide, not {actor}",
            hint=f"run `distil decide --as {spec_roles.validator}`",
        )


def evaluation_rounds(project: Any, run_id: str | None = None) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The evaluation row decided on (latest, or the latest of ``run_id``) and the summaries of every
    round up to it: the latest evaluation of each run, oldest run first."""
    rows = project.ledger.verified_rows("evaluations", order="event_seq ASC")
    if run_id is not None:
        chosen = [r for r in rows if r["run_id"] == run_id]
        if not chosen:
            raise EvaluationError(f"decide: run {run_id} has no evaluation", hint=f"run `distil evaluate {run_id}`")
        target = chosen[-1]
    elif rows:
        target = rows[-1]
    else:
        raise EvaluationError("decide: no evaluation in the ledger", hint="run `distil evaluate` first")
    latest_per_run: dict[str, dict[str, Any]] = {}
    for r in rows:
        if r["event_seq"] <= target["event_seq"]:
            latest_per_run.pop(r["run_id"], None)
            latest_per_run[r["run_id"]] = r  # re-insert: order by each run's latest evaluation
    rounds = [json.loads(r["summary"]) for r in latest_per_run.values()]
    return target, rounds


def record_decision(project: Any, actor: str, run_id: str | None = None) -> tuple[Decision, dict[str, Any], Any]:
    """Check roles and the gate, decide from the ledger's evaluations, append the decision row.

    Returns (decision, evaluation row decided on, ledger event).
    """
    from distil.ledger.keys import signer_for
    from distil.spec.gate import require_unchanged_gate

    require_validator(project.spec.roles, actor)
    signer = signer_for(project, actor)
    locked = require_unchanged_gate(project)
    target, rounds = evaluation_rounds(project, run_id)
    iterations_used = len(project.ledger.events(kind="iteration"))
    decision = decide_outcome(locked.thresholds, rounds, iterations_used=iterations_used)
    event = project.ledger.append(
        "decision",
        {
            "run_id": target["run_id"],
            "decision": decision.decision,
            "reason": decision.reason,
            "gate_version": locked.version,
            "gate_sha256": locked.sha256,
            "checks": [asdict(c) for c in decision.checks],
            "fidelity_by_round": decision.fidelity_by_round,
            "iterations_used": decision.iterations_used,
            "max_iterations": decision.max_iterations,
            "evaluation_seq": target["event_seq"],
            "validator": actor,
            "driver": project.spec.roles.driver,
        },
        actor=actor,
        table="decisions",
        row={
            "run_id": target["run_id"],
            "decision": decision.decision,
            "validator": actor,
            "driver": project.spec.roles.driver,
            "evaluation_seq": target["event_seq"],
        },
        signer=signer,
    )
    return decision, target, event

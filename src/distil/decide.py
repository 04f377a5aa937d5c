"""The gate check and the decision: ship, iterate or kill.

:func:`gate_checks` and :func:`decide_outcome` are pure: they read locked thresholds and evaluation
summaries (see :func:`summarise_evaluation`) and nothing else. :func:`record_decision` is the step:
it checks who is deciding, reads the ledger, decides and appends the decision row.

A threshold is decided on evidence (:mod:`distil.evaluate.evidence`), not on a point estimate:

- a "min" threshold **passes** when the lower bound of the value's 95% interval reaches it, a "max"
  threshold when the upper bound stays at or under it (Wilson score interval for agreement rates,
  bootstrap for graded scores, ratios and latency);
- it **FAILs** when the value itself is on the wrong side;
- otherwise it is **undecided**: the observed value would pass but the test set is too small to say
  so; the check says how many items would decide it at the observed value.
- ``beat_baseline`` is a paired test on the same items at alpha = 0.05: exact McNemar (one-sided)
  on top-1 agreement for classify tasks, a paired bootstrap of the per-item fidelity for generate
  tasks. A paired bootstrap of KL (baseline − student) is reported beside it.

Undecided is never pass. The rules, in order:
- **ship** when every locked threshold passes;
- **kill** when the iterations are exhausted (``iteration`` events ≥ ``max_iterations``);
- **kill** when the last two rounds moved fidelity (student top-1 agreement) by less than one point,
  or the last round lost fidelity: another round of the same recipe is not expected to pass;
- **iterate** otherwise: some threshold fails or is undecided, iterations are left, and the last
  round improved (a first round has nothing to compare with and counts as improving).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from distil.errors import EvaluationError, RoleError
from distil.evaluate import metrics as m
from distil.ledger.keys import signer_for
from distil.runs import check_run_id
from distil.spec.gate import require_unchanged_gate

PLATEAU = 0.01  # "less than one point" of agreement between the last two rounds
ALPHA = m.ALPHA
MODELS = ("teacher", "student", "baseline")
SUMMARY_FIELDS = (
    "accuracy", "macro_f1", "agreement", "kl", "js", "ece", "p50_ms", "p95_ms",
    "throughput_per_s", "params", "size_bytes", "served_bytes", "peak_memory_bytes", "fidelity", "chrf", "rouge_l",
    "token_agreement",
)  # fmt: skip
PASS, FAIL, UNDECIDED = "pass", "FAIL", "undecided"
NO_EVIDENCE = "no item counts in this evaluation: re-run `distil evaluate`"


@dataclass(frozen=True)
class GateCheck:
    name: str
    value: Any
    threshold: Any
    margin: float | None  # how far inside (positive) or outside (negative) the threshold, point value
    passed: bool
    detail: str = ""
    status: str = ""  # pass | FAIL | undecided
    interval: list[float | None] | None = None  # 95% [lo, hi] of the value
    p_value: float | None = None  # paired tests only
    n: int | None = None  # items (or timed requests) behind the value
    items_needed: int | None = None  # undecided: items at which the observed value would decide it
    method: str = ""  # how the interval or test was computed


@dataclass(frozen=True)
class Decision:
    decision: str  # ship | iterate | kill
    reason: str
    checks: list[GateCheck] = field(default_factory=list)
    fidelity_by_round: list[float | None] = field(default_factory=list)
    iterations_used: int = 0
    max_iterations: int = 0
    warnings: list[str] = field(default_factory=list)  # degenerate models (distil.evaluate.figures), not decided on

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


# --- summaries ---------------------------------------------------------------------------------------


def quality_of(block: Mapping[str, Any]) -> float | None:
    """The quality figure the gate compares: gold-set accuracy, else held-out accuracy against gold
    labels, else macro-F1, else chrF against the teacher (generation), else ROUGE-L (older evaluations)."""
    gold = block.get("gold") or {}
    for value in (
        gold.get("accuracy"),
        block.get("accuracy"),
        block.get("macro_f1"),
        block.get("chrf"),
        block.get("rouge_l"),
    ):
        if value is not None:
            return float(value)
    return None


def summarise_evaluation(evaluation: Mapping[str, Any]) -> dict[str, Any]:
    """The compact form stored in the ledger's evaluations row and fed to the rules, with the gate's
    evidence (intervals, counts, paired tests) under ``evidence``."""
    from distil.evaluate.evidence import gate_evidence
    from distil.evaluate.figures import label_warnings

    out: dict[str, Any] = {}
    generation = (evaluation.get("student") or {}).get("kind") == "generate" or (evaluation.get("student") or {}).get(
        "rouge_l"
    ) is not None
    for name in MODELS:
        block = evaluation.get(name) or {}
        row = {k: block.get(k) for k in SUMMARY_FIELDS}
        row["quality"] = quality_of(block)
        if name == "teacher" and generation:
            row["quality"] = 1.0  # generation: the teacher's text is the reference
        worst = _worst_slice(block.get("slices") or {})
        row["min_slice"], row["min_slice_agreement"] = worst if worst else (None, None)
        row["gold_disagreements"] = (block.get("gold") or {}).get("disagreements")
        out[name] = row
    cost = evaluation.get("cost") or {}
    out["cost"] = {
        k: cost.get(k)
        for k in ("payback_months", "payback_reason", "monthly_savings", "build_cost", "escalated_share", "currency")
    }
    out["evidence"] = gate_evidence(evaluation)
    out["warnings"] = label_warnings(evaluation)
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
    """A threshold on an exact quantity (no sampling): pass or FAIL on the value itself."""
    if value is None:
        return GateCheck(name, None, threshold, None, False, detail or "not measured", FAIL)
    margin = value - threshold if direction == "min" else threshold - value
    return GateCheck(name, value, threshold, margin, margin >= 0, detail, PASS if margin >= 0 else FAIL, method="exact")


def _items_needed(measure: Mapping[str, Any], threshold: float, direction: str) -> int | None:
    value, n = measure.get("value"), int(measure.get("n") or 0)
    if "k" in measure:  # a yes/no rate: the Wilson bound at the observed rate
        return m.wilson_items_needed(value, threshold, direction)
    lo, hi = measure.get("interval") or [None, None]
    bound = lo if direction == "min" else hi
    return None if bound is None else m.bootstrap_items_needed(value, bound, threshold, n)


def evidence_check(
    name: str, measure: Mapping[str, Any] | None, threshold: float, direction: str, detail: str
) -> GateCheck:
    """A threshold on a sampled quantity: pass only when its interval's bound clears the threshold."""
    if not measure or measure.get("value") is None:
        return GateCheck(
            name,
            None,
            threshold,
            None,
            False,
            f"{detail}; {NO_EVIDENCE if measure is None else 'not measured'}",
            UNDECIDED if measure is None else FAIL,
        )
    value = float(measure["value"])
    lo, hi = measure.get("interval") or [None, None]
    margin = value - threshold if direction == "min" else threshold - value
    bound = lo if direction == "min" else hi
    common = dict(interval=[lo, hi], n=measure.get("n"), method=measure.get("method", ""))
    if margin < 0:
        return GateCheck(name, value, threshold, margin, False, detail, FAIL, **common)
    if bound is not None and (bound >= threshold if direction == "min" else bound <= threshold):
        return GateCheck(name, value, threshold, margin, True, detail, PASS, **common)
    needed = _items_needed(measure, threshold, direction)
    what = "timed requests" if "timed requests" in common["method"] else "test items"
    more = (
        f"{needed:,} {what} would decide it at the observed value"
        if needed
        else f"more {what} than can be gathered would be needed"
    )
    side = "lower" if direction == "min" else "upper"
    return GateCheck(
        name,
        value,
        threshold,
        margin,
        False,
        f"{detail}; the 95% {side} bound does not clear it yet: {more}",
        UNDECIDED,
        items_needed=needed,
        **common,
    )


def _slice_check(threshold: float, evidence: Mapping[str, Any]) -> GateCheck:
    slices = evidence.get("slices")
    if slices is None:
        return evidence_check("per_slice_fidelity_min", None, threshold, "min", "every slice's agreement")
    if not slices:
        return GateCheck("per_slice_fidelity_min", None, threshold, None, False, "no slices", FAIL)
    return weakest_check(
        {
            name: evidence_check("per_slice_fidelity_min", measure, threshold, "min", f"slice {name}")
            for name, measure in slices.items()
        },
        threshold,
    )


def _label_recall_check(threshold: float, evidence: Mapping[str, Any]) -> GateCheck:
    """Every label's recall by the student must clear ``threshold``; a label with no reference items is undecided."""
    name, what = "min_label_recall", "student recall of label"
    labels = evidence.get("label_recall")
    if labels is None:
        return evidence_check(name, None, threshold, "min", "every label's recall")
    checks = {}
    for label, measure in labels.items():
        reference = "gold labels" if measure.get("reference") == "gold" else "the teacher's labels"
        if not measure.get("n"):
            checks[label] = GateCheck(
                name, None, threshold, None, False, f"{what} {label}: no items of it in {reference}", UNDECIDED, n=0
            )
        else:
            checks[label] = evidence_check(name, measure, threshold, "min", f"{what} {label} (against {reference})")
    return weakest_check(checks, threshold)


def weakest_check(checks: Mapping[str, GateCheck], threshold: float) -> GateCheck:
    """The check that decides a floor on every member (slice, label): a failing one first, then an undecided one
    (with the most items any undecided member needs), then the weakest lower bound."""
    order = {FAIL: 0, UNDECIDED: 1, PASS: 2}
    _, check = min(checks.items(), key=lambda kv: (order[kv[1].status], (kv[1].interval or [0])[0] or 0.0))
    if check.status == UNDECIDED:
        needed = [c.items_needed for c in checks.values() if c.status == UNDECIDED]
        most = None if None in needed else max(needed)
        return GateCheck(
            check.name,
            check.value,
            threshold,
            check.margin,
            False,
            check.detail,
            UNDECIDED,
            check.interval,
            None,
            check.n,
            most,
            check.method,
        )
    return check


def _baseline_check(evidence: Mapping[str, Any], s: Mapping[str, Any], b: Mapping[str, Any]) -> GateCheck:
    test = evidence.get("beat_baseline")
    if test is None:
        diff = None if s.get("agreement") is None or b.get("agreement") is None else s["agreement"] - b["agreement"]
        return GateCheck(
            "beat_baseline", diff, 0.0, None, False, f"student agreement − baseline agreement; {NO_EVIDENCE}", UNDECIDED
        )
    kl = evidence.get("kl_vs_baseline")
    kl_note = (
        f"; KL baseline − student {kl['value']:+.4f} (paired bootstrap p = {kl['p_value']:.3g})"
        if kl and kl.get("value") is not None
        else ""
    )
    value, p, n = test.get("value"), test.get("p_value"), test.get("n")
    if "only_student" in test:
        what = (
            f"student agreement − baseline agreement; discordant items: {test['only_student']} only the student, "
            f"{test['only_baseline']} only the baseline"
        )
        ahead = test["only_student"] > test["only_baseline"]
        needed = m.mcnemar_items_needed(test["only_student"], test["only_baseline"], int(n or 0)) if ahead else None
        interval = None
    else:
        what = "mean per-item fidelity, student − baseline"
        ahead = value is not None and value > 0
        lo, hi = test.get("interval") or [None, None]
        interval = [lo, hi]
        needed = m.bootstrap_items_needed(value, lo, 0.0, int(n or 0)) if ahead and lo is not None else None
    common = dict(interval=interval, p_value=p, n=n, method=test.get("method", ""))
    if value is None:
        return GateCheck("beat_baseline", None, 0.0, None, False, "not measured", FAIL, **common)
    if not ahead:
        return GateCheck(
            "beat_baseline",
            value,
            0.0,
            value,
            False,
            f"{what}: the student does not beat the baseline{kl_note}",
            FAIL,
            **common,
        )
    if p is not None and p < ALPHA:
        return GateCheck("beat_baseline", value, 0.0, value, True, f"{what}{kl_note}", PASS, **common)
    more = (
        f"{needed:,} test items would reach p < {ALPHA} at the observed discordance"
        if needed
        else "more test items than can be gathered"
    )
    return GateCheck(
        "beat_baseline",
        value,
        0.0,
        value,
        False,
        f"{what}; p ≥ {ALPHA}: {more}{kl_note}",
        UNDECIDED,
        items_needed=needed,
        **common,
    )


def size_detail(student: Mapping[str, Any], teacher: Mapping[str, Any]) -> str:
    """What the size check compares (parameters) and, beside it, what it does not: bytes on disk and in memory."""
    parts = ["compares parameters (student / teacher), not bytes"]
    for key, where in (("size_bytes", "on disk"), ("served_bytes", "in memory")):
        s, t = student.get(key), teacher.get(key)
        if s is not None and t is not None and t > 0:
            parts.append(f"{where} {s / 1e6:,.1f} MB vs {t / 1e6:,.1f} MB ({s / t:.2f}×)")
    return "; ".join(parts)


def _stored_size_check(threshold: int, summary: Mapping[str, Any]) -> GateCheck:
    """``size_max_bytes``: the smallest the student is stored, among the student folder as evaluated and every
    evaluated export variant of the run (``exported_sizes``, set by :func:`record_decision`)."""
    sizes = {"student": (summary.get("student") or {}).get("size_bytes"), **(summary.get("exported_sizes") or {})}
    sizes = {name: size for name, size in sizes.items() if size is not None}
    if not sizes:
        return _check(
            "size_max_bytes",
            None,
            threshold,
            "max",
            "no size on disk measured: export the student, e.g. `distil export --format gguf --quantize q8_0`",
        )
    name = min(sizes, key=sizes.get)
    return _check("size_max_bytes", sizes[name], threshold, "max", f"bytes on disk, smallest as stored: {name}")


def _fidelity_detail(student: Mapping[str, Any]) -> str:
    """What fidelity_min compares and, where a gold set was scored, who is right where student and teacher differ
    there: a student right on most of them is held back by the teacher's mistakes, not by its own."""
    from distil.evaluate.figures import disagreement_text

    detail = "student agreement with the teacher"
    counts = student.get("gold_disagreements")
    if counts and counts.get("n"):
        detail += f"; where they differ on the gold set, {disagreement_text(counts, 'the student')}"
    return detail


def gate_checks(thresholds: Mapping[str, Any], summary: Mapping[str, Any]) -> list[GateCheck]:
    """Every set threshold of the locked gate against one evaluation summary, in a fixed order."""
    s, t, b = summary.get("student", {}), summary.get("teacher", {}), summary.get("baseline", {})
    evidence = summary.get("evidence") or {}
    checks: list[GateCheck] = []
    if (v := thresholds.get("fidelity_min")) is not None:
        checks.append(evidence_check("fidelity_min", evidence.get("agreement"), v, "min", _fidelity_detail(s)))
    if (v := thresholds.get("quality_min_vs_teacher")) is not None:
        checks.append(
            evidence_check(
                "quality_min_vs_teacher", evidence.get("quality_ratio"), v, "min", "student quality / teacher quality"
            )
        )
    if (v := thresholds.get("per_slice_fidelity_min")) is not None:
        checks.append(_slice_check(v, evidence))
    if (v := thresholds.get("min_label_recall")) is not None:
        checks.append(_label_recall_check(v, evidence))
    if (v := thresholds.get("p95_latency_max_vs_teacher")) is not None:
        checks.append(
            evidence_check(
                "p95_latency_max_vs_teacher",
                evidence.get("p95_ratio"),
                v,
                "max",
                "student p95 / teacher p95 at batch 1",
            )
        )
    if (v := thresholds.get("p95_latency_max_ms")) is not None:
        checks.append(
            evidence_check("p95_latency_max_ms", evidence.get("p95_ms"), v, "max", "student p95 at batch 1, ms")
        )
    if (v := thresholds.get("size_max_vs_teacher")) is not None:
        checks.append(
            _check(
                "size_max_vs_teacher",
                _ratio(s.get("params"), t.get("params")),
                v,
                "max",
                size_detail(s, t),
            )
        )
    if (v := thresholds.get("size_max_bytes")) is not None:
        checks.append(_stored_size_check(v, summary))
    if (v := thresholds.get("payback_months_max")) is not None:
        cost = summary.get("cost") or {}
        payback, reason = cost.get("payback_months"), cost.get("payback_reason")
        never = f"never paid back: {reason}" if reason else "the student saves nothing: never paid back"
        checks.append(
            _check(
                "payback_months_max",
                payback,
                v,
                "max",
                "months until the measured monthly saving repays the build cost" if payback is not None else never,
            )
        )
    if thresholds.get("beat_baseline"):
        checks.append(_baseline_check(evidence, s, b))
    if (v := thresholds.get("retraining_path")) is not None:
        ok = bool(str(v).strip())
        checks.append(
            GateCheck(
                "retraining_path",
                v,
                "documented",
                None,
                ok,
                "stability play: how the student is retrained",
                PASS if ok else FAIL,
            )
        )
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

    warnings = list(rounds[-1].get("warnings") or [])

    def verdict(decision: str, reason: str) -> Decision:
        return Decision(decision, reason, checks, fidelity, used, limit, warnings)

    failed = [c.name if c.status != UNDECIDED else f"{c.name} (undecided)" for c in checks if not c.passed]
    if not failed:
        return verdict("ship", f"all {len(checks)} gate thresholds pass")
    if used >= limit:
        return verdict("kill", f"{', '.join(failed)} not passed and the iterations are exhausted ({used} of {limit})")
    if len(rounds) >= 2 and fidelity[-1] is not None and fidelity[-2] is not None:
        moved = fidelity[-1] - fidelity[-2]
        if abs(moved) < PLATEAU:
            return verdict(
                "kill",
                f"{', '.join(failed)} not passed and fidelity moved {moved * 100:+.2f} points in the last round (< 1 "
                "point)",
            )
        if moved < 0:
            return verdict(
                "kill", f"{', '.join(failed)} not passed and fidelity fell {moved * 100:+.2f} points in the last round"
            )
        return verdict(
            "iterate",
            f"{', '.join(failed)} not passed; fidelity rose {moved * 100:+.2f} points, {limit - used} iteration(s) "
            "left",
        )
    return verdict("iterate", f"{', '.join(failed)} not passed; first round, {limit - used} iteration(s) left")


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


DECIDED_VARIANT = "distilled"  # the round itself; other variants (e.g. "quantized") are reported beside it


def evaluation_rounds(project: Any, run_id: str | None = None) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The evaluation row decided on (latest, or the latest of ``run_id``) and the summaries of every
    round up to it: the latest evaluation of each run, oldest run first.

    Only ``distilled`` rows are rounds. A variant evaluated later (``distil export --quantize int8``
    writes a ``quantized`` row with a different shape) is never taken as the round; see
    :func:`variant_rows`.
    """
    rows = [
        r for r in project.ledger.verified_rows("evaluations", order="event_seq ASC") if r["variant"] == DECIDED_VARIANT
    ]
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


def variant_rows(project: Any, run_id: str) -> dict[str, dict[str, Any]]:
    """The latest evaluation of each other variant of ``run_id`` (e.g. ``quantized``): variant -> its
    summary and event, shown beside the decision and stored with it, never decided on."""
    out: dict[str, dict[str, Any]] = {}
    for r in project.ledger.verified_rows("evaluations", "run_id = ?", (run_id,), order="event_seq ASC"):
        if r["variant"] != DECIDED_VARIANT:
            out[r["variant"]] = {"evaluation_seq": r["event_seq"], "summary": json.loads(r["summary"])}
    return out


OUTCOMES = ("kill", "iterate", "ship")  # least to most permissive


def apply_choice(ruled: Decision, chosen: str | None, note: str) -> Decision:
    """The validator's own outcome in place of the rules' one: never more permissive than the rules
    (ship only when every threshold passes; iterate only where the rules allow another round).

    ``note`` is the validator's reason, kept beside the rules' reason. Without ``chosen`` the rules stand.
    """
    if chosen is None or chosen == ruled.decision:
        return ruled if not note.strip() else replace(ruled, reason=f"{ruled.reason}; validator: {note.strip()}")
    if chosen not in OUTCOMES:
        raise EvaluationError(
            f"decision: {chosen!r} is not one of {', '.join(OUTCOMES)}", hint="choose ship, iterate or kill"
        )
    if OUTCOMES.index(chosen) > OUTCOMES.index(ruled.decision):
        raise EvaluationError(
            f"decision: {chosen} is refused: the locked gate's rules say {ruled.decision} ({ruled.reason})",
            hint=f"record {ruled.decision} or a more cautious outcome, or lock a new gate version and evaluate again",
        )
    if not note.strip():
        raise EvaluationError(
            f"decision: {chosen} differs from the rules' {ruled.decision} and needs a reason",
            hint="give the reason the validator chose a more cautious outcome",
        )
    return replace(
        ruled,
        decision=chosen,
        reason=f"validator chose {chosen} over the rules' {ruled.decision} ({ruled.reason}): {note.strip()}",
    )


def record_decision(
    project: Any,
    actor: str,
    run_id: str | None = None,
    chosen: str | None = None,
    note: str = "",
) -> tuple[Decision, dict[str, Any], Any]:
    """Check roles and the gate, decide from the ledger's evaluations, append the decision row.

    ``chosen`` is the validator's outcome when they record one (``distil decide --decision OUTCOME``, the
    review app's sign-off); it may be more cautious than the rules' outcome, never more permissive,
    and then needs ``note``, the validator's reason. Returns (decision, evaluation row decided on,
    ledger event). The event's data carries every check's evidence (value, interval, p-value, item
    count, status), the rules' own outcome and the run's other variants.
    """
    require_validator(project.spec.roles, actor)
    signer = signer_for(project, actor)
    locked = require_unchanged_gate(project)
    target, rounds = evaluation_rounds(project, check_run_id(run_id) if run_id else None)
    iterations_used = len(project.ledger.events(kind="iteration"))
    variants = variant_rows(project, target["run_id"])
    exported_sizes = {
        name: row["summary"]["size_bytes"] for name, row in variants.items() if row["summary"].get("size_bytes")
    }
    rounds = [*rounds[:-1], {**rounds[-1], "exported_sizes": exported_sizes}]  # the round decided on is the last
    ruled = decide_outcome(locked.thresholds, rounds, iterations_used=iterations_used)
    decision = apply_choice(ruled, chosen, note)
    event = project.ledger.append(
        "decision",
        {
            "run_id": target["run_id"],
            "decision": decision.decision,
            "reason": decision.reason,
            "ruled": ruled.decision,
            "note": note.strip(),
            "gate_version": locked.version,
            "gate_sha256": locked.sha256,
            "checks": [asdict(c) for c in decision.checks],
            "fidelity_by_round": decision.fidelity_by_round,
            "iterations_used": decision.iterations_used,
            "max_iterations": decision.max_iterations,
            "warnings": decision.warnings,
            "evaluation_seq": target["event_seq"],
            "variants": variants,
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
    rewrite_report(project, target["run_id"])
    return decision, target, event


def rewrite_report(project: Any, run_id: str) -> bool:
    """Write the run's report again so it shows the decision just recorded; False when it could not be.

    The report is derived from the ledger and the run folder: failing to write it never undoes the decision
    (``distil report`` writes it again)."""
    from distil.errors import DistilError
    from distil.evaluate.report import write_report

    try:
        write_report(project, run_id)
    except (DistilError, OSError):
        return False
    return True

"""Monthly cost and the payback period, from what was measured.

Every figure is a :class:`Term` that says where it came from:

- **measured on this machine**: each model's serving throughput (``distil evaluate`` times it at its batch
  size), priced at ``cost.machine_hour_price``; the share of requests the router escalates to the teacher,
  calibrated on the validation split exactly as ``distil serve`` calibrates it (never on test);
- **spec**: ``cost.monthly_requests``, ``cost.machine_hour_price``, the teacher's price per call
  (``cost.teacher_per_1m_requests``; 0 means a local teacher, priced by its own measured throughput) and the
  fixed part of the build cost (``cost.build_cost``);
- **ledger**: what building cost so far: the teacher calls the records carry (their recorded cost) and the
  training time of every run up to this one (see :mod:`distil.evaluate.build_cost`).

    teacher_monthly   = monthly_requests × teacher price per request
    distilled_monthly = monthly_requests × (student serving per request + escalated share × teacher price per request)
    build_cost        = recorded teacher-call cost + training hours × machine_hour_price + cost.build_cost
    payback_months    = build_cost / (teacher_monthly − distilled_monthly)

No saving means never paid back: ``payback_months`` is None (JSON has no infinity) and ``payback_reason`` says why.
The functions here are pure; :func:`cost_summary` assembles the evaluation's ``cost`` block.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

from distil.spec.models import Cost

SECONDS_PER_HOUR = 3600.0
MEASURED = "measured on this machine"
MEASURED_VALIDATION = "measured on the validation split"
LEDGER = "ledger"
COMPUTED = "computed"


def spec_source(name: str) -> str:
    return f"spec: cost.{name}"


@dataclass(frozen=True)
class Term:
    """One figure of the payback: its value, unit and where it came from."""

    name: str
    value: float | None
    unit: str
    source: str
    detail: str = ""


@dataclass(frozen=True)
class Escalation:
    """The share of requests the router sends to the teacher, as calibrated on validation."""

    share: float | None  # None: not measured
    source: str
    threshold: float | None = None
    target: float | None = None
    n: int = 0


@dataclass(frozen=True)
class BuildLedger:
    """What the ledger recorded about building the student (see
    :func:`distil.evaluate.build_cost.ledger_build_cost`)."""

    teacher_calls: int = 0
    teacher_calls_cost: float = 0.0
    training_seconds: dict[str, float] = field(default_factory=dict)  # "run_id/role" -> seconds
    datasets: int = 0  # dataset.generated events summed
    note: str = "no ledger read"

    @property
    def training_hours(self) -> float:
        return sum(self.training_seconds.values()) / SECONDS_PER_HOUR


def _finite_positive(value: float | None) -> bool:
    return value is not None and math.isfinite(value) and value > 0


def serving_cost_per_request(throughput_per_s: float | None, machine_hour_price: float) -> float | None:
    """What one request costs on a machine that answers ``throughput_per_s`` requests a second; None when unmeasured."""
    if not _finite_positive(throughput_per_s):
        return None
    return machine_hour_price / (float(throughput_per_s) * SECONDS_PER_HOUR)


def teacher_price_per_request(cost: Cost, teacher_throughput_per_s: float | None) -> tuple[float | None, str]:
    """(price, source): the spec's price when it sets one (an API teacher), else the local teacher's measured
    serving."""
    if cost.teacher_per_1m_requests > 0:
        return cost.teacher_per_1m_requests / 1e6, spec_source("teacher_per_1m_requests")
    return serving_cost_per_request(
        teacher_throughput_per_s, cost.machine_hour_price
    ), f"{MEASURED} × {spec_source('machine_hour_price')}"


def distilled_per_request(
    student_per_request: float | None, escalated_share: float | None, teacher_per_request: float | None
) -> float | None:
    """Every request runs the student; the escalated share also pays the teacher. None when a term is unmeasured."""
    if student_per_request is None or escalated_share is None or teacher_per_request is None:
        return None
    return student_per_request + escalated_share * teacher_per_request


def build_cost(build: BuildLedger, cost: Cost) -> float:
    """Recorded teacher-call cost + training hours × the machine-hour price + the spec's fixed build cost."""
    return build.teacher_calls_cost + build.training_hours * cost.machine_hour_price + cost.build_cost


def payback_months(
    build: float, teacher_monthly: float | None, distilled_monthly: float | None
) -> tuple[float | None, str]:
    """(months, reason). None months means never: no saving, or a monthly figure that was not measured."""
    if teacher_monthly is None or distilled_monthly is None:
        return None, "not measured: " + (
            "the teacher's" if teacher_monthly is None else "the distilled route's"
        ) + " monthly cost is unknown"
    saving = teacher_monthly - distilled_monthly
    if saving <= 0:
        return None, (
            f"no saving: the distilled route costs {distilled_monthly:,.2f} a month and the teacher alone "
            f"{teacher_monthly:,.2f}, so the build cost is never paid back"
        )
    return build / saving, "build cost / monthly saving"


def cost_summary(
    cost: Cost,
    teacher_throughput_per_s: float | None,
    student_throughput_per_s: float | None,
    escalation: Escalation,
    build: BuildLedger | None = None,
    horizon_months: int = 24,
) -> dict:
    """The evaluation's ``cost`` block: each :class:`Term` (value, unit, source), the monthly costs, the build cost,
    ``payback_months`` with ``payback_reason``, and the cumulative net saving per month over ``horizon_months``
    (month 0 is minus the build cost) for the chart."""
    build = build or BuildLedger()
    volume = cost.monthly_requests
    teacher_each, teacher_source = teacher_price_per_request(cost, teacher_throughput_per_s)
    student_each = serving_cost_per_request(student_throughput_per_s, cost.machine_hour_price)
    distilled_each = distilled_per_request(student_each, escalation.share, teacher_each)

    def monthly(each: float | None) -> float | None:
        return None if each is None else each * volume

    teacher_monthly, student_monthly = monthly(teacher_each), monthly(student_each)
    escalation_monthly = (
        None if escalation.share is None or teacher_each is None else escalation.share * teacher_each * volume
    )
    distilled_monthly = monthly(distilled_each)
    savings = None if teacher_monthly is None or distilled_monthly is None else teacher_monthly - distilled_monthly
    training_cost = build.training_hours * cost.machine_hour_price
    total_build = build_cost(build, cost)
    months, reason = payback_months(total_build, teacher_monthly, distilled_monthly)
    unmeasured = [
        name
        for name, v in (
            ("teacher_per_request", teacher_each),
            ("student_per_request", student_each),
            ("escalated_share", escalation.share),
        )
        if v is None
    ]
    if unmeasured:
        reason = f"not measured: {', '.join(unmeasured)}" + (
            f" ({escalation.source})" if escalation.share is None else ""
        )
    priced = f"× {spec_source('machine_hour_price')}"
    escalated = (
        f"threshold {escalation.threshold:.4g} for routed fidelity ≥ {escalation.target:.3g} on {escalation.n} items"
        if escalation.threshold is not None
        else ""
    )
    terms = [
        Term("monthly_requests", float(volume), "requests / month", spec_source("monthly_requests")),
        Term(
            "machine_hour_price", cost.machine_hour_price, f"{cost.currency} / hour", spec_source("machine_hour_price")
        ),
        Term("teacher_throughput_per_s", teacher_throughput_per_s, "requests / s", MEASURED),
        Term("teacher_per_request", teacher_each, cost.currency, teacher_source),
        Term(
            "teacher_monthly",
            teacher_monthly,
            f"{cost.currency} / month",
            COMPUTED,
            "monthly_requests × teacher_per_request",
        ),
        Term("student_throughput_per_s", student_throughput_per_s, "requests / s", MEASURED),
        Term("student_per_request", student_each, cost.currency, f"{MEASURED} {priced}"),
        Term(
            "student_serving_monthly",
            student_monthly,
            f"{cost.currency} / month",
            COMPUTED,
            "monthly_requests × student_per_request",
        ),
        Term("escalated_share", escalation.share, "share of requests", escalation.source, escalated),
        Term(
            "escalation_monthly",
            escalation_monthly,
            f"{cost.currency} / month",
            COMPUTED,
            "monthly_requests × escalated_share × teacher_per_request",
        ),
        Term(
            "distilled_monthly",
            distilled_monthly,
            f"{cost.currency} / month",
            COMPUTED,
            "student_serving_monthly + escalation_monthly",
        ),
        Term("monthly_savings", savings, f"{cost.currency} / month", COMPUTED, "teacher_monthly − distilled_monthly"),
        Term(
            "teacher_calls_cost",
            build.teacher_calls_cost,
            cost.currency,
            LEDGER,
            f"{build.teacher_calls:,} teacher calls recorded in {build.datasets} dataset.generated event(s); "
            f"{build.note}".rstrip("; "),
        ),
        Term(
            "training_hours",
            build.training_hours,
            "hours",
            LEDGER,
            ", ".join(f"{k} {v:,.0f} s" for k, v in build.training_seconds.items()),
        ),
        Term(
            "training_cost", training_cost, cost.currency, f"{LEDGER} {priced}", "training_hours × machine_hour_price"
        ),
        Term("fixed_build_cost", cost.build_cost, cost.currency, spec_source("build_cost")),
        Term(
            "build_cost", total_build, cost.currency, COMPUTED, "teacher_calls_cost + training_cost + fixed_build_cost"
        ),
        Term("payback_months", months, "months", COMPUTED, reason),
    ]

    def per_1m(each: float | None) -> float | None:
        return None if each is None else each * 1e6

    return {
        "currency": cost.currency,
        "terms": [asdict(t) for t in terms],
        "monthly_requests": volume,
        "machine_hour_price": cost.machine_hour_price,
        "teacher_per_1m_requests": per_1m(teacher_each),
        "student_per_1m_requests": per_1m(student_each),
        "distilled_per_1m_requests": per_1m(distilled_each),
        "spec_student_per_1m_requests": cost.student_per_1m_requests,  # the typed estimate, for comparison only
        "escalated_share": escalation.share,
        "teacher_monthly": teacher_monthly,
        "student_monthly": distilled_monthly,  # what the distilled route costs a month, escalations included
        "student_serving_monthly": student_monthly,
        "escalation_monthly": escalation_monthly,
        "distilled_monthly": distilled_monthly,
        "monthly_savings": savings,
        "teacher_calls": build.teacher_calls,
        "teacher_calls_cost": build.teacher_calls_cost,
        "training_hours": build.training_hours,
        "training_cost": training_cost,
        "fixed_build_cost": cost.build_cost,
        "build_cost": total_build,
        "payback_months": months,
        "payback_reason": reason,
        "cumulative_net": [-total_build + (savings or 0.0) * month for month in range(horizon_months + 1)],
    }

"""The payback arithmetic on planted numbers: measured serving, escalations, the ledger's build cost, no saving."""

from __future__ import annotations

import pytest

from distil.evaluate.cost import (
    LEDGER,
    MEASURED,
    MEASURED_VALIDATION,
    BuildLedger,
    Escalation,
    cost_summary,
    payback_months,
    serving_cost_per_request,
)
from distil.spec.models import Cost

# an API teacher at 600 per 1M requests; a machine at 3.6 an hour (0.001 a second); 3M requests a month
PRICES = Cost(
    teacher_per_1m_requests=600,
    student_per_1m_requests=40,
    monthly_requests=3_000_000,
    build_cost=2500,
    machine_hour_price=3.6,
)
BUILD = BuildLedger(
    teacher_calls=500,
    teacher_calls_cost=12.5,
    training_seconds={"r1/student": 5400.0, "r1/baseline": 1800.0},
    datasets=2,
    note="",
)


def measured(
    share: float | None,
    cost: Cost = PRICES,
    build: BuildLedger = BUILD,
    student_per_s: float = 100.0,
    teacher_per_s: float = 2.0,
) -> dict:
    return cost_summary(cost, teacher_per_s, student_per_s, Escalation(share, MEASURED_VALIDATION, 0.7, 0.9, 40), build)


def terms(block: dict) -> dict[str, dict]:
    return {t["name"]: t for t in block["terms"]}


def test_serving_cost_is_the_machine_hour_over_the_measured_throughput():
    assert serving_cost_per_request(100.0, 3.6) == pytest.approx(1e-5)
    assert serving_cost_per_request(0.0, 3.6) is None and serving_cost_per_request(None, 3.6) is None


def test_payback_from_measured_serving_escalations_and_the_recorded_build():
    block = measured(0.25)
    assert block["teacher_monthly"] == pytest.approx(1800)  # 3M × 600 / 1M
    assert block["student_serving_monthly"] == pytest.approx(30)  # 3M × 3.6 / (100 × 3600)
    assert block["escalation_monthly"] == pytest.approx(450)  # 25% of 3M × 600 / 1M
    assert block["distilled_monthly"] == pytest.approx(480) and block["monthly_savings"] == pytest.approx(1320)
    assert block["training_hours"] == pytest.approx(2.0) and block["training_cost"] == pytest.approx(7.2)
    assert block["build_cost"] == pytest.approx(12.5 + 7.2 + 2500)
    assert block["payback_months"] == pytest.approx((12.5 + 7.2 + 2500) / 1320)
    assert block["cumulative_net"][0] == pytest.approx(-block["build_cost"])
    assert block["spec_student_per_1m_requests"] == 40  # the typed estimate is shown, not used


def test_every_term_names_its_source():
    t = terms(measured(0.25))
    assert t["student_throughput_per_s"]["source"] == MEASURED and t["teacher_throughput_per_s"]["source"] == MEASURED
    assert t["escalated_share"]["source"] == MEASURED_VALIDATION and "on 40 items" in t["escalated_share"]["detail"]
    assert t["teacher_per_request"]["source"] == "spec: cost.teacher_per_1m_requests"
    assert t["teacher_calls_cost"]["source"] == LEDGER and "500 teacher calls" in t["teacher_calls_cost"]["detail"]
    assert t["training_hours"]["source"] == LEDGER and "r1/student 5,400 s" in t["training_hours"]["detail"]
    assert t["fixed_build_cost"]["source"] == "spec: cost.build_cost" and t["fixed_build_cost"]["value"] == 2500
    assert t["machine_hour_price"]["source"] == "spec: cost.machine_hour_price"


def test_escalations_raise_the_monthly_cost_and_the_payback():
    none, some, most = measured(0.0), measured(0.25), measured(0.5)
    assert none["distilled_monthly"] < some["distilled_monthly"] < most["distilled_monthly"]
    assert none["payback_months"] < some["payback_months"] < most["payback_months"]


def test_no_saving_is_never_paid_back_with_a_reason():
    everything_escalated = measured(1.0)  # the student's serving on top of the teacher's bill
    assert everything_escalated["monthly_savings"] < 0
    assert everything_escalated["payback_months"] is None and everything_escalated["payback_reason"].startswith(
        "no saving"
    )
    no_traffic = measured(0.25, cost=PRICES.model_copy(update={"monthly_requests": 0}))
    assert no_traffic["payback_months"] is None and "never paid back" in no_traffic["payback_reason"]
    unmeasured = measured(None)
    assert unmeasured["payback_months"] is None and unmeasured["payback_reason"].startswith("not measured")


def test_a_local_teacher_is_priced_by_its_measured_throughput():
    local = PRICES.model_copy(update={"teacher_per_1m_requests": 0.0})
    block = measured(0.1, cost=local, teacher_per_s=2.0)
    assert block["teacher_monthly"] == pytest.approx(3_000_000 * 3.6 / (2.0 * 3600))  # 1,500 machine-hours
    assert terms(block)["teacher_per_request"]["source"].startswith(MEASURED)


def test_payback_months_is_pure():
    assert payback_months(100.0, 60.0, 10.0) == (2.0, "build cost / monthly saving")
    months, reason = payback_months(100.0, 10.0, 10.0)
    assert months is None and "never paid back" in reason

"""Gate checks and the ship / iterate / kill rules on constructed evaluations."""

from __future__ import annotations

import numpy as np
import pytest

from distil.decide import decide_outcome, gate_checks, require_validator, summarise_evaluation
from distil.errors import EvaluationError, RoleError
from distil.evaluate import evidence as E
from distil.spec.models import Roles

THRESHOLDS = {
    "fidelity_min": 0.95,
    "quality_min_vs_teacher": 0.95,
    "per_slice_fidelity_min": 0.85,
    "p95_latency_max_vs_teacher": 0.34,
    "p95_latency_max_ms": None,
    "size_max_vs_teacher": 0.4,
    "payback_months_max": 6,
    "beat_baseline": True,
    "retraining_path": None,
    "max_iterations": 3,
}


def _rights(rate: float, n: int) -> np.ndarray:
    return np.arange(n) < round(rate * n)


def summary(
    agreement: float,
    min_slice: float = 0.9,
    p95: float = 10.0,
    payback: float | None = 2.0,
    baseline: float = 0.8,
    n: int = 4000,
) -> dict:
    """An evaluation summary with its evidence, as :func:`summarise_evaluation` writes it, from ``n`` items
    (large by default, so the intervals are narrow and the point values decide)."""
    student_right, baseline_right = _rights(agreement, n), _rights(baseline, n)
    evidence = {
        "agreement": E.rate_measure(int(student_right.sum()), n),
        "slices": {"tone=urgent": E.rate_measure(round(min_slice * n), n), "tone=calm": E.rate_measure(n, n)},
        "quality_ratio": E.ratio_measure(_rights(0.88, n).astype(float), _rights(0.9, n).astype(float)),
        "p95_ratio": E.p95_measure([p95] * 200, [100.0] * 200),
        "beat_baseline": E.mcnemar_measure(student_right, baseline_right),
    }
    return {
        "teacher": {"agreement": 1.0, "quality": 0.9, "p95_ms": 100.0, "params": 1000},
        "student": {
            "agreement": agreement,
            "quality": 0.88,
            "p95_ms": p95,
            "params": 300,
            "min_slice": "tone=urgent",
            "min_slice_agreement": min_slice,
        },
        "baseline": {"agreement": baseline},
        "cost": {"payback_months": payback},
        "evidence": evidence,
    }


def test_every_set_threshold_is_checked_with_value_margin_and_result():
    checks = {c.name: c for c in gate_checks(THRESHOLDS, summary(0.97))}
    assert set(checks) == {
        "fidelity_min",
        "quality_min_vs_teacher",
        "per_slice_fidelity_min",
        "p95_latency_max_vs_teacher",
        "size_max_vs_teacher",
        "payback_months_max",
        "beat_baseline",
    }
    assert checks["fidelity_min"].margin == pytest.approx(0.02) and checks["fidelity_min"].passed
    assert checks["quality_min_vs_teacher"].value == pytest.approx(0.88 / 0.9)
    assert checks["p95_latency_max_vs_teacher"].value == pytest.approx(0.1)
    assert checks["p95_latency_max_vs_teacher"].margin == pytest.approx(0.24)
    assert checks["size_max_vs_teacher"].value == pytest.approx(0.3)
    assert checks["beat_baseline"].value == pytest.approx(0.17)
    assert all(c.passed and c.status == "pass" for c in checks.values())
    failing = {
        c.name: c for c in gate_checks(THRESHOLDS, summary(0.97, min_slice=0.8, p95=50.0, payback=None, baseline=0.97))
    }
    assert not failing["per_slice_fidelity_min"].passed and failing["per_slice_fidelity_min"].margin == pytest.approx(
        -0.05
    )
    assert not failing["p95_latency_max_vs_teacher"].passed
    assert not failing["payback_months_max"].passed and failing["payback_months_max"].value is None
    assert not failing["beat_baseline"].passed  # a tie does not beat the baseline
    assert failing["beat_baseline"].status == "FAIL" and failing["beat_baseline"].p_value == 1.0


def test_ship_when_every_threshold_passes():
    decision = decide_outcome(THRESHOLDS, [summary(0.90), summary(0.97)])
    assert decision.decision == "ship"
    assert decision.fidelity_by_round == [0.90, 0.97]


def test_iterate_on_a_first_failing_round():
    decision = decide_outcome(THRESHOLDS, [summary(0.90)], iterations_used=0)
    assert decision.decision == "iterate"
    assert "fidelity_min" in decision.reason


def test_iterate_when_the_last_round_improved_and_iterations_are_left():
    decision = decide_outcome(THRESHOLDS, [summary(0.88), summary(0.92)], iterations_used=1)
    assert decision.decision == "iterate"
    assert "+4.00 points" in decision.reason


def test_kill_when_iterations_are_exhausted():
    rounds = [summary(0.80), summary(0.85), summary(0.89), summary(0.93)]
    decision = decide_outcome(THRESHOLDS, rounds, iterations_used=3)
    assert decision.decision == "kill"
    assert "exhausted" in decision.reason


def test_kill_when_fidelity_plateaus_below_one_point():
    decision = decide_outcome(THRESHOLDS, [summary(0.900), summary(0.905)], iterations_used=1)
    assert decision.decision == "kill"
    assert "< 1 point" in decision.reason


def test_kill_when_fidelity_falls():
    assert decide_outcome(THRESHOLDS, [summary(0.93), summary(0.90)], iterations_used=1).decision == "kill"


def test_no_rounds_is_refused():
    with pytest.raises(EvaluationError):
        decide_outcome(THRESHOLDS, [])


def test_validator_must_be_the_validator_and_not_the_driver():
    roles = Roles(sponsor="maria", driver="dev", validator="quinn")
    require_validator(roles, "Quinn")
    with pytest.raises(RoleError, match="driver"):
        require_validator(roles, "dev")
    with pytest.raises(RoleError, match="only the validator"):
        require_validator(roles, "maria")


def test_summary_takes_gold_accuracy_and_the_worst_slice():
    evaluation = {
        "teacher": {"accuracy": 0.8, "gold": {"accuracy": 0.9}, "slices": {}},
        "student": {
            "accuracy": 0.7,
            "agreement": 0.9,
            "slices": {"tone": {"urgent": {"agreement": 0.7}, "calm": {"agreement": 0.95}}},
        },
        "baseline": {"accuracy": 0.6},
        "cost": {"payback_months": 3.0},
    }
    s = summarise_evaluation(evaluation)
    assert s["teacher"]["quality"] == 0.9
    assert s["student"]["quality"] == 0.7
    assert s["student"]["min_slice"] == "tone=urgent" and s["student"]["min_slice_agreement"] == 0.7
    assert s["cost"]["payback_months"] == 3.0

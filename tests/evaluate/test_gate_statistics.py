"""The gate's statistics against known values, and the gate deciding on evidence: a small test set is
undecided (with how many items would decide it), a large one passes."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.stats import binomtest

from distil.decide import decide_outcome, gate_checks
from distil.evaluate import evidence as E
from distil.evaluate import metrics as m


def test_wilson_interval_known_values():
    # 8 of 10: the textbook Wilson 95% interval (statsmodels proportion_confint(8, 10, method="wilson"))
    lo, hi = m.wilson_interval(8, 10)
    assert lo == pytest.approx(0.4901625, abs=1e-6) and hi == pytest.approx(0.9433178, abs=1e-6)
    # by hand from the formula: centre (p + z²/2n) / (1 + z²/n), half z·sqrt(p(1-p)/n + z²/4n²) / (1 + z²/n)
    z, n, p = 1.959963984540054, 40, 30 / 40
    centre, half = (
        (p + z * z / (2 * n)) / (1 + z * z / n),
        z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n),
    )
    assert m.wilson_interval(30, 40) == pytest.approx((centre - half, centre + half))
    # it never leaves [0, 1], and it does not collapse at all-right
    lo, hi = m.wilson_interval(10, 10)
    assert hi == pytest.approx(1.0) and lo == pytest.approx(0.7224672, abs=1e-6)
    assert m.wilson_interval(0, 10)[0] == 0.0


def test_mcnemar_exact_known_values_and_scipy():
    # 10 discordant items for the student, 2 for the baseline: P(X ≥ 10 | n = 12, 1/2) = (66 + 12 + 1) / 4096
    assert m.mcnemar_exact(10, 2) == pytest.approx(79 / 4096)
    for b, c in [(5, 1), (3, 3), (0, 4), (20, 9)]:
        assert m.mcnemar_exact(b, c) == pytest.approx(binomtest(b, b + c, 0.5, alternative="greater").pvalue)
    assert m.mcnemar_exact(0, 0) == 1.0


def test_items_needed_is_the_first_n_that_clears():
    n = m.wilson_items_needed(0.9, 0.8)
    assert m.wilson_interval(0.9 * n, n)[0] >= 0.8 > m.wilson_interval(0.9 * (n - 1), n - 1)[0]
    assert m.wilson_items_needed(0.7, 0.8) is None  # the observed rate itself fails: no n passes it
    needed = m.mcnemar_items_needed(6, 1, 35)  # 6 vs 1 discordant of 35: p = 0.0625 > 0.05
    assert m.mcnemar_exact(6, 1) > 0.05
    assert m.mcnemar_exact(round(6 / 35 * needed), round(1 / 35 * needed)) < 0.05
    assert m.mcnemar_items_needed(2, 2, 35) is None


def test_paired_bootstrap_interval_and_p_value():
    rng = np.random.default_rng(0)
    better = rng.normal(0.2, 0.1, size=200)
    out = m.paired_bootstrap(better)
    assert out["lo"] < out["value"] < out["hi"] and out["lo"] > 0 and out["p_value"] < 0.01
    assert m.paired_bootstrap(rng.normal(0.0, 0.1, size=200))["p_value"] > 0.05


def test_chrf_known_values():
    # "ab" against "abc": 1-grams P 2/2 R 2/3, 2-grams P 1/1 R 1/2, no 3-grams in "ab".
    # P = 1, R = (2/3 + 1/2) / 2 = 7/12, F2 = 5·P·R / (4·P + R) = 7/11
    assert m.chrf("ab", "abc") == pytest.approx(7 / 11)
    assert m.chrf("the cat", "the cat") == 1.0
    assert m.chrf("the cat", "thecat") == 1.0  # whitespace is not part of the character n-grams
    assert m.chrf("xyz", "abc") == 0.0 and m.chrf("", "abc") == 0.0 and m.chrf("", "") == 1.0


def _summary(student_right: np.ndarray, baseline_right: np.ndarray) -> dict:
    n = student_right.size
    return {
        "student": {"agreement": float(student_right.mean())},
        "baseline": {"agreement": float(baseline_right.mean())},
        "evidence": {
            "agreement": E.rate_measure(int(student_right.sum()), n),
            "beat_baseline": E.mcnemar_measure(student_right, baseline_right),
        },
    }


def _rights(rate: float, n: int, offset: int = 0) -> np.ndarray:
    return np.roll(np.arange(n) < round(rate * n), offset)


GATE = {"fidelity_min": 0.8, "beat_baseline": True}


def test_a_small_test_set_is_undecided_and_says_what_would_decide_it():
    # 35 items, the student right on 32 (0.914 ≥ 0.8) but the Wilson lower bound is below 0.8;
    # the baseline right on 29 of the same items: 3 discordant items, all the student's, p = 1/8
    student, baseline = _rights(32 / 35, 35), _rights(29 / 35, 35)
    checks = {c.name: c for c in gate_checks(GATE, _summary(student, baseline))}
    fidelity = checks["fidelity_min"]
    assert fidelity.status == "undecided" and not fidelity.passed
    assert fidelity.value == pytest.approx(32 / 35) and fidelity.interval[0] < 0.8 and fidelity.n == 35
    assert fidelity.items_needed == m.wilson_items_needed(32 / 35, 0.8) > 35
    assert f"{fidelity.items_needed:,} test items" in fidelity.detail
    beat = checks["beat_baseline"]  # 3 items only the student gets right, none only the baseline: p = 1/8
    assert beat.status == "undecided" and beat.p_value == pytest.approx(0.125) and beat.items_needed > 35
    decision = decide_outcome(GATE, [_summary(student, baseline)])
    assert decision.decision == "iterate" and "undecided" in decision.reason


def test_a_large_test_set_at_the_same_rates_passes():
    student, baseline = _rights(32 / 35, 3500), _rights(29 / 35, 3500)
    checks = {c.name: c for c in gate_checks(GATE, _summary(student, baseline))}
    assert checks["fidelity_min"].status == "pass" and checks["fidelity_min"].interval[0] >= 0.8
    assert checks["beat_baseline"].status == "pass" and checks["beat_baseline"].p_value < 0.05
    assert decide_outcome(GATE, [_summary(student, baseline)]).decision == "ship"


def test_a_point_value_below_the_threshold_fails_outright():
    student, baseline = _rights(0.7, 35), _rights(0.75, 35)
    checks = {c.name: c for c in gate_checks(GATE, _summary(student, baseline))}
    assert checks["fidelity_min"].status == "FAIL" and checks["fidelity_min"].items_needed is None
    assert checks["beat_baseline"].status == "FAIL"


def test_old_summaries_without_evidence_are_undecided_not_passed():
    checks = gate_checks(GATE, {"student": {"agreement": 0.99}, "baseline": {"agreement": 0.5}})
    assert [c.status for c in checks] == ["undecided", "undecided"]
    assert all("re-run `distil evaluate`" in c.detail for c in checks)

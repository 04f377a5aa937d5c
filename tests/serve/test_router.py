from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from distil.serve.router import NEVER, Router, blended_cost_per_1m, calibrate_threshold, routed_fidelity


def _random_probs(rng: np.random.Generator, n: int, labels: int = 3) -> np.ndarray:
    return rng.dirichlet(np.ones(labels), size=n)


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 10_000), n=st.integers(1, 40), target=st.floats(0.0, 1.0))
def test_calibrated_threshold_is_the_lowest_that_meets_the_target(seed, n, target):
    rng = np.random.default_rng(seed)
    student, teacher = _random_probs(rng, n), _random_probs(rng, n)
    cal = calibrate_threshold(student, teacher, target)
    fidelity, share = routed_fidelity(student, teacher, cal.threshold)
    assert fidelity >= target - 1e-9
    assert fidelity == pytest.approx(cal.routed_fidelity)
    assert share == pytest.approx(cal.escalated_share)
    # brute force: no lower candidate threshold meets the target
    for t in np.unique(student.max(axis=1)):
        if t < cal.threshold:
            assert routed_fidelity(student, teacher, t)[0] < target - 1e-12


def test_perfect_student_escalates_nothing_and_useless_one_escalates_all():
    teacher = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4]])
    assert calibrate_threshold(teacher, teacher, 1.0).escalated_share == 0.0
    wrong = teacher[:, ::-1]
    cal = calibrate_threshold(wrong, teacher, 1.0)
    assert cal.threshold == NEVER and cal.escalated_share == 1.0 and cal.routed_fidelity == 1.0


def test_tied_confidences_are_not_split():
    student = np.array([[0.7, 0.3], [0.7, 0.3], [0.6, 0.4]])
    teacher = np.array([[0.9, 0.1], [0.1, 0.9], [0.9, 0.1]])
    cal = calibrate_threshold(student, teacher, 0.9)
    # Routing just the first 0.7 input would give 3/3, but a threshold cannot separate it from its
    # tie (which disagrees), and routing both gives 2/3: so everything escalates.
    assert cal.threshold == NEVER and cal.escalated_share == 1.0


def test_blended_cost():
    assert blended_cost_per_1m(0.25, 40.0, 600.0) == pytest.approx(190.0)


def test_router_sends_low_confidence_inputs_to_the_teacher_only():
    asked = []

    def student(texts):
        return np.array([[0.95, 0.05] if "sure" in t else [0.55, 0.45] for t in texts])

    def teacher(texts):
        asked.extend(texts)
        return np.tile([[0.1, 0.9]], (len(texts), 1))

    out = Router(student, teacher, ["a", "b"], threshold=0.8).route(["sure thing", "maybe", "sure"])
    assert [o.route for o in out] == ["student", "teacher", "student"]
    assert [o.label for o in out] == ["a", "b", "a"]
    assert asked == ["maybe"]
    assert out[1].confidence == pytest.approx(0.55)

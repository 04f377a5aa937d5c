"""Route each request to the student when it is confident, else escalate to the teacher.

The student's confidence is its max label probability. The threshold is calibrated on a held-out
split where the teacher's distributions are already known: escalated answers come from the teacher,
so they agree with it by definition, and the routed fidelity at threshold ``t`` is

    (agreements among inputs with confidence ≥ t + number of inputs below t) / n

which never decreases as ``t`` grows. The calibrated threshold is the lowest one that keeps routed
fidelity at or above the floor, i.e. the one that escalates least.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from distil.spec.models import Spec

# A predictor here is anything that maps inputs to label distributions: float [n, L].
Predictor = Callable[[Sequence[str]], np.ndarray]

NEVER = float(np.nextafter(1.0, 2.0))  # a threshold no probability reaches: escalate everything


@dataclass(frozen=True)
class Calibration:
    """A calibrated threshold and what it gives on the split it was fitted on."""

    threshold: float
    routed_fidelity: float
    escalated_share: float
    student_fidelity: float  # agreement with nothing escalated, for comparison
    target: float
    n: int

    def as_dict(self) -> dict[str, float]:
        return {
            k: getattr(self, k)
            for k in ("threshold", "routed_fidelity", "escalated_share", "student_fidelity", "target", "n")
        }


def routed_fidelity(student_probs: np.ndarray, teacher_probs: np.ndarray, threshold: float) -> tuple[float, float]:
    """(routed fidelity, escalated share) of ``threshold`` on ``student_probs`` / ``teacher_probs`` [n, L]."""
    s, t = np.asarray(student_probs, dtype=np.float64), np.asarray(teacher_probs, dtype=np.float64)
    if len(s) == 0:
        return float("nan"), float("nan")
    routed = s.max(axis=1) >= threshold
    agree = s.argmax(axis=1) == t.argmax(axis=1)
    return float(np.mean(np.where(routed, agree, True))), float(np.mean(~routed))


def calibrate_threshold(student_probs: np.ndarray, teacher_probs: np.ndarray, target: float) -> Calibration:
    """The lowest threshold whose routed fidelity on these examples is ≥ ``target``.

    student_probs, teacher_probs: [n, L]. Candidate thresholds are the distinct student confidences
    (routing the k most confident inputs to the student), plus :data:`NEVER`. O(n log n).
    """
    s, t = np.asarray(student_probs, dtype=np.float64), np.asarray(teacher_probs, dtype=np.float64)
    if s.shape != t.shape or s.ndim != 2:
        raise ValueError(f"student and teacher distributions must both be [n, L], got {s.shape} and {t.shape}")
    n = len(s)
    if n == 0:
        raise ValueError("cannot calibrate a threshold on zero examples")
    confidence = s.max(axis=1)
    agree = (s.argmax(axis=1) == t.argmax(axis=1)).astype(np.int64)
    order = np.argsort(-confidence, kind="stable")
    conf_sorted, agree_sorted = confidence[order], agree[order]
    # fidelity_k[k] when the k most confident go to the student (k = 0 … n)
    agreed = np.concatenate([[0], np.cumsum(agree_sorted)])
    k = np.arange(n + 1)
    fidelity_k = (agreed + (n - k)) / n
    # Only cut between distinct confidences: a threshold cannot split tied inputs.
    valid = np.ones(n + 1, dtype=bool)
    valid[1:n] = conf_sorted[1:] < conf_sorted[:-1]
    ok = np.flatnonzero(valid & (fidelity_k >= target - 1e-12))
    best = int(ok.max()) if ok.size else 0  # k = 0 always meets any target ≤ 1
    threshold = float(conf_sorted[best - 1]) if best > 0 else NEVER
    return Calibration(
        threshold=threshold,
        routed_fidelity=float(fidelity_k[best]),
        escalated_share=float((n - best) / n),
        student_fidelity=float(agree.mean()),
        target=float(target),
        n=n,
    )


def target_fidelity(spec: Spec) -> float:
    """The routed-fidelity floor a calibrated threshold keeps: router.target_fidelity, else gate.fidelity_min, else
    0.95."""
    return spec.router.target_fidelity or spec.gate.fidelity_min or 0.95


def spec_calibration(spec: Spec, student_probs: np.ndarray, teacher_probs: np.ndarray) -> Calibration:
    """What the router the spec describes does on these examples: the spec's fixed threshold, else the calibrated one.

    ``distil serve`` and ``distil evaluate`` (the escalation share in the payback) both call it on the
    validation split, so the share a deployment pays for is the share the evaluation priced.
    """
    target = target_fidelity(spec)
    if isinstance(spec.router.threshold, float):
        s, t = np.asarray(student_probs, dtype=np.float64), np.asarray(teacher_probs, dtype=np.float64)
        fidelity, share = routed_fidelity(s, t, spec.router.threshold)
        agree = float(np.mean(s.argmax(axis=1) == t.argmax(axis=1))) if len(s) else float("nan")
        return Calibration(float(spec.router.threshold), fidelity, share, agree, float(target), len(s))
    return calibrate_threshold(student_probs, teacher_probs, target)


def blended_cost_per_1m(escalated_share: float, student_per_1m: float, teacher_per_1m: float) -> float:
    """Cost of 1M requests: every request runs the student; the escalated share also pays the teacher."""
    return float(student_per_1m + escalated_share * teacher_per_1m)


@dataclass(frozen=True)
class Routed:
    """One routed answer."""

    label: str
    distribution: list[float]
    route: str  # "student", "teacher", or "student_fallback" (should have escalated; the teacher was not available)
    confidence: float  # the student's max probability (what the route was decided on)
    fallback: str | None = None  # why a student_fallback answer was not the teacher's: teacher_busy | teacher_slow | …


@dataclass
class RouteTiming:
    """Seconds spent per batch: in the student, in the teacher, and in the routing itself."""

    student_s: float = 0.0
    teacher_s: float = 0.0
    router_s: float = 0.0


class Router:
    """Ask the student; send inputs below ``threshold`` to the teacher. Pure apart from the two predictors."""

    def __init__(self, student: Predictor, teacher: Predictor | None, labels: Sequence[str], threshold: float):
        self.student = student
        self.teacher = teacher
        self.labels = list(labels)
        self.threshold = float(threshold) if teacher is not None else 0.0  # no teacher: the student answers all

    def route(self, inputs: Sequence[str], timing: RouteTiming | None = None) -> list[Routed]:
        timing = timing if timing is not None else RouteTiming()
        if not inputs:
            return []
        t0 = time.perf_counter()
        student_probs = np.asarray(self.student(list(inputs)), dtype=np.float64)
        t1 = time.perf_counter()
        timing.student_s += t1 - t0
        escalate_index, final = self.decide(student_probs)
        t2 = time.perf_counter()
        timing.router_s += t2 - t1
        if escalate_index.size:
            teacher_probs = np.asarray(self.teacher([inputs[i] for i in escalate_index]), dtype=np.float64)
            final[escalate_index] = teacher_probs
        t3 = time.perf_counter()
        timing.teacher_s += t3 - t2
        out = self.answers(final, student_probs, escalate_index)
        timing.router_s += time.perf_counter() - t3
        return out

    def decide(self, student_probs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(indices to escalate [k], a copy of the distributions to fill in [n, L])."""
        confidence = student_probs.max(axis=1)
        escalate = (
            np.flatnonzero(confidence < self.threshold) if self.teacher is not None else np.zeros(0, dtype=np.int64)
        )
        return escalate, student_probs.copy()

    def answers(
        self, final: np.ndarray, student_probs: np.ndarray, escalate_index: np.ndarray, fallback: str | None = None
    ) -> list[Routed]:
        """One answer per row of ``final``; with ``fallback`` (the reason) the escalated rows kept the student's
        distribution and are marked ``student_fallback``."""
        escalated = np.zeros(len(final), dtype=bool)
        escalated[escalate_index] = True
        confidence = student_probs.max(axis=1)
        routed_up = "teacher" if fallback is None else "student_fallback"
        return [
            Routed(
                label=self.labels[int(np.argmax(row))],
                distribution=[float(x) for x in row],
                route=routed_up if escalated[i] else "student",
                confidence=float(confidence[i]),
                fallback=fallback if escalated[i] else None,
            )
            for i, row in enumerate(final)
        ]

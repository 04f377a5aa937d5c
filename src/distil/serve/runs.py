"""Find the run to serve and load its student and the router's teacher.

The student is loaded with the training stage's ``distil.train.students.load_predictor(folder)``;
the teacher with ``distil.teachers.registry.build_teacher``. Every model is called by one thread at a
time; the server puts each behind its own bounded micro-batching queue (``distil.serve.batching``).
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from distil.errors import RunError
from distil.evaluate.predictions import paired
from distil.files import write_json_atomic
from distil.runs import LIST_RUNS_HINT, RunDir, run_or_latest
from distil.serve.context import ContextFitter, student_fitter
from distil.serve.router import blended_cost_per_1m, spec_calibration, target_fidelity
from distil.spec.io import Project
from distil.spec.models import ServeSpec
from distil.teachers.registry import build_teacher


def served_run(project: Project, run_id: str | None) -> RunDir:
    """The run ``run_id`` (default: the router's first specialist, else the newest decided ship, else the newest
    trained) with its student folder."""
    specialists = project.spec.router.specialists
    run = run_or_latest(project, run_id or (specialists[0] if specialists else None), shipped_first=True)
    if not run.student.is_dir():
        raise RunError(f"run {run.run_id}: no student/ folder under {run.folder}", hint=LIST_RUNS_HINT)
    return run


class LockedPredictor:
    """One model call at a time: the server calls from a thread pool, and a tokenizer is not thread-safe."""

    def __init__(self, predictor: Any, lock: threading.Lock | None = None):
        self.predictor = predictor
        self.labels = list(getattr(predictor, "labels", []) or [])
        self._lock = lock or threading.Lock()  # given: the predictor shares its model with others that take it too

    def label_distribution(self, inputs: Sequence[str]) -> np.ndarray:
        with self._lock:
            return self.predictor.label_distribution(list(inputs))

    def generate(self, inputs: Sequence[str], **params: Any) -> list[str]:
        with self._lock:
            return self.predictor.generate(list(inputs), **params)


def load_student(folder: str | Path) -> LockedPredictor:
    """The training stage's predictor for a student folder, made safe to call from several threads."""
    from distil.train.students import load_predictor

    return LockedPredictor(load_predictor(Path(folder)))


@dataclass
class ServedModel:
    """Everything the server needs: the run, its student, the teacher (optional) and the threshold."""

    run_id: str
    kind: str  # classify | generate
    labels: list[str]
    student: Any
    teacher: Any | None
    threshold: float
    teacher_id: str | None = None
    student_per_1m: float = 0.0
    teacher_per_1m: float = 0.0
    calibration: dict[str, float] | None = None
    limits: ServeSpec = field(default_factory=ServeSpec)  # queues, deadlines, connection limits
    fit: ContextFitter | None = None  # cuts an input to the student's context (None: inputs go as sent)
    project_name: str = ""  # another name `model` may take for the student (empty: only the run id)


def router_target(project: Project) -> float:
    return target_fidelity(project.spec)


def validation_distributions(run: RunDir, student: Any, split: str = "validation") -> tuple[np.ndarray, np.ndarray]:
    """(teacher, student) label distributions [n, L] on ``split`` of the run's dataset.

    Read from the run's ``predictions.parquet`` when ``distil evaluate`` wrote it; else the teacher's
    recorded distributions, with ``student`` asked for its own.
    """
    if run.predictions.is_file():
        pairs = [(t, s) for t, s in paired(run.predictions, split, "student") if t["distribution"] is not None]
        if pairs:
            teacher = np.array([t["distribution"] for t, _ in pairs], dtype=np.float64)
            return teacher, np.array([s["distribution"] for _, s in pairs], dtype=np.float64)
    records = [r for r in run.dataset().records(split) if r.label_probs is not None]
    if not records:
        return np.zeros((0, 0)), np.zeros((0, 0))
    teacher = np.array([r.label_probs for r in records], dtype=np.float64)
    return teacher, np.asarray(student.label_distribution([r.input for r in records]), dtype=np.float64)


def calibrate_router(project: Project, run: RunDir, student: Any, split: str = "validation"):
    """Calibrate the threshold on ``split`` of the run's curated data; None when there is no labelled split."""
    teacher_probs, student_probs = validation_distributions(run, student, split)
    if not len(teacher_probs):
        return None
    return spec_calibration(project.spec, student_probs, teacher_probs)


def write_router_report(run: RunDir, calibration: Any, cost: Any) -> Path:
    """``<run>/router.json``: the calibrated threshold, the share escalated and the blended cost (for the report)."""
    body = {
        **calibration.as_dict(),
        "currency": cost.currency,
        "blended_cost_per_1m": blended_cost_per_1m(
            calibration.escalated_share, cost.student_per_1m_requests, cost.teacher_per_1m_requests
        ),
        "student_per_1m": cost.student_per_1m_requests,
        "teacher_per_1m": cost.teacher_per_1m_requests,
    }
    return write_json_atomic(run.router, body)


def use_threads(threads: int | None) -> None:
    """Set the threads a forward pass uses in this process (None: leave torch's default)."""
    if threads is not None:
        import torch

        torch.set_num_threads(threads)


def load_served(
    project: Project, run_id: str | None = None, threshold: float | None = None, with_teacher: bool = True
) -> ServedModel:
    """The run's student, the router's teacher and its threshold, ready for :func:`create_app`.

    Threshold: ``threshold`` if given, else the spec's number, else calibrated on the validation
    split (0.0 — the student answers everything — when there is nothing to calibrate on).
    """
    run = served_run(project, run_id)
    task = project.spec.task
    use_threads(project.spec.serve.threads)
    folder = run.checked_model("student")  # its files checked against the ledger first
    student = load_student(folder)
    labels = list(getattr(student, "labels", None) or task.label_names)
    teacher = None
    teacher_id = project.spec.router.generalist or project.spec.teachers[0].id
    if with_teacher and task.kind == "classify":
        teacher = LockedPredictor(build_teacher(project, project.spec.teacher(teacher_id)))
    calibration = None
    if threshold is None and isinstance(project.spec.router.threshold, float):
        threshold = project.spec.router.threshold
    if threshold is None and task.kind == "classify":
        found = calibrate_router(project, run, student)
        calibration = found.as_dict() if found else None
        threshold = found.threshold if found else 0.0
        if found:
            write_router_report(run, found, project.spec.cost)
    return ServedModel(
        run_id=run.run_id,
        kind=task.kind,
        labels=labels,
        student=student,
        teacher=teacher,
        threshold=float(threshold or 0.0),
        teacher_id=teacher_id if teacher is not None else None,
        student_per_1m=project.spec.cost.student_per_1m_requests,
        teacher_per_1m=project.spec.cost.teacher_per_1m_requests,
        calibration=calibration,
        limits=project.spec.serve,
        fit=student_fitter(folder),
        project_name=project.spec.name,
    )

"""What the triage benchmarks share: the quickstart project built once, the teacher's labels on the development
tickets (``examples/triage/dev.jsonl``), one student trained alone, and its agreement with the teacher there.

Neither the test split nor the gold set is read: the development tickets are outside the project's data, and
their hand labels play no part.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "triage"
DEV = EXAMPLE / "dev.jsonl"


def build_project(work: Path):  # noqa: ANN201 - distil.spec.io.Project
    """The quickstart project in ``work``: init from examples/triage, generate, curate (skipped when done)."""
    from distil.data.curate import curate
    from distil.data.generate import generate_dataset
    from distil.errors import DataError
    from distil.runs import latest_curated
    from distil.spec.gate import lock_gate
    from distil.spec.io import load_project
    from distil.spec.templates import init_project

    spec_path = work / "distil.yaml"
    if not spec_path.is_file():
        init_project(work, example="triage")
    project = load_project(spec_path)
    lock_gate(project, project.spec.roles.sponsor)  # no teacher is asked anything before the gate is locked
    try:
        latest_curated(project)
        print(f"reusing the curated data in {work}", flush=True)
        return project, None
    except DataError:
        pass
    started = time.perf_counter()
    generated = generate_dataset(project, actor=project.spec.roles.driver, show_progress=False)
    curated = curate(project, actor=project.spec.roles.driver)
    print(f"generate {generated.counts}, curate {curated.counts}", flush=True)
    return project, time.perf_counter() - started


def teacher_on_dev(project, cache: Path) -> np.ndarray:  # noqa: ANN001
    """The teacher's label distribution on the development inputs, computed once and kept in ``cache``."""
    if cache.is_file():
        return np.array(json.loads(cache.read_text()))
    from distil.data.sources import read_inputs
    from distil.files import write_json_atomic
    from distil.teachers.registry import build_teacher

    teacher = build_teacher(project, actor=project.spec.roles.driver)
    probs = teacher.label_distribution([item.input for item in read_inputs(DEV)])
    write_json_atomic(cache, probs.tolist())
    return probs


def train_alone(project, run_id: str) -> tuple[Path, float]:  # noqa: ANN001
    """Train the student alone (no baseline) on the project's newest curated data; its folder and the seconds."""
    from rich.console import Console

    from distil.train.trainer import train_run

    started = time.perf_counter()
    result = train_run(project, baseline=False, run_id=run_id, console=Console(quiet=True))
    return result.run_dir / "student", time.perf_counter() - started


def dev_scores(student: Path, teacher_probs: np.ndarray) -> dict[str, float]:
    """A trained student's agreement with the teacher's labels on the development inputs, and the KL from the
    teacher's distribution to the student's."""
    from distil.data.sources import read_inputs
    from distil.train.students import load_predictor

    probs = load_predictor(student).label_distribution([item.input for item in read_inputs(DEV)])
    agreement = float((probs.argmax(axis=1) == teacher_probs.argmax(axis=1)).mean())
    log_ratio = np.log(np.clip(teacher_probs, 1e-9, 1)) - np.log(np.clip(probs, 1e-9, 1))
    return {"agreement": agreement, "kl": float(np.mean(np.sum(teacher_probs * log_ratio, axis=1)))}


def dev_label_counts(spec, teacher_probs: np.ndarray) -> str:  # noqa: ANN001
    """The teacher's labels on the development inputs, counted ("40 billing, 41 technical, ...")."""
    predicted = teacher_probs.argmax(axis=1)
    return ", ".join(f"{int((predicted == i).sum())} {n}" for i, n in enumerate(spec.task.label_names))

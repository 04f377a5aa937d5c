"""`distil iterate`: one targeted round — mine the last run's failures, ask the teacher for inputs like
them, label, curate, retrain, evaluate — and one ``iteration`` ledger row for the round.

Failures are mined from the validation split and the probe pool (teacher-labelled inputs set aside at
curate time, never trained on), never from the test split or the gold set: those are locked evaluation
sets (:mod:`distil.data.evalsets`), and inputs written to resemble them would leak them into training.
A failure is an item where the student's top label differs from the teacher's, or an item of a slice
below the gate's per-slice floor. With ``--from-traffic`` the targets are the served traffic the newest
monitor report found wrong or escalated. Either way the next curate keeps the locked test split and
removes near-duplicates of test and gold items from the new data.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from distil.cadence import CadenceResult, run_cadence
from distil.data.records import Record, read_records
from distil.data.split import PROBE
from distil.errors import DistilError, EvaluationError
from distil.spec.gate import require_unchanged_gate
from distil.spec.io import Project


class IterationLimitError(DistilError):
    """The gate's max_iterations rounds are spent."""

    default_hint = "run `distil decide --as <validator>`: with the iterations spent it can only ship or kill"


@dataclass
class Failure:
    input: str
    tags: dict[str, str]
    teacher_label: str | None
    student_label: str | None
    reason: str


@dataclass
class IterationResult:
    round: int
    from_run: str
    failures: list[Failure] = field(default_factory=list)
    targets: int = 0
    labelled: int = 0
    cadence: CadenceResult | None = None
    fidelity_before: float | None = None
    fidelity_after: float | None = None


def iterations_used(project: Project) -> int:
    return len(project.ledger.events(kind="iteration"))


def _evaluation(project: Project, run_id: str) -> dict[str, Any]:
    path = project.runs_dir / run_id / "evaluation.json"
    if not path.is_file():
        raise EvaluationError(f"iterate: run {run_id} has no evaluation.json", hint=f"run `distil evaluate {run_id}` first")
    return json.loads(path.read_text(encoding="utf-8"))


def weak_slices(evaluation: dict[str, Any], floor: float | None) -> set[tuple[str, str]]:
    """(slice, value) pairs whose student agreement is below ``floor``."""
    if floor is None:
        return set()
    out = set()
    for name, values in (evaluation.get("student", {}).get("slices") or {}).items():
        for value, row in values.items():
            agreement = row.get("agreement")
            if agreement is not None and agreement < floor:
                out.add((name, value))
    return out


MINED_SPLITS = ("validation", PROBE)  # never test: it is the locked yardstick every round is measured on


def mining_pool(dataset_dir: Path) -> list[Record]:
    """The records failures may be mined from: the validation split and the probe pool (when the dataset has one)."""
    return [r for name in MINED_SPLITS if (dataset_dir / f"{name}.parquet").is_file() for r in read_records(dataset_dir / f"{name}.parquet")]


def mine_failures(project: Project, run_id: str, evaluation: dict[str, Any], floor: float | None) -> list[Failure]:
    """Validation and probe items where the student disagrees with the teacher, and their items of weak slices."""
    from distil.evaluate.run import curated_dataset_for
    from distil.train.students import load_predictor

    dataset_dir, _ = curated_dataset_for(project, run_id)
    held_out = mining_pool(dataset_dir)
    if not held_out:
        return []
    weak = weak_slices(evaluation, floor)
    failures: list[Failure] = []
    if project.spec.task.kind == "classify":
        names = project.spec.task.label_names
        predictor = load_predictor(project.runs_dir / run_id / "student")
        student = np.asarray(predictor.label_distribution([r.input for r in held_out])).argmax(axis=1)
        for record, s in zip(held_out, student, strict=True):
            teacher = record.label or (names[int(np.argmax(record.label_probs))] if record.label_probs else None)
            in_weak = [f"{k}={v}" for k, v in record.tags.items() if (k, v) in weak]
            if teacher is not None and names[int(s)] != teacher:
                failures.append(Failure(record.input, record.tags, teacher, names[int(s)], "student disagrees with the teacher"))
            elif in_weak:
                failures.append(Failure(record.input, record.tags, teacher, names[int(s)], f"slice below the floor: {', '.join(in_weak)}"))
    else:
        failures = [
            Failure(r.input, r.tags, None, None, f"slice below the floor: {k}={v}")
            for r in held_out for k, v in r.tags.items() if (k, v) in weak
        ]
    return failures


def iterate_round(
    project: Project,
    actor: str = "",
    console: Any = None,
    budget: int | None = None,
    from_traffic: bool = False,
    requests: int = 100,
    threads: int | None = None,
) -> IterationResult:
    """Run one targeted round and record it. Refuses once the locked gate's max_iterations are spent."""
    from distil.data.generate import label_new_inputs, synthetic_items
    from distil.data.sources import InputItem
    from distil.evaluate.run import latest_run_id
    from distil.ledger.store import canonical_json
    from distil.teachers.registry import build_teacher

    locked = require_unchanged_gate(project)
    assert locked is not None
    limit = int(locked.thresholds.get("max_iterations") or project.spec.gate.max_iterations)
    used = iterations_used(project)
    if used >= limit:
        raise IterationLimitError(f"iterate: gate.max_iterations ({limit}) rounds already run")
    actor = actor or project.spec.roles.driver
    run_id = latest_run_id(project)
    evaluation = _evaluation(project, run_id)
    result = IterationResult(round=used + 1, from_run=run_id, fidelity_before=evaluation.get("student", {}).get("agreement"))

    teacher = build_teacher(project, actor=actor)
    if from_traffic:
        from distil.monitor.check import targets_from_traffic

        targets = [InputItem(t.input, tags=dict(t.tags), source="traffic") for t in targets_from_traffic(project)]
        source = "traffic"
    else:
        result.failures = mine_failures(project, run_id, evaluation, locked.thresholds.get("per_slice_fidelity_min"))
        seeds = [InputItem(f.input, label=f.teacher_label, tags=f.tags, source="targeted") for f in result.failures]
        want = budget if budget is not None else max(len(seeds) * 4, project.spec.data.synthetic_budget // 2)
        # The round number goes into the seed so a later round asks for new inputs, not cached ones.
        round_project = _with_data_seed(project, project.spec.data.seed + 1000 * result.round)
        targets = synthetic_items(round_project, teacher, seeds, want) if seeds else []
        source = "targeted"
    result.targets = len(targets)
    if targets:
        records, _shard = label_new_inputs(
            project, [t.input for t in targets], source=source, tags=[t.tags for t in targets], teacher=teacher, actor=actor,
            show_progress=console is not None,
        )
        result.labelled = len(records)
    del teacher

    result.cadence = run_cadence(project, actor=actor, console=console, requests=requests, threads=threads)
    after = _evaluation(project, result.cadence.run_id) if result.cadence.run_id else {}
    result.fidelity_after = after.get("student", {}).get("agreement")
    project.ledger.append(
        "iteration",
        {
            "round": result.round,
            "from_run": run_id,
            "to_run": result.cadence.run_id,
            "source": source,
            "failures": len(result.failures),
            "failure_reasons": json.loads(canonical_json(_count_reasons(result.failures))),
            "targets": result.targets,
            "labelled": result.labelled,
            "fidelity_before": result.fidelity_before,
            "fidelity_after": result.fidelity_after,
            "max_iterations": limit,
        },
        actor=actor,
    )
    return result


def _count_reasons(failures: list[Failure]) -> dict[str, int]:
    out: dict[str, int] = {}
    for f in failures:
        key = f.reason.split(":")[0]
        out[key] = out.get(key, 0) + 1
    return out


def _with_data_seed(project: Project, seed: int) -> Project:
    spec = project.spec.model_copy(update={"data": project.spec.data.model_copy(update={"seed": seed})})
    return Project(spec_path=project.spec_path, spec=spec)

"""`distil iterate`: one targeted round — mine the last run's failures, ask the teacher for inputs like
them, label, curate, retrain, evaluate — and one ``iteration`` ledger row for the round.

The teacher's new inputs are screened before labelling (:mod:`distil.data.written`): near-copies of each other or
of the failures they were written from, the writing header itself and malformed inputs are dropped and counted.

Failures are mined from the validation split and the probe pool (teacher-labelled inputs set aside at
curate time, never trained on), never from the test split or the gold set: those are locked evaluation
sets (:mod:`distil.data.evalsets`), and inputs written to resemble them would leak them into training.
A failure is an item where the student's top label differs from the teacher's, or an item of a slice
below the gate's per-slice floor. With ``--from-traffic`` the targets are the served traffic the newest
monitor report found wrong or escalated. With ``untargeted`` the round is the control arm: the same number
of new inputs written the plain way (the seeds under ``data.synthetic_header``, no failures shown), screened,
labelled, curated and trained on alike, so what targeting adds can be measured against it. Either way the next
curate keeps the locked test split and removes near-duplicates of test and gold items from the new data.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from distil.cadence import CadenceResult, run_cadence
from distil.data.generate import label_new_inputs, synthetic_items
from distil.data.sources import InputItem, read_seed_inputs
from distil.data.split import PROBE
from distil.data.written import Screened, screen_written_inputs
from distil.errors import DistilError, EvaluationError
from distil.evaluate.predictions import paired
from distil.ledger.store import canonical_json
from distil.monitor.check import targets_from_traffic
from distil.runs import RunDir, latest_run
from distil.spec.gate import require_unchanged_gate
from distil.spec.io import Project
from distil.teachers.base import Teacher
from distil.teachers.registry import build_teacher


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
    source: str = ""  # targeted | untargeted | traffic
    failures: list[Failure] = field(default_factory=list)
    targets: int = 0
    dropped: dict[str, int] = field(default_factory=dict)  # new inputs not labelled, by reason (distil.data.written)
    labelled: int = 0
    cadence: CadenceResult | None = None
    fidelity_before: float | None = None
    fidelity_after: float | None = None


def iterations_used(project: Project) -> int:
    return len(project.ledger.events(kind="iteration"))


def _evaluation(run: RunDir) -> dict[str, Any]:
    if not run.evaluation.is_file():
        raise EvaluationError(
            f"iterate: run {run.run_id} has no evaluation.json", hint=f"run `distil evaluate {run.run_id}` first"
        )
    return json.loads(run.evaluation.read_text(encoding="utf-8"))


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


def mine_failures(
    run: RunDir, evaluation: dict[str, Any], floor: float | None, splits: tuple[str, ...] = MINED_SPLITS
) -> list[Failure]:
    """Items of ``splits`` (validation and the probe pool) where the student disagrees with the teacher, and
    their items of weak slices.

    The answers are the ones ``distil evaluate`` kept in the run's ``predictions.parquet``; no model is loaded.
    """
    pairs = [pair for split in splits for pair in paired(run.predictions, split, "student")]
    weak = weak_slices(evaluation, floor)
    failures: list[Failure] = []
    for teacher, student in pairs:
        tags = teacher["tags"]
        in_weak = [f"{k}={v}" for k, v in tags.items() if (k, v) in weak]
        if teacher["label"] is not None and student["label"] != teacher["label"]:
            failures.append(
                Failure(
                    teacher["input"], tags, teacher["label"], student["label"], "student disagrees with the teacher"
                )
            )
        elif in_weak:
            failures.append(
                Failure(
                    teacher["input"],
                    tags,
                    teacher["label"],
                    student["label"],
                    f"slice below the floor: {', '.join(in_weak)}",
                )
            )
    return failures


def iterate_round(
    project: Project,
    actor: str = "",
    console: Any = None,
    budget: int | None = None,
    from_traffic: bool = False,
    requests: int = 100,
    threads: int | None = None,
    untargeted: bool = False,
    seed: int | None = None,
) -> IterationResult:
    """Run one round and record it. Refuses once the locked gate's max_iterations are spent.

    ``budget``: new inputs to ask the teacher for (targeted), or new inputs to label (``untargeted``, so a control
    round can be given the count a targeted round labelled). ``seed``: the seed of the teacher's writing
    (default ``data.seed``); the round number is added to it.
    """
    if untargeted and from_traffic:
        raise DistilError("iterate: --untargeted and --from-traffic are two different rounds; choose one")
    locked = require_unchanged_gate(project)
    assert locked is not None
    limit = int(locked.thresholds.get("max_iterations") or project.spec.gate.max_iterations)
    used = iterations_used(project)
    if used >= limit:
        raise IterationLimitError(f"iterate: gate.max_iterations ({limit}) rounds already run")
    actor = actor or project.spec.roles.driver
    run = latest_run(project)
    run_id = run.run_id
    evaluation = _evaluation(run)
    result = IterationResult(
        round=used + 1, from_run=run_id, fidelity_before=evaluation.get("student", {}).get("agreement")
    )

    teacher = build_teacher(project, actor=actor)
    if from_traffic:
        targets = [InputItem(t.input, tags=dict(t.tags), source="traffic") for t in targets_from_traffic(project)]
        source = "traffic"
    else:
        result.failures = mine_failures(run, evaluation, locked.thresholds.get("per_slice_fidelity_min"))
        # The round number goes into the seed so a later round asks for new inputs, not cached ones.
        writing_seed = (project.spec.data.seed if seed is None else seed) + 1000 * result.round
        round_project = _with_data_seed(project, writing_seed)
        if untargeted:  # the control arm: the failures are mined for the ledger row, not shown to the teacher
            count = budget if budget is not None else project.spec.data.synthetic_budget // 2
            screened = plain_inputs(round_project, teacher, count)
            source = "untargeted"
        else:
            seeds = [InputItem(f.input, label=f.teacher_label, tags=f.tags, source="targeted") for f in result.failures]
            want = budget if budget is not None else max(len(seeds) * 4, project.spec.data.synthetic_budget // 2)
            written = synthetic_items(round_project, teacher, seeds, want) if seeds else []
            # near-copies of each other, of the failures or of the writing header are dropped before any is labelled
            screened = screen_written_inputs(project.spec, written, known=[s.input for s in seeds])
            source = "targeted"
        targets, result.dropped = screened.kept, screened.dropped
    result.source = source
    result.targets = len(targets)
    if targets:
        records, _shard = label_new_inputs(
            project,
            [t.input for t in targets],
            source="synthetic" if untargeted else source,  # plain writing: curated as the first round's synthetic
            tags=[t.tags for t in targets],
            teacher=teacher,
            actor=actor,
            show_progress=console is not None,
        )
        result.labelled = len(records)
    del teacher

    result.cadence = run_cadence(project, actor=actor, console=console, requests=requests, threads=threads)
    after = _evaluation(RunDir(project, result.cadence.run_id)) if result.cadence.run_id else {}
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
            "dropped": result.dropped,
            "labelled": result.labelled,
            "fidelity_before": result.fidelity_before,
            "fidelity_after": result.fidelity_after,
            "max_iterations": limit,
        },
        actor=actor,
    )
    return result


MAX_ASK_FACTOR = 4  # a control round asks for at most this many times the inputs it labels


def plain_inputs(project: Project, teacher: Teacher, count: int) -> Screened:
    """``count`` new inputs written the plain way (the seeds shown under ``data.synthetic_header``, as `distil
    generate` writes them), screened as a targeted round's are: the teacher is asked for ``count``, then twice as
    many while screening leaves too few (the first slots are the same prompts, so they come from the call cache),
    up to ``MAX_ASK_FACTOR`` times ``count``; the first ``count`` kept are returned."""
    spec = project.spec
    seeds = read_seed_inputs(project.path(spec.data.seeds), spec)
    asked, screened = count, Screened([])
    while count > 0:
        written = synthetic_items(project, teacher, seeds, asked)
        screened = screen_written_inputs(spec, written, known=[s.input for s in seeds])
        if len(screened.kept) >= count or asked >= MAX_ASK_FACTOR * count:
            break
        asked = min(asked * 2, MAX_ASK_FACTOR * count)
    return Screened(screened.kept[:count], screened.dropped)


def _count_reasons(failures: list[Failure]) -> dict[str, int]:
    out: dict[str, int] = {}
    for f in failures:
        key = f.reason.split(":")[0]
        out[key] = out.get(key, 0) + 1
    return out


def _with_data_seed(project: Project, seed: int) -> Project:
    spec = project.spec.model_copy(update={"data": project.spec.data.model_copy(update={"seed": seed})})
    return Project(spec_path=project.spec_path, spec=spec)

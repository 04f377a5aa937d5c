"""`distil iterate`: one targeted round — mine the last run's failures, ask the teacher for inputs like
them, label, curate, retrain, evaluate — and one ``iteration`` ledger row for the round.

The teacher's new inputs are screened before labelling (:mod:`distil.data.written`): near-copies of each other or
of the failures they were written from, the writing header itself and malformed inputs are dropped and counted.

Failures are mined from the validation split and the probe pool (teacher-labelled inputs set aside at
curate time, never trained on), never from the test split or the gold set: those are locked evaluation
sets (:mod:`distil.data.evalsets`), and inputs written to resemble them would leak them into training.
A failure is an item where the student's top label differs from the teacher's; a slice of the mined items
below the gate's per-slice floor (and below the student's agreement on all of them) adds as many of its agreed
items as it has failures, those the student is least sure of. With ``--from-traffic`` the targets are the
served traffic the newest monitor report found wrong or escalated. With ``untargeted`` the round is the
control arm: the same number of new inputs written the plain way (the seeds under ``data.synthetic_header``,
no failures shown), screened, labelled, curated and trained on alike, so what targeting adds can be measured
against it. Either way the next curate keeps the locked test split and removes near-duplicates of test and
gold items from the new data.
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


MINED_SPLITS = ("validation", PROBE)  # never test: it is the locked yardstick every round is measured on

Pair = tuple[dict[str, Any], dict[str, Any]]  # (teacher row, student row) of predictions.parquet


def _agrees(pair: Pair) -> bool:
    return pair[1]["label"] == pair[0]["label"]


def weak_slices(pairs: list[Pair], floor: float | None) -> dict[tuple[str, str], float]:
    """(slice, value) -> the student's agreement on the mined items of it, for the values below ``floor`` and below
    the student's agreement on all the mined items.

    Both bounds: when every slice is under the floor (a young student), the floor alone names them all and singles
    out none; the second bound keeps the values where the student does worse than it does elsewhere. The agreement
    is measured on the mined items themselves, never on the test split."""
    if floor is None or not pairs:
        return {}
    overall = sum(map(_agrees, pairs)) / len(pairs)
    counts: dict[tuple[str, str], list[int]] = {}
    for pair in pairs:
        for key in pair[0]["tags"].items():
            tally = counts.setdefault(key, [0, 0])
            tally[0] += _agrees(pair)
            tally[1] += 1
    rates = {key: agreed / n for key, (agreed, n) in counts.items()}
    return {key: rate for key, rate in rates.items() if rate < floor and rate < overall}


def _sureness(pair: Pair) -> float:
    """The student's probability of the teacher's top label (1.0 where there is no distribution: generate)."""
    teacher, student = pair
    if not teacher.get("distribution") or not student.get("distribution"):
        return 1.0
    top = max(range(len(teacher["distribution"])), key=teacher["distribution"].__getitem__)
    return float(student["distribution"][top])


def mine_failures(run: RunDir, floor: float | None, splits: tuple[str, ...] = MINED_SPLITS) -> list[Failure]:
    """The student's failures on ``splits`` (validation and the probe pool): every item where its top label differs
    from the teacher's; then, for each weak slice (:func:`weak_slices`), as many of its agreed items as it has
    disagreements, the ones the student is least sure of first — near misses, never more than the slice's
    outright failures, so a slice rule cannot turn every mined item into a "failure".

    The answers are the ones ``distil evaluate`` kept in the run's ``predictions.parquet``; no model is loaded.
    """
    pairs = [pair for split in splits for pair in paired(run.predictions, split, "student")]
    failures = [
        Failure(t["input"], t["tags"], t["label"], s["label"], "student disagrees with the teacher")
        for t, s in pairs
        if t["label"] is not None and s["label"] != t["label"]
    ]
    chosen = {f.input for f in failures}
    for (name, value), rate in sorted(weak_slices(pairs, floor).items(), key=lambda kv: (kv[1], kv[0])):
        members = [pair for pair in pairs if pair[0]["tags"].get(name) == value]
        missed = sum(1 for pair in members if not _agrees(pair))
        near = sorted((p for p in members if _agrees(p) and p[0]["input"] not in chosen), key=_sureness)[:missed]
        for teacher, student in near:
            chosen.add(teacher["input"])
            failures.append(
                Failure(
                    teacher["input"],
                    teacher["tags"],
                    teacher["label"],
                    student["label"],
                    f"slice below the floor: {name}={value} ({rate:.2f}), student unsure",
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
        result.failures = mine_failures(run, locked.thresholds.get("per_slice_fidelity_min"))
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

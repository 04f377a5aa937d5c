"""`distil monitor --stack stack.yaml`: the stack's traffic checked per specialist, and the router on labelled
requests.

For each specialist, the rows of the stack's traffic log that name it are checked as `distil monitor` checks one
project's (:func:`distil.monitor.drift.check_traffic`): the generalist (the reference the specialist was distilled
to agree with) is asked about a sample, agreement per window against the project's floor, input drift against the
project's training inputs, and the maintenance cadence's refresh date. A specialist **needs a refresh** when that
check raises an alert (agreement under the floor, significant drift) or its refresh is due.

The router model, when the stack has one, is checked on a labelled sample (JSONL with ``input`` and ``task``, the
specialist that should answer): its confusion matrix and accuracy with its Wilson interval.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from distil.data.dedupe import embed as minilm_embed
from distil.errors import DataError
from distil.evaluate.metrics import wilson_interval
from distil.files import write_json_atomic
from distil.monitor.check import last_trained, monitor_floor, reference_inputs
from distil.monitor.drift import check_traffic, refresh_due
from distil.serve.traffic import read_traffic, traffic_dir
from distil.spec.io import Project
from distil.stack.load import ROUTER, check_run, generalist_spec, load_specialist, open_project
from distil.stack.spec import Stack
from distil.teachers.registry import build_teacher

Predictor = Callable[[Sequence[str]], np.ndarray]  # texts -> label distributions [n, L]


@dataclass
class StackMonitorResult:
    specialists: dict[str, dict[str, Any]]  # name -> the single-project check, plus needs_refresh and why
    router: dict[str, Any] | None  # labels, confusion {true: {predicted: n}}, n, accuracy, interval
    alerts: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def read_labelled_sample(path: Path, names: Sequence[str]) -> list[tuple[str, str]]:
    """(input, task) per line of a JSONL file; DataError naming the line of a bad one."""
    if not path.is_file():
        raise DataError(f"{path}: labelled sample not found", hint="write JSONL lines with `input` and `task`")
    pairs = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except ValueError:
            raise DataError(f"{path}:{number}: not a JSON object") from None
        if not isinstance(row, dict) or not isinstance(row.get("input"), str) or row.get("task") not in names:
            raise DataError(
                f"{path}:{number}: needs `input` (text) and `task` (one of {', '.join(names)})",
                hint="correct the line; `task` names the specialist that should answer it",
            )
        pairs.append((row["input"], row["task"]))
    if not pairs:
        raise DataError(f"{path}: the labelled sample is empty")
    return pairs


def router_confusion(truth: Sequence[str], predicted: Sequence[str], labels: Sequence[str]) -> dict[str, Any]:
    """The router's confusion matrix ``{true: {predicted: n}}`` over ``labels``, and its accuracy with the count and
    95% Wilson interval behind it."""
    confusion = {t: {p: 0 for p in labels} for t in labels}
    for t, p in zip(truth, predicted, strict=True):
        confusion[t][p] += 1
    n = len(truth)
    right = sum(t == p for t, p in zip(truth, predicted, strict=True))
    low, high = wilson_interval(right, n)
    return {"labels": list(labels), "confusion": confusion, "n": n, "accuracy": right / n, "interval": [low, high]}


def check_specialist(
    project: Project,
    rows: list[dict[str, Any]],
    teacher: Predictor,
    embed: Callable[[Sequence[str]], np.ndarray] | None,
    sample: int,
    window: dt.timedelta,
    seed: int,
    now: dt.datetime,
) -> dict[str, Any]:
    """One specialist's traffic checked as `distil monitor` checks a project's, with its refresh verdict."""
    spec = project.spec
    reference = reference_inputs(project, seed=seed) if embed is not None else []
    reference_embeddings = np.asarray(embed(reference)) if embed is not None and len(reference) >= 2 else None
    result = check_traffic(
        rows,
        spec.task.label_names,
        teacher,
        reference_embeddings,
        embed,
        floor=monitor_floor(project),
        alpha=spec.maintenance.drift_alpha,
        sample=sample,
        window=window,
        seed=seed,
    )
    refresh = refresh_due(last_trained(project), spec.maintenance.refresh_days, now)
    reasons = list(result.alerts) + (["the maintenance refresh is due"] if refresh["overdue"] else [])
    checked = result.as_dict()
    checked.pop("examples")  # the texts stay in the log, under its retention, not copied into the report
    return {**checked, "refresh": refresh, "needs_refresh": bool(reasons), "reasons": reasons}


def run_stack_monitor(
    stack: Stack,
    since: dt.timedelta | None = None,
    sample: int = 200,
    window: dt.timedelta = dt.timedelta(days=1),
    labelled: Path | None = None,
    teacher_for: Callable[[Project], Predictor] | None = None,
    embed: Callable[[Sequence[str]], np.ndarray] | None = minilm_embed,
    seed: int = 0,
    now: dt.datetime | None = None,
) -> tuple[StackMonitorResult, Path]:
    """Check the stack's traffic per specialist and, with ``labelled``, its router; the result and its JSON path.

    ``teacher_for`` (default: the stack's generalist, built for the project's task) gives the reference each
    specialist is compared with; ``embed`` None skips the drift test."""
    now = now or dt.datetime.now(dt.UTC)
    names = [s.name for s in stack.spec.specialists]
    if labelled is not None and stack.spec.routing.by != "router":
        raise DataError(
            f"{stack.path.name}: routing.by is task, so there is no router to check against {labelled}",
            hint="drop the labelled sample, or give the stack a router model",
        )
    pairs = read_labelled_sample(labelled, names) if labelled is not None else []
    logged = [r for r in read_traffic(traffic_dir(stack.state_dir), since=(now - since) if since else None)]
    if not logged and not pairs:
        raise DataError(
            f"monitor: no traffic logged in {traffic_dir(stack.state_dir)}", hint="serve with `distil stack serve`"
        )
    if teacher_for is None:
        generalist = generalist_spec(stack)

        def teacher_for(project: Project) -> Predictor:
            return build_teacher(project, generalist).label_distribution

    specialists: dict[str, dict[str, Any]] = {}
    for entry in stack.spec.specialists:
        rows = [r for r in logged if r["model"] == entry.name and r["input"]]
        if not rows:
            specialists[entry.name] = {"n_traffic": 0, "needs_refresh": False, "reasons": ["no traffic logged"]}
            continue
        project = open_project(stack, entry.name, entry.project)
        specialists[entry.name] = check_specialist(
            project, rows, teacher_for(project), embed, sample, window, seed, now
        )
    router = None
    if pairs:
        ref = stack.spec.routing.router
        assert ref is not None  # checked above: the stack routes by a router
        served = load_specialist(stack, check_run(stack, ROUTER, ref.project, ref.run), None)
        probs = np.asarray(served.student.label_distribution([text for text, _ in pairs]), dtype=np.float64)
        predicted = [served.labels[int(i)] for i in probs.argmax(axis=1)]
        router = router_confusion([task for _, task in pairs], predicted, names)
    alerts = [f"{name}: {reason}" for name, s in specialists.items() if s["needs_refresh"] for reason in s["reasons"]]
    result = StackMonitorResult(specialists, router, alerts)
    out_dir = stack.state_dir / "monitor"
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"monitor-{now.strftime('%Y%m%dT%H%M%S')}.json"
    write_json_atomic(path, result.as_dict())
    return result, path

"""`distil monitor` as a recipe: read the traffic window, ask the teacher, embed, compare, record.

Writes ``.distil/monitor/<time>.json`` (the whole result, per-example outcomes included) and a plot
of agreement per window against the floor; appends an ``alert`` ledger row when a check fails.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from distil.data.dedupe import embed as minilm_embed
from distil.data.sources import read_seed_inputs, tag_slices
from distil.errors import DataError
from distil.files import write_json_atomic
from distil.monitor.drift import MonitorResult, TargetInput, check_traffic, refresh_due, targets_from_result
from distil.runs import latest_curated
from distil.serve.redaction import redact
from distil.serve.traffic import prune_traffic, read_traffic, traffic_dir
from distil.spec.io import Project
from distil.teachers.registry import build_teacher


def monitor_floor(project: Project) -> float:
    spec = project.spec
    return spec.maintenance.drift_floor or spec.gate.fidelity_min or 0.95


def reference_inputs(project: Project, limit: int = 256, seed: int = 0) -> list[str]:
    """What the student was trained on: the newest curated train split, else the seed inputs."""
    try:
        texts = [r.input for r in latest_curated(project).records("train")]
    except DataError:  # nothing curated yet: the seeds are what the student was meant to learn
        texts = []
    if not texts:
        seeds = project.path(project.spec.data.seeds)
        if seeds.is_file():
            texts = [item.input for item in read_seed_inputs(seeds, project.spec)]
    if len(texts) > limit:
        rng = np.random.default_rng(seed)
        texts = [texts[i] for i in sorted(rng.choice(len(texts), size=limit, replace=False))]
    return texts


def kept_example(example: dict[str, Any], store_inputs: bool, redaction: bool) -> dict[str, Any]:
    """A checked request as the monitor report may keep it: the spec's current choice of what traffic text is
    kept applies to the report too, so text logged before that choice changed is not copied further."""
    if not store_inputs:
        return {**example, "input": None}
    if redaction:
        return {**example, "input": redact(example["input"])}  # masks are left alone; text logged raw is masked now
    return example


def last_trained(project: Project) -> dt.datetime | None:
    events = project.ledger.events(kind="run.trained", newest_first=True, limit=1)
    return dt.datetime.fromisoformat(events[0].ts) if events else None


def run_monitor(
    project: Project,
    since: dt.timedelta | None = None,
    sample: int = 200,
    window: dt.timedelta = dt.timedelta(days=1),
    teacher: Callable[[Sequence[str]], np.ndarray] | None = None,
    embed: Callable[[Sequence[str]], np.ndarray] | None = None,
    seed: int = 0,
    actor: str = "",
    record: bool = True,
    now: dt.datetime | None = None,
) -> tuple[MonitorResult, Path]:
    """Check the traffic of the last ``since`` (all of it when None); returns the result and its JSON path.

    ``teacher`` and ``embed`` default to the spec's first teacher and all-MiniLM-L6-v2.
    """
    spec = project.spec
    if spec.task.kind != "classify":
        raise DataError(
            "monitor: only classify tasks are monitored so far",
            hint="serve a classify run, or compare generate outputs by hand",
        )
    now = now or dt.datetime.now(dt.UTC)
    maintenance = spec.maintenance
    prune_traffic(traffic_dir(project.state_dir), maintenance.traffic_retention_days, now)
    # a row whose text was not stored cannot be put to the teacher; it is counted, never checked
    logged = read_traffic(traffic_dir(project.state_dir), since=(now - since) if since else None)
    rows = [r for r in logged if r["input"]]
    if logged and not rows:
        raise DataError(
            f"monitor: the {len(logged)} logged requests keep no text (maintenance.store_inputs: false), so the "
            "teacher cannot be asked about them",
            hint="set maintenance.store_inputs: true to monitor agreement",
        )
    if not rows:
        raise DataError(
            f"monitor: no traffic logged in {traffic_dir(project.state_dir)}"
            + (f" in the last {since}" if since else ""),
            hint="serve the student with `distil serve` (the traffic log is on by default), then rerun",
        )
    if teacher is None:
        teacher = build_teacher(project, spec.teacher(spec.router.generalist)).label_distribution
    if embed is None:
        embed = minilm_embed
    reference = reference_inputs(project, seed=seed)
    reference_embeddings = np.asarray(embed(reference)) if len(reference) >= 2 else None

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
        tagger=lambda text: tag_slices(text, spec.data.slices),
        seed=seed,
    )
    result.examples = [kept_example(e, maintenance.store_inputs, maintenance.redact) for e in result.examples]
    result.refresh = refresh_due(last_trained(project), spec.maintenance.refresh_days, now)
    per_slice_floor = spec.gate.per_slice_fidelity_min
    if per_slice_floor is not None:
        for name, values in result.slices.items():
            for value, s in values.items():
                if s["n"] >= 5 and s["agreement"] < per_slice_floor:
                    result.alerts.append(
                        f"slice {name}={value}: fidelity {s['agreement']:.3f} on {s['n']} requests is below "
                        f"{per_slice_floor:.3f}"
                    )
    out_dir = project.state_dir / "monitor"
    out_dir.mkdir(parents=True, exist_ok=True)
    stamp = now.strftime("%Y%m%dT%H%M%S")
    path = out_dir / f"monitor-{stamp}.json"
    write_json_atomic(path, result.as_dict())
    _plot(result, out_dir / f"monitor-{stamp}.png")
    if record and result.alerts:
        operator = spec.maintenance.operator or spec.roles.operator
        project.ledger.append(
            "alert",
            {
                "source": "monitor",
                "alerts": result.alerts,
                "agreement": result.agreement,
                "floor": result.floor,
                "drift": result.drift,
                "operator": operator,
                "report": str(path.relative_to(project.root)),
            },
            actor=actor or operator,
            files=[path],
            table="alerts",
            row={"source": "monitor", "message": "; ".join(result.alerts)},
        )
    return result, path


def _plot(result: MonitorResult, path: Path) -> Path | None:
    """Agreement per window against the floor (the report embeds this)."""
    if not result.windows:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    starts = [w["start"][:16] for w in result.windows]
    fig, ax = plt.subplots(figsize=(6, 3))
    ax.plot(range(len(starts)), [w["agreement"] for w in result.windows], marker="o", label="student–teacher agreement")
    ax.axhline(result.floor, color="red", linestyle="--", label=f"floor {result.floor:.2f}")
    ax.set_xticks(range(len(starts)), starts, rotation=30, ha="right", fontsize=7)
    ax.set_ylim(0, 1.02)
    ax.set_ylabel("agreement")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def targets_from_traffic(
    project: Project, report: Path | None = None, include_escalated: bool = True
) -> list[TargetInput]:
    """Inputs of the newest (or given) monitor report that the student got wrong or escalated.

    Each comes with its slice tags and the reason it was picked; `distil iterate --from-traffic`
    labels them with the teacher (as records of source ``traffic``) for the next round.
    """
    if report is None:
        found = sorted((project.state_dir / "monitor").glob("monitor-*.json"))
        if not found:
            raise DataError("no monitor report yet", hint="run `distil monitor` first")
        report = found[-1]
    data: dict[str, Any] = json.loads(Path(report).read_text(encoding="utf-8"))
    result = MonitorResult(**{k: data[k] for k in MonitorResult.__dataclass_fields__ if k in data})
    return targets_from_result(result, include_escalated)

"""The whole cadence as one resumable recipe: check, plan, generate, curate, train, evaluate, report.

Each step has a key: the sha256 of everything it reads (spec sections, input files, the previous
step's output). The state file ``.distil/cadence.json`` keeps, per step, the key it last completed
with and what it produced. A step whose key and output are unchanged is skipped, so a rerun after a
crash continues where it stopped and a rerun with nothing changed does nothing. The generate step's
own call cache and the trainer's checkpoints make the interrupted step itself resume, not restart.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.markup import escape

from distil.data.audit import audit_data_files
from distil.data.curate import curate as curate_data
from distil.data.generate import generate_dataset
from distil.errors import RunError, SpecError
from distil.evaluate.report import write_report
from distil.evaluate.run import evaluate_run
from distil.files import write_json_atomic
from distil.ledger.store import canonical_json, sha256_file, sha256_text
from distil.runs import RunDir
from distil.spec.check import check_project
from distil.spec.gate import gate_hash, require_unchanged_gate
from distil.spec.io import Project

STEPS = ("check", "plan", "generate", "curate", "train", "evaluate", "report")


@dataclass
class StepOutcome:
    step: str
    skipped: bool
    output: dict[str, Any]
    seconds: float = 0.0


@dataclass
class CadenceResult:
    run_id: str | None = None
    outcomes: list[StepOutcome] = field(default_factory=list)
    report_path: str | None = None

    def skipped(self) -> list[str]:
        return [o.step for o in self.outcomes if o.skipped]


class CadenceState:
    """``.distil/cadence.json``: per step, the key it completed with and its output (written atomically)."""

    def __init__(self, project: Project):
        self.path = project.state_dir / "cadence.json"
        self.data: dict[str, Any] = {}
        if self.path.is_file():
            try:
                self.data = json.loads(self.path.read_text(encoding="utf-8"))
            except (OSError, json.JSONDecodeError):
                self.data = {}  # a damaged state file only costs a re-check of each step

    def done(self, step: str, key: str) -> dict[str, Any] | None:
        entry = self.data.get(step)
        if entry and entry.get("key") == key and entry.get("status") == "done":
            return entry.get("output", {})
        return None

    def started(self, step: str, key: str) -> dict[str, Any]:
        """What a step left when it started with this key (e.g. the run id to resume), if anything."""
        entry = self.data.get(step)
        return entry.get("output", {}) if entry and entry.get("key") == key else {}

    def mark(self, step: str, key: str, status: str, output: dict[str, Any]) -> None:
        self.data[step] = {"key": key, "status": status, "output": output}
        write_json_atomic(self.path, self.data, indent=1)


def file_key(path: Path | None) -> str:
    return sha256_file(path) if path is not None and path.is_file() else "absent"


def step_key(*parts: Any) -> str:
    return sha256_text(canonical_json(list(parts)))


# Settings that change where a step reports, not what it makes: a step is not rerun when only they change.
NOT_IN_STEP_KEYS = {"train": ("report_to",)}


def spec_part(project: Project, *sections: str) -> dict[str, Any]:
    dumped = project.spec.model_dump(mode="json")
    part = {s: dumped.get(s) for s in sections}
    for section, fields in NOT_IN_STEP_KEYS.items():
        for name in fields:
            if isinstance(part.get(section), dict):
                part[section].pop(name, None)
    return part


def run_step(
    state: CadenceState,
    step: str,
    key: str,
    action: Callable[[dict[str, Any]], dict[str, Any]],
    still_there: Callable[[dict[str, Any]], bool] = lambda _: True,
    announce: Callable[[str], None] = print,
) -> StepOutcome:
    """Skip ``step`` when it completed with ``key`` and its output is still there; else run it."""
    import time

    previous = state.done(step, key)
    if previous is not None and still_there(previous):
        announce(f"{step}: up to date, skipped")
        return StepOutcome(step, True, previous)
    announce(f"{step}: running")
    started = time.perf_counter()
    partial = state.started(step, key)
    state.mark(step, key, "started", partial)
    output = action(partial)
    state.mark(step, key, "done", output)
    return StepOutcome(step, False, output, time.perf_counter() - started)


# --- the steps ---------------------------------------------------------------------------------------


def _say(console: Any) -> Callable[[str], None]:
    return (
        (lambda text: console.print(f"[bold cyan]»[/bold cyan] {text}")) if console is not None else (lambda text: None)
    )


def run_cadence(
    project: Project,
    actor: str = "",
    console: Any = None,
    baseline: bool = True,
    requests: int = 100,
    threads: int | None = None,
) -> CadenceResult:
    """check → plan → generate → curate → train → evaluate → report, each skipped when up to date.

    The gate must be locked first (evaluate refuses otherwise, so the cadence refuses before any work).
    """
    say = _say(console)
    actor = actor or project.spec.roles.driver
    require_unchanged_gate(project)
    state = CadenceState(project)
    result = CadenceResult()
    spec = project.spec
    seeds_key = file_key(project.path(spec.data.seeds))
    gold_key = file_key(project.path(spec.data.gold) if spec.data.gold else None)

    def check(_: dict[str, Any]) -> dict[str, Any]:
        _, problems = check_project(project)
        if problems:
            raise SpecError(
                problems[0] + (f" (and {len(problems) - 1} more; see `distil check`)" if len(problems) > 1 else "")
            )
        audits = audit_data_files(project)  # every line of every data file, before any teacher call
        for warning in (w for a in audits for w in a.warnings):
            say(f"[yellow]warning[/yellow]: {escape(warning)}")
        return {"ok": True, "items": {a.field: a.items for a in audits}}

    result.outcomes.append(
        run_step(
            state, "check", step_key(project.spec.model_dump(mode="json"), seeds_key, gold_key), check, announce=say
        )
    )

    def plan(_: dict[str, Any]) -> dict[str, Any]:
        from distil.train.plan import estimate, require_fits

        estimated = estimate(project)
        require_fits(estimated)
        return {"plan": _plain(estimated)}

    plan_key = step_key(spec_part(project, "teachers", "student", "train", "task"))
    result.outcomes.append(run_step(state, "plan", plan_key, plan, announce=say))

    def generate(_: dict[str, Any]) -> dict[str, Any]:
        generated = generate_dataset(project, actor=actor, show_progress=console is not None)
        return {
            "dataset_hash": generated.dataset_hash,
            "counts": generated.counts,
            "shards": [str(p) for p in generated.shards],
        }

    raw_dir = project.data_dir / "raw"
    generate_key = step_key(spec_part(project, "task", "teachers"), _data_part(project, "generate"), seeds_key)
    gen = run_step(
        state,
        "generate",
        generate_key,
        generate,
        still_there=lambda o: all(Path(p).is_file() for p in o.get("shards", [])) and raw_dir.is_dir(),
        announce=say,
    )
    result.outcomes.append(gen)

    def curate(_: dict[str, Any]) -> dict[str, Any]:
        curated = curate_data(project, actor=actor)
        for note in curated.notes:
            say(f"note: {escape(note)}")
        for warning in curated.warnings:
            say(f"[yellow]warning[/yellow]: {escape(warning)}")
        return {
            "dataset_hash": curated.dataset_hash,
            "counts": curated.counts,
            "folder": str(curated.folder),
            "warnings": curated.warnings,
        }

    curate_key = step_key(
        gen.output.get("dataset_hash"),
        _raw_key(raw_dir),
        _data_part(project, "curate"),
        gold_key,
        spec_part(project, "task"),
    )
    cur = run_step(
        state,
        "curate",
        curate_key,
        curate,
        still_there=lambda o: (Path(o.get("folder", "/nonexistent")) / "train.parquet").is_file(),
        announce=say,
    )
    result.outcomes.append(cur)

    def train(partial: dict[str, Any]) -> dict[str, Any]:
        from distil.train.trainer import new_run_id, train_run

        run_id = partial.get("run_id") or new_run_id(cur.output["dataset_hash"])
        state.mark("train", train_key, "started", {"run_id": run_id})  # a crash from here on resumes this run
        run_id = train_run(project, baseline=baseline, run_id=run_id, actor=actor, console=console).run_id
        return {"run_id": run_id, "dataset_hash": cur.output["dataset_hash"]}

    train_key = step_key(
        cur.output.get("dataset_hash"), spec_part(project, "student", "train", "task", "teachers"), baseline
    )
    trained = run_step(
        state, "train", train_key, train, still_there=lambda o: _finished(project, o.get("run_id")), announce=say
    )
    result.outcomes.append(trained)
    result.run_id = trained.output["run_id"]

    def evaluate(_: dict[str, Any]) -> dict[str, Any]:
        path, _document = evaluate_run(project, result.run_id, actor=actor, threads=threads, requests=requests)
        return {"path": str(path)}

    evaluate_key = step_key(result.run_id, gate_hash(spec.gate), gold_key, requests, threads)
    evaluated = run_step(
        state,
        "evaluate",
        evaluate_key,
        evaluate,
        still_there=lambda o: Path(o.get("path", "/nonexistent")).is_file(),
        announce=say,
    )
    result.outcomes.append(evaluated)

    def report(_: dict[str, Any]) -> dict[str, Any]:
        html, markdown = write_report(project, result.run_id)
        return {"html": str(html), "markdown": str(markdown)}

    report_key = step_key(result.run_id, file_key(Path(evaluated.output["path"])))
    reported = run_step(
        state,
        "report",
        report_key,
        report,
        still_there=lambda o: Path(o.get("html", "/nonexistent")).is_file(),
        announce=say,
    )
    result.outcomes.append(reported)
    result.report_path = reported.output["html"]
    return result


def _finished(project: Project, run_id: str | None) -> bool:
    """The run finished training: it has a folder and its metrics.json (an unknown or bad id: not finished)."""
    try:
        return bool(run_id) and RunDir(project, run_id).metrics.is_file()
    except RunError:
        return False


def _data_part(project: Project, stage: str) -> dict[str, Any]:
    data = project.spec.data.model_dump(mode="json")
    if stage == "generate":
        return {k: data[k] for k in ("seeds", "synthetic_budget", "synthetic", "rationales", "slices", "seed")}
    return {k: data[k] for k in ("gold", "filters", "slices", "split", "probe", "seed")}


def _raw_key(raw_dir: Path) -> list[tuple[str, int]]:
    """Names and sizes of the raw shards: new shards (targeted rounds, traffic) change the curate key."""
    if not raw_dir.is_dir():
        return []
    return sorted((p.name, p.stat().st_size) for p in raw_dir.glob("*.parquet") if not p.name.startswith("."))


def _plain(value: Any) -> Any:
    from dataclasses import asdict, is_dataclass

    if is_dataclass(value):
        return json.loads(json.dumps(asdict(value), default=str))
    return json.loads(json.dumps(value, default=str))

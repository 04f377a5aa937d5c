"""Commands that run the whole cadence: run, iterate, quickstart."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from distil.cli.app import AsOpt, SpecOpt, _project, actor, app, console
from distil.cli.tables import checks_table
from distil.runs import RunDir

RequestsOpt = Annotated[
    int, typer.Option("--requests", min=100, help="Batch-1 requests timed per model by the evaluation.")
]
ThreadsOpt = Annotated[
    int | None, typer.Option("--threads", help="torch threads for every model's timing (default: min(4, CPUs)).")
]


def _steps_table(result: Any) -> Table:
    table = Table(title="cadence")
    table.add_column("step")
    table.add_column("status")
    table.add_column("seconds", justify="right")
    for outcome in result.outcomes:
        table.add_row(
            outcome.step,
            "skipped (up to date)" if outcome.skipped else "done",
            "-" if outcome.skipped else f"{outcome.seconds:.1f}",
        )
    return table


def _verdict(run: RunDir) -> tuple[Table, str] | None:
    """The gate's checks, and where a gold set was scored, who is right where the student and the teacher differ."""
    from distil.evaluate.figures import disagreement_text

    if not run.evaluation.is_file():
        return None
    document = json.loads(run.evaluation.read_text(encoding="utf-8"))
    title = f"gate verdict ({run.run_id}; 95% intervals, undecided is not a pass)"
    counts = ((document.get("student") or {}).get("gold") or {}).get("disagreements")
    gold = f"on the gold set the student differs from the teacher on {disagreement_text(counts)}" if counts else ""
    return checks_table(document.get("gate", {}).get("checks", []), title, detail=False), gold


def what_next(project: Any, result: Any) -> list[str]:
    """The commands a person runs after the cadence: read the report, decide, serve the student."""
    spec = f" --spec {project.spec_path}"
    lines = []
    if result.report_path:
        lines.append(f"  open the report      {result.report_path}")
    if result.run_id:
        lines.append(f"  decide               distil decide {result.run_id} --as {project.spec.roles.validator}{spec}")
        operator = project.spec.roles.operator or "NAME"
        lines.append(f"  serve once shipped   distil serve {result.run_id} --as {operator}{spec}")
    return lines


def _print_outcome(project: Any, result: Any) -> None:
    console.print(_steps_table(result))
    if result.run_id:
        verdict = _verdict(RunDir(project, result.run_id))
        if verdict is not None:
            console.print(verdict[0])
            if verdict[1]:
                console.print(verdict[1], markup=False, highlight=False, soft_wrap=True)
    steps = what_next(project, result)
    if steps:
        console.print("what next:", highlight=False)
        for line in steps:
            console.print(line, markup=False, highlight=False, soft_wrap=True)


@app.command()
def run(
    no_baseline: Annotated[bool, typer.Option("--no-baseline", help="Skip training the hard-label baseline.")] = False,
    requests: RequestsOpt = 100,
    threads: ThreadsOpt = None,
    as_: AsOpt = None,
    spec: SpecOpt = None,
) -> None:
    """Run the whole cadence: check, plan, generate, curate, train (with the baseline), evaluate, report.

    Each step is skipped when its output for the same inputs exists, so a rerun after a crash goes on
    where it stopped and a rerun with nothing changed does nothing. The gate must be locked first.

    Example: distil run --spec demo/distil.yaml
    """
    from distil.cadence import run_cadence

    project = _project(spec)
    result = run_cadence(
        project, actor=actor(as_), console=console, baseline=not no_baseline, requests=requests, threads=threads
    )
    _print_outcome(project, result)


def round_line(result: Any) -> str:
    """What a round found and asked for: failures, new inputs, those dropped (and why) before labelling, labelled."""
    dropped = sum(result.dropped.values())
    why = ", ".join(f"{n} {reason}" for reason, n in result.dropped.items())
    if result.source == "untargeted":
        found = f"untargeted (the control): {result.targets} new inputs written from the seeds"
    else:
        found = f"{len(result.failures)} failures mined from run {result.from_run}, {result.targets} new inputs"
    return (
        f"round {result.round}: {found}"
        + (f" ({dropped} dropped before labelling: {why})" if dropped else "")
        + f", {result.labelled} labelled"
    )


@app.command()
def iterate(
    from_traffic: Annotated[
        bool,
        typer.Option(
            "--from-traffic", help="Target the traffic the newest `distil monitor` report found wrong or escalated."
        ),
    ] = False,
    budget: Annotated[
        int | None,
        typer.Option(
            "--budget",
            min=0,
            help="New inputs to ask the teacher for (default: 4 per failure, at least half the synthetic budget); "
            "with --untargeted, new inputs to label (default: half the synthetic budget).",
        ),
    ] = None,
    untargeted: Annotated[
        bool,
        typer.Option(
            "--untargeted",
            help="A control round: new inputs written the plain way (the seeds under data.synthetic_header, no "
            "failures shown), screened, labelled and trained on alike; give it the count a targeted round labelled "
            "to measure what targeting adds.",
        ),
    ] = False,
    seed: Annotated[
        int | None,
        typer.Option("--seed", min=0, help="Seed of the teacher's writing (default: data.seed)."),
    ] = None,
    requests: RequestsOpt = 100,
    threads: ThreadsOpt = None,
    as_: AsOpt = None,
    spec: SpecOpt = None,
) -> None:
    """One targeted round: mine the last run's failures, label new inputs like them, retrain, evaluate.

    Stops at the locked gate's max_iterations; then `distil decide` can only ship or kill.

    Example: distil iterate --budget 64
    """
    from distil.iterate import iterate_round

    project = _project(spec)
    result = iterate_round(
        project,
        actor=actor(as_),
        console=console,
        budget=budget,
        from_traffic=from_traffic,
        requests=requests,
        threads=threads,
        untargeted=untargeted,
        seed=seed,
    )
    console.print(round_line(result), highlight=False)
    if result.cadence is not None:
        _print_outcome(project, result.cadence)

    def pct(v: float | None) -> str:
        return "-" if v is None else f"{v:.1%}"

    console.print(f"student agreement with the teacher: {pct(result.fidelity_before)} → {pct(result.fidelity_after)}")


@app.command()
def quickstart(
    directory: Annotated[Path, typer.Argument(help="Project folder to create (or continue).")] = Path(
        "distil-quickstart"
    ),
    requests: RequestsOpt = 100,
    threads: ThreadsOpt = None,
    as_: AsOpt = None,
) -> None:
    """The whole cadence on the embedded default: the triage example, its gate locked, run end to end.

    Creates DIR from examples/triage (or continues it when it exists), makes throwaway signing keys for
    the example's people (kept in your config folder, not in DIR) and writes their public keys into the
    spec, locks the gate as the example's sponsor, runs the cadence, prints the verdict table and the
    report's path.

    Example: distil quickstart ./distil-quickstart
    """
    from distil.cadence import run_cadence
    from distil.ledger.keys import throwaway_keys
    from distil.spec.gate import lock_gate
    from distil.spec.io import load_project
    from distil.spec.templates import init_project, write_spec

    spec_path = directory / "distil.yaml"
    if not spec_path.is_file():
        init_project(directory, example="triage")
        console.print(f"created {spec_path} from examples/triage")
        spec = load_project(spec_path).spec
        roles = spec.roles
        folder, keys = throwaway_keys(spec_path.parent, [roles.sponsor, roles.driver, roles.validator, roles.operator])
        write_spec(spec_path, spec.model_copy(update={"roles": roles.model_copy(update={"keys": keys})}))
        console.print(
            f"made throwaway signing keys for {', '.join(keys)} in {folder} (outside the project; "
            "for a real project each person runs `distil keys init --as NAME`)",
            highlight=False,
        )
    else:
        console.print(f"continuing {spec_path}")
    project = load_project(spec_path)
    locked, new = lock_gate(project, project.spec.roles.sponsor)
    console.print(f"gate v{locked.version} {'locked' if new else 'already locked'} by {locked.locked_by}")
    result = run_cadence(
        project, actor=actor(as_) or project.spec.roles.driver, console=console, requests=requests, threads=threads
    )
    _print_outcome(project, result)

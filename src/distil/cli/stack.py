"""The generalist–specialist stack: `distil stack check` and `distil stack serve` (monitor's `--stack` is in
:mod:`distil.cli.serve`, beside `distil monitor`)."""

from __future__ import annotations

import datetime as dt
import os
import signal
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from distil.cli.app import AsOpt, app, console, identity

stack_app = typer.Typer(
    help="Serve several shipped specialists behind one endpoint, escalating to a generalist.", no_args_is_help=True
)
app.add_typer(stack_app, name="stack")

StackArg = Annotated[Path, typer.Argument(help="Path to stack.yaml (see docs/stack.md).")]


def _checked_table(title: str, checked, thresholds: dict[str, float] | None = None) -> Table:
    table = Table(title=title)
    for col in ("specialist", "project", "run", "decision", *(["threshold"] if thresholds is not None else [])):
        table.add_column(col)
    for run in checked:
        shown = [] if thresholds is None else [f"{thresholds[run.name]:.4f}" if run.name in thresholds else "-"]
        table.add_row(
            run.name, str(run.project.spec_path), run.run_id, f"ship (ledger event {run.decision_seq})", *shown
        )
    return table


@stack_app.command("check")
def stack_check(stack_file: StackArg) -> None:
    """Check a stack without loading a model: every specialist's (and the router's) project ledger verifies and its
    run was decided ship; exit 2 naming the first that is not.

    Example: distil stack check stack.yaml
    """
    from distil.stack.load import check_stack, generalist_spec
    from distil.stack.spec import load_stack_spec

    stack = load_stack_spec(stack_file)
    checked = check_stack(stack)
    teacher = generalist_spec(stack)
    console.print(_checked_table(f"stack {stack.spec.name}: routed by {stack.spec.routing.by}", checked))
    console.print(f"generalist: {teacher.id} ({teacher.source})")


@stack_app.command("serve")
def stack_serve(
    stack_file: StackArg,
    port: Annotated[int, typer.Option("--port", help="Port to listen on.")] = 8000,
    host: Annotated[str, typer.Option("--host", help="Interface to listen on.")] = "127.0.0.1",
    api_key: Annotated[
        str | None, typer.Option("--api-key", help="Required bearer key (default: $DISTIL_API_KEY; none: open).")
    ] = None,
    no_traffic: Annotated[bool, typer.Option("--no-traffic", help="Do not write the stack's traffic log.")] = False,
    as_: AsOpt = None,
) -> None:
    """Serve a stack over one OpenAI-compatible endpoint: `model` names a specialist, `generalist`, or the stack
    (routed by the request's `task` or the router model); unsure answers escalate to the generalist; `/metrics` per
    specialist.

    Each specialist's project records the deployment (signed `deployment` and `deployment.stopped` rows), as
    `distil serve` does; a specialist whose ledger does not verify or whose run was not decided ship is refused.

    Example: distil stack serve stack.yaml --as ops --port 8000
    """
    from distil.serve.server import make_server
    from distil.serve.traffic import TrafficLog, traffic_dir
    from distil.stack.deployment import plan_stack, record_stack_start, record_stack_stop
    from distil.stack.load import check_stack, load_stack
    from distil.stack.server import create_stack_app
    from distil.stack.spec import load_stack_spec

    stack = load_stack_spec(stack_file)
    operator = identity(as_)
    planned = plan_stack(stack, check_stack(stack), operator, host, port)
    loaded = load_stack(stack)
    traffic = None if no_traffic else TrafficLog(traffic_dir(stack.state_dir))
    key = api_key or os.environ.get("DISTIL_API_KEY") or None
    server = make_server(create_stack_app(loaded, api_key=key, traffic=traffic), host=host, port=port)
    started = record_stack_start(planned)
    thresholds = {name: served.threshold for name, served in loaded.specialists.items()}
    console.print(
        _checked_table(f"serving stack {stack.spec.name} on http://{host}:{port}", loaded.checked, thresholds)
    )
    console.print(
        f"generalist {loaded.generalist_id}; routed by {stack.spec.routing.by}; api key "
        f"{'required' if key else 'none (open)'}; traffic log {traffic.folder if traffic else 'off'}"
    )
    signal.signal(signal.SIGTERM, _exit_quietly)
    try:
        server.run()
    finally:
        seqs = record_stack_stop(started)
        console.print(f"stopped; recorded as ledger events {', '.join(map(str, seqs))} of the specialists' projects")


def _exit_quietly(signum: int, frame: object) -> None:
    raise SystemExit(0)


def monitor_stack(
    stack_file: Path,
    since: dt.timedelta | None,
    sample: int,
    window: dt.timedelta,
    seed: int,
    router_sample: Path | None,
) -> None:
    """Monitor a stack (the `--stack` of monitor): a table per specialist and window, the router's confusion; exit 1
    on an alert."""
    from distil.stack.monitor import run_stack_monitor
    from distil.stack.spec import load_stack_spec

    stack = load_stack_spec(stack_file)
    result, path = run_stack_monitor(
        stack, since=since, sample=sample, window=window, labelled=router_sample, seed=seed
    )
    table = Table(title=f"stack {stack.spec.name}: agreement with the generalist per specialist and window")
    for col in ("specialist", "window", "agreement (n)", "floor", "escalated", "drift p", "needs refresh"):
        table.add_column(col)
    for name, s in result.specialists.items():
        if not s.get("n_traffic"):
            table.add_row(name, "-", "no traffic", "", "", "", "no")
            continue
        drift = f"{s['drift']['p_value']:.4f}" if s.get("drift") else "-"
        refresh = "[red]yes[/red]: " + "; ".join(s["reasons"]) if s["needs_refresh"] else "no"
        table.add_row(
            name,
            "all",
            f"{s['agreement']:.3f} ({s['n_sampled']})",
            f"{s['floor']:.3f}",
            f"{s['escalated_share']:.1%}",
            drift,
            refresh,
        )
        for w in s["windows"]:
            table.add_row("", w["start"][:16], f"{w['agreement']:.3f} ({w['n']})", "", "", "", "")
    console.print(table)
    if result.router is not None:
        r = result.router
        confusion = Table(
            title=f"router: accuracy {r['accuracy']:.3f} [{r['interval'][0]:.3f}, {r['interval'][1]:.3f}] on {r['n']} "
            "labelled requests (rows: the task, columns: where the router sent it)"
        )
        confusion.add_column("task")
        for label in r["labels"]:
            confusion.add_column(label)
        for truth in r["labels"]:
            confusion.add_row(truth, *(str(r["confusion"][truth][p]) for p in r["labels"]))
        console.print(confusion)
    console.print(f"report: {path}")
    for alert in result.alerts:
        console.print(f"[red]alert[/red]: {alert}")
    if result.alerts:
        console.print(
            "next: a new round in the project of each specialist that needs a refresh (`distil iterate`, `distil "
            "decide`), then name its shipped run in the stack file"
        )
        raise typer.Exit(1)

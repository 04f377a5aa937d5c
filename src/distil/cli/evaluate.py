"""Commands of steps 4-5 and the audit report: evaluate, decide, report."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.columns import Columns
from rich.markup import escape
from rich.table import Table

from distil.cli.app import AsOpt, SpecOpt, _project, actor, app, console, identity
from distil.cli.tables import checks_table
from distil.cli.tables import fmt as _fmt
from distil.errors import DistilError
from distil.runs import RunDir

RunArg = Annotated[str | None, typer.Argument(help="Run id under .distil/runs/ (default: the latest run).")]


@app.command()
def evaluate(
    run: RunArg = None,
    threads: Annotated[
        int | None, typer.Option("--threads", help="torch threads for every model's timing (default: min(4, CPUs)).")
    ] = None,
    requests: Annotated[
        int, typer.Option("--requests", min=100, help="Batch-1 requests timed per model, after warm-up.")
    ] = 100,
    as_: AsOpt = None,
    spec: SpecOpt = None,
) -> None:
    """Score teacher, student and baseline on the held-out split and gold set; time, price and gate them.

    Example: distil evaluate --threads 2
    """
    from distil.evaluate.run import evaluate_run

    project = _project(spec)
    with console.status("evaluating teacher, student and baseline…"):
        path, document = evaluate_run(project, run, actor=actor(as_), threads=threads, requests=requests)
    print_figures(document, path.relative_to(project.runs_dir).parts[0])
    _print_checks(document["gate"]["checks"])
    _print_cost(document["cost"])
    console.print(f"wrote [bold]{path}[/bold]")
    console.print(f"next: distil decide --as {project.spec.roles.validator}")


def print_warnings(warnings: list[str]) -> None:
    for warning in warnings:
        console.print(f"[yellow]warning:[/yellow] {escape(warning)}", highlight=False, soft_wrap=True)


def _table(title: str, columns: list[str], rows: list[list[str]]) -> Table:
    table = Table(title=title)
    for i, col in enumerate(columns):
        table.add_column(col, justify="left" if i == 0 else "right")
    for row in rows:
        table.add_row(*(escape(str(cell)) for cell in row))
    return table


def _label_tables(document: dict, which: str, reference: str) -> list[Table | Columns]:
    """Per-label precision / recall of every model, then each model's confusion matrix side by side, on one set."""
    from distil.evaluate import figures as f

    models = f.per_label_models(which)
    rows = f.per_label_rows(document, which)
    per_label = _table(
        f"per label on the {which} set against {reference} (hits / items)",
        ["label", "items", *(f"{m} {what}" for m in models for what in ("precision", "recall"))],
        [
            [r["label"], _fmt(r["support"]), *(r["cells"][m][what] for m in models for what in ("precision", "recall"))]
            for r in rows
        ],
    )
    labels = f.label_names(document)
    confusion = [
        _table(
            f"confusion of the {model} on the {which} set",
            [f"{'gold' if which == f.GOLD else 'teacher'} ↓ / {model} →", *labels],
            [[label, *(_fmt(v) for v in matrix[i])] for i, label in enumerate(labels)],
        )
        for model, matrix in f.confusion_matrices(document, which).items()
    ]
    return [per_label, Columns(confusion)] if confusion else [per_label]


def print_figures(document: dict, run_id: str) -> None:
    """Gold set first where there is one (the only figures against labels a person gave), then the held-out split,
    then size and speed; every figure with its item count, and a warning for any degenerate model."""
    from distil.evaluate import figures as f

    print_warnings(document.get("warnings") or [])
    gold = f.has_gold(document)
    if gold:
        n_gold = f.scored_set(document, "student", f.GOLD).get("n_gold")
        console.print(
            _table(
                f"gold set ({n_gold} hand-labelled items; run {run_id})",
                ["model", "accuracy", "macro-F1", "agreement with the teacher", "where it differs, who is right"],
                [
                    [r["model"], r["accuracy"], r["macro_f1"], r["agreement"], r["disagreements"]]
                    for r in f.gold_rows(document)
                ],
            )
        )
        for table in _label_tables(document, f.GOLD, "gold labels"):
            console.print(table)
    columns = f.held_out_columns(document)
    n_test = f.scored_set(document, "student", f.HELD_OUT).get("n")
    console.print(
        _table(
            f"held-out split ({n_test} items; the teacher's answers are the reference; run {run_id})",
            ["model", *(heading for _, heading in columns)],
            [[r["model"], *(r[key] for key, _ in columns)] for r in f.held_out_rows(document)],
        )
    )
    if not gold and not f.is_generation(document):
        for table in _label_tables(document, f.HELD_OUT, "the teacher's labels"):
            console.print(table)
    console.print(
        _table(
            "size and speed (stored: the files on disk; served: the weights in memory once loaded)",
            ["model", *(heading for _, heading in f.SIZE_COLUMNS)],
            [[r["model"], *(r[key] for key, _ in f.SIZE_COLUMNS)] for r in f.size_rows(document)],
        )
    )


def _print_checks(checks: list[dict]) -> None:
    console.print(checks_table(checks, "gate (95% intervals; a threshold passes when its interval clears it)"))


def _print_cost(cost: dict) -> None:
    """Each payback term with its value and source (measured on this machine / spec / ledger), then the payback."""
    table = Table(title=f"cost ({cost['currency']})")
    for col in ("term", "value", "unit", "source"):
        table.add_column(col, justify="right" if col == "value" else "left", overflow="fold")
    for t in cost.get("terms") or []:
        table.add_row(
            t["name"],
            _fmt(t["value"], 4 if isinstance(t["value"], float) and abs(t["value"]) < 1 else 2),
            t["unit"],
            escape(t["source"]),
        )
    console.print(table)
    payback = cost.get("payback_months")
    console.print(
        "payback: "
        + (f"{payback:.1f} months" if payback is not None else f"never ({cost.get('payback_reason', 'no saving')})")
    )


def _print_variants(variants: dict) -> None:
    """Other evaluations of the run (e.g. the int8 export), beside the decision; not decided on."""
    for name, row in variants.items():
        summary = row.get("summary") or {}
        block = summary.get("student") or summary  # a variant row may be flat (the int8 export's is)
        shown = ", ".join(
            f"{k} {_fmt(block[k])}" for k in ("agreement", "kl", "size_bytes") if block.get(k) is not None
        )
        console.print(
            f"variant {name} (evaluation event {row['evaluation_seq']}, reported, not decided on): "
            f"{shown or 'no figures'}"
        )


@app.command()
def decide(
    run_arg: Annotated[
        str | None,
        typer.Argument(
            metavar="[RUN]",
            help="Run id to decide on, as `evaluate` and `serve` take it (default: the latest evaluation).",
        ),
    ] = None,
    run: Annotated[str | None, typer.Option("--run", help="The same run id, given as an option.")] = None,
    decision_: Annotated[
        str | None,
        typer.Option(
            "--decision",
            help="ship | iterate | kill: the validator's outcome; never more "
            "permissive than the gate's rules (default: the rules' outcome).",
        ),
    ] = None,
    reason: Annotated[
        str,
        typer.Option(
            "--reason", help="The validator's reason (needed when --decision is more cautious than the rules)."
        ),
    ] = "",
    as_: AsOpt = None,
    spec: SpecOpt = None,
) -> None:
    """Check every locked gate threshold and record ship / iterate / kill (validator only, not the driver).

    Example: distil decide --as quinn
    """
    from dataclasses import asdict

    from distil.decide import record_decision

    if run_arg and run and run_arg != run:
        raise DistilError(
            f"decide: RUN {run_arg!r} and --run {run!r} name different runs",
            hint="give the run once, e.g. `distil decide RUN`",
        )
    project = _project(spec)
    decision, target, event = record_decision(project, identity(as_), run_arg or run, chosen=decision_, note=reason)
    _print_checks([asdict(c) for c in decision.checks])
    _print_variants(event.payload.get("variants") or {})
    print_warnings(decision.warnings)
    colour = {"ship": "green", "iterate": "yellow", "kill": "red"}[decision.decision]
    console.print(
        f"decision for run {target['run_id']}: [bold {colour}]{decision.decision}[/bold {colour}] — {decision.reason}"
    )
    console.print(
        f"recorded as ledger event {event.seq} (evaluation event {target['event_seq']}, validator {event.actor}, "
        f"driver {project.spec.roles.driver})"
    )
    report_html = RunDir(project, target["run_id"]).report_html
    if report_html.is_file():
        console.print(f"report with the decision: [bold]{report_html}[/bold]")


@app.command()
def report(
    run: RunArg = None,
    spec: SpecOpt = None,
) -> None:
    """Write the run's self-contained HTML report and a Markdown summary for a pull request.

    Example: distil report
    """
    from distil.evaluate.report import write_report

    project = _project(spec)
    html_path, md_path = write_report(project, run)
    console.print(f"wrote [bold]{html_path}[/bold]")
    console.print(f"wrote [bold]{md_path}[/bold]")

"""Commands of the data step: generate, curate, export-data."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from distil.cli.app import AsOpt, SpecOpt, _project, actor, app, console


@app.command()
def generate(
    traffic: Annotated[
        Path | None,
        typer.Option("--traffic", help="JSONL log of past requests (input or messages, timestamp) to label too."),
    ] = None,
    since: Annotated[
        str | None, typer.Option("--since", help="Only traffic newer than this, e.g. 90d, 12h, 2w.")
    ] = None,
    synthetic: Annotated[
        int | None, typer.Option("--synthetic", help="Synthetic inputs to write (default: data.synthetic_budget).")
    ] = None,
    teacher: Annotated[
        str | None, typer.Option("--teacher", help="Teacher id (default: the spec's first teacher).")
    ] = None,
    as_: AsOpt = None,
    spec: SpecOpt = None,
) -> None:
    """Collect inputs (seeds, synthetic, traffic), label them with the teacher, write raw shards.

    Resumable: rerun after a crash or Ctrl-C and finished teacher calls are not repeated.

    Example: distil generate --traffic requests.jsonl --since 90d
    """
    from distil.data.generate import generate_dataset
    from distil.spec.gate import require_locked_gate, require_unchanged_gate
    from distil.teachers.registry import build_teacher

    project = _project(spec)
    who = actor(as_) or project.spec.roles.driver
    require_locked_gate(project)  # before the teacher is even loaded
    require_unchanged_gate(project)
    chosen = build_teacher(project, project.spec.teacher(teacher), actor=who)
    result = generate_dataset(
        project, teacher=chosen, traffic=traffic, since=since, synthetic_budget=synthetic, actor=who
    )
    table = Table(title=f"raw data ({chosen.teacher_id}, {chosen.fingerprint[:23]}…)")
    table.add_column("source")
    table.add_column("records", justify="right")
    table.add_column("shard")
    for (source, count), shard in zip(result.counts.items(), result.shards, strict=True):
        table.add_row(source, str(count), str(shard.relative_to(project.root)))
    console.print(table)
    console.print(f"dataset {result.dataset_hash[:19]}…; next: distil curate")


@app.command()
def curate(
    heldout: Annotated[
        list[Path] | None,
        typer.Option("--heldout", help="Extra held-out files (JSONL/CSV/Parquet) to decontaminate against."),
    ] = None,
    new_test_set: Annotated[
        str,
        typer.Option(
            "--new-test-set", help="Reason for locking a new test split (and gold set); only under a new gate version."
        ),
    ] = "",
    as_: AsOpt = None,
    spec: SpecOpt = None,
) -> None:
    """Filter, deduplicate, decontaminate, audit slice coverage and split the raw data.

    The first curate after the gate is locked locks the test split; later ones keep it as it is.

    Example: distil curate --spec demo/distil.yaml
    """
    from distil.data.curate import curate as run_curate

    project = _project(spec)
    result = run_curate(project, heldout=heldout or [], actor=actor(as_), new_test_set=new_test_set)
    removed = Table(title="removed")
    removed.add_column("filter")
    removed.add_column("count", justify="right")
    removed.add_column("example reason", overflow="fold")
    for name, rows in result.removed.items():
        removed.add_row(name, str(len(rows)), rows[0]["reason"] if rows else "-")
    console.print(removed)
    labels = project.spec.task.label_names
    cov = Table(title=f"slice coverage (min {project.spec.data.filters.min_per_slice} per slice)")
    for col in ("slice", "value", *labels, "total", "flag"):
        cov.add_column(col, justify="right" if col not in ("slice", "value", "flag") else "left")
    for c in result.coverage:
        cov.add_row(
            c.slice,
            c.value,
            *(str(c.per_label.get(lab, 0)) for lab in labels),
            str(c.total),
            "[red]starved[/red]" if c.starved else "",
        )
    console.print(cov)
    counts = result.counts
    console.print(
        f"curated {counts['curated']} of {counts['raw']}: train {counts['train']}, validation "
        f"{counts['validation']}, test {counts['test']}, probe {counts['probe']}"
        + (f" (+{counts['oversampled']} oversampled)" if counts["oversampled"] else "")
    )
    for note in result.notes:
        console.print(f"note: {escape(note)}", highlight=False, soft_wrap=True)
    for warning in result.warnings:
        console.print(f"[yellow]warning[/yellow]: {escape(warning)}", highlight=False, soft_wrap=True)
    console.print(
        f"dataset {result.dataset_hash[:19]}… in {result.folder.relative_to(project.root)}; next: distil train"
    )


@app.command("export-data")
def export_data(
    out: Annotated[
        Path | None, typer.Option("--out", help="Folder to write (default .distil/exports/<dataset>).")
    ] = None,
    spec: SpecOpt = None,
) -> None:
    """Export the newest curated dataset as OpenAI fine-tuning JSONL, a Hugging Face DatasetDict and Parquet files.

    `datasets.load_from_disk("<out>/hf")` and `datasets.load_dataset("parquet", data_files=...)` read them.

    Example: distil export-data --out handover/
    """
    from distil.data.export import export_data as run_export

    project = _project(spec)
    target = run_export(project, out)
    console.print(
        f"wrote {target}/openai/*.jsonl, {target}/hf/ (datasets.load_from_disk), {target}/parquet/*.parquet and "
        f"{target}/provenance.jsonl",
        highlight=False,
    )

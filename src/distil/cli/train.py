"""Commands of step 1 and 4: plan (preflight) and train."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from distil.cli.app import AsOpt, SpecOpt, _project, actor, app, console


@app.command()
def plan(
    spec: SpecOpt = None,
    device: Annotated[str | None, typer.Option("--device", help="cpu or cuda (default: cuda when present).")] = None,
    memory_gib: Annotated[
        float | None, typer.Option("--memory-gib", help="Memory to plan against (default: what the device has).")
    ] = None,
) -> None:
    """Preflight: peak memory, teacher-cache disk size and rough time; refuses with advice when it will not fit.

    Example: distil plan --spec demo/distil.yaml --memory-gib 16
    """
    from distil.train.plan import estimate, require_fits

    project = _project(spec)
    result = estimate(project, device=device, available_bytes=int(memory_gib * 2**30) if memory_gib else None)
    table = Table(title=f"plan on {result.device}")
    table.add_column("component")
    table.add_column("MiB", justify="right")
    for name, size in result.memory.items():
        table.add_row(name, f"{size / 2**20:,.1f}")
    table.add_row("[bold]peak[/bold]", f"[bold]{result.peak_bytes / 2**20:,.1f}[/bold]")
    table.add_row("available", f"{result.available_bytes / 2**20:,.1f}")
    console.print(table)
    console.print(
        f"teacher cache on disk: {result.cache_bytes / 2**20:,.2f} MiB; training tokens per epoch: "
        f"{result.train_tokens:,}; rough time: {result.seconds:,.0f} s"
    )
    for note in result.notes:
        console.print(f"note: {note}")
    require_fits(result)
    console.print("[green]fits[/green]")


@app.command()
def train(
    spec: SpecOpt = None,
    who: AsOpt = None,
    no_baseline: Annotated[bool, typer.Option("--no-baseline", help="Skip the hard-label baseline.")] = False,
    resume: Annotated[
        str | None, typer.Option("--resume", help="Run id of an unfinished run to continue from its checkpoints.")
    ] = None,
    max_steps: Annotated[
        int | None, typer.Option("--max-steps", help="Stop each model after this many optimiser steps (resume later).")
    ] = None,
) -> None:
    """Train the distilled student and its hard-label baseline on the newest curated dataset.

    Example: distil train --spec demo/distil.yaml
    """
    from distil.runs import RunDir
    from distil.train.trainer import train_run

    project = _project(spec)
    if resume:
        RunDir(project, resume)  # a plain name, and a run that exists: else RunError, exit 2
    result = train_run(
        project, baseline=not no_baseline, run_id=resume, max_steps=max_steps, actor=actor(who) or None, console=console
    )
    if not result.finished:
        console.print(f"run {result.run_id} paused; continue with `distil train --resume {result.run_id}`")
        return
    table = Table(title=f"run {result.run_id}")
    for col in ("model", "validation fidelity", "final loss", "steps", "tokens/s", "seconds"):
        table.add_column(col)
    for role, m in result.roles.items():
        fid = m.best_validation_fidelity
        loss = "-" if m.final_train_loss is None else f"{m.final_train_loss:.4f}"
        table.add_row(
            role,
            "-" if fid is None else f"{fid:.3f}",
            loss,
            str(m.steps),
            f"{m.tokens_per_s:,.0f}",
            f"{result.seconds.get(role, 0.0):,.1f}",
        )
    console.print(table)
    console.print(f"wrote {result.run_dir}; next: distil evaluate {result.run_id}")

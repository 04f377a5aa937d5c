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
    target: Annotated[
        str | None,
        typer.Option(
            "--target",
            help="phone | laptop | browser: instead of the training plan, what fits the device (params, bytes at "
            "each export type, memory to run) and which teacher-layers:N inits meet it.",
        ),
    ] = None,
) -> None:
    """Preflight: peak memory, teacher-cache disk size and training time (from a short run timed on this machine,
    cached in .distil/); refuses with advice when it will not fit.

    Example: distil plan --spec demo/distil.yaml --memory-gib 16

    Example: distil plan --target phone
    """
    from distil.train.plan import estimate, require_fits

    project = _project(spec)
    if target:
        _print_target(project, target)
        return
    result = estimate(project, device=device, available_bytes=int(memory_gib * 2**30) if memory_gib else None)
    table = Table(title=f"plan on {result.device}")
    table.add_column("component")
    table.add_column("MiB", justify="right")
    for name, size in result.memory.items():
        table.add_row(name, f"{size / 2**20:,.1f}")
    table.add_row("[bold]peak[/bold]", f"[bold]{result.peak_bytes / 2**20:,.1f}[/bold]")
    table.add_row("available", f"{result.available_bytes / 2**20:,.1f}")
    console.print(table)
    lines = [
        f"teacher cache on disk: {result.cache_bytes / 2**20:,.2f} MiB",
        f"training examples per epoch: {result.examples:,} ({result.examples_from}); tokens per epoch: "
        f"{result.train_tokens:,}",
        f"training time: about {result.seconds:,.0f} s for the student, as long again for the baseline",
        f"  how: {result.time_method}",
    ]
    for line in lines:
        console.print(line, markup=False, highlight=False, soft_wrap=True)
    for note in result.notes:
        console.print(f"note: {note}")
    require_fits(result)
    console.print("[green]fits[/green]")


def _print_target(project, target: str) -> None:
    from distil.train.targets import BYTES_PER_WEIGHT, plan_target

    plan = plan_target(project, target)
    console.print(
        f"{plan.target}: {plan.budget_bytes / 2**30:.1f} GiB for the model ({plan.budget_source}); memory = weights + "
        f"float16 KV cache of {plan.context} tokens + one row of logits"
    )
    table = Table(title=f"the spec's student ({plan.student[0].init}, {plan.student[0].params:,} params)")
    for col in ("type", "file MiB", "memory MiB", f"fits {plan.target}"):
        table.add_column(col, justify="right" if col != "type" else "left")
    for row in plan.student:
        table.add_row(
            row.gguf_type,
            f"{row.file_bytes / 2**20:,.1f}",
            f"{row.memory_bytes / 2**20:,.1f}",
            "yes" if row.fits else "no",
        )
    console.print(table)
    inits = Table(title=f"teacher-layers:N inits that fit {plan.target} (the deepest at each type)")
    for col in ("type", "deepest init", "params", "file MiB", "memory MiB"):
        inits.add_column(col)
    for gguf_type in BYTES_PER_WEIGHT:
        best = plan.largest_fitting(gguf_type)
        if best is None:
            inits.add_row(gguf_type, "none fits", "-", "-", "-")
        else:
            inits.add_row(
                gguf_type,
                best.init,
                f"{best.params:,}",
                f"{best.file_bytes / 2**20:,.1f}",
                f"{best.memory_bytes / 2**20:,.1f}",
            )
    console.print(inits)
    console.print("export one with `distil export --format gguf --quantize <type>`; it is evaluated on its own")


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

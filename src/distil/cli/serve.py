"""Commands after launch: serve, monitor, export."""

from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from distil.cli.app import AsOpt, SpecOpt, _project, actor, app, console, identity


@app.command()
def serve(
    run: Annotated[
        str | None, typer.Argument(help="Run id to serve (default: the newest run decided ship, else the newest run).")
    ] = None,
    port: Annotated[int, typer.Option("--port", help="Port on 127.0.0.1.")] = 8000,
    host: Annotated[str, typer.Option("--host", help="Interface to listen on.")] = "127.0.0.1",
    api_key: Annotated[
        str | None, typer.Option("--api-key", help="Required bearer key (default: $DISTIL_API_KEY; none: open).")
    ] = None,
    threshold: Annotated[
        float | None,
        typer.Option(
            "--threshold", help="Router threshold (default: router.threshold, calibrated on the validation split)."
        ),
    ] = None,
    no_teacher: Annotated[
        bool, typer.Option("--no-teacher", help="Serve the student alone: nothing escalates.")
    ] = False,
    max_body_bytes: Annotated[
        int | None,
        typer.Option("--max-body-bytes", help="Larger request bodies get 413 (default: serve.max_body_bytes)."),
    ] = None,
    no_traffic: Annotated[bool, typer.Option("--no-traffic", help="Do not write the traffic log.")] = False,
    allow_unshipped: Annotated[
        bool, typer.Option("--allow-unshipped", help="Serve a run with no ship decision (the deployment row says so).")
    ] = False,
    as_: AsOpt = None,
    spec: SpecOpt = None,
) -> None:
    """Serve a run over an OpenAI-compatible API (/v1/chat/completions, /v1/models, /v1/classify, /healthz, /readyz,
    /metrics).

    Only a run whose newest (verified) decision is ship, unless --allow-unshipped; the operator's start and stop
    are recorded as signed `deployment` and `deployment.stopped` ledger rows. Under load a full queue answers 429
    with Retry-After and a saturated teacher leaves the student's answer (the spec's `serve` section).

    Example: distil serve --as ops --port 8000 --api-key sk-local
    """
    from distil.serve.deployment import plan_deployment, record_start, record_stop
    from distil.serve.runs import load_served, served_run
    from distil.serve.server import create_app, make_server
    from distil.serve.traffic import TrafficLog, prune_traffic, traffic_dir

    project = _project(spec)
    target = served_run(project, run)
    operator = identity(as_)
    deployment = plan_deployment(project, target.run_id, operator, host, port, allow_unshipped=allow_unshipped)
    served = load_served(project, target.run_id, threshold=threshold, with_teacher=not no_teacher)
    m = project.spec.maintenance
    pruned = prune_traffic(traffic_dir(project.state_dir), m.traffic_retention_days)
    traffic = (
        None
        if no_traffic
        else TrafficLog(
            traffic_dir(project.state_dir),
            sample_rate=m.traffic_sample_rate,
            redaction=m.redact,
            store_inputs=m.store_inputs,
        )
    )
    key = api_key or os.environ.get("DISTIL_API_KEY") or None
    table = Table(title=f"serving {served.run_id} on http://{host}:{port}", show_header=False)
    table.add_row("task", served.kind + (f": {', '.join(served.labels)}" if served.kind == "classify" else ""))
    table.add_row("teacher", served.teacher_id or "none (student only)")
    if served.kind == "classify":
        table.add_row("threshold", f"{served.threshold:.4f}")
        if served.calibration:
            c = served.calibration
            table.add_row(
                "calibration",
                f"routed fidelity {c['routed_fidelity']:.3f} ≥ {c['target']:.3f}, escalated "
                f"{c['escalated_share']:.1%} of {c['n']} validation examples",
            )
            blended = served.student_per_1m + c["escalated_share"] * served.teacher_per_1m
            table.add_row("blended cost", f"{blended:,.2f} {project.spec.cost.currency} per 1M requests")
    limits = served.limits
    table.add_row(
        "limits",
        f"student queue {limits.queue_depth} (start within {limits.deadline_s:g} s), teacher queue "
        f"{limits.teacher_queue_depth} (answer within {limits.teacher_deadline_s:g} s), {limits.max_connections} "
        "connections",
    )
    table.add_row("api key", "required" if key else "none (open)")
    text = ("redacted" if m.redact else "as written") if m.store_inputs else "not kept"
    retention = f"{m.traffic_retention_days} days" if m.traffic_retention_days else "kept"
    table.add_row(
        "traffic log",
        "off"
        if traffic is None
        else f"{traffic.folder} (sample {m.traffic_sample_rate:.0%}, text {text}, retention {retention})",
    )
    if pruned:
        table.add_row("retention", f"deleted {len(pruned)} traffic shard(s) older than {m.traffic_retention_days} days")
    if deployment.decision_seq is None:
        table.add_row("decision", "[yellow]none: served with --allow-unshipped[/yellow]")
    else:
        table.add_row("decision", f"ship (ledger event {deployment.decision_seq})")
    server = make_server(
        create_app(served, api_key=key, max_body_bytes=max_body_bytes, traffic=traffic), host=host, port=port
    )
    deployment = record_start(project, deployment)
    table.add_row("deployment", f"ledger event {deployment.event_seq}, operator {operator}")
    console.print(table)
    # uvicorn stops gracefully on SIGTERM, then raises the signal again under the handler it found: this one,
    # so the process leaves through `finally` and the stop is recorded instead of dying on the default handler
    signal.signal(signal.SIGTERM, _exit_quietly)
    try:
        server.run()
    finally:
        seq = record_stop(project, deployment)
        console.print(f"stopped; recorded as ledger event {seq}")


def _exit_quietly(signum: int, frame: object) -> None:
    raise SystemExit(0)


@app.command()
def monitor(
    since: Annotated[
        str | None, typer.Option("--since", help="Only traffic of the last span, e.g. 7d, 12h (default: all).")
    ] = None,
    sample: Annotated[int, typer.Option("--sample", help="Most logged requests the teacher is asked about.")] = 200,
    window: Annotated[str, typer.Option("--window", help="Length of each agreement window, e.g. 1d, 6h.")] = "1d",
    seed: Annotated[int, typer.Option("--seed", help="Seed of the sample and the permutation test.")] = 0,
    stack: Annotated[
        Path | None,
        typer.Option("--stack", help="Check a stack's traffic (stack.yaml) per specialist instead of one project's."),
    ] = None,
    router_sample: Annotated[
        Path | None,
        typer.Option(
            "--router-sample", help="With --stack: JSONL of `input` and `task` to check the router model's routing."
        ),
    ] = None,
    spec: SpecOpt = None,
) -> None:
    """Check logged traffic: student–teacher agreement per window and slice, input drift (MMD), refresh due; exit 1 on
    an alert. With --stack: per specialist, the router's confusion on a labelled sample, and who needs a refresh.

    Example: distil monitor --since 7d --sample 200

    Example: distil monitor --stack stack.yaml --router-sample routed.jsonl
    """
    from distil.data.sources import parse_since
    from distil.monitor.check import run_monitor

    if stack is not None:
        from distil.cli.stack import monitor_stack

        monitor_stack(stack, parse_since(since) if since else None, sample, parse_since(window), seed, router_sample)
        return

    project = _project(spec)
    result, path = run_monitor(
        project, since=parse_since(since) if since else None, sample=sample, window=parse_since(window), seed=seed
    )
    table = Table(
        title=f"traffic {result.window['since'] or '-'} … {result.window['until'] or '-'}: {result.n_sampled} of "
        f"{result.n_traffic} requests checked"
    )
    for col in ("check", "value", "floor / level", "status"):
        table.add_column(col)

    def status(ok: bool) -> str:
        return "[green]ok[/green]" if ok else "[red]ALERT[/red]"

    if result.agreement is not None:
        table.add_row(
            "agreement (served vs teacher)",
            f"{result.agreement:.3f}",
            f"≥ {result.floor:.3f}",
            status(result.agreement >= result.floor),
        )
    if result.student_agreement is not None:
        table.add_row("agreement (student-answered only)", f"{result.student_agreement:.3f}", "", "")
    if result.escalated_share is not None:
        table.add_row("escalated to the teacher", f"{result.escalated_share:.1%}", "", "")
    for w in result.windows:
        table.add_row(
            f"  window {w['start'][:16]}",
            f"{w['agreement']:.3f} (n={w['n']})",
            "",
            status(w["agreement"] >= result.floor),
        )
    for name, values in result.slices.items():
        for value, s in values.items():
            table.add_row(f"  slice {name}={value}", f"{s['agreement']:.3f} (n={s['n']})", "", "")
    if result.drift:
        d = result.drift
        table.add_row(
            "input drift (MMD²)",
            f"{d['mmd2']:.4f}, p = {d['p_value']:.4f}",
            f"p ≥ {result.alpha}",
            status(d["p_value"] >= result.alpha),
        )
    r = result.refresh
    if r.get("due"):
        table.add_row(
            "refresh due",
            r["due"][:10],
            f"every {project.spec.maintenance.refresh_days} days",
            "[yellow]due now[/yellow]" if r["overdue"] else f"in {r['days_left']} days",
        )
    console.print(table)
    console.print(f"report: {path}")
    for alert in result.alerts:
        console.print(f"[red]alert[/red]: {alert}")
    if result.alerts:
        console.print(
            "recorded an alert row in the ledger; next: `distil iterate --from-traffic` to label the failing traffic"
        )
        raise typer.Exit(1)


@app.command()
def export(
    run: Annotated[
        str | None, typer.Argument(help="Run id to export (default: the newest run decided ship, else the newest run).")
    ] = None,
    format_: Annotated[
        str,
        typer.Option(
            "--format",
            help="safetensors | onnx (classify students: the label head at the answer position) | gguf (Llama "
            "students, for llama.cpp).",
        ),
    ] = "onnx",
    quantize: Annotated[
        str | None,
        typer.Option(
            "--quantize",
            help="onnx: int8 (variant `quantized`); gguf: f16, q8_0 or q4_0 (variant `gguf-<type>`). The quantized "
            "model is evaluated on its own against the teacher and recorded with its size on disk.",
        ),
    ] = None,
    as_: AsOpt = None,
    spec: SpecOpt = None,
) -> None:
    """Export a run's student to safetensors, ONNX or GGUF; --quantize adds a separately evaluated quantized model.

    Example: distil export --format onnx --quantize int8

    Example: distil export --format gguf --quantize q8_0
    """
    from distil.export import export_run

    project = _project(spec)
    result = export_run(project, run, format_, quantize, actor=actor(as_))
    console.print(f"exported {result.run_id} as {result.format} to [bold]{result.folder}[/bold]")
    for name, check in result.checks.items():
        if name == "n":
            continue
        against = "ONNX" if name == "onnx_vs_pytorch" else "GGUF (read back by transformers)"
        if "agreement_with_float" in check:
            console.print(
                f"{against} vs PyTorch on {result.checks['n']} held-out examples: same label on "
                f"{check['agreement_with_float']:.1%}, largest probability difference {check['max_abs_prob_diff']:.2e}"
            )
        else:
            console.print(
                f"{against}: token agreement with the teacher {check['agreement']:.3f} (n={result.checks['n']})"
            )
    if result.evaluation:
        e = result.evaluation
        gold_n = f", gold set n={e['n_gold_set']}" if e.get("n_gold_set") else ""
        table = Table(title=f"distilled vs distilled + {e['quantization']} (test split, n={e['n']}{gold_n})")
        columns = ["variant", "agreement with teacher"] + (["on the gold set"] if gold_n else [])
        for col in (*columns, "KL", "same label as float", "size", "p50 ms / input"):
            table.add_column(col)
        for name in ("distilled", "quantized"):
            b = e[name]
            table.add_row(
                name if name == "distilled" else e["variant"],
                f"{b['agreement']:.3f}",
                *([f"{b['gold']['agreement']:.3f}" if "gold" in b else "-"] if gold_n else []),
                f"{b['kl']:.4f}" if "kl" in b else "-",
                f"{b['agreement_with_float']:.3f}" if "agreement_with_float" in b else "-",
                f"{b['size_bytes'] / 1e6:.2f} MB",
                f"{b['p50_ms']:.2f}" if "p50_ms" in b else "-",
            )
        console.print(table)
        console.print(f"recorded an evaluation row (variant {e['variant']}) in the ledger")

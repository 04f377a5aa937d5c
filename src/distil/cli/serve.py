"""Commands after launch: serve, monitor, export."""

from __future__ import annotations

import os
from typing import Annotated

import typer
from rich.table import Table

from distil.cli.app import SpecOpt, _project, app, console


@app.command()
def serve(
    run: Annotated[str | None, typer.Argument(help="Run id to serve (default: the newest run decided ship, else the newest run).")] = None,
    port: Annotated[int, typer.Option("--port", help="Port on 127.0.0.1.")] = 8000,
    host: Annotated[str, typer.Option("--host", help="Interface to listen on.")] = "127.0.0.1",
    api_key: Annotated[str | None, typer.Option("--api-key", help="Required bearer key (default: $DISTIL_API_KEY; none: open).")] = None,
    threshold: Annotated[float | None, typer.Option("--threshold", help="Router threshold (default: router.threshold, calibrated on the validation split).")] = None,
    no_teacher: Annotated[bool, typer.Option("--no-teacher", help="Serve the student alone: nothing escalates.")] = False,
    max_body_bytes: Annotated[int, typer.Option("--max-body-bytes", help="Larger request bodies get 413.")] = 1 << 20,
    no_traffic: Annotated[bool, typer.Option("--no-traffic", help="Do not write the traffic log.")] = False,
    spec: SpecOpt = None,
) -> None:
    """Serve a run over an OpenAI-compatible API (/v1/chat/completions, /v1/models, /v1/classify, /healthz, /metrics).

    Example: distil serve --port 8000 --api-key sk-local
    """
    from distil.serve.runs import load_served
    from distil.serve.server import create_app, make_server
    from distil.serve.traffic import TrafficLog, traffic_dir

    project = _project(spec)
    served = load_served(project, run, threshold=threshold, with_teacher=not no_teacher)
    m = project.spec.maintenance
    traffic = None if no_traffic else TrafficLog(traffic_dir(project.state_dir), sample_rate=m.traffic_sample_rate, redaction=m.redact)
    key = api_key or os.environ.get("DISTIL_API_KEY") or None
    table = Table(title=f"serving {served.run_id} on http://{host}:{port}", show_header=False)
    table.add_row("task", served.kind + (f": {', '.join(served.labels)}" if served.kind == "classify" else ""))
    table.add_row("teacher", served.teacher_id or "none (student only)")
    if served.kind == "classify":
        table.add_row("threshold", f"{served.threshold:.4f}")
        if served.calibration:
            c = served.calibration
            table.add_row("calibration", f"routed fidelity {c['routed_fidelity']:.3f} ≥ {c['target']:.3f}, escalated {c['escalated_share']:.1%} of {c['n']} validation examples")
            blended = served.student_per_1m + c["escalated_share"] * served.teacher_per_1m
            table.add_row("blended cost", f"{blended:,.2f} {project.spec.cost.currency} per 1M requests")
    table.add_row("api key", "required" if key else "none (open)")
    table.add_row("traffic log", "off" if traffic is None else f"{traffic.folder} (sample {m.traffic_sample_rate:.0%}, redaction {'on' if m.redact else 'off'})")
    console.print(table)
    make_server(create_app(served, api_key=key, max_body_bytes=max_body_bytes, traffic=traffic), host=host, port=port).run()

"""The validator's desk: `distil review` serves the review web app."""

from __future__ import annotations

import os
from typing import Annotated

import typer

from distil.cli.app import SpecOpt, app, console


@app.command()
def review(
    port: Annotated[int, typer.Option("--port", help="Port to listen on.")] = 8100,
    host: Annotated[
        str, typer.Option("--host", help="Interface to listen on (beyond loopback, --api-key is required).")
    ] = "127.0.0.1",
    api_key: Annotated[
        str | None,
        typer.Option(
            "--api-key", help="Key every page asks for (default: $DISTIL_REVIEW_KEY; none: open on loopback)."
        ),
    ] = None,
    spec: SpecOpt = None,
) -> None:
    """Serve the review web app: project, runs and rounds, a run, disagreements, sign-off, after launch.

    Example: distil review --port 8100
    """
    from distil.review.app import require_safe_binding, serve_review
    from distil.spec.io import load_project

    key = api_key or os.environ.get("DISTIL_REVIEW_KEY") or None
    require_safe_binding(host, key)
    project = load_project(spec)  # a bad spec is refused here, before the server starts
    console.print(
        f"reviewing [bold]{project.spec.name}[/bold] on http://{host}:{port}/" + (" (key required)" if key else "")
    )
    serve_review(spec, host=host, port=port, api_key=key)

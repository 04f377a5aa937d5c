"""A finished tiny project for the review app: gate locked, one evaluated run (numpy models standing in for the
three models), some logged traffic; and the app served by uvicorn on a free 127.0.0.1 port in a thread."""

from __future__ import annotations

import datetime as dt
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import uvicorn

from distil.evaluate.run import evaluate_run
from distil.review.app import create_app
from distil.serve.traffic import traffic_dir, write_traffic_rows
from distil.spec.gate import lock_gate
from distil.spec.io import load_project
from tests.evaluate.conftest import build_run, numpy_models
from tests.serve.conftest import free_port


def finished_project(spec_path: Path):
    """The triage example with its gate locked, run ``run-1`` trained, evaluated (the student flips every 5th item
    so it disagrees with the teacher on some) and some served traffic; returns the Project."""
    project = load_project(spec_path)
    lock_gate(project, "maria")
    build_run(project)
    evaluate_run(project, models=numpy_models(flip_student=5), threads=1)
    now = dt.datetime.now(dt.UTC)
    write_traffic_rows(
        traffic_dir(project.state_dir),
        [
            {
                "timestamp": now - dt.timedelta(hours=i),
                "input": f"ticket {i}: refund please",
                "route": "teacher" if i % 4 == 0 else "student",
            }
            for i in range(8)
        ],
    )
    return project


@pytest.fixture
def reviewed(triage_project: Path):
    """(project, spec path) of a finished tiny project."""
    return finished_project(triage_project), triage_project


@contextmanager
def serving(spec_path: Path, api_key: str | None = None) -> Iterator[str]:
    """The review app on a free 127.0.0.1 port in a thread; yields its base URL, stops it on exit."""
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(create_app(spec_path, api_key), host="127.0.0.1", port=port, log_level="warning")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    for _ in range(200):  # until it accepts connections (started is set once it listens)
        if server.started:
            break
        time.sleep(0.05)
    assert server.started, "the review app did not start"
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)

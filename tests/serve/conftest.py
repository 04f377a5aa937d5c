"""A classify project with a real run folder (tiny random student) and a tiny random local teacher,
and a helper that runs the server on a free 127.0.0.1 port in a thread."""

from __future__ import annotations

import json
import socket
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import yaml

from distil.data.records import Record, write_records
from distil.spec.gate import lock_gate
from distil.spec.io import load_project
from tests.conftest import EXAMPLES, build_tiny_causal_lm

LABELS = ["billing", "technical", "account"]


def write_classify_run(run_dir: Path, seed: int = 1) -> Path:
    """A run folder per the contract: student/ (plain transformers folder + distil_task.json)."""
    from transformers import AutoTokenizer

    from distil.train.students import label_token_ids

    student = build_tiny_causal_lm(run_dir / "student", layers=2, hidden=32, seed=seed)
    tokenizer = AutoTokenizer.from_pretrained(str(student))
    task = {
        "kind": "classify",
        "labels": LABELS,
        "label_token_ids": label_token_ids(tokenizer, LABELS),
        "prompt_template": "Ticket: {input}\nCategory:",
        "max_length": 128,
        "max_new_tokens": 16,
    }
    (student / "distil_task.json").write_text(json.dumps(task))
    return run_dir


@pytest.fixture
def classify_project(tmp_path, tiny_teacher_dir) -> Path:
    """The triage example pointed at the tiny teacher, with one trained run ``r1``; returns the spec path."""
    return make_classify_project(tmp_path, tiny_teacher_dir)


def make_classify_project(tmp_path: Path, tiny_teacher_dir: Path) -> Path:
    import shutil

    root = tmp_path / "proj"
    shutil.copytree(EXAMPLES / "triage", root)
    spec = yaml.safe_load((root / "distil.yaml").read_text())
    spec["teachers"][0]["source"] = f"hf:{tiny_teacher_dir}"
    spec["maintenance"] = {**(spec.get("maintenance") or {}), "traffic_sample_rate": 1.0}  # every request logged
    (root / "distil.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    write_classify_run(root / ".distil" / "runs" / "r1")
    project = load_project(root / "distil.yaml")
    lock_gate(project, project.spec.roles.sponsor)  # a served project locked its gate before its teacher was asked
    record_trained(project, "r1")
    return root / "distil.yaml"


def record_trained(project, run_id: str, dataset_hash: str = "sha256:abcdef012345") -> None:
    """The `run.trained` row `distil train` appends: the student folder's files hashed into the ledger."""
    student = project.runs_dir / run_id / "student"
    project.ledger.append(
        "run.trained",
        {"run_id": run_id},
        files=[student],
        table="runs",
        row={
            "run_id": run_id,
            "dataset_hash": dataset_hash,
            "role": "student",
            "path": str(student.relative_to(project.root)),
            "metrics": {},
        },
    )


def write_curated(project, texts: list[str], teacher_probs: np.ndarray, run_id: str = "r1") -> None:
    """A curated dataset per the contract: split parquet files plus the `dataset.curated` ledger row, and the
    `runs` row that says ``run_id`` was trained on it."""
    folder = project.data_dir / "curated" / "abcdef012345"
    third = len(texts) // 3
    splits = {"train": slice(0, third), "validation": slice(third, 2 * third), "test": slice(2 * third, None)}
    for name, part in splits.items():
        records = [
            Record(input=t, source="seed", label=LABELS[int(p.argmax())], label_probs=p.tolist(), split=name)
            for t, p in zip(texts[part], teacher_probs[part], strict=True)
        ]
        write_records(records, folder / f"{name}.parquet")
    rel = str(folder.relative_to(project.root))
    project.ledger.append(
        "dataset.curated",
        {"path": rel},
        files=[folder],
        table="datasets",
        row={"dataset_hash": "sha256:abcdef012345", "stage": "curated", "path": rel, "counts": {"curated": len(texts)}},
    )
    record_trained(project, run_id)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def running_server(app, graceful_timeout_s: float = 10.0):
    """Run ``app`` with uvicorn in a thread; yields the base URL; stops gracefully on exit."""
    from distil.serve.server import make_server

    port = free_port()
    server = make_server(app, port=port, graceful_timeout_s=graceful_timeout_s)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("server did not start")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}", server
    finally:
        server.should_exit = True
        thread.join(timeout=30)


def wait_for(predicate, what: str, attempts: int = 600) -> None:
    """Poll ``predicate`` every 50 ms until it holds; AssertionError naming ``what`` after ``attempts`` polls."""
    done = threading.Event()
    for _ in range(attempts):
        if predicate():
            return
        done.wait(0.05)
    raise AssertionError(f"never happened: {what}")


@contextmanager
def loop_held_behind(server, turn_s: float = 0.3):
    """Hold ``server``'s event loop ``turn_s`` seconds a turn until the block ends, as parsing and answering hundreds
    of other requests would; the server's models stay idle."""
    loop, caught_up = server.servers[0].get_loop(), threading.Event()

    def hold_the_loop() -> None:
        time.sleep(turn_s)
        if not caught_up.is_set():
            loop.call_soon(hold_the_loop)

    loop.call_soon_threadsafe(hold_the_loop)
    try:
        yield
    finally:
        caught_up.set()

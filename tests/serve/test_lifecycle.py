"""Calibration from the curated split, graceful shutdown with a request in flight, and `distil serve`
as a real process stopped with SIGTERM."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time

import httpx
import numpy as np
import pytest
import torch

from distil.serve.router import routed_fidelity
from distil.serve.runs import ServedModel, load_served
from distil.serve.server import create_app
from distil.serve.traffic import TrafficLog, read_traffic, traffic_dir
from distil.spec.io import load_project
from tests.serve.conftest import LABELS, free_port, running_server, write_curated


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    torch.set_num_threads(1)


def _gold_texts(project, n: int) -> list[str]:
    return [json.loads(line)["input"] for line in (project.root / "gold.jsonl").read_text().splitlines()][:n]


def test_threshold_is_calibrated_on_the_validation_split_to_the_gate_floor(classify_project):
    project = load_project(classify_project)
    texts = _gold_texts(project, 120)
    rng = np.random.default_rng(1)
    write_curated(project, texts, rng.dirichlet(np.ones(3), size=len(texts)))
    served = load_served(project, "r1")
    assert served.calibration is not None and served.calibration["n"] == 40
    assert served.calibration["target"] == project.spec.gate.fidelity_min == 0.95
    from distil.data.records import read_records

    validation = read_records(project.data_dir / "curated" / "abcdef012345" / "validation.parquet")
    student = served.student.label_distribution([r.input for r in validation])
    teacher = np.array([r.label_probs for r in validation])
    fidelity, share = routed_fidelity(student, teacher, served.threshold)
    assert fidelity >= 0.95 and share == pytest.approx(served.calibration["escalated_share"])
    report = json.loads((project.runs_dir / "r1" / "router.json").read_text())
    assert report["blended_cost_per_1m"] == pytest.approx(40 + share * 600)  # the triage example's prices
    # a random student disagrees with a random teacher often, so keeping 95% costs escalations
    assert share > 0


class _SlowStudent:
    """A student that takes a while, so a request is surely in flight when shutdown begins."""

    labels = LABELS

    def __init__(self, seconds: float):
        self.seconds = seconds
        self.started = threading.Event()

    def label_distribution(self, inputs):
        self.started.set()
        time.sleep(self.seconds)
        return np.tile([[0.6, 0.3, 0.1]], (len(inputs), 1))


def test_graceful_shutdown_finishes_the_request_in_flight_and_logs_it(tmp_path):
    student = _SlowStudent(1.0)
    log = TrafficLog(tmp_path / "traffic", flush_every_n=1000, flush_every_s=0)
    served = ServedModel("slow", "classify", LABELS, student, None, 0.0)
    result = {}
    with running_server(create_app(served, traffic=log)) as (url, server):

        def call() -> None:
            result["response"] = httpx.post(f"{url}/v1/classify", json={"input": "in flight"}, timeout=30)

        caller = threading.Thread(target=call)
        caller.start()
        assert student.started.wait(10)
        server.should_exit = True  # shutdown begins while the model is still working
        caller.join(30)
    assert result["response"].status_code == 200
    assert result["response"].json()["data"][0]["label"] == "billing"
    rows = read_traffic(tmp_path / "traffic")
    assert [r["input"] for r in rows] == ["in flight"]


def test_distil_serve_process_answers_and_flushes_its_traffic_on_sigterm(classify_project):
    port = free_port()
    env = {**os.environ, "DISTIL_API_KEY": "sk-proc", "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "distil",
            "serve",
            "r1",
            "--spec",
            str(classify_project),
            "--port",
            str(port),
            "--threshold",
            "0",
            "--as",
            "ops",
            "--allow-unshipped",
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 120
        while True:
            assert proc.poll() is None, proc.stdout.read()
            try:
                if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "distil serve did not come up"
            time.sleep(0.2)
        assert httpx.post(f"{url}/v1/classify", json={"input": "x"}).status_code == 401
        r = httpx.post(
            f"{url}/v1/classify",
            json={"input": ["my invoice is wrong", "call me on +44 20 7946 0958"]},
            headers={"Authorization": "Bearer sk-proc"},
            timeout=30,
        )
        assert r.status_code == 200 and len(r.json()["data"]) == 2
        proc.send_signal(signal.SIGTERM)
        # uvicorn shuts down cleanly (lifespan included), then re-raises the signal it caught
        assert proc.wait(timeout=60) in (0, -signal.SIGTERM)
    finally:
        if proc.poll() is None:
            proc.kill()
    rows = read_traffic(traffic_dir(classify_project.parent / ".distil"))
    assert [r["input"] for r in rows] == ["my invoice is wrong", "call me on [PHONE]"]


def test_default_run_is_the_newest_shipped_then_the_newest_trained(classify_project):
    from distil.errors import RunError
    from distil.runs import latest_run

    def latest_run_id(project):
        return latest_run(project, shipped_first=True).run_id

    project = load_project(classify_project)
    assert latest_run_id(project) == "r1"  # only a folder so far
    ledger = project.ledger
    for run_id in ("r2", "r3"):
        (project.runs_dir / run_id).mkdir()  # a folder, but no student in it
        ledger.append(
            "run.trained",
            {"run_id": run_id},
            table="runs",
            row={
                "run_id": run_id,
                "dataset_hash": "h",
                "role": "student",
                "path": f".distil/runs/{run_id}",
                "metrics": {},
            },
        )
    assert latest_run_id(project) == "r3"
    for run_id, decision in (("r2", "ship"), ("r3", "iterate")):
        ledger.append(
            "decision",
            {"run_id": run_id},
            table="decisions",
            row={"run_id": run_id, "decision": decision, "validator": "quinn", "driver": "dev", "evaluation_seq": 1},
        )
    assert latest_run_id(project) == "r2"
    with pytest.raises(RunError, match="r2: no student"):
        load_served(project)  # r2 was decided ship but its student is gone


def test_slow_clients_do_not_block_others(tmp_path):
    import socket

    served = ServedModel("fast", "classify", LABELS, _SlowStudent(0.0), None, 0.0)
    with running_server(create_app(served)) as (url, _):
        port = int(url.rsplit(":", 1)[1])
        stalled = []
        for _ in range(20):  # each sends half a request, then goes quiet
            s = socket.create_connection(("127.0.0.1", port))
            s.sendall(
                b"POST /v1/classify HTTP/1.1\r\nHost: x\r\nContent-Type: "
                b'application/json\r\nContent-Length: 100\r\n\r\n{"inp'
            )
            stalled.append(s)
        try:
            for _ in range(5):
                r = httpx.post(f"{url}/v1/classify", json={"input": "still here"}, timeout=10)
                assert r.status_code == 200
        finally:
            for s in stalled:
                s.close()

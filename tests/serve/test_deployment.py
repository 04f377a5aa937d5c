"""`distil serve` on the paper trail: only a run with a verified ship decision (or --allow-unshipped, recorded),
model files checked against the ledger before loading, and a signed start and stop row per deployment."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import httpx
import pytest

from distil.cli import main
from distil.errors import DeploymentError, LedgerError, RecordedFileError, RoleError, SigningError
from distil.serve.deployment import plan_deployment, record_start, record_stop
from distil.serve.runs import load_served
from distil.spec.io import load_project
from tests.ledger.conftest import execute, with_keys
from tests.serve.conftest import free_port


def _ship(project, run_id: str = "r1", decision: str = "ship") -> int:
    """A decision row as `distil decide` appends it (bound to its event)."""
    return project.ledger.append(
        "decision",
        {"run_id": run_id, "decision": decision},
        actor="quinn",
        table="decisions",
        row={"run_id": run_id, "decision": decision, "validator": "quinn", "driver": "dev", "evaluation_seq": 1},
    ).seq


def test_a_run_without_a_ship_decision_is_refused(classify_project, capsys):
    project = load_project(classify_project)
    with pytest.raises(DeploymentError, match="r1 was not decided ship: it has no decision"):
        plan_deployment(project, "r1", "ops", "127.0.0.1", 8000)
    _ship(project, decision="iterate")
    assert main(["serve", "r1", "--as", "ops", "--spec", str(classify_project)]) == 2
    assert "its newest decision is iterate" in capsys.readouterr().err
    with pytest.raises(RoleError, match=r"only the operator \(ops\)"):
        plan_deployment(project, "r1", "dev", "127.0.0.1", 8000, allow_unshipped=True)


@pytest.mark.parametrize("event_seq", [1, 9999])
def test_a_ship_decision_inserted_by_hand_is_refused(classify_project, capsys, event_seq):
    project = load_project(classify_project)
    execute(
        project.ledger.path,
        "INSERT INTO decisions (event_seq, run_id, decision, validator, driver, evaluation_seq) "
        "VALUES (?, 'r1', 'ship', 'quinn', 'dev', 1)",
        (event_seq,),
    )
    with pytest.raises(LedgerError, match="decisions row of event .* does not verify"):
        plan_deployment(project, "r1", "ops", "127.0.0.1", 8000)
    assert main(["serve", "--as", "ops", "--spec", str(classify_project)]) == 2  # the default run is chosen by it too
    assert "does not verify" in capsys.readouterr().err


def test_allow_unshipped_is_recorded_in_the_deployment_row(classify_project):
    project = load_project(classify_project)
    deployment = record_start(project, plan_deployment(project, "r1", "ops", "127.0.0.1", 8123, allow_unshipped=True))
    stopped = record_stop(project, deployment)
    start, stop = project.ledger.verified_rows("deployments", order="event_seq ASC")
    assert (start["run_id"], start["decision_seq"], start["allow_unshipped"], start["operator"], start["port"]) == (
        "r1",
        None,
        1,
        "ops",
        8123,
    )
    assert start["stopped_at"] is None and start["event_seq"] == deployment.event_seq
    assert stop["event_seq"] == stopped and stop["started_seq"] == deployment.event_seq and stop["stopped_at"]
    assert [e.kind for e in project.ledger.events()][-2:] == ["deployment", "deployment.stopped"]
    assert project.ledger.verify().ok


def test_deployments_are_signed_by_the_operator(classify_project):
    with_keys(classify_project, ["maria", "dev", "quinn", "ops"])
    project = load_project(classify_project)
    deployment = record_start(project, plan_deployment(project, "r1", "ops", "127.0.0.1", 8000, allow_unshipped=True))
    record_stop(project, deployment)
    result = project.ledger.verify()
    gate_lock = project.ledger.events(kind="gate.locked")[0].seq  # locked before the keys were set up
    assert result.ok and result.signed == 2 and result.unsigned == (gate_lock,)
    (project.root / "nokey.yaml").write_text(classify_project.read_text().replace("operator: ops", "operator: olga"))
    with pytest.raises(SigningError, match="olga has no public key"):
        plan_deployment(
            load_project(project.root / "nokey.yaml"), "r1", "olga", "127.0.0.1", 8000, allow_unshipped=True
        )


def test_changed_or_missing_model_files_are_refused_before_loading(classify_project, capsys):
    project = load_project(classify_project)
    weights = project.runs_dir / "r1" / "student" / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0x01
    weights.write_bytes(bytes(data))
    with pytest.raises(RecordedFileError, match="student/model.safetensors changed since it was recorded"):
        load_served(project, "r1", threshold=0.0, with_teacher=False)
    assert main(["serve", "r1", "--as", "ops", "--allow-unshipped", "--spec", str(classify_project)]) == 2
    assert "model.safetensors changed" in capsys.readouterr().err
    weights.unlink()
    with pytest.raises(RecordedFileError, match="student/model.safetensors is missing"):
        load_served(project, "r1", threshold=0.0, with_teacher=False)
    assert not project.ledger.rows("deployments")  # nothing served, nothing recorded


def test_a_file_added_to_the_model_folder_is_refused(classify_project):
    project = load_project(classify_project)
    (project.runs_dir / "r1" / "student" / "pytorch_model.bin").write_bytes(b"\x80\x04crafted")
    with pytest.raises(RecordedFileError, match="pytorch_model.bin was not there when it was recorded"):
        load_served(project, "r1", threshold=0.0, with_teacher=False)


def test_serve_takes_only_a_plain_run_id(classify_project, capsys):
    assert main(["serve", "../x", "--as", "ops", "--allow-unshipped", "--spec", str(classify_project)]) == 2
    assert "not a plain name" in capsys.readouterr().err


def test_a_shipped_run_is_served_and_its_start_and_stop_are_recorded(classify_project):
    project = load_project(classify_project)
    decision_seq = _ship(project)
    port = free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "distil",
            "serve",
            "--as",
            "ops",
            "--spec",
            str(classify_project),
            "--port",
            str(port),
            "--threshold",
            "0",
            "--no-teacher",
            "--no-traffic",
        ],
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 120
        while True:
            assert proc.poll() is None, proc.stdout.read()
            try:
                if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "distil serve did not come up"
            time.sleep(0.2)
        (start,) = project.ledger.verified_rows("deployments")
        assert (start["run_id"], start["decision_seq"], start["allow_unshipped"], start["port"]) == (
            "r1",
            decision_seq,
            0,
            port,
        )
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0, proc.stdout.read()
    finally:
        if proc.poll() is None:
            proc.kill()
    stop = project.ledger.verified_latest("deployments")
    assert stop["started_seq"] == start["event_seq"] and stop["stopped_at"] >= start["started_at"]
    assert project.ledger.verify().ok

"""SIGKILL `distil generate` and `distil train` at many points: each rerun ends with the same result as an
uninterrupted run, no Parquet shard or checkpoint is ever half-written, and the ledger verifies.
Two commands on one project at once do not corrupt or fail the ledger."""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import torch

from distil.spec.io import load_project
from tests.reliability.fault_server import FaultConfig, FaultServer
from tests.reliability.helpers import (
    REPO,
    cli_env,
    dataset_counts,
    distil_cmd,
    fault_project,
    record_labels,
    run_cli,
)
from tests.train.conftest import classify_records, write_curated, write_spec


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)


def kill_when(args: list[str], condition: Callable[[], bool], timeout: float = 120) -> bool:
    """Run ``distil args``; SIGKILL it as soon as ``condition()`` holds. True when it was killed, False when it
    finished first."""
    proc = subprocess.Popen(
        distil_cmd(*args), env=cli_env(), cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    deadline = time.monotonic() + timeout
    try:
        while proc.poll() is None:
            if condition():
                proc.send_signal(signal.SIGKILL)
                proc.wait()
                return True
            if time.monotonic() > deadline:
                raise AssertionError(f"distil {' '.join(args)} neither finished nor reached the kill point")
            time.sleep(0.002)
        assert proc.returncode == 0, proc.stderr.read().decode()
        return False
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def cached_calls(root: Path) -> int:
    path = root / ".distil" / "cache" / "teacher_calls.sqlite"
    if not path.exists():
        return 0
    try:
        with sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=1) as conn:
            return int(conn.execute("SELECT COUNT(*) FROM calls").fetchone()[0])
    except sqlite3.OperationalError:
        return 0  # the writer is creating the table


def every_parquet_reads(root: Path) -> int:
    """Read every visible .parquet under ``root/.distil`` in full; returns how many there are."""
    shards = [p for p in (root / ".distil").rglob("*.parquet") if not p.name.startswith(".")]
    for shard in shards:
        pq.read_table(shard)
    return len(shards)


# --- generate ---------------------------------------------------------------------------------------


GENERATE_KILLS = {
    "first cached call": lambda root: cached_calls(root) >= 1,
    "after one batch": lambda root: cached_calls(root) >= 16,
    "mid run": lambda root: cached_calls(root) >= 40,
    "last batch": lambda root: cached_calls(root) >= 64,
    "writing the shard": lambda root: (
        any((root / ".distil" / "data" / "raw").glob("*")) if (root / ".distil" / "data" / "raw").exists() else False
    ),
    "shard written": lambda root: (
        any((root / ".distil" / "data" / "raw").glob("*.parquet"))
        if (root / ".distil" / "data" / "raw").exists()
        else False
    ),
}


@pytest.mark.slow
def test_generate_killed_at_any_point_resumes_to_the_same_records(tmp_path):
    n = 72
    with FaultServer(FaultConfig(delay_s=0.01, rates={"500": 0.05, "429": 0.05}, seed=1)) as server:
        reference = fault_project(tmp_path / "reference", server.source(), n, max_concurrency=2, timeout_s=5)
        done = run_cli("generate", "--spec", str(reference))
        assert done.returncode == 0, done.stderr
        expected = record_labels(reference.parent)
        assert len(expected) == n
        killed = 0
        for name, condition in GENERATE_KILLS.items():
            spec = fault_project(tmp_path / name.replace(" ", "-"), server.source(), n, max_concurrency=2, timeout_s=5)
            root = spec.parent
            killed += kill_when(["generate", "--spec", str(spec)], lambda root=root, c=condition: c(root))
            every_parquet_reads(root)
            before = cached_calls(root)
            asked = server.stats.total_requests
            done = run_cli("generate", "--spec", str(spec))
            assert done.returncode == 0, f"{name}: {done.stderr}"
            # the rerun asks only for what was not cached (plus the calibration prompt, and retries)
            if before:
                assert server.stats.total_requests - asked < 2 * (n - before) + 8, name
            assert record_labels(root) == expected, name
            assert every_parquet_reads(root) == 1, name
            assert dataset_counts(root)[0] == {"seed": n}
            assert run_cli("ledger", "verify", "--spec", str(spec)).returncode == 0, name
    assert killed >= 5


# --- train ------------------------------------------------------------------------------------------


def _run_dir(project_root: Path) -> Path | None:
    runs = (
        sorted(p for p in (project_root / ".distil" / "runs").glob("*") if p.is_dir())
        if (project_root / ".distil" / "runs").exists()
        else []
    )
    return runs[0] if runs else None


def _in_run(root: Path, pattern: str) -> bool:
    run = _run_dir(root)
    return bool(run and any(run.glob(pattern)))


# each kill point is reached in a process that resumes the run the previous kill left behind
TRAIN_KILLS = [
    ("run folder started", "train_config.json"),
    ("writing the student checkpoint", "checkpoints/.student.tmp-*"),
    ("student checkpoint written", "checkpoints/student/state.pt"),
    ("writing the student folder", ".student.tmp-*"),
    ("writing the baseline checkpoint", "checkpoints/.baseline.tmp-*"),
    ("baseline checkpoint written", "checkpoints/baseline/state.pt"),
    ("metrics written", "metrics.json"),
]


def _weights(folder: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(folder / "model.safetensors"))


def _train_project(root: Path, teacher_dir: Path) -> Path:
    spec = write_spec(root, teacher_dir, train={"epochs": 2})
    write_curated(spec, classify_records(24), classify_records(9, seed=1))
    return spec


@pytest.mark.slow
def test_train_killed_at_any_point_resumes_to_the_same_model(tmp_path, tiny_teacher_dir):
    reference = _train_project(tmp_path / "reference", tiny_teacher_dir)
    done = run_cli("train", "--spec", str(reference))
    assert done.returncode == 0, done.stderr
    ref_run = _run_dir(reference.parent)

    spec = _train_project(tmp_path / "killed", tiny_teacher_dir)
    root = spec.parent
    killed = []
    for name, pattern in TRAIN_KILLS:
        run = _run_dir(root)
        args = ["train", "--spec", str(spec)] + (["--resume", run.name] if run else [])
        if run and any(run.glob(pattern)):
            continue  # already past this point
        if kill_when(args, lambda p=pattern: _in_run(root, p)):
            killed.append(name)
        run = _run_dir(root)
        # a checkpoint or model folder that exists is whole: it loads
        for state in run.glob("checkpoints/*/state.pt"):
            if not state.parent.name.startswith("."):  # a leftover temp folder is never read
                torch.load(state, map_location="cpu", weights_only=True)
        for role in ("student", "baseline"):
            if (run / role).is_dir():
                _weights(run / role)
    run = _run_dir(root)
    done = run_cli("train", "--spec", str(spec), "--resume", run.name)
    assert done.returncode == 0, done.stderr
    assert len(killed) >= 5, killed

    for role in ("student", "baseline"):
        got, want = _weights(run / role), _weights(ref_run / role)
        assert got.keys() == want.keys()
        for key in want:
            torch.testing.assert_close(got[key], want[key], rtol=0, atol=1e-6, msg=f"{role} {key}")
    ours, theirs = json.loads((run / "metrics.json").read_text()), json.loads((ref_run / "metrics.json").read_text())
    for role in ("student", "baseline"):
        for field in ("best_validation_fidelity", "final_train_loss", "steps", "tokens"):
            assert ours[role][field] == pytest.approx(theirs[role][field], abs=1e-6), (role, field)
    project = load_project(spec)
    assert sorted(r["role"] for r in project.ledger.rows("runs")) == ["baseline", "student"]
    assert run_cli("ledger", "verify", "--spec", str(spec)).returncode == 0


# --- two commands at once -----------------------------------------------------------------------------


def test_two_generates_and_ledger_writes_at_once_keep_the_ledger_whole(tmp_path):
    with FaultServer(FaultConfig(delay_s=0.005)) as server:
        spec = fault_project(tmp_path / "p", server.source(), 60, max_concurrency=4, timeout_s=5)
        procs = [
            subprocess.Popen(
                distil_cmd("generate", "--spec", str(spec)),
                env=cli_env(),
                cwd=REPO,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
            )
            for _ in range(2)
        ]
        project = load_project(spec)
        for i in range(30):  # a third writer in this process, appending while both label
            project.ledger.append(
                "alert", {"n": i}, actor="ops", table="alerts", row={"source": "test", "message": f"m{i}"}
            )
        for proc in procs:
            assert proc.wait(timeout=120) == 0, proc.stderr.read().decode()
    assert project.ledger.verify().ok
    assert len(project.ledger.rows("alerts")) == 30
    assert [c for c in dataset_counts(spec.parent)] == [{"seed": 60}, {"seed": 60}]
    # each command wrote a whole shard; racing on the same uncached items, they may label an item twice
    # (two shards, the same record ids and labels): never a lost or half-written record
    from distil.data.records import read_records

    records = read_records(spec.parent / ".distil" / "data" / "raw")
    assert len({r.id for r in records}) == 60
    assert len({(r.id, r.label) for r in records}) == 60
    assert run_cli("ledger", "verify", "--spec", str(spec)).returncode == 0

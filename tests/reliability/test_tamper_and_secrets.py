"""Tamper evidence (a changed ledger row, dataset shard or model file is reported by `distil ledger verify`)
and secrets (a planted API key is never written to any file a run leaves behind)."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
from pathlib import Path

import pytest
import torch

from distil.data.curate import curate
from distil.data.generate import generate_dataset
from distil.spec.io import load_project
from distil.teachers.registry import build_teacher
from tests.reliability.fault_server import FaultConfig, FaultServer
from tests.reliability.helpers import fault_project, run_cli
from tests.train.conftest import classify_records, write_curated, write_spec


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)


def verify_cli(spec: Path):
    return run_cli("ledger", "verify", "--spec", str(spec), timeout=120)


@pytest.fixture
def generated(tmp_path):
    with FaultServer(FaultConfig()) as server:
        spec = fault_project(tmp_path / "p", server.source(), 30, timeout_s=5)
        project = load_project(spec)
        generate_dataset(project, show_progress=False)
    return spec, project


def test_dataset_event_records_its_shards_and_a_changed_shard_is_reported(generated):
    spec, project = generated
    event = project.ledger.events("dataset.generated")[-1]
    shard = next((project.root / ".distil" / "data" / "raw").glob("*.parquet"))
    assert str(shard.relative_to(project.root)) in event.payload["files"]
    assert verify_cli(spec).returncode == 0
    data = bytearray(shard.read_bytes())
    data[len(data) // 2] ^= 0xFF
    shard.write_bytes(bytes(data))
    done = verify_cli(spec)
    assert done.returncode == 1
    assert f"row {event.seq} (dataset.generated)" in done.stderr and shard.name in done.stderr


def test_a_changed_event_or_typed_row_is_reported(generated):
    spec, project = generated
    event = project.ledger.events("dataset.generated")[-1]
    with sqlite3.connect(project.ledger.path) as conn:
        original = conn.execute("SELECT counts FROM datasets WHERE event_seq = ?", (event.seq,)).fetchone()[0]
        conn.execute("UPDATE datasets SET counts = ? WHERE event_seq = ?", (json.dumps({"seed": 3000}), event.seq))
    done = verify_cli(spec)
    assert done.returncode == 1 and f"row {event.seq} (dataset.generated)" in done.stderr and "datasets row" in done.stderr
    with sqlite3.connect(project.ledger.path) as conn:  # put it back: the chain holds again
        conn.execute("UPDATE datasets SET counts = ? WHERE event_seq = ?", (original, event.seq))
    assert verify_cli(spec).returncode == 0
    with sqlite3.connect(project.ledger.path) as conn:
        payload = json.loads(conn.execute("SELECT payload FROM events WHERE seq = ?", (event.seq,)).fetchone()[0])
        payload["counts"]["seed"] = 3000
        conn.execute("UPDATE events SET payload = ? WHERE seq = ?", (json.dumps(payload), event.seq))
    done = verify_cli(spec)
    assert done.returncode == 1 and f"row {event.seq}" in done.stderr


def test_a_moved_project_still_checks_its_files(generated, tmp_path):
    spec, project = generated
    moved = tmp_path / "moved"
    shutil.move(str(project.root), moved)
    shard = next((moved / ".distil" / "data" / "raw").glob("*.parquet"))
    shard.write_bytes(shard.read_bytes() + b"x")
    assert verify_cli(moved / "distil.yaml").returncode == 1


def test_a_changed_model_file_in_a_run_folder_is_reported(tmp_path, tiny_teacher_dir):
    from distil.train.trainer import train_run

    spec = write_spec(tmp_path / "t", tiny_teacher_dir, train={"epochs": 1})
    write_curated(spec, classify_records(12), classify_records(6, seed=1))
    project = load_project(spec)
    run_id = train_run(project, baseline=False, cpu=True).run_id
    event = project.ledger.events("run.trained")[-1]
    weights = project.runs_dir / run_id / "student" / "model.safetensors"
    recorded = event.payload["files"][str((project.runs_dir / run_id / "student").relative_to(project.root))]
    assert "model.safetensors" in recorded
    assert verify_cli(spec).returncode == 0
    data = bytearray(weights.read_bytes())
    data[-8] ^= 0x01  # one bit of one weight
    weights.write_bytes(bytes(data))
    done = verify_cli(spec)
    assert done.returncode == 1 and f"row {event.seq} (run.trained)" in done.stderr and "model.safetensors" in done.stderr


def _files_containing(folder: Path, needle: bytes) -> list[Path]:
    return [p for p in folder.rglob("*") if p.is_file() and needle in p.read_bytes()]


def test_a_planted_api_key_is_never_written(tmp_path):
    key = "sk-planted-" + os.urandom(12).hex()
    os.environ["RELIABILITY_TEACHER_KEY"] = key
    try:
        config = FaultConfig(rates={"429": 0.1, "500": 0.1, "malformed": 0.05})
        with FaultServer(config) as server:
            spec = fault_project(tmp_path / "p", server.source(), 40, timeout_s=5, api_key_env="RELIABILITY_TEACHER_KEY")
            done = run_cli("generate", "--spec", str(spec), timeout=120, RELIABILITY_TEACHER_KEY=key)
            assert done.returncode == 0, done.stderr
            project = load_project(spec)
            curate(project)
            # the key really went out, in the header only
            assert server.stats.authorization and all(h == f"Bearer {key}" for h in server.stats.authorization)
            # a refused key: the error message must not echo it either
            config.permanent_status = 401
            with open(tmp_path / "p" / "seeds.jsonl", "a") as f:
                f.write(json.dumps({"input": "a new ticket about my invoice"}) + "\n")
            refused = run_cli("generate", "--spec", str(spec), "--synthetic", "0", timeout=120, RELIABILITY_TEACHER_KEY=key)
            assert refused.returncode == 2 and "HTTP 401" in refused.stderr
            build_teacher(project)  # the library path too
    finally:
        os.environ.pop("RELIABILITY_TEACHER_KEY", None)
    needle = key.encode()
    assert needle not in (done.stdout + done.stderr + refused.stdout + refused.stderr).encode()
    written = [p for p in (tmp_path / "p").rglob("*") if p.is_file()]
    assert any(p.suffix == ".parquet" for p in written) and any(p.name == "ledger.db" for p in written)
    assert _files_containing(tmp_path / "p", needle) == []
    assert _files_containing(Path(os.environ["HOME"]), needle) == []

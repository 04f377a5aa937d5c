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
    assert (
        done.returncode == 1 and f"row {event.seq} (dataset.generated)" in done.stderr and "datasets row" in done.stderr
    )
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
    assert (
        done.returncode == 1 and f"row {event.seq} (run.trained)" in done.stderr and "model.safetensors" in done.stderr
    )


def _files_containing(folder: Path, needle: bytes) -> list[Path]:
    return [p for p in folder.rglob("*") if p.is_file() and needle in p.read_bytes()]


def test_a_planted_api_key_is_never_written(tmp_path):
    key = "sk-planted-" + os.urandom(12).hex()
    os.environ["RELIABILITY_TEACHER_KEY"] = key
    try:
        config = FaultConfig(rates={"429": 0.1, "500": 0.1, "malformed": 0.05})
        with FaultServer(config) as server:
            spec = fault_project(
                tmp_path / "p", server.source(), 40, timeout_s=5, api_key_env="RELIABILITY_TEACHER_KEY"
            )
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
            refused = run_cli(
                "generate", "--spec", str(spec), "--synthetic", "0", timeout=120, RELIABILITY_TEACHER_KEY=key
            )
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


# --- credentials in URLs, the GGUF teacher's cache ---------------------------------------------------


@pytest.mark.parametrize(
    ("url", "public"),
    [
        ("http://user:s3cret@127.0.0.1:8000/v1", "http://***@127.0.0.1:8000/v1"),
        ("https://api.example.com/v1?api_key=s3cret&region=eu", "https://api.example.com/v1?api_key=***&region=eu"),
        ("https://api.example.com/v1?access_token=s3cret", "https://api.example.com/v1?access_token=***"),
        ("https://api.example.com/v1", "https://api.example.com/v1"),
    ],
)
def test_credentials_are_stripped_from_urls(url, public):
    from distil.teachers.base import api_fingerprint
    from distil.teachers.urls import public_source, public_url

    assert public_url(url) == public
    assert public_source(f"openai:{url}#m") == f"openai:{public}#m"
    assert "s3cret" not in api_fingerprint(url, "m", "2030-01-01")


def test_a_password_in_the_teachers_url_is_never_written(tmp_path):
    with FaultServer(FaultConfig()) as server:
        source = server.source().replace("http://", "http://user:s3cret-pass@")
        spec = fault_project(tmp_path / "p", source, 20, timeout_s=5)
        done = run_cli("generate", "--spec", str(spec), timeout=120)
        assert done.returncode == 0, done.stderr
        assert run_cli("check", "--spec", str(spec), COLUMNS="200").stdout.count("***@") == 1
    project = load_project(spec)
    registered = project.ledger.events("teacher.registered")[-1].payload
    assert registered["source"].startswith("openai:http://***@127.0.0.1") and "s3cret" not in registered["fingerprint"]
    spec.write_text(spec.read_text().replace("s3cret-pass", "redacted"))  # the spec itself is the user's own file
    assert _files_containing(tmp_path / "p", b"s3cret-pass") == []
    assert "s3cret-pass" not in done.stdout + done.stderr


def _gguf_project(tmp_path, tiny_teacher_dir) -> tuple[Path, Path]:
    """A project whose teacher is a GGUF file, with its dequantized cache already in place (a tiny model:
    dequantizing a real GGUF takes half a minute)."""
    import yaml

    from distil.teachers.loading import dequantized_cache_path, resolve_source

    gguf = tmp_path / "weights"
    gguf.mkdir()
    (gguf / "tiny.gguf").write_bytes(b"GGUF" + os.urandom(60))
    source = f"gguf:{gguf}#tiny.gguf"
    cache = dequantized_cache_path(resolve_source(source))
    shutil.copytree(tiny_teacher_dir, cache)
    spec = write_spec(tmp_path / "p", tiny_teacher_dir)
    data = yaml.safe_load(spec.read_text())
    data["teachers"][0].update(
        source=source, licence={"name": "Apache-2.0", "distillation_permitted": "yes", "reviewed_by": "sam"}
    )
    spec.write_text(yaml.safe_dump(data))
    from distil.spec.gate import lock_gate

    lock_gate(load_project(spec), "sam")  # no teacher is built before the gate is locked
    return spec, cache


def _flip_a_weight(cache: Path) -> None:
    weights = cache / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-8] ^= 0x01
    weights.write_bytes(bytes(data))


def test_a_changed_gguf_teacher_cache_is_refused_against_the_ledger(tmp_path, tiny_teacher_dir):
    from distil.errors import TeacherError

    spec, cache = _gguf_project(tmp_path, tiny_teacher_dir)
    project = load_project(spec)
    teacher = build_teacher(project)
    registered = project.ledger.events("teacher.registered")[-1]
    assert registered.payload["fingerprint"] == teacher.fingerprint and registered.payload[
        "dequantized_sha256"
    ].startswith("sha256:")
    build_teacher(project)  # unchanged: accepted, not registered twice
    assert len(project.ledger.events("teacher.registered")) == 1
    _flip_a_weight(cache)
    with pytest.raises(TeacherError, match=f"ledger row {registered.seq} \\(teacher.registered\\)"):
        build_teacher(load_project(spec))


def test_a_changed_gguf_teacher_cache_is_refused_against_its_build_stamp(tmp_path, tiny_teacher_dir):
    from distil.errors import TeacherError
    from distil.files import write_json_atomic
    from distil.teachers.loading import (
        CACHE_STAMP,
        folder_fingerprint,
        local_model_folder,
        weights_fingerprint,
    )

    spec, cache = _gguf_project(tmp_path, tiny_teacher_dir)
    source = load_project(spec).spec.teacher().source
    from distil.teachers.loading import resolve_source

    write_json_atomic(
        cache / CACHE_STAMP,
        {"source_sha256": weights_fingerprint(resolve_source(source)), "dequantized_sha256": folder_fingerprint(cache)},
    )
    assert local_model_folder(source)[0] == cache
    _flip_a_weight(cache)
    with pytest.raises(TeacherError, match="dequantized teacher cache is not what was built"):
        local_model_folder(source)

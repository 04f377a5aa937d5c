"""The trainer runs unchanged under `accelerate launch` with two processes (DDP on gloo, CPU).

accelerate 1.x turns `--cpu --num_processes 2` into a single process unless MPI is set up; on a
machine without a GPU, `--multi_gpu --num_processes 2` is what starts two torchrun workers, and the
trainer's Accelerator(cpu=True) then runs them as MULTI_CPU over gloo.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from distil.spec.io import load_project


def launch_two_processes(folder: Path, options: str, spec: Path) -> subprocess.CompletedProcess:
    """`accelerate launch` of a script that trains run 'ddp' of ``spec`` with ``train_run(..., options)``."""
    script = folder / "launch.py"
    script.write_text(
        "import sys, torch\ntorch.set_num_threads(1)\n"
        "from distil.spec.io import load_project\nfrom distil.train.trainer import train_run\n"
        f"print('RUN', train_run(load_project(sys.argv[1]), run_id='ddp', {options}).run_id)\n"
    )
    accelerate = Path(sys.executable).with_name("accelerate")
    return subprocess.run(
        [
            str(accelerate),
            "launch",
            "--multi_gpu",
            "--num_processes",
            "2",
            "--num_machines",
            "1",
            "--mixed_precision",
            "no",
            "--dynamo_backend",
            "no",
            str(script),
            str(spec),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )


@pytest.mark.slow
def test_accelerate_launch_two_processes_completes_a_tiny_run(classify_project, tmp_path):
    done = launch_two_processes(tmp_path, "", classify_project)
    assert done.returncode == 0, done.stderr[-3000:]
    project = load_project(classify_project)
    config = json.loads((project.runs_dir / "ddp" / "train_config.json").read_text())
    assert config["processes"] == 2
    metrics = json.loads((project.runs_dir / "ddp" / "metrics.json").read_text())
    # 24 examples, batch 4 per process × 2 processes: 3 steps per epoch, 2 epochs
    assert metrics["student"]["steps"] == metrics["baseline"]["steps"] == 6
    assert sorted(r["role"] for r in project.ledger.rows("runs", "run_id = ?", ("ddp",))) == ["baseline", "student"]


@pytest.mark.slow
def test_accelerate_launch_two_processes_runs_on_policy_steps(tmp_path, tiny_teacher_dir):
    """Both processes draw the same on-policy coin per step, sample their own rows and share the token count."""
    from tests.train.conftest import generate_records, write_curated, write_spec

    spec = write_spec(
        tmp_path / "gen",
        tiny_teacher_dir,
        kind="generate",
        train={"epochs": 1, "topk_cache_k": 8, "alpha": 0.5, "on_policy_lambda": 1.0, "on_policy_max_new_tokens": 3},
    )
    write_curated(spec, generate_records(16), generate_records(4, seed=1))
    done = launch_two_processes(tmp_path, "baseline=False", spec)
    assert done.returncode == 0, done.stderr[-3000:]
    curve = json.loads((load_project(spec).runs_dir / "ddp" / "curve.json").read_text())["student"]
    assert len(curve) == 2 and all(p["on_policy"] for p in curve)  # 16 rows / (4 × 2 processes), λ = 1
    assert all(p["loss"] == p["loss"] and p["loss"] > 0 for p in curve)


FSDP_CONFIG = Path(__file__).resolve().parents[2] / "docs" / "scale" / "accelerate-fsdp.yaml"


def test_the_shipped_fsdp_config_launches_distil_train_in_two_processes(generate_project):
    """docs/scale/accelerate-fsdp.yaml as docs/scale.md gives it (`accelerate launch ... -m distil train`), on two CPU
    processes over gloo: accelerate runs an FSDP file on CPUs as DDP, so this checks the file and the command line,
    and that the two processes split the steps and write one run."""
    accelerate = Path(sys.executable).with_name("accelerate")
    done = subprocess.run(
        [str(accelerate), "launch", "--config_file", str(FSDP_CONFIG), "--num_processes", "2"]
        + ["--mixed_precision", "no", "-m", "distil", "train", "--spec", str(generate_project), "--no-baseline"],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert done.returncode == 0, done.stderr[-3000:]
    project = load_project(generate_project)
    (run,) = project.ledger.rows("runs")
    config = json.loads((project.runs_dir / run["run_id"] / "train_config.json").read_text())
    assert config["processes"] == 2
    # 12 examples, batch 4 per process × 2 processes: 2 steps in the one epoch
    assert json.loads((project.runs_dir / run["run_id"] / "metrics.json").read_text())["student"]["steps"] == 2

"""Output a person can read: no third-party warnings or loading bars unless --debug, and progress lines in a log."""

from __future__ import annotations

import io
import os
import re
import subprocess
import sys
from pathlib import Path

from rich.console import Console

from distil.console import PlainProgress, format_seconds, progress, quiet_third_party
from tests.train.conftest import classify_records, write_curated, write_spec

SRC = Path(__file__).parents[1] / "src"
# What the libraries print on their own when nobody silences them (seen with an encoder LoRA student).
THIRD_PARTY = ("Warning", "LOAD REPORT", "Loading weights", "it/s]", "[transformers]", "deprecated")


def run_cli(args: list[str], **env: str) -> subprocess.CompletedProcess:
    environment = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("TQDM_", "TRANSFORMERS_VERB", "HF_HUB_DISABLE", "DISTIL_PROGRESS"))
    }
    environment.update({"PYTHONPATH": str(SRC), "COLUMNS": "200", **env})
    # captured: stdout and stderr are pipes, not a terminal, as under CI, nohup or a log file
    return subprocess.run(
        [sys.executable, "-m", "distil", *args], capture_output=True, text=True, env=environment, timeout=300
    )


def test_train_in_a_log_is_quiet_and_shows_progress_lines(tmp_path, tiny_teacher_dir, tiny_encoder_dir):
    spec = write_spec(
        tmp_path / "proj",
        tiny_teacher_dir,
        student={"kind": "encoder", "path": str(tiny_encoder_dir), "lora": True},
        train={"epochs": 2},
    )
    write_curated(spec, classify_records(24), classify_records(6, seed=1))

    quiet = run_cli(["train", "--spec", str(spec), "--no-baseline"], DISTIL_PROGRESS_INTERVAL="0")
    assert quiet.returncode == 0, quiet.stderr[-2000:]
    output = quiet.stdout + quiet.stderr
    for text in THIRD_PARTY:
        assert text not in output, f"{text!r} in the output:\n{output}"
    lines = [line for line in quiet.stdout.splitlines() if re.match(r"student: \d+/12 steps, [\d.]+ steps/s", line)]
    assert len(lines) >= 6, quiet.stdout  # a line per step at interval 0, not one block at the end
    assert "done in" in lines[-1] and "about" in lines[0] and "loss" in lines[0]

    loud = run_cli(["--debug", "train", "--spec", str(spec), "--no-baseline"], DISTIL_PROGRESS_INTERVAL="3600")
    assert loud.returncode == 0, loud.stderr[-2000:]
    assert any(
        text in loud.stdout + loud.stderr for text in THIRD_PARTY
    )  # --debug shows them: the check above can fail
    # a long interval: only the finishing line
    assert len([line for line in loud.stdout.splitlines() if re.match(r"student: \d+/12 steps", line)]) == 1


def test_plain_progress_writes_a_line_per_interval_and_one_when_done():
    out = io.StringIO()
    console = Console(file=out, width=200)
    assert not console.is_terminal
    bar = progress(console=console, unit="items")
    assert isinstance(bar, PlainProgress) and bar.interval_s == 10.0
    bar.interval_s = 0.0
    with bar:
        task = bar.add_task("labelling seed", total=4)
        for _ in range(4):
            bar.advance(task, 1)
    lines = out.getvalue().splitlines()
    assert len(lines) == 4 and lines[0].startswith("labelling seed: 1/4 items") and "done in" in lines[-1]

    out.truncate(0)
    out.seek(0)
    with PlainProgress(console, interval_s=3600) as slow:
        task = slow.add_task("synthetic inputs", total=10)
        slow.advance(task, 3)
    assert out.getvalue().splitlines() == [out.getvalue().splitlines()[0]] and "3/10 items" in out.getvalue()
    assert format_seconds(42) == "42 s" and format_seconds(185) == "3 min 05 s" and format_seconds(3720) == "1 h 02 min"


def test_a_disabled_progress_writes_nothing():
    out = io.StringIO()
    with progress(console=Console(file=out), disable=True) as bar:
        bar.advance(bar.add_task("x", total=2), 2)
    assert out.getvalue() == ""


def test_quiet_leaves_what_the_user_set(monkeypatch):
    monkeypatch.setenv("TRANSFORMERS_VERBOSITY", "info")
    monkeypatch.delenv("TQDM_DISABLE", raising=False)
    quiet_third_party(debug=True)
    assert "TQDM_DISABLE" not in os.environ
    quiet_third_party(debug=False)
    assert os.environ["TRANSFORMERS_VERBOSITY"] == "info" and os.environ["TQDM_DISABLE"] == "1"

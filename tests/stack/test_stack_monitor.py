"""`distil monitor --stack` on a recorded stack traffic log: agreement with the generalist per specialist and
window, who needs a refresh, and the router's confusion on a labelled sample."""

from __future__ import annotations

import datetime as dt
import json

import numpy as np

from distil.cli import main
from distil.serve.traffic import traffic_dir, write_traffic_rows
from distil.spec.io import load_project
from distil.stack.load import generalist_spec, load_stack
from distil.stack.monitor import run_stack_monitor
from distil.stack.spec import load_stack_spec
from distil.teachers.registry import build_teacher
from tests.stack.conftest import stack_body, write_stack

START = dt.datetime.now(dt.UTC).replace(microsecond=0) - dt.timedelta(days=3)  # the runs were trained now


def _record(stack, name: str, texts: list[str], agree: bool) -> None:
    """Traffic rows for ``name`` over two days, served as the generalist answers (``agree``) or as it does not."""
    project = load_project(stack.project_path(stack.specialist(name).project))
    teacher = np.asarray(build_teacher(project, generalist_spec(stack)).label_distribution(texts))
    labels = project.spec.task.label_names
    rows = []
    for i, probs in enumerate(teacher):
        top = int(probs.argmax()) if agree else (int(probs.argmax()) + 1) % len(labels)
        served = [1.0 if j == top else 0.0 for j in range(len(labels))]
        stamp = START + dt.timedelta(hours=12 * (i % 4))  # two rows per 12 hours: two windows of a day
        rows.append(
            {
                "timestamp": stamp,
                "input": texts[i],
                "model": name,
                "distribution": served,
                "answer": labels[top],
                "confidence": 1.0,
            }
        )
    write_traffic_rows(traffic_dir(stack.state_dir), rows)


def test_agreement_per_specialist_and_who_needs_a_refresh(stack_root, tmp_path):
    stack = load_stack_spec(write_stack(stack_root, stack_body(by="router")))
    _record(stack, "triage", [f"my invoice {i} is wrong" for i in range(8)], agree=True)
    _record(stack, "mood", [f"today I feel {i}" for i in range(8)], agree=False)
    sample = tmp_path / "routed.jsonl"
    truth = ["triage", "mood", "mood", "triage", "mood", "triage"]
    texts = [f"labelled request {i}" for i in range(len(truth))]
    sample.write_text("".join(json.dumps({"input": t, "task": k}) + "\n" for t, k in zip(texts, truth, strict=True)))

    result, path = run_stack_monitor(stack, labelled=sample, embed=None)
    triage, mood = result.specialists["triage"], result.specialists["mood"]
    assert (triage["agreement"], triage["n_sampled"], triage["needs_refresh"]) == (1.0, 8, False)
    assert (mood["agreement"], mood["needs_refresh"]) == (0.0, True)
    assert [w["n"] for w in mood["windows"]] == [4, 4] and "below the floor" in mood["reasons"][0]
    assert result.alerts and all(a.startswith("mood: ") for a in result.alerts)

    router = load_stack(stack).router
    said = [router.labels[int(i)] for i in np.asarray(router.student.label_distribution(texts)).argmax(axis=1)]
    confusion = result.router["confusion"]
    for t in ("triage", "mood"):
        for p in ("triage", "mood"):
            assert confusion[t][p] == sum(1 for a, b in zip(truth, said, strict=True) if (a, b) == (t, p))
    assert result.router["n"] == 6 and result.router["accuracy"] == np.mean(np.array(truth) == np.array(said))
    assert json.loads(path.read_text())["router"]["confusion"] == confusion


def test_monitor_stack_command(stack_root, tmp_path, capsys):
    stack = load_stack_spec(write_stack(stack_root, stack_body(by="router")))
    _record(stack, "mood", [f"today I feel {i}" for i in range(6)], agree=False)
    sample = tmp_path / "routed.jsonl"
    sample.write_text(json.dumps({"input": "a refund please", "task": "triage"}) + "\n")
    assert main(["monitor", "--stack", str(stack.path), "--router-sample", str(sample), "--window", "12h"]) == 1
    out = capsys.readouterr().out
    assert "mood" in out and "no traffic" in out and "router: accuracy" in out and "alert" in out
    sample.write_text(json.dumps({"input": "x", "task": "legal"}) + "\n")
    assert main(["monitor", "--stack", str(stack.path), "--router-sample", str(sample)]) == 2
    assert "routed.jsonl:1: needs `input` (text) and `task`" in capsys.readouterr().err

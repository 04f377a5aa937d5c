"""Drift monitoring on real traffic shards, the real MiniLM embedder and a tiny local teacher."""

from __future__ import annotations

import datetime as dt
import json
import random

import numpy as np
import pytest
import torch
import yaml

from distil.cli import main
from distil.monitor.check import run_monitor, targets_from_traffic
from distil.monitor.drift import mmd_permutation_test, refresh_due
from distil.serve.traffic import traffic_dir, write_traffic_rows
from distil.spec.gate import lock_gate
from distil.spec.io import load_project
from tests.conftest import EXAMPLES

FOODS = [
    "lentil soup",
    "banana bread",
    "roast chicken",
    "apple pie",
    "fried rice",
    "pumpkin risotto",
    "fish tacos",
    "lemon tart",
]
STEPS = [
    "Preheat the oven to {t} degrees and bake the {f} for {m} minutes.",
    "Whisk two eggs, fold them into the {f} and let it rest for {m} minutes.",
    "Season the {f} with salt and pepper, then simmer for {m} minutes at {t} degrees.",
    "Serve the {f} warm with fresh herbs after {m} minutes.",
]


def recipe_texts(n: int, seed: int = 0) -> list[str]:
    """Traffic from another distribution entirely: cooking instructions instead of support tickets."""
    rng = random.Random(seed)
    return [
        rng.choice(STEPS).format(f=rng.choice(FOODS), m=rng.randint(5, 90), t=rng.randint(150, 250)) for _ in range(n)
    ]


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    torch.set_num_threads(1)


@pytest.fixture
def monitored(tmp_path, tiny_teacher_dir):
    """The triage project with the tiny teacher; the tickets are split at random into the reference
    (written as the seeds) and unshifted traffic, so both halves come from one distribution."""
    import shutil

    root = tmp_path / "proj"
    shutil.copytree(EXAMPLES / "triage", root)
    spec = yaml.safe_load((root / "distil.yaml").read_text())
    spec["teachers"][0]["source"] = f"hf:{tiny_teacher_dir}"
    spec["maintenance"] = {"drift_floor": 0.9, "refresh_days": 30}
    (root / "distil.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    tickets = [
        json.loads(line)
        for f in ("seeds.jsonl", "gold.jsonl")
        for line in (root / f).read_text().splitlines()
        if line.strip()
    ]
    random.Random(0).shuffle(tickets)
    (root / "seeds.jsonl").write_text("".join(json.dumps(t) + "\n" for t in tickets[:80]))
    project = load_project(root / "distil.yaml")
    lock_gate(project, project.spec.roles.sponsor)  # a project that serves traffic locked its gate long ago
    return project, [t["input"] for t in tickets[80:140]]


def log_traffic(project, texts, teacher, disagree_on: set[int] = frozenset(), start: dt.datetime | None = None) -> None:
    """Log ``texts`` as a student served them: the teacher's distribution, except on the items ``disagree_on``,
    where the student's answer is another label (the teacher's distribution rolled by one)."""
    probs = teacher.label_distribution(texts)
    start = start or dt.datetime.now(dt.UTC) - dt.timedelta(hours=len(texts))
    rows = []
    for i, (text, p) in enumerate(zip(texts, probs, strict=True)):
        served = np.roll(p, 1) if i in disagree_on else p
        assert (served.argmax() != p.argmax()) == (i in disagree_on)
        rows.append(
            {
                "timestamp": start + dt.timedelta(hours=i),
                "input": text,
                "route": "student",
                "answer": "x",
                "distribution": served.tolist(),
                "confidence": float(served.max()),
            }
        )
    write_traffic_rows(traffic_dir(project.state_dir), rows)


def _teacher(project):
    from distil.teachers.registry import build_teacher

    return build_teacher(project)


def test_mmd_permutation_test_separates_shifted_gaussians_and_not_same_ones():
    rng = np.random.default_rng(0)
    same_a, same_b = rng.normal(size=(60, 8)), rng.normal(size=(60, 8))
    shifted = rng.normal(loc=0.8, size=(60, 8))
    mmd_same, p_same, _ = mmd_permutation_test(same_a, same_b, 200, seed=1)
    mmd_shift, p_shift, _ = mmd_permutation_test(same_a, shifted, 200, seed=1)
    assert p_same > 0.05 and p_shift < 0.01 and mmd_shift > mmd_same
    assert mmd_permutation_test(same_a, shifted, 200, seed=1) == (mmd_shift, p_shift, pytest.approx(_))  # seeded


def test_unshifted_traffic_passes_and_shifted_traffic_alerts(monitored):
    project, unshifted = monitored
    teacher = _teacher(project)
    disagreed = {7, 23, 41}  # the student gives another label than the teacher on 3 of the 60 requests
    log_traffic(project, unshifted, teacher, disagree_on=disagreed)
    result, path = run_monitor(project, sample=60, teacher=teacher.label_distribution, window=dt.timedelta(days=1))
    assert result.ok, result.alerts  # 57 / 60 = 0.95 is above the floor of 0.9
    assert result.agreement == pytest.approx(57 / 60) and result.student_agreement == pytest.approx(57 / 60)
    assert result.drift["p_value"] >= 0.01
    assert {e["input"] for e in result.examples if not e["agree"]} == {unshifted[i] for i in disagreed}
    assert sum(w["n"] for w in result.windows) == 60 and len(result.windows) >= 2
    assert sum(w["agreement"] * w["n"] for w in result.windows) == pytest.approx(57)
    assert "tone" in result.slices and path.is_file() and path.with_suffix(".png").is_file()
    assert project.ledger.rows("alerts") == []

    # a week later the traffic is something else entirely
    for f in traffic_dir(project.state_dir).glob("*.parquet"):
        f.unlink()
    log_traffic(project, recipe_texts(60), teacher)
    result, _ = run_monitor(project, sample=60, teacher=teacher.label_distribution)
    assert not result.ok and result.drift["p_value"] < 0.01
    assert any("input drift" in a for a in result.alerts)
    rows = project.ledger.rows("alerts")
    assert len(rows) == 1 and rows[0]["source"] == "monitor" and "drift" in rows[0]["message"]


def test_monitor_command_exits_1_below_the_fidelity_floor_and_targets_the_failures(monitored, capsys):
    project, unshifted = monitored
    teacher = _teacher(project)
    disagreed = set(range(0, 30, 3))  # 10 of 30: agreement 20 / 30, below the floor of 0.9
    log_traffic(project, unshifted[:30], teacher, disagree_on=disagreed)
    code = main(["monitor", "--spec", str(project.spec_path), "--sample", "30"])
    out = capsys.readouterr().out
    assert code == 1 and "below the floor" in out and "ALERT" in out
    assert "fidelity 0.667 on 30" in project.ledger.rows("alerts")[0]["message"]
    targets = targets_from_traffic(project)
    assert len(targets) == 10 and {t.reason for t in targets} == {"disagreed"}
    assert {t.input for t in targets} == {unshifted[i] for i in disagreed} and all("tone" in t.tags for t in targets)


def test_refresh_due_follows_the_cadence():
    trained = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    assert refresh_due(trained, 30, now=dt.datetime(2026, 1, 20, tzinfo=dt.UTC))["overdue"] is False
    late = refresh_due(trained, 30, now=dt.datetime(2026, 2, 5, tzinfo=dt.UTC))
    assert late["overdue"] is True and late["due"].startswith("2026-01-31")

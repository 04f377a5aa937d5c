"""A new user's first project, the way the README's "Your own task" walks it: `distil init --task classify`,
fill the spec and add the data files (columns mapped, a slice read from a field), `distil check`, `distil gate
lock`, `distil run` on a tiny random teacher. Slow: the whole cadence runs."""

from __future__ import annotations

import json

import pytest

from distil.cli import main
from distil.spec.io import load_project
from tests.spec.test_own_task import fill, new_project, with_data


@pytest.mark.slow
def test_init_fill_check_lock_and_run_the_cadence(tmp_path, tiny_teacher_dir, capsys):
    import torch

    torch.set_num_threads(1)
    spec_path = new_project(tmp_path)
    assert main(["check", "--spec", str(spec_path)]) == 2  # placeholders, no gate, no data yet
    with_data(spec_path)
    fill(spec_path, tiny_teacher_dir)
    assert main(["check", "--spec", str(spec_path)]) == 0
    assert main(["run", "--spec", str(spec_path), "--as", "ben"]) == 2  # the gate is not locked yet
    assert main(["gate", "lock", "--as", "ana", "--spec", str(spec_path)]) == 0
    capsys.readouterr()
    assert main(["run", "--spec", str(spec_path), "--as", "ben", "--threads", "1"]) == 0
    out = capsys.readouterr().out
    assert "gate verdict" in out and "fidelity_min" in out and "warning: fidelity_min 0.9: the test split has" in out

    project = load_project(spec_path)
    kinds = [e.kind for e in project.ledger.events()]
    for kind in ("gate.locked", "teacher.registered", "dataset.generated", "dataset.curated", "run.trained"):
        assert kind in kinds
    assert all(e.actor for e in project.ledger.events())  # every act has an actor
    assert project.ledger.verify(base=project.root).ok
    run_id = project.ledger.latest("runs")["run_id"]
    evaluation = json.loads((project.runs_dir / run_id / "evaluation.json").read_text())
    assert set(evaluation["student"]["slices"]) == {"category", "length"}
    assert set(evaluation["student"]["slices"]["category"]) <= {"books", "electronics", "food"}
    plan = json.loads((project.state_dir / "cadence.json").read_text())["plan"]["output"]["plan"]
    assert plan["seconds"] > 0 and "measured on this machine" in plan["time_method"]

"""`distil run` on the real triage example and the embedded SmolLM2 teacher, with a reduced budget."""

from __future__ import annotations

import json
import shutil

import pytest
import yaml

from distil.cli import main

from .conftest import EXAMPLES


@pytest.mark.slow
def test_distil_run_on_the_real_triage_example(tmp_path, capsys):
    project = tmp_path / "triage"
    shutil.copytree(EXAMPLES / "triage", project)
    spec = yaml.safe_load((project / "distil.yaml").read_text())
    spec["data"]["synthetic_budget"] = 0  # seeds only: the teacher still labels all 60 of them
    spec["train"].update({"epochs": 1, "batch_size": 8, "patience": 0})
    (project / "distil.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    gold = (project / "gold.jsonl").read_text().splitlines()
    (project / "gold.jsonl").write_text("\n".join(gold[::6]) + "\n")  # 28 gold tickets, every slice kept
    path = str(project / "distil.yaml")

    assert main(["gate", "lock", "--as", "maria", "--spec", path]) == 0
    assert main(["run", "--threads", "2", "--spec", path]) == 0
    out = capsys.readouterr().out
    assert "gate verdict" in out and "report:" in out

    run_dir = next((project / ".distil" / "runs").iterdir())
    evaluation = json.loads((run_dir / "evaluation.json").read_text())
    teacher, student = evaluation["teacher"], evaluation["student"]
    assert teacher["params"] == 134_515_008  # its agreement is with itself: 1.0 by definition, so not asserted
    assert student["params"] < 0.4 * teacher["params"]  # the MiniLM encoder student: 22.7M
    assert 0.0 <= student["agreement"] <= 1.0 and student["kl"] >= 0.0
    assert teacher["gold"]["n"] == 28 and teacher["gold"]["accuracy"] > 1 / 3  # better than chance on 3 queues
    assert {c["name"] for c in evaluation["gate"]["checks"]} >= {"fidelity_min", "size_max_vs_teacher"}
    assert (run_dir / "report.html").is_file()
    assert main(["ledger", "verify", "--spec", path]) == 0

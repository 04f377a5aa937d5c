"""`distil plan` estimates training time from steps timed on this machine (cached in the project), for classify
and generate, before curate too, and says how it estimated."""

from __future__ import annotations

import json

from distil.cli import main
from distil.spec.io import load_project
from distil.train.plan import estimate
from tests.spec.test_own_task import fill, new_project, with_data
from tests.train.conftest import generate_records, write_curated, write_spec


def test_classify_plan_before_curate_times_steps_on_this_machine_and_caches_them(tmp_path, tiny_teacher_dir, capsys):
    spec_path = new_project(tmp_path)
    with_data(spec_path)
    fill(spec_path, tiny_teacher_dir)
    project = load_project(spec_path)
    plan = estimate(project, device="cpu")
    # 45 seeds + 6 synthetic, train share 0.7 × (1 - probe 0.1)
    assert plan.examples == round(51 * 0.7 * 0.9) and "45 seeds + 6 synthetic" in plan.examples_from
    assert plan.train_tokens > 0 and plan.steps == -(-plan.examples // 8) * 1
    assert plan.throughput is not None and plan.throughput.seconds_per_step > 0 and not plan.throughput.cached
    assert plan.seconds == plan.steps * plan.throughput.seconds_per_step > 0
    assert "measured on this machine" in plan.time_method
    cache = project.state_dir / "cache" / "throughput.json"
    assert len(json.loads(cache.read_text())) == 1
    again = estimate(load_project(spec_path), device="cpu")
    assert again.throughput.cached and again.throughput.seconds_per_step == plan.throughput.seconds_per_step
    assert "cached in .distil/cache/throughput.json" in again.time_method

    capsys.readouterr()
    assert main(["plan", "--spec", str(spec_path)]) == 0
    out = capsys.readouterr().out
    assert "training time: about" in out and "how: " in out and "s per step, measured on this machine" in out


def test_generate_plan_times_its_steps_too(tmp_path, tiny_teacher_dir):
    spec = write_spec(tmp_path / "g", tiny_teacher_dir, kind="generate", train={"epochs": 2, "alpha": 0.5})
    write_curated(spec, generate_records(8), generate_records(2, seed=1))
    plan = estimate(load_project(spec), device="cpu")
    assert plan.examples == 8 and plan.examples_from == "the curated train split"
    assert plan.steps == 2 * 2 and plan.seconds == plan.steps * plan.throughput.seconds_per_step > 0

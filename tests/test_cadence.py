"""The cadence: each step's skip / resume / rerun rule on fake actions (fast), and the whole cadence on a
tiny random teacher (slow): run, rerun (nothing to do), SIGKILL during training and resume, iterate rounds
with their ledger rows and the kill rule."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from distil.cadence import CadenceState, file_key, run_cadence, run_step, step_key
from distil.cli import main
from distil.iterate import IterationLimitError, iterate_round
from distil.spec.gate import lock_gate
from distil.spec.io import load_project

from .conftest import EXAMPLES


def tiny_triage(folder: Path, teacher_dir: Path, gate: dict | None = None, train: dict | None = None) -> Path:
    """The triage example pointed at a tiny random teacher, with a small budget and a short training."""
    import shutil

    shutil.copytree(EXAMPLES / "triage", folder)
    spec = yaml.safe_load((folder / "distil.yaml").read_text())
    spec["teachers"][0]["source"] = f"hf:{teacher_dir}"
    spec["task"]["few_shot"]["per_label"] = 1  # the tiny model's context is short
    spec["student"] = {"init": "teacher-layers:2"}
    spec["data"]["synthetic_budget"] = 6
    spec["data"]["filters"] = {"min_confidence": 0.0, "min_per_slice": 2}
    spec["train"] = {"epochs": 1, "batch_size": 16, "max_length": 96, **(train or {})}
    if gate is not None:
        spec["gate"] = gate
    (folder / "distil.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    # keep the tiny run quick: a third of the gold set is enough to exercise every metric
    gold = (folder / "gold.jsonl").read_text().splitlines()
    (folder / "gold.jsonl").write_text("\n".join(gold[::3]) + "\n")
    return folder / "distil.yaml"


@pytest.fixture
def tiny_project(tmp_path, tiny_teacher_dir):
    path = tiny_triage(tmp_path / "proj", tiny_teacher_dir)
    project = load_project(path)
    lock_gate(project, project.spec.roles.sponsor)
    return path


# --- one step at a time, with fake actions ---------------------------------------------------------


class Crash(Exception):
    pass


class FakeAction:
    """Records each call and what it was handed; crashes once when told to, after leaving a partial output."""

    def __init__(self, state: CadenceState | None = None, crash_after_start: bool = False):
        self.calls: list[dict] = []
        self.state = state
        self.crash = crash_after_start

    def __call__(self, partial: dict) -> dict:
        self.calls.append(dict(partial))
        if self.crash:
            self.crash = False
            self.state.mark("train", KEY, "started", {"run_id": "run-a"})  # what the train step records first
            raise Crash("killed mid-step")
        return {"run_id": partial.get("run_id", "run-new"), "n": len(self.calls)}


KEY = step_key("inputs", 1)


@pytest.fixture
def state(triage_project):
    return CadenceState(load_project(triage_project))


def test_a_step_is_skipped_when_its_key_is_unchanged(state):
    action = FakeAction()
    first = run_step(state, "train", KEY, action, announce=lambda _: None)
    again = run_step(
        CadenceState(load_project(state.path.parents[1] / "distil.yaml")), "train", KEY, action, announce=lambda _: None
    )
    assert len(action.calls) == 1 and not first.skipped and again.skipped
    assert again.output == first.output == {"run_id": "run-new", "n": 1}


def test_a_step_reruns_when_its_inputs_change(state, tmp_path):
    seeds = tmp_path / "seeds.jsonl"
    seeds.write_text('{"input": "a"}\n')
    action = FakeAction()
    run_step(state, "generate", step_key(file_key(seeds)), action, announce=lambda _: None)
    assert run_step(state, "generate", step_key(file_key(seeds)), action, announce=lambda _: None).skipped
    seeds.write_text('{"input": "a"}\n{"input": "b"}\n')  # an input file changed: a new key
    changed = run_step(state, "generate", step_key(file_key(seeds)), action, announce=lambda _: None)
    assert not changed.skipped and len(action.calls) == 2
    assert file_key(tmp_path / "missing") == "absent"


def test_a_step_reruns_when_its_output_is_gone(state):
    action = FakeAction()
    run_step(state, "train", KEY, action, announce=lambda _: None)
    gone = run_step(state, "train", KEY, action, still_there=lambda output: False, announce=lambda _: None)
    assert not gone.skipped and len(action.calls) == 2


def test_a_crashed_step_resumes_from_what_it_left(state):
    action = FakeAction(state, crash_after_start=True)
    with pytest.raises(Crash):
        run_step(state, "train", KEY, action, announce=lambda _: None)
    reread = CadenceState(load_project(state.path.parents[1] / "distil.yaml"))  # a new process reads the file
    assert reread.data["train"]["status"] == "started" and reread.done("train", KEY) is None
    resumed = run_step(reread, "train", KEY, action, announce=lambda _: None)
    assert not resumed.skipped and action.calls[-1] == {"run_id": "run-a"}  # handed the run to resume
    assert resumed.output["run_id"] == "run-a" and reread.done("train", KEY) == resumed.output


def test_a_crash_under_an_old_key_is_not_resumed(state):
    with pytest.raises(Crash):
        run_step(state, "train", KEY, FakeAction(state, crash_after_start=True), announce=lambda _: None)
    action = FakeAction()
    run_step(state, "train", step_key("other inputs"), action, announce=lambda _: None)
    assert action.calls == [{}]  # the inputs changed: start afresh, not from the old run


def test_a_damaged_state_file_costs_only_a_recheck(state):
    state.path.parent.mkdir(parents=True, exist_ok=True)
    state.path.write_text("{not json")
    action = FakeAction()
    outcome = run_step(
        CadenceState(load_project(state.path.parents[1] / "distil.yaml")), "train", KEY, action, announce=lambda _: None
    )
    assert not outcome.skipped and len(action.calls) == 1


# --- the whole cadence on a tiny teacher (slow) -------------------------------------------------------


@pytest.mark.slow
def test_whole_cadence_then_rerun_does_nothing(tiny_project):
    import torch

    torch.set_num_threads(1)
    project = load_project(tiny_project)
    result = run_cadence(project, requests=100, threads=1)
    assert [o.step for o in result.outcomes] == ["check", "plan", "generate", "curate", "train", "evaluate", "report"]
    assert not result.skipped()
    run_dir = project.runs_dir / result.run_id
    evaluation = json.loads((run_dir / "evaluation.json").read_text())
    for model in ("teacher", "student", "baseline"):
        assert {"accuracy", "agreement", "kl", "p95_ms", "params", "slices"} <= set(evaluation[model])
    assert Path(result.report_path).read_text().startswith("<!")
    kinds = [e.kind for e in project.ledger.events()]
    for kind in (
        "gate.locked",
        "teacher.registered",
        "dataset.generated",
        "dataset.curated",
        "run.trained",
        "evaluation",
    ):
        assert kind in kinds
    assert project.ledger.verify(base=project.root).ok

    events_before = len(project.ledger.events())
    again = run_cadence(load_project(tiny_project), requests=100, threads=1)
    assert again.skipped() == ["check", "plan", "generate", "curate", "train", "evaluate", "report"]
    assert again.run_id == result.run_id
    assert len(project.ledger.events()) == events_before


def test_cadence_refuses_an_unlocked_gate(tmp_path, tiny_teacher_dir):
    path = tiny_triage(tmp_path / "p", tiny_teacher_dir)
    assert main(["run", "--spec", str(path)]) == 2


@pytest.mark.slow
def test_sigkill_during_training_resumes_without_regenerating(tiny_project):
    project = load_project(tiny_project)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    # enough optimiser steps that training is still going when it is killed
    spec = yaml.safe_load(tiny_project.read_text())
    spec["train"]["epochs"] = 40
    spec["train"]["batch_size"] = 4
    tiny_project.write_text(yaml.safe_dump(spec, sort_keys=False))
    cmd = [sys.executable, "-m", "distil", "run", "--threads", "1", "--spec", str(tiny_project)]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    state_path = project.state_dir / "cadence.json"
    deadline = time.time() + 300
    killed = False
    while time.time() < deadline and proc.poll() is None:
        if state_path.is_file():
            state = json.loads(state_path.read_text())
            run_id = state.get("train", {}).get("output", {}).get("run_id")
            if run_id and list((project.runs_dir / run_id).glob("**/checkpoint*")):
                proc.send_signal(signal.SIGKILL)
                killed = True
                break
        time.sleep(0.2)
    proc.wait(60)
    assert killed, "training finished before it could be interrupted"
    state = json.loads(state_path.read_text())
    assert state["train"]["status"] == "started"
    raw_before = {p.name: p.stat().st_mtime_ns for p in (project.data_dir / "raw").glob("*.parquet")}
    assert raw_before

    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "generate: up to date, skipped" in done.stdout
    assert "curate: up to date, skipped" in done.stdout
    raw_after = {p.name: p.stat().st_mtime_ns for p in (project.data_dir / "raw").glob("*.parquet")}
    assert raw_after == raw_before  # no data regenerated
    final = CadenceState(project).data
    assert final["train"]["output"]["run_id"] == state["train"]["output"]["run_id"]  # the same run, resumed
    assert final["report"]["status"] == "done"
    assert load_project(tiny_project).ledger.verify(base=project.root).ok


def _test_split_held(project, locked_hash: str | None = None) -> str:
    """The newest dataset's test split is the locked one, and no test or gold item, nor a near-duplicate
    of one, is in its train, validation or probe split. Returns the test file's sha256."""
    from distil.data import dedupe
    from distil.data.evalsets import locked_set
    from distil.data.records import read_records
    from distil.data.sources import read_inputs
    from distil.ledger.store import sha256_file
    from distil.runs import latest_curated

    folder = latest_curated(project).folder
    test_hash = sha256_file(folder / "test.parquet")
    assert locked_hash is None or test_hash == locked_hash  # byte-identical round over round
    locked = locked_set(project, "test")
    test = read_records(folder / "test.parquet")
    assert [r.id for r in test] == locked.item_ids
    held = [r.input for r in test] + [item.input for item in read_inputs(project.path(project.spec.data.gold))]
    threshold = project.spec.data.filters.near_duplicate_threshold
    for name in ("train", "validation", "probe"):
        trained = [r.input for r in read_records(folder / f"{name}.parquet")]
        assert all(hit is None for hit in dedupe.contaminated(trained, held, threshold)), name
        assert all(dedupe.jaccard(a, b) < threshold for a in trained for b in held), name  # exact all pairs
    return test_hash


@pytest.mark.slow
def test_two_iterate_rounds_keep_the_locked_test_split_then_the_limit_and_the_kill_rule(tmp_path, tiny_teacher_dir):
    # a size threshold no student can meet keeps the gate failing, so the rounds run out
    gate = {"fidelity_min": 0.9, "size_max_vs_teacher": 0.01, "per_slice_fidelity_min": 0.9, "max_iterations": 2}
    path = tiny_triage(tmp_path / "p", tiny_teacher_dir, gate=gate)
    project = load_project(path)
    lock_gate(project, project.spec.roles.sponsor)
    run_cadence(project, requests=100, threads=1)
    locked_hash = _test_split_held(project)

    first = iterate_round(load_project(path), budget=4, requests=100, threads=1)
    assert _test_split_held(project, locked_hash) == locked_hash
    second = iterate_round(load_project(path), budget=4, requests=100, threads=1)
    assert _test_split_held(project, locked_hash) == locked_hash
    assert (first.round, second.round) == (1, 2)
    assert first.labelled > 0  # new data did go through curate
    from distil.data.records import read_records

    test_inputs = {
        r.input for r in read_records(project.path(project.ledger.latest("evaluation_sets", "name = 'test'")["path"]))
    }
    assert (
        first.failures and not {f.input for f in first.failures + second.failures} & test_inputs
    )  # mined outside test
    rows = [e.payload for e in project.ledger.events(kind="iteration")]
    assert [r["round"] for r in rows] == [1, 2]
    assert rows[0]["to_run"] == rows[1]["from_run"] != rows[0]["from_run"]
    assert all(r["max_iterations"] == 2 for r in rows)
    assert all(isinstance(r["dropped"], dict) for r in rows)  # new inputs screened before labelling, counted
    with pytest.raises(IterationLimitError):
        iterate_round(load_project(path), budget=4)

    assert main(["decide", "--as", "quinn", "--spec", str(path)]) == 0
    decision = project.ledger.latest("decisions")
    assert decision["decision"] == "kill"
    assert decision["validator"] == "quinn" and decision["driver"] == "dev"

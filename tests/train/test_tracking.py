"""`train.report_to`: the curve reaches TensorBoard and MLflow through their own APIs, read back from the local
store with the libraries' own readers (TensorBoard's event accumulator, MLflow's client)."""

from __future__ import annotations

import json
import sys

import pytest
import torch

from distil.cadence import spec_part
from distil.cli import main
from distil.spec.io import load_project
from distil.tracking import RUN_TAG
from distil.train import trainer as T
from tests.train.conftest import classify_records, write_curated, write_spec

torch.set_num_threads(1)


def _project(tmp_path, teacher, report_to: str):
    spec = write_spec(tmp_path / "proj", teacher, train={"report_to": report_to})
    write_curated(spec, classify_records(16), classify_records(6, seed=1))
    return load_project(spec)


def _curve(project, run_id: str) -> dict:
    return json.loads((project.runs_dir / run_id / "curve.json").read_text())


def _series(points: list[dict], key: str) -> list[tuple[int, float]]:
    return [(p["step"], p[key]) for p in points if p.get(key) is not None]


def test_tensorboard_event_files_hold_each_models_curve(tmp_path, tiny_teacher_dir):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    project = _project(tmp_path, tiny_teacher_dir, "tensorboard")
    run_id = T.train_run(project, run_id="r1").run_id
    events = EventAccumulator(str(project.runs_dir / run_id / "tensorboard"))
    events.Reload()
    curve = _curve(project, run_id)
    for role in ("student", "baseline"):
        for key in ("loss", "lr", "validation_fidelity"):
            logged = [(e.step, e.value) for e in events.Scalars(f"{role}/{key}")]
            expected = _series(curve[role], key)
            assert [s for s, _ in logged] == [s for s, _ in expected], (role, key)
            assert [v for _, v in logged] == pytest.approx([v for _, v in expected], rel=1e-6), (role, key)
    assert len(events.Scalars("student/validation_fidelity")) == 2  # one validation check per epoch


def test_mlflow_run_holds_the_curve_and_settings_and_a_resume_continues_it(tmp_path, tiny_teacher_dir):
    from mlflow import MlflowClient

    project = _project(tmp_path, tiny_teacher_dir, "mlflow")
    T.train_run(project, baseline=False, run_id="r1", max_steps=3)  # paused part-way, then resumed
    T.train_run(project, baseline=False, run_id="r1")
    client = MlflowClient(tracking_uri=(project.runs_dir / "r1" / "mlruns").as_uri())
    experiment = client.get_experiment_by_name("tiny")
    runs = client.search_runs([experiment.experiment_id])
    assert len(runs) == 1 and runs[0].data.tags[RUN_TAG] == "r1"  # the resume found the run it started
    run = runs[0]
    assert run.data.params["train.epochs"] == "2" and run.data.params["train.report_to"] == "mlflow"
    curve = _curve(project, "r1")["student"]
    assert len(curve) == 8
    for key in ("loss", "lr", "validation_fidelity"):
        history = sorted((m.step, m.value) for m in client.get_metric_history(run.info.run_id, f"student/{key}"))
        expected = _series(curve, key)
        assert [s for s, _ in history] == [s for s, _ in expected], key
        assert [v for _, v in history] == pytest.approx([v for _, v in expected], rel=1e-6), key


def test_nothing_is_tracked_by_default(tmp_path, tiny_teacher_dir):
    spec = write_spec(tmp_path / "proj", tiny_teacher_dir, train={"epochs": 1})
    write_curated(spec, classify_records(8), classify_records(4, seed=1))
    project = load_project(spec)
    assert project.spec.train.report_to == "none"
    T.train_run(project, baseline=False, run_id="r1")
    names = {p.name for p in (project.runs_dir / "r1").iterdir()}
    assert "student" in names and not names & {"tensorboard", "mlruns"}


@pytest.mark.parametrize(
    ("report_to", "module", "package"),
    [("mlflow", "mlflow", "mlflow-skinny"), ("tensorboard", "tensorboard", "tensorboard")],
)
def test_a_missing_library_is_one_line_naming_the_pip_package(
    tmp_path, tiny_teacher_dir, capsys, monkeypatch, report_to, module, package
):
    spec = write_spec(tmp_path / "proj", tiny_teacher_dir, train={"report_to": report_to})
    write_curated(spec, classify_records(8), classify_records(4, seed=1))
    monkeypatch.setitem(sys.modules, module, None)  # how Python marks a module that cannot be imported
    assert main(["train", "--spec", str(spec)]) == 2
    err = capsys.readouterr().err
    first = err.strip().splitlines()[0]
    assert first.startswith("error: train.report_to: ") and f"pip install {package}" in first
    assert "Traceback" not in err
    assert not (load_project(spec).runs_dir).exists() or not any(load_project(spec).runs_dir.iterdir())


def test_choosing_a_tracker_does_not_retrain_a_finished_cadence_step(triage_project):
    project = load_project(triage_project)
    before = spec_part(project, "student", "train", "task", "teachers")
    project.spec.train.report_to = "tensorboard"
    assert spec_part(project, "student", "train", "task", "teachers") == before
    project.spec.train.epochs += 1
    assert spec_part(project, "student", "train", "task", "teachers") != before

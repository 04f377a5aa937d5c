"""The final evaluation reaches the run's tracker (`train.report_to`), read back with the libraries' own readers."""

from __future__ import annotations

import json

import pytest

from distil.evaluate.run import evaluate_run
from distil.tracking import RUN_TAG

from .conftest import numpy_models

CHECKED = ("agreement", "accuracy", "kl", "n", "p95_ms")


def _expected(project) -> list[dict]:
    documents = [
        project.runs_dir / "run-1" / "evaluation.json",
        project.runs_dir / "run-1" / "evaluations" / "evaluation-v2.json",
    ]
    return [json.loads(path.read_text()) for path in documents]


def test_each_evaluation_is_logged_to_tensorboard_at_its_version(run_project):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run_project.spec.train.report_to = "tensorboard"
    evaluate_run(run_project, models=numpy_models(flip_student=5), threads=1, requests=5)
    evaluate_run(run_project, models=numpy_models(flip_student=3), threads=1, requests=5)
    events = EventAccumulator(str(run_project.runs_dir / "run-1" / "tensorboard"))
    events.Reload()
    documents = _expected(run_project)
    for model in ("teacher", "student", "baseline"):
        for key in CHECKED:
            logged = [(e.step, e.value) for e in events.Scalars(f"evaluation/{model}/{key}")]
            assert logged == [(v, pytest.approx(d[model][key], rel=1e-6)) for v, d in enumerate(documents, 1)]
    gold = events.Scalars("evaluation/student/gold/accuracy")
    assert [e.value for e in gold] == pytest.approx([d["student"]["gold"]["accuracy"] for d in documents])
    assert events.Scalars("evaluation/gate/all_pass")[0].value == float(documents[0]["gate"]["all_pass"])


def test_an_evaluation_is_logged_to_the_mlflow_run_that_training_made(run_project):
    from mlflow import MlflowClient

    from distil.runs import RunDir
    from distil.tracking import open_tracker

    run_project.spec.train.report_to = "mlflow"
    made = open_tracker("mlflow", RunDir(run_project, "run-1"), run_project.spec.name)  # as training opens it
    made.log_metrics({"student/loss": 0.5}, step=1)
    made.close()
    evaluate_run(run_project, models=numpy_models(flip_student=5), threads=1, requests=5)
    client = MlflowClient(tracking_uri=(run_project.runs_dir / "run-1" / "mlruns").as_uri())
    experiment = client.get_experiment_by_name(run_project.spec.name)
    runs = client.search_runs([experiment.experiment_id])
    assert len(runs) == 1 and runs[0].data.tags[RUN_TAG] == "run-1"
    document = json.loads((run_project.runs_dir / "run-1" / "evaluation.json").read_text())
    metrics = runs[0].data.metrics
    assert metrics["student/loss"] == 0.5
    for key in CHECKED:
        assert metrics[f"evaluation/student/{key}"] == pytest.approx(document["student"][key], rel=1e-6)
    assert metrics["evaluation/cost/build_cost"] == pytest.approx(document["cost"]["build_cost"])


def test_an_untracked_evaluation_writes_no_store(run_project):
    evaluate_run(run_project, models=numpy_models(flip_student=5), threads=1, requests=5)
    names = {p.name for p in (run_project.runs_dir / "run-1").iterdir()}
    assert "evaluation.json" in names and not names & {"tensorboard", "mlruns"}

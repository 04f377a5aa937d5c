"""Evaluating a run again keeps the first evaluation's files (and the ledger's hashes of them); evaluate checks
the run's model files and data against the ledger before anything is loaded."""

from __future__ import annotations

import json

import pytest

from distil.cli import main
from distil.decide import record_decision
from distil.errors import EvaluationError, RecordedFileError
from distil.evaluate.run import evaluate_run
from distil.runs import RunDir

from .conftest import build_run, numpy_models


def _model_with_weights(folder, role):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text("{}")
    (folder / "model.safetensors").write_bytes(bytes(range(256)) * 4)


def test_a_second_evaluation_is_a_new_version_and_the_trail_still_verifies(run_project):
    first, _ = evaluate_run(run_project, models=numpy_models(flip_student=0), threads=1)
    first_text = first.read_text()
    second, document = evaluate_run(run_project, models=numpy_models(flip_student=4), threads=1)
    run = RunDir(run_project, "run-1")
    assert first == run.folder / "evaluation.json" and first.read_text() == first_text  # kept as recorded
    assert second == run.folder / "evaluations" / "evaluation-v2.json"
    assert (run.evaluation, run.predictions) == (second, run.folder / "evaluations" / "predictions-v2.parquet")
    assert run.predictions.is_file() and (run.folder / "predictions.parquet").is_file()
    assert json.loads(run.evaluation.read_text())["student"]["agreement"] == document["student"]["agreement"] < 1.0
    third, _ = evaluate_run(run_project, models=numpy_models(flip_student=0), threads=1)
    assert third.name == "evaluation-v3.json" and run.variants == {"distilled": third}
    result = run_project.ledger.verify()
    assert result.ok, result.problems
    _, target, event = record_decision(run_project, "quinn", "run-1")
    newest = run_project.ledger.verified_latest("evaluations")
    assert target["event_seq"] == event.payload["evaluation_seq"] == newest["event_seq"] and newest["path"].endswith(
        "evaluation-v3.json"
    )


def test_changed_or_missing_model_files_are_refused(triage_project):
    from distil.spec.gate import lock_gate
    from distil.spec.io import load_project

    project = load_project(triage_project)
    lock_gate(project, "maria")
    build_run(project, write_model=_model_with_weights)
    weights = project.runs_dir / "run-1" / "student" / "model.safetensors"
    weights.write_bytes(b"\x01" + weights.read_bytes()[1:])
    with pytest.raises(RecordedFileError, match="run-1/student/model.safetensors changed since it was recorded"):
        evaluate_run(project, models=numpy_models(), threads=1)
    weights.unlink()
    with pytest.raises(RecordedFileError, match="run-1/student/model.safetensors is missing"):
        evaluate_run(project, models=numpy_models(), threads=1)
    assert not project.ledger.rows("evaluations")


def test_a_missing_test_split_is_refused_by_name(run_project, capsys):
    test_split = run_project.path(run_project.ledger.latest("datasets")["path"]) / "test.parquet"
    test_split.unlink()
    with pytest.raises(EvaluationError, match="test.parquet not found"):
        evaluate_run(run_project, models=numpy_models(), threads=1)
    assert main(["evaluate", "--spec", str(run_project.root / "distil.yaml")]) == 2
    assert "test.parquet" in capsys.readouterr().err


def test_a_recorded_split_changed_on_disk_is_refused(run_project):
    data = run_project.ledger.latest("datasets")
    folder = run_project.path(data["path"])
    run_project.ledger.append(
        "dataset.curated",
        {"dataset_hash": data["dataset_hash"]},
        files=[folder],
        table="datasets",
        row={**{k: data[k] for k in ("dataset_hash", "stage", "path")}, "counts": {}},
    )
    shard = folder / "test.parquet"
    shard.write_bytes(shard.read_bytes()[:-1] + b"\x00")
    with pytest.raises(RecordedFileError, match="test.parquet changed since it was recorded"):
        evaluate_run(run_project, models=numpy_models(), threads=1)


def test_evaluate_takes_only_a_plain_run_id(run_project, capsys):
    assert main(["evaluate", "../x", "--spec", str(run_project.root / "distil.yaml")]) == 2
    assert "not a plain name" in capsys.readouterr().err

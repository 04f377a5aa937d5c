"""RunDir: a run id is checked once, a run's dataset comes from the ledger and nowhere else, and "the newest"
run or curated dataset is decided in one place."""

from __future__ import annotations

import pytest

from distil.cli import main
from distil.errors import DataError, RunError
from distil.runs import CuratedData, RunDir, check_run_id, latest_curated, latest_run
from distil.spec.io import load_project
from tests.evaluate.conftest import build_run


@pytest.mark.parametrize("bad", ["", "..", "../x", "a/b", "a\\b", ".hidden", "-x", "run id", "x" * 129, "a..b", "/etc"])
def test_a_run_id_must_be_a_plain_name(bad):
    with pytest.raises(RunError, match="run id"):
        check_run_id(bad)


@pytest.mark.parametrize("good", ["r1", "20250101-120000-abcd1234", "run_1.v2", "x" * 128])
def test_plain_names_pass(good):
    assert check_run_id(good) == good


def test_a_run_that_does_not_exist_is_named_with_how_to_list_runs(triage_project):
    project = load_project(triage_project)
    with pytest.raises(RunError, match="run nope: no folder") as caught:
        RunDir(project, "nope")
    assert "distil ledger log --kind run.trained" in caught.value.hint
    assert RunDir.new(project, "nope").folder == project.runs_dir / "nope"  # a run about to be written


def test_the_cli_refuses_a_bad_run_id_with_exit_2(triage_project, capsys):
    assert main(["report", "../../etc", "--spec", str(triage_project)]) == 2
    err = capsys.readouterr().err
    assert "not a plain name" in err and "Traceback" not in err


def test_every_file_of_a_run_has_one_name(triage_project):
    project = load_project(triage_project)
    build_run(project)
    run = RunDir(project, "run-1")
    folder = project.runs_dir / "run-1"
    assert (run.student, run.baseline, run.metrics, run.curve, run.train_config) == (
        folder / "student",
        folder / "baseline",
        folder / "metrics.json",
        folder / "curve.json",
        folder / "train_config.json",
    )
    assert (run.evaluation, run.predictions, run.router, run.report_html, run.report_md) == (
        folder / "evaluation.json",
        folder / "predictions.parquet",
        folder / "router.json",
        folder / "report.html",
        folder / "report.md",
    )
    assert run.variant_evaluation("quantized") == folder / "evaluation.quantized.json"
    assert run.variant_evaluation("distilled") == run.evaluation
    run.variant_evaluation("quantized").write_text("{}")
    assert run.variants == {"quantized": folder / "evaluation.quantized.json"}


def test_a_runs_dataset_comes_from_its_ledger_row_never_the_newest(triage_project):
    project = load_project(triage_project)
    build_run(project, "run-1", seed=0)
    build_run(project, "run-2", seed=1)  # a newer curated dataset
    (RunDir(project, "run-2").dataset().split_path("train")).write_bytes(b"")  # a complete dataset
    assert latest_curated(project).dataset_hash == f"sha256:{1:064d}"
    assert RunDir(project, "run-1").dataset().dataset_hash == f"sha256:{0:064d}"
    (project.runs_dir / "by-hand" / "student").mkdir(parents=True)  # a folder the ledger never heard of
    with pytest.raises(RunError, match="by-hand: the ledger has no `runs` row"):
        RunDir(project, "by-hand").dataset()


def test_latest_run_prefers_the_ledger_then_a_shipped_run(triage_project):
    project = load_project(triage_project)
    with pytest.raises(RunError, match="no trained run"):
        latest_run(project)
    build_run(project, "run-1", seed=0)
    build_run(project, "run-2", seed=1)
    assert latest_run(project).run_id == "run-2"
    project.ledger.append(
        "decision",
        {"run_id": "run-1"},
        table="decisions",
        row={"run_id": "run-1", "decision": "ship", "validator": "q", "driver": "d", "evaluation_seq": 1},
    )
    assert latest_run(project, shipped_first=True).run_id == "run-1"
    assert latest_run(project).run_id == "run-2"


def test_latest_curated_needs_a_curated_dataset_with_its_training_split(triage_project):
    project = load_project(triage_project)
    with pytest.raises(DataError, match="no curated dataset"):
        latest_curated(project)
    build_run(project)
    with pytest.raises(DataError, match="the curated dataset the ledger names is missing"):
        latest_curated(project)  # the row is there, its train split is not
    data = RunDir(project, "run-1").dataset()
    data.split_path("train").write_bytes(b"")
    assert latest_curated(project) == CuratedData(data.dataset_hash, data.folder)


def test_latest_run_without_ledger_rows_takes_the_newest_plain_run_folder(triage_project):
    import os

    project = load_project(triage_project)
    (project.runs_dir / "copied-in" / "student").mkdir(parents=True)  # a run folder brought in by hand
    (project.runs_dir / ".copied-in.tmp-x" / "student").mkdir(parents=True)  # a half-written temporary folder
    os.utime(project.runs_dir / "copied-in", (1, 1))
    assert latest_run(project).run_id == "copied-in"

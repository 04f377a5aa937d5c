"""predictions.parquet: every model's answer on the validation, test and gold items, written with the
evaluation; iterate mines failures from it and serve calibrates its router on it, with no model loaded."""

from __future__ import annotations

import numpy as np
import pyarrow.parquet as pq
import pytest

from distil.data.records import Record, write_records
from distil.errors import EvaluationError
from distil.evaluate.predictions import PREDICTIONS_SCHEMA, paired, read_predictions
from distil.evaluate.run import evaluate_run
from distil.iterate import mine_failures
from distil.runs import RunDir
from distil.serve.runs import calibrate_router, validation_distributions
from tests.evaluate.conftest import LABELS, make_inputs, numpy_models, teacher_probs


class Unasked:
    """A student that must not be asked: the predictions file holds its answers."""

    def label_distribution(self, inputs):
        raise AssertionError("the student was asked again")


def add_validation(project, n: int = 12) -> list[Record]:
    """A validation split next to the run's test split, with the teacher's recorded distributions."""
    records = []
    for text, _label, tags in make_inputs(n, seed=7):
        probs = teacher_probs(text)
        records.append(
            Record(
                input=text + " (validation)",
                source="seed",
                tags=tags,
                label=LABELS[int(probs.argmax())],
                label_probs=[float(x) for x in probs],
                split="validation",
            )
        )
    write_records(records, RunDir(project, "run-1").dataset().split_path("validation"))
    return records


@pytest.fixture
def evaluated(run_project):
    validation = add_validation(run_project)
    _, document = evaluate_run(run_project, models=numpy_models(flip_student=5), threads=1)
    return run_project, RunDir(run_project, "run-1"), document, validation


def test_predictions_hold_every_model_on_every_split(evaluated):
    project, run, document, validation = evaluated
    table = pq.read_table(run.predictions)
    assert table.schema.equals(PREDICTIONS_SCHEMA)
    rows = read_predictions(run.predictions)
    n_test, n_gold = document["student"]["n"], document["student"]["gold"]["n"]
    counts = {
        (s, m): sum(1 for r in rows if r["split"] == s and r["model"] == m)
        for s in ("validation", "test", "gold")
        for m in ("teacher", "student", "baseline")
    }
    assert counts == {
        **{("validation", m): len(validation) for m in ("teacher", "student", "baseline")},
        **{("test", m): n_test for m in ("teacher", "student", "baseline")},
        **{("gold", m): n_gold for m in ("teacher", "student", "baseline")},
    }
    teacher_validation = read_predictions(run.predictions, "validation", "teacher")
    assert all(r["recorded"] for r in teacher_validation)  # taken from the records, not asked again
    assert np.allclose([r["distribution"] for r in teacher_validation], [r.label_probs for r in validation], atol=1e-6)
    assert all(r["gold_label"] for r in read_predictions(run.predictions, "gold", "student"))
    # the file and the document agree: the student's test agreement is its share of top labels equal to the teacher's
    pairs = paired(run.predictions, "test", "student")
    assert np.mean([t["label"] == s["label"] for t, s in pairs]) == pytest.approx(document["student"]["agreement"])
    assert all(set(t["tags"]) == {"tone"} for t, _ in pairs)
    # it is recorded with the evaluation, so `distil ledger verify` would catch an edit
    event = project.ledger.events(kind="evaluation", newest_first=True, limit=1)[0]
    assert str(run.predictions.relative_to(project.root)) in event.payload["files"]


def test_iterate_mines_the_students_disagreements_from_the_predictions(evaluated):
    _, run, _, _ = evaluated
    failures = mine_failures(run, floor=None)  # validation and probe, never the locked test split
    disagreements = [
        (t["input"], t["label"], s["label"])
        for t, s in paired(run.predictions, "validation", "student")
        if t["label"] != s["label"]
    ]
    assert disagreements and [(f.input, f.teacher_label, f.student_label) for f in failures] == disagreements
    assert all(f.input.endswith("(validation)") for f in failures)
    on_test = mine_failures(run, floor=None, splits=("test",))
    assert on_test and not {f.input for f in on_test} & {f.input for f in failures}


def test_serve_calibrates_on_the_validation_predictions_without_asking_the_student(evaluated):
    project, run, _, validation = evaluated
    teacher, student = validation_distributions(run, Unasked())
    assert teacher.shape == student.shape == (len(validation), len(LABELS))
    assert calibrate_router(project, run, Unasked()) is not None


def test_a_run_evaluated_without_predictions_is_told_to_evaluate_again(run_project):
    run = RunDir(run_project, "run-1")
    with pytest.raises(EvaluationError, match="predictions.parquet not found"):
        mine_failures(run, floor=None)

"""Gold first: where a gold set exists, the CLI, the report and the Markdown lead with its figures (each with its
count, per label, confusion matrices for every model); a degenerate student is flagged and the gate can fail it."""

from __future__ import annotations

import json
import re
import zlib
from types import SimpleNamespace

import numpy as np
import pyarrow.parquet as pq
import pytest
from sklearn.metrics import accuracy_score, confusion_matrix, f1_score, precision_recall_fscore_support

from distil.cli import main
from distil.cli.app import console
from distil.cli.cadence import _print_outcome
from distil.cli.evaluate import print_figures
from distil.evaluate import metrics as m
from distil.evaluate.report import write_report
from distil.evaluate.run import ModelUnderTest, evaluate_run
from distil.spec.gate import lock_gate
from distil.spec.io import load_project

from .conftest import LABELS, build_run, numpy_models


class OneLabel:
    """A student that gives every input the first label."""

    def label_distribution(self, inputs):
        return np.tile([0.8, 0.1, 0.1], (len(inputs), 1))


def degenerate_models() -> dict[str, ModelUnderTest]:
    models = numpy_models()
    models["student"] = ModelUnderTest(OneLabel, lambda p, batch: p.label_distribution(batch), 1200, 300)
    return models


def gold_predictions(project, model: str) -> tuple[np.ndarray, np.ndarray]:
    rows = pq.read_table(project.runs_dir / "run-1" / "predictions.parquet").to_pylist()
    rows = [r for r in rows if r["split"] == "gold" and r["model"] == model]
    return (
        np.array([LABELS.index(r["gold_label"]) for r in rows]),
        np.array([int(np.argmax(r["distribution"])) for r in rows]),
    )


def test_per_label_figures_are_scikit_learns():
    reference = np.array([0, 0, 0, 1, 1, 2, 2, 2, 2, 0])
    predicted = np.array([0, 1, 0, 1, 2, 2, 2, 0, 2, 0])
    figures = m.per_label(predicted, reference, 3)
    precision, recall, f1, support = precision_recall_fscore_support(reference, predicted, labels=[0, 1, 2])
    assert figures["precision"] == pytest.approx(list(precision)) and figures["recall"] == pytest.approx(list(recall))
    assert figures["f1"] == pytest.approx(list(f1)) and figures["support"] == list(support)
    assert figures["predicted"] == [4, 2, 4] and figures["hits"] == [3, 1, 3]
    # a label never predicted has no precision (not 0), and the confusion matrix is scikit-learn's
    assert m.per_label(np.zeros(4, dtype=int), np.array([0, 1, 2, 0]), 3)["precision"][1:] == [None, None]
    assert m.confusion_matrix(predicted, reference, 3).tolist() == confusion_matrix(reference, predicted).tolist()


def test_the_bootstrap_macro_f1_is_scikit_learns_on_every_resample():
    rng = np.random.default_rng(0)
    for _ in range(30):
        n, labels = int(rng.integers(1, 15)), int(rng.integers(2, 5))
        predicted, reference = rng.integers(0, labels, n), rng.integers(0, labels, n)
        index = rng.integers(0, n, (25, n))
        expected = [m.macro_f1(predicted[i], reference[i], labels) for i in index]
        assert m.macro_f1_resampled(predicted, reference, labels, index) == pytest.approx(expected, nan_ok=True)


def test_the_cli_the_report_and_the_markdown_lead_with_the_gold_set(run_project, capsys, monkeypatch):
    monkeypatch.setattr(console, "width", 200)  # no table title is wrapped
    _, document = evaluate_run(run_project, models=numpy_models(flip_student=5), threads=1)
    gold, predicted = gold_predictions(run_project, "student")
    accuracy, hits = accuracy_score(gold, predicted), int((gold == predicted).sum())
    macro = f1_score(gold, predicted, average="macro")
    assert document["student"]["gold"]["accuracy"] == pytest.approx(accuracy)
    assert document["student"]["gold"]["macro_f1"] == pytest.approx(macro)
    assert document["student"]["gold"]["confusion"] == confusion_matrix(gold, predicted, labels=[0, 1, 2]).tolist()

    print_figures(document, "run-1")
    out = capsys.readouterr().out
    assert out.index("gold set") < out.index("held-out split") < out.index("size and speed")
    assert f"{accuracy:.3f} ({hits}/{len(gold)})" in out  # accuracy with its count
    assert "per label on the gold set" in out
    for model in ("teacher", "student", "baseline"):
        assert f"confusion of the {model} on the gold set" in out
    assert re.search(r"\(\d+/\d+ labelled of 24\)|\(0 labelled of 24\)", out)  # held-out accuracy only with its count

    html, md = write_report(run_project)
    text = html.read_text()
    assert text.index('id="gold"') < text.index('id="verdict"') < text.index('id="metrics"')
    for model in ("teacher", "student", "baseline"):
        assert f'id="confusion-{model}"' in text
    assert f"{accuracy:.3f} ({hits}/{len(gold)})" in text
    summary = md.read_text()
    assert summary.index(f"**Gold set ({len(gold)} hand-labelled items)**") < summary.index("| fidelity_min |")
    assert "**Confusion of the student on the gold set**" in summary
    assert "| student precision | student recall |" in summary and f"| student | {accuracy:.3f} ({hits}/" in summary


def test_a_student_that_predicts_one_label_is_flagged_and_failed_by_min_label_recall(triage_project, capsys):
    text = triage_project.read_text()
    triage_project.write_text(text.replace("gate:\n", "gate:\n  min_label_recall: 0.5\n", 1))
    project = load_project(triage_project)
    lock_gate(project, "maria")
    build_run(project)
    _, document = evaluate_run(project, models=degenerate_models(), threads=1)

    n_gold = document["student"]["gold"]["n_gold"]
    assert document["warnings"][0] == (
        f"student predicts only billing: all {n_gold} gold items, where gold labels use 3 labels"
    )
    check = next(c for c in document["gate"]["checks"] if c["name"] == "min_label_recall")
    assert check["status"] == "FAIL" and check["value"] == 0.0 and "against gold labels" in check["detail"]

    print_figures(document, "run-1")
    assert "warning: student predicts only billing" in capsys.readouterr().out

    assert main(["decide", "--as", "quinn", "--spec", str(triage_project)]) == 0
    out = capsys.readouterr().out
    assert "warning: student predicts only billing" in out and "min_label_recall" in out
    (decision,) = project.ledger.events(kind="decision")
    assert decision.payload["warnings"] == document["warnings"] and decision.payload["decision"] != "ship"

    html, md = write_report(project)
    assert 'id="warnings"' in html.read_text() and "student predicts only billing" in html.read_text()
    assert "> ⚠️ warning: student predicts only billing" in md.read_text()


def test_a_label_the_student_never_gives_is_named(run_project):
    class NoAccount:
        def label_distribution(self, inputs):
            from .conftest import teacher_probs

            p = np.array([teacher_probs(x) for x in inputs])
            p[:, 2] = 0.0  # never "account"
            return p / p.sum(axis=1, keepdims=True)

    models = numpy_models()
    models["student"] = ModelUnderTest(NoAccount, lambda p, batch: p.label_distribution(batch), 1200, 300)
    _, document = evaluate_run(run_project, models=models, threads=1)
    support = document["student"]["gold"]["per_label"]["support"][2]
    assert f"student never predicts account ({support} items) on the " in document["warnings"][0]
    assert json.loads(run_project.ledger.rows("evaluations")[-1]["summary"])["warnings"] == document["warnings"]


class SometimesOff:
    """The teacher's distribution, shifted to the next label on about a third of the inputs (by their text)."""

    def label_distribution(self, inputs):
        from .conftest import teacher_probs

        return np.array([np.roll(teacher_probs(x), zlib.crc32(x.encode()) % 3 == 0) for x in inputs])


def test_where_student_and_teacher_differ_on_gold_it_is_counted_who_is_right(run_project, capsys, monkeypatch):
    monkeypatch.setattr(console, "width", 250)
    models = numpy_models()
    models["student"] = ModelUnderTest(SometimesOff, lambda p, batch: p.label_distribution(batch), 1200, 300)
    _, document = evaluate_run(run_project, models=models, threads=1)
    gold, student = gold_predictions(run_project, "student")
    _, teacher = gold_predictions(run_project, "teacher")
    differ = student != teacher
    expected = {
        "of": len(gold),
        "n": int(differ.sum()),
        "model_right": int((differ & (student == gold)).sum()),
        "teacher_right": int((differ & (teacher == gold)).sum()),
        "neither": int((differ & (student != gold) & (teacher != gold)).sum()),
    }
    assert expected["n"] > 0  # the flipped student differs from the teacher somewhere on gold
    assert document["student"]["gold"]["disagreements"] == expected
    text = (
        f"{expected['n']} of {len(gold)}: the student is right on {expected['model_right']}, the teacher on "
        f"{expected['teacher_right']}, neither on {expected['neither']}"
    )
    check = next(c for c in document["gate"]["checks"] if c["name"] == "fidelity_min")
    assert check["detail"].endswith(f"where they differ on the gold set, {text}")

    print_figures(document, "run-1")
    assert text.replace("the student", "it") in capsys.readouterr().out
    _print_outcome(run_project, SimpleNamespace(outcomes=[], run_id="run-1", report_path=None))  # end of a cadence
    assert f"on the gold set the student differs from the teacher on {text.replace('the student', 'it')}" in (
        capsys.readouterr().out
    )
    html, md = write_report(run_project)
    assert text.replace("the student", "it") in html.read_text() and text.replace("the student", "it") in md.read_text()


def test_disagreements_leave_out_items_without_a_gold_label():
    from distil.evaluate.scoring import disagreements

    model, teacher = np.array([0, 1, 2, 0, 1, 2, 1]), np.array([0, 2, 2, 1, 0, 0, 0])
    gold = np.array([0, 1, 1, 2, -1, 0, 1])
    # items 1 and 6: only the model is right; 3: neither; 4: no gold label; 5: only the teacher is right
    assert disagreements(model, teacher, gold) == {"of": 6, "n": 4, "model_right": 2, "teacher_right": 1, "neither": 1}
    assert disagreements(model, teacher, np.full(7, -1)) is None

"""The static report as a validator reads it: at 1280 px no table scrolls sideways, each number of the model table
says which items it came from, and the training curves give the validation fidelity an axis of its own (0-1)."""

from __future__ import annotations

import math

import pytest

from distil.decide import record_decision
from distil.evaluate.plots import FIDELITY_PANEL, LOSS_PANEL, RATE_PANEL, training_curves_figure
from distil.evaluate.report import write_report
from distil.evaluate.run import evaluate_run
from tests.review.browser import AVAILABLE, SKIP_REASON, browser_page

from .conftest import numpy_models


@pytest.fixture
def report(run_project):
    evaluate_run(run_project, models=numpy_models(flip_student=5), threads=1, requests=5)
    record_decision(run_project, "quinn")
    html, _ = write_report(run_project)
    return html


@pytest.mark.skipif(not AVAILABLE, reason=SKIP_REASON)
def test_no_table_of_the_report_scrolls_sideways_at_1280_px(report, tmp_path):
    with browser_page(1280, 900) as page:
        page.goto(report.as_uri())
        assert page.locator("#metrics tbody tr").count() >= 12
        overflowing = page.evaluate(
            """() => [...document.querySelectorAll("table")]
                .filter(t => (t.parentElement.scrollWidth > t.parentElement.clientWidth)
                             || t.getBoundingClientRect().right > document.documentElement.clientWidth)
                .map(t => t.id || "(table without id)")"""
        )
        assert overflowing == []
        assert page.evaluate("document.documentElement.scrollWidth <= document.documentElement.clientWidth")
        page.screenshot(path=str(tmp_path / "report-1280.png"), full_page=True)


def test_each_number_of_the_model_table_says_which_items_it_came_from(report, run_project):
    import json

    evaluation = json.loads((run_project.runs_dir / "run-1" / "evaluation.json").read_text())
    student = evaluation["student"]
    n_test, n_labelled, n_gold = student["n"], student["n_gold"], student["gold"]["n"]
    assert n_test == 24 and n_gold > 0  # the fixture's test split; the triage example's gold set
    text = report.read_text()
    assert f"test split: the {n_labelled} of {n_test} items with a gold label" in text  # accuracy, macro-F1
    assert f"test split: {n_test} items, against the teacher&#39;s answers" in text  # agreement
    assert f"gold set: {n_gold} items labelled by people" in text
    assert "5 requests at batch 1 on the gold set&#39;s inputs" in text  # latency: timed on the gold inputs
    summary = (run_project.runs_dir / "run-1" / "report.md").read_text()
    assert f"the {n_labelled} of {n_test} items with a gold label" in summary


def _real_curve() -> dict:
    """curve.json as `distil train` writes it: a point per optimiser step, validation fidelity once an epoch."""
    curve = {}
    for role in ("student", "baseline"):
        points = []
        for step in range(1, 31):
            point = {"step": step, "epoch": (step - 1) // 10, "loss": 2 * math.exp(-step / 10), "lr": 5e-4 * step / 30}
            if step % 10 == 0:
                point["validation_fidelity"] = 0.5 + step / 100
            points.append(point)
        curve[role] = points
    return curve


def test_validation_fidelity_has_an_axis_of_its_own_from_0_to_1():
    figure = training_curves_figure(_real_curve())
    panels = {ax.get_ylabel(): ax for ax in figure.axes}
    assert set(panels) == {LOSS_PANEL, FIDELITY_PANEL, RATE_PANEL}
    lines = {label: {line.get_label() for line in ax.get_lines() if not line.get_label().startswith("_")}
             for label, ax in panels.items()}  # fmt: skip
    assert lines[FIDELITY_PANEL] == {"student validation_fidelity", "baseline validation_fidelity"}
    assert lines[RATE_PANEL] == {"student lr", "baseline lr"}
    assert not any("epoch" in name for names in lines.values() for name in names)
    low, high = panels[FIDELITY_PANEL].get_ylim()
    assert low == 0 and 1 <= high <= 1.05
    # the epoch boundaries are marked on every panel, between the epochs' steps
    boundaries = sorted({line.get_xdata()[0] for line in panels[LOSS_PANEL].get_lines() if line.get_label()
                         .startswith("_")})  # fmt: skip
    assert boundaries == [10.5, 20.5]

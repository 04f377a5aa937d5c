"""Payback on a tiny project: the build cost summed from what the ledger recorded, the escalation share
calibrated on validation as `distil serve` calibrates it, and a price changed after the fact changing
nothing already recorded."""

from __future__ import annotations

import json

import pytest

from distil.data.records import Record, write_records
from distil.decide import record_decision
from distil.errors import GateError
from distil.evaluate.report import report_context, write_report
from distil.evaluate.run import evaluate_run
from distil.runs import RunDir
from distil.serve.runs import calibrate_router
from distil.spec.gate import lock_gate
from distil.spec.io import load_project

from .conftest import LABELS, build_run, numpy_models, teacher_probs

SEED_COST, TARGETED_COST, LATER_COST = 0.002, 0.004, 1.0


def labelled(texts: list[str], source: str, cost: float, split: str | None = None) -> list[Record]:
    out = []
    for text in texts:
        probs = teacher_probs(text)
        out.append(
            Record(
                input=text,
                source=source,
                label=LABELS[int(probs.argmax())],
                label_probs=[float(x) for x in probs],
                teacher_id="smollm2",
                teacher_fingerprint="sha256:teacher",
                prompt_hash="sha256:prompt",
                params_hash="sha256:params",
                cost=cost,
                split=split,
            )
        )
    return out


def record_raw(project, name: str, records: list[Record]) -> None:
    path = write_records(records, project.data_dir / "raw" / f"{name}.parquet")
    relative = str(path.relative_to(project.root))
    project.ledger.append(
        "dataset.generated",
        {"dataset_hash": f"sha256:{name}", "stage": "raw", "shards": [relative], "counts": {name: len(records)}},
        files=[path],
        table="datasets",
        row={
            "dataset_hash": f"sha256:{name}",
            "stage": "raw",
            "path": ".distil/data/raw",
            "counts": {name: len(records)},
        },
    )


@pytest.fixture
def recorded_project(triage_project):
    """Gate locked; two raw shards labelled at recorded prices (five calls repeated from the cache); one run
    whose rows carry training seconds; a validation split; a later shard that belongs to the next round."""
    project = load_project(triage_project)
    lock_gate(project, "maria")
    seeds = [f"seed {i}: refund please" for i in range(30)]
    record_raw(project, "seed", labelled(seeds, "seed", SEED_COST))
    record_raw(
        project,
        "targeted",
        labelled(seeds[:5], "seed", SEED_COST)
        + labelled([f"new {i}: crash" for i in range(5)], "targeted", TARGETED_COST),
    )
    # the student's row records seconds; the baseline's is an older row: tokens / tokens_per_s = 2,000 s
    build_run(project, metrics={"student": {"seconds": 5400.0}, "baseline": {"tokens": 1000, "tokens_per_s": 0.5}})
    folder = project.data_dir / "curated" / ("0" * 12)
    write_records(
        labelled(
            [f"ticket {100 + i}: {w} please" for i, w in enumerate(["refund", "crash", "password"] * 10)],
            "seed",
            0.0,
            "validation",
        ),
        folder / "validation.parquet",
    )
    record_raw(project, "later", labelled([f"later {i}: invoice" for i in range(7)], "targeted", LATER_COST))
    return project


def test_payback_is_computed_from_the_ledgers_recorded_teacher_costs_and_training_time(recorded_project):
    _, document = evaluate_run(recorded_project, models=numpy_models(flip_student=3), threads=1)
    cost = document["cost"]
    # 35 distinct calls: 30 seeds at 0.002, 5 new targeted at 0.004; the five repeated from the cache once; the later
    # shard not at all
    assert cost["teacher_calls"] == 35
    assert cost["teacher_calls_cost"] == pytest.approx(30 * SEED_COST + 5 * TARGETED_COST)
    assert cost["training_hours"] == pytest.approx((5400 + 2000) / 3600)
    price = recorded_project.spec.cost.machine_hour_price
    assert cost["build_cost"] == pytest.approx(
        cost["teacher_calls_cost"] + cost["training_hours"] * price + recorded_project.spec.cost.build_cost
    )
    assert cost["monthly_savings"] > 0
    assert cost["payback_months"] == pytest.approx(cost["build_cost"] / cost["monthly_savings"])
    summary = json.loads(recorded_project.ledger.rows("evaluations")[0]["summary"])
    assert summary["cost"]["payback_months"] == pytest.approx(cost["payback_months"])
    check = next(c for c in document["gate"]["checks"] if c["name"] == "payback_months_max")
    assert check["value"] == pytest.approx(cost["payback_months"])


def test_the_escalation_share_is_calibrated_on_validation_as_serve_calibrates_it(recorded_project):
    _, document = evaluate_run(recorded_project, models=numpy_models(flip_student=3), threads=1)
    escalated = next(t for t in document["cost"]["terms"] if t["name"] == "escalated_share")
    assert (
        escalated["source"] == "measured on the validation split" and "on 30 items" in escalated["detail"]
    )  # 30 validation, 24 test
    served = calibrate_router(
        recorded_project, RunDir(recorded_project, "run-1"), student=None
    )  # from predictions.parquet
    assert served is not None and served.n == 30
    assert document["cost"]["escalated_share"] == pytest.approx(served.escalated_share) and served.escalated_share > 0
    assert document["cost"]["escalation_monthly"] > 0


def test_a_teacher_price_changed_without_measuring_changes_nothing_recorded(recorded_project):
    path, document = evaluate_run(recorded_project, models=numpy_models(flip_student=3), threads=1)
    recorded = path.read_bytes()
    before = report_context(recorded_project, "run-1")["cost_view"]
    spec_path = recorded_project.root / "distil.yaml"
    spec_path.write_text(spec_path.read_text().replace("teacher_per_1m_requests: 600", "teacher_per_1m_requests: 6000"))
    changed = load_project(spec_path)
    with pytest.raises(GateError, match="cost.teacher_per_1m_requests"):
        evaluate_run(changed, models=numpy_models(flip_student=3), threads=1)
    with pytest.raises(GateError):
        record_decision(changed, "quinn")
    assert path.read_bytes() == recorded
    assert report_context(changed, "run-1")["cost_view"] == before  # the report shows what was measured and locked
    _, markdown = write_report(changed, "run-1")
    assert f"{document['cost']['teacher_monthly']:,.0f}" in markdown.read_text()


def test_without_validation_answers_the_share_is_what_serve_would_do(triage_project):
    from distil.evaluate.run import escalation_on_validation

    spec = load_project(triage_project).spec
    assert escalation_on_validation(spec, None, None).share == 0.0  # serve: nothing to calibrate on, threshold 0
    fixed = spec.model_copy(update={"router": spec.router.model_copy(update={"threshold": 0.8})})
    assert (
        escalation_on_validation(fixed, None, None).share is None
    )  # a fixed threshold would escalate an unknown share

"""Locked evaluation sets: the first curate after a gate lock freezes the test split and registers the
gold set; later curates keep them byte for byte and keep their near-duplicates out of training;
evaluate refuses a test split that is not the locked one."""

from __future__ import annotations

import json

import pytest
import yaml

from distil.cli import main
from distil.data import dedupe
from distil.data.curate import curate
from distil.data.evalsets import content_hash, locked_set, require_locked_test
from distil.data.records import read_records, write_records
from distil.errors import EvaluationSetError, RecordedFileError
from distil.evaluate.run import evaluate_run
from distil.ledger.store import sha256_file
from distil.spec.gate import lock_gate
from distil.spec.io import load_project
from tests.data.helpers import make_project
from tests.data.test_curate import LABELS, _record, _text, _write_raw

GOLD = "my march invoice lists a charge i never made and i want it removed from my account today"


@pytest.fixture
def unlocked_project(tmp_path, tiny_teacher_dir):
    spec_path = make_project(tmp_path / "p", f"hf:{tiny_teacher_dir}", gold="gold.jsonl", lock=False)
    (spec_path.parent / "gold.jsonl").write_text(json.dumps({"input": GOLD, "label": "billing"}) + "\n")
    return load_project(spec_path)


@pytest.fixture
def locked_project(unlocked_project):
    project = unlocked_project
    _write_raw(project, [_record(_text(label, i), label) for label in LABELS for i in range(30)])
    lock_gate(project, project.spec.roles.sponsor)
    return project


def _splits(folder):
    return {name: read_records(folder / f"{name}.parquet") for name in ("train", "validation", "test", "probe")}


def test_first_curate_after_the_gate_lock_locks_test_and_gold(locked_project):
    project = locked_project
    result = curate(project, actor="dev")
    test = locked_set(project, "test")
    gold = locked_set(project, "gold")
    records = read_records(result.folder / "test.parquet")
    assert test is not None and test.gate_version == 1 and "first curate" in test.reason
    assert test.item_ids == [r.id for r in records] and test.size == len(records) > 0
    assert test.sha256 == content_hash(records)
    assert project.path(test.path).read_bytes() == (result.folder / "test.parquet").read_bytes()
    assert gold is not None and gold.sha256 == sha256_file(project.root / "gold.jsonl") and gold.size == 1
    assert [e.kind for e in project.ledger.events()].count("evaluation_set.locked") == 2
    assert require_locked_test(project, result.folder) == test
    assert project.ledger.verify(base=project.root).ok


def test_curate_before_the_gate_lock_locks_nothing(unlocked_project):
    project = unlocked_project
    _write_raw(project, [_record(_text(label, i), label) for label in LABELS for i in range(10)])
    result = curate(project)
    assert locked_set(project, "test") is None and require_locked_test(project, result.folder) is None


def test_later_curates_keep_the_test_split_and_keep_its_neighbours_out(locked_project):
    project = locked_project
    first = curate(project, actor="dev")
    test_items = read_records(first.folder / "test.parquet")
    before = sha256_file(first.folder / "test.parquet")
    # a new round: fresh items, a raw copy of a test item, near-duplicates of a test item and of the gold item
    fresh = [_record(_text(label, i), label, source="targeted") for label in LABELS for i in range(30, 45)]
    copy = _record(test_items[0].input, test_items[0].label or "billing", source="targeted")
    near_test = _record(test_items[1].input + " again", test_items[1].label or "billing", source="targeted")
    near_gold = _record(GOLD + " please", "billing", source="targeted")
    write_records([*fresh, copy, near_test, near_gold], project.data_dir / "raw" / "targeted-round1.parquet")

    second = curate(load_project(project.spec_path), actor="dev")
    assert second.folder != first.folder
    assert sha256_file(second.folder / "test.parquet") == before  # byte-identical
    splits = _splits(second.folder)
    assert [r.id for r in splits["test"]] == [r.id for r in test_items]
    assert not {r.id for r in fresh} & {r.id for r in splits["test"]}  # no new item enters test
    removed = {r["id"]: r["reason"] for r in second.removed["decontamination"]}
    assert near_test.id in removed and "locked test split" in removed[near_test.id]
    assert near_gold.id in removed
    threshold = project.spec.data.filters.near_duplicate_threshold
    for name in ("train", "validation", "probe"):
        for record in splits[name]:
            assert all(dedupe.jaccard(record.input, t.input) < threshold for t in test_items), name
            assert dedupe.jaccard(record.input, GOLD) < threshold
    assert second.counts["kept_in_locked_test"] == len(test_items) + 1  # the raw copy stays in test only
    assert json.loads((second.folder / "report.json").read_text())["test_split"] == "kept as locked"
    assert project.ledger.verify(base=project.root).ok


def test_evaluate_refuses_a_test_split_that_is_not_the_locked_one(locked_project):
    project = locked_project
    result = curate(project, actor="dev")
    records = read_records(result.folder / "test.parquet")
    records[0].label = "account" if records[0].label != "account" else "billing"  # one relabelled item
    write_records(records, result.folder / "test.parquet")
    with pytest.raises(EvaluationSetError, match="is not the locked test split"):
        require_locked_test(project, result.folder)
    (project.runs_dir / "r1").mkdir(parents=True)
    project.ledger.append(
        "run.trained",
        {"run_id": "r1"},
        table="runs",  # r1 was trained on this dataset
        row={
            "run_id": "r1",
            "dataset_hash": result.dataset_hash,
            "role": "student",
            "path": ".distil/runs/r1/student",
            "metrics": {},
        },
    )
    with pytest.raises(
        RecordedFileError, match="test.parquet changed since it was recorded"
    ):  # the curate's own record first
        evaluate_run(project, "r1", models={})
    assert main(["evaluate", "r1", "--spec", str(project.spec_path)]) == 2


def test_a_changed_gold_file_is_refused(locked_project):
    project = locked_project
    result = curate(project, actor="dev")
    (project.root / "gold.jsonl").write_text(
        json.dumps({"input": "another gold ticket about a refund", "label": "billing"}) + "\n"
    )
    with pytest.raises(EvaluationSetError, match="data.gold"):
        require_locked_test(project, result.folder)
    with pytest.raises(EvaluationSetError, match="data.gold"):
        curate(project, actor="dev")


def test_a_new_test_split_needs_a_new_gate_version_and_a_reason(locked_project):
    project = locked_project
    curate(project, actor="dev")
    first = locked_set(project, "test")
    with pytest.raises(EvaluationSetError, match="needs a new gate version"):
        curate(project, actor="dev", new_test_set="more data")
    spec = yaml.safe_load(project.spec_path.read_text())
    spec["gate"]["fidelity_min"] = 0.5
    project.spec_path.write_text(yaml.safe_dump(spec, sort_keys=False))
    project = load_project(project.spec_path)
    lock_gate(project, project.spec.roles.sponsor, reason="a lower bar for the pilot")
    kept = curate(project, actor="dev")  # a new gate version alone keeps the old test split
    assert (
        locked_set(project, "test") == first and read_records(kept.folder / "test.parquet")[0].id == first.item_ids[0]
    )
    curate(project, actor="dev", new_test_set="the pilot's gate: a larger test split")
    second = locked_set(project, "test")
    assert second.gate_version == 2 and second.reason == "the pilot's gate: a larger test split"
    assert second.event_seq > first.event_seq


def test_a_hand_edited_lock_row_is_refused(locked_project):
    import sqlite3

    from distil.errors import LedgerError

    project = locked_project
    result = curate(project, actor="dev")
    records = read_records(result.folder / "test.parquet")[1:]  # one test item dropped ...
    write_records(records, result.folder / "test.parquet")
    with sqlite3.connect(project.ledger.path) as conn:  # ... and the lock row edited to match
        conn.execute("UPDATE evaluation_sets SET sha256 = ? WHERE name = 'test'", (content_hash(records),))
    with pytest.raises(LedgerError):
        require_locked_test(project, result.folder)


def test_a_split_locked_before_the_later_columns_existed_still_reads_as_locked(locked_project, monkeypatch):
    """A project locked by an older distil (its records hashed without the columns added since) is not told after
    an upgrade that its test split changed; a value written into one of those columns still is a change."""
    from distil.data import evalsets
    from distil.data.records import LATER_COLUMNS

    project, today = locked_project, evalsets.content_hash
    with monkeypatch.context() as older:  # the lock as an older release hashed it
        older.setattr(evalsets, "content_hash", lambda records, without=(): today(records, sorted(LATER_COLUMNS)))
        result = curate(project, actor="dev")
    locked = locked_set(project, "test")
    frozen = project.path(locked.path)
    assert locked.sha256 != today(read_records(frozen))  # today's columns hash differently
    assert require_locked_test(project, result.folder) == locked
    assert [r.id for r in evalsets.read_locked_test(project, locked)] == locked.item_ids
    curate(project, actor="dev")  # a later curate keeps the locked split: no refusal

    records = read_records(frozen)
    records[0].teacher_disagreement = 0.5
    write_records(records, frozen)
    with pytest.raises(EvaluationSetError, match="changed since it was locked"):
        evalsets.read_locked_test(project, locked)

"""`distil curate` on real raw shards: filters, decontamination, coverage, splits, report and ledger."""

from __future__ import annotations

import itertools
import json

import pytest

from distil.data import dedupe
from distil.data.curate import curate
from distil.data.records import Record, read_records, write_records
from distil.errors import DataError
from distil.runs import CuratedData, latest_curated
from distil.spec.io import load_project
from tests.data.helpers import make_project

LABELS = ["billing", "technical", "account"]
TOPICS = {
    "billing": ["invoice", "refund", "charge", "card", "plan", "price", "receipt", "payment"],
    "technical": ["crash", "error", "upload", "page", "button", "export", "sync", "screen"],
    "account": ["password", "login", "email", "profile", "username", "delete", "merge", "settings"],
}


def _text(label: str, i: int) -> str:
    words = TOPICS[label]
    a, b, c = words[i % 8], words[(i * 3 + 1) % 8], words[(i * 5 + 2) % 8]
    return f"ticket {label} {i}: my {a} and the {b} have a problem with {c} since day {i * 7} of month {i % 12}"


def _record(text: str, label: str, confidence: float = 0.9, source: str = "synthetic", tags=None) -> Record:
    rest = (1 - confidence) / 2
    probs = [confidence if name == label else rest for name in LABELS]
    return Record(
        input=text,
        source=source,
        label=label,
        label_probs=probs,
        confidence=confidence,
        tags=tags or {"tone": "calm", "length": "short", "register": "formal"},
        teacher_id="t",
        teacher_fingerprint="sha256:x",
    )


@pytest.fixture
def project(tmp_path, tiny_teacher_dir):
    spec_path = make_project(tmp_path / "p", f"hf:{tiny_teacher_dir}", gold="gold.jsonl")
    (spec_path.parent / "gold.jsonl").write_text(
        json.dumps({"input": "an unrelated gold ticket", "label": "account"}) + "\n"
    )
    return load_project(spec_path)


def _write_raw(project, records):
    write_records(records, project.data_dir / "raw" / "synthetic-test.parquet")


def test_curate_removes_planted_duplicates_contamination_and_low_confidence(project):
    records = [_record(_text(label, i), label) for label in LABELS for i in range(30)]
    dup_exact = _record(records[3].input.upper() + "!", records[3].label)
    dup_near = _record(records[40].input.replace("problem", "issue"), records[40].label)
    unsure = _record("something vague about nothing in particular at all really", "billing", confidence=0.35)
    gold_text = "my march invoice lists a charge i never made and i want it removed"
    leaked = _record(gold_text.replace("removed", "removed please"), "billing")
    (project.root / "gold.jsonl").write_text(json.dumps({"input": gold_text, "label": "billing"}) + "\n")
    _write_raw(project, [*records, dup_exact, dup_near, unsure, leaked])

    result = curate(project, actor="dev")
    removed = {k: {r["id"] for r in v} for k, v in result.removed.items()}
    assert removed["exact_duplicate"] == {dup_exact.id}
    assert removed["near_duplicate"] == {dup_near.id}
    assert removed["confidence"] == {unsure.id}
    assert removed["decontamination"] == {leaked.id}
    assert "min_confidence" in result.removed["confidence"][0]["reason"]
    assert result.counts["curated"] == 90 and result.counts["raw"] == 94

    # splits: every kept record once, in its split's file, no near-duplicate pair across splits
    split_records = {
        name: read_records(result.folder / f"{name}.parquet") for name in ("train", "validation", "test", "probe")
    }
    assert sum(len(v) for v in split_records.values()) == 90
    assert all(r.split == name for name, rs in split_records.items() for r in rs)
    assert (
        len(split_records["test"]) >= 6 and len(split_records["validation"]) >= 6 and len(split_records["probe"]) >= 6
    )
    for ra, rb in itertools.combinations(split_records.values(), 2):
        for x in ra:
            for y in rb:
                assert dedupe.jaccard(x.input, y.input) < project.spec.data.filters.near_duplicate_threshold

    report = json.loads((result.folder / "report.json").read_text())
    assert report["counts"]["removed_near_duplicate"] == 1 and report["dataset_hash"] == result.dataset_hash
    assert latest_curated(project) == CuratedData(result.dataset_hash, result.folder)
    row = project.ledger.latest("datasets", "stage = ?", ("curated",))
    assert json.loads(row["counts"])["train"] == len(split_records["train"])
    assert project.ledger.verify(base=project.root).ok


def test_starved_slice_is_flagged(project):
    records = [_record(_text(label, i), label) for label in LABELS for i in range(10)]
    for r in records[:2]:
        r.tags = {**r.tags, "tone": "urgent"}
    _write_raw(project, records)
    result = curate(project)
    flags = {(c.slice, c.value): c for c in result.coverage}
    assert flags[("tone", "urgent")].starved and flags[("tone", "urgent")].total == 2
    assert not flags[("tone", "calm")].starved and flags[("tone", "calm")].total == 28
    assert flags[("length", "long")].total == 0 and flags[("length", "long")].starved
    assert flags[("tone", "calm")].per_label == {"billing": 8, "technical": 10, "account": 10}


def test_oversampling_balances_train_only(project, tmp_path):
    spec_path = project.spec_path
    spec_path.write_text(spec_path.read_text().replace("min_per_slice: 5", "min_per_slice: 5\n    balance: oversample"))
    project = load_project(spec_path)
    records = [_record(_text("billing", i), "billing") for i in range(40)] + [
        _record(_text("account", i), "account") for i in range(10)
    ]
    _write_raw(project, records)
    result = curate(project)
    train = read_records(result.folder / "train.parquet")
    counts = {label: sum(r.label == label for r in train) for label in ("billing", "account")}
    assert counts["billing"] == counts["account"] and result.counts["oversampled"] > 0
    held_out = {r.id for name in ("validation", "test") for r in read_records(result.folder / f"{name}.parquet")}
    assert not held_out & {r.id for r in train}


def test_curate_without_raw_data_says_what_to_do(project):
    with pytest.raises(DataError, match="no raw records"):
        curate(project)
    with pytest.raises(DataError, match="no curated dataset"):
        latest_curated(project)


def test_teacher_written_inputs_that_are_not_text_are_dropped_and_user_written_ones_kept(project):
    filters = project.spec.data.filters
    assert (filters.min_words, filters.min_letter_share) == (3, 0.6)  # the triage example's, which the project copies
    records = [_record(_text(label, i), label) for label in LABELS for i in range(10)]
    stamp = _record("2018-10-13 22:16:25.600 - 22.16.29.1443 - 8.1-744-07-13 - 8.1", "billing")
    stub = _record("Share information:", "account", source="targeted")
    short_seed = _record("refund pls", "billing", source="seed")
    digits_seed = _record("order 1234-5678-9012 charged 3x", "billing", source="seed")
    _write_raw(project, [*records, stamp, stub, short_seed, digits_seed])

    result = curate(project)
    reasons = {r["id"]: r["reason"] for r in result.removed["malformed"]}
    assert set(reasons) == {stamp.id, stub.id}
    assert "min_letter_share 0.6" in reasons[stamp.id] and reasons[stub.id] == "2 words < min_words 3"
    assert result.counts["removed_malformed"] == 2 and result.counts["curated"] == 32  # both seeds stay
    kept = {r.id for name in ("train", "validation", "test") for r in read_records(result.folder / f"{name}.parquet")}
    assert {short_seed.id, digits_seed.id} <= kept


def test_the_malformed_filter_is_off_by_default(project):
    from distil.spec.models import Filters

    assert (Filters().min_words, Filters().min_letter_share) == (0, 0.0)
    spec_path = project.spec_path
    spec_path.write_text(spec_path.read_text().replace("min_words: 3", "").replace("min_letter_share: 0.6", ""))
    project = load_project(spec_path)
    assert project.spec.data.filters.min_words == 0
    records = [_record(_text(label, i), label) for label in LABELS for i in range(10)] + [
        _record("12:44:58", "billing")
    ]
    _write_raw(project, records)
    result = curate(project)
    assert result.counts["removed_malformed"] == 0 and result.counts["curated"] == 31


def test_one_semantic_pair_removes_exactly_one_record(project):
    records = [_record(_text(label, i), label) for label in LABELS for i in range(8)]
    twin = _record("Dear support, " + records[5].input.replace("have a problem", "are broken"), records[5].label)
    pool = [*records, twin]
    vectors = dedupe.embed([r.input for r in pool])
    cosine = float(vectors[5] @ vectors[-1])
    threshold = cosine - 1e-4
    assert dedupe.jaccard(twin.input, records[5].input) < project.spec.data.filters.near_duplicate_threshold
    assert dedupe.semantic_duplicate_pairs(vectors, threshold) == [(5, len(pool) - 1)]  # the planted pair and no other
    spec_path = project.spec_path
    spec_path.write_text(
        spec_path.read_text().replace(
            "min_per_slice: 5", f"min_per_slice: 5\n    semantic_duplicates: true\n    semantic_threshold: {threshold}"
        )
    )
    project = load_project(spec_path)
    _write_raw(project, pool)

    result = curate(project)
    assert [r["id"] for r in result.removed["semantic_duplicate"]] == [twin.id]
    assert result.counts["curated"] == len(records)

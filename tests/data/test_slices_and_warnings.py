"""Slices as the README documents them (a carried tag, then the first matching rule, then the catch-all; a slice
read from a field of the seeds; teacher-written inputs inherit their seeds' values), and what curate warns about:
labels and slice values under the spec's minimum, items no rule matched, sets too small to decide the gate."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from distil.data.curate import curate
from distil.data.records import Record, write_records
from distil.data.sources import InputItem, read_seed_inputs, tag_slices
from distil.data.synthetic import munge_inputs, synthetic_slots
from distil.errors import DataError
from distil.spec.io import load_project
from distil.spec.models import SliceSpec
from tests.spec.test_own_task import fill, new_project, with_data

README = Path(__file__).parents[2] / "README.md"


@pytest.fixture
def reviews(tmp_path, tiny_teacher_dir):
    spec_path = new_project(tmp_path)
    with_data(spec_path)
    fill(spec_path, tiny_teacher_dir)
    return load_project(spec_path)


def test_a_tag_wins_then_the_first_matching_rule_then_the_catch_all():
    tone = SliceSpec.model_validate({"name": "tone", "values": {"urgent": {"keywords": ["asap"]}, "calm": {}}})
    field = SliceSpec.model_validate({"name": "category", "from_field": "category"})
    assert tag_slices("fix it asap", [tone]) == {"tone": "urgent"}
    assert tag_slices("whenever you can", [tone]) == {"tone": "calm"}  # no rule matched: the catch-all
    assert tag_slices("fix it asap", [tone], {"tone": "calm"}) == {"tone": "calm"}  # the item's own tag wins
    assert tag_slices("no field here", [field]) == {"category": "unknown"}  # a field slice, and no field


def test_a_slice_is_read_from_a_field_of_the_seeds(reviews):
    seeds = read_seed_inputs(reviews.path("seeds.jsonl"), reviews.spec)
    assert {item.tags["category"] for item in seeds} == {"books", "electronics", "food"}
    first = json.loads(reviews.path("seeds.jsonl").read_text().splitlines()[0])
    assert seeds[0].input == first["text"] and seeds[0].label == first["sentiment"]
    assert seeds[0].tags["category"] == first["category"]
    (reviews.root / "seeds.jsonl").write_text('{"text": "fine", "sentiment": "positive"}\n')
    with pytest.raises(DataError, match=r"seeds.jsonl:1: no value in column `category`.*slice 'category'"):
        read_seed_inputs(reviews.path("seeds.jsonl"), reviews.spec)


def test_teacher_written_inputs_inherit_the_values_their_seeds_share(reviews):
    # every positive seed is about books, every negative one about food: the slots of a label show only those
    seeds = [
        InputItem(f"review {i} {'great' if label == 'positive' else 'awful'}", label, {"category": category})
        for i in range(6)
        for label, category in (("positive", "books"), ("negative", "food"))
    ]
    spec = reviews.spec
    slots = synthetic_slots(spec, seeds, 6, style="list")
    wanted = {"positive": "books", "negative": "food"}
    for n, slot in enumerate(slots):
        label = spec.task.label_names[n % 3]
        if label in wanted:
            assert slot.tags["category"] == wanted[label], slot
    variants = munge_inputs(seeds, 8, slices=spec.data.slices)
    assert all(v.tags["category"] in ("books", "food") for v in variants)


def _records(labels: dict[str, int]) -> list[Record]:
    out = []
    for label, n in labels.items():
        for i in range(n):
            out.append(
                Record(
                    input=f"{label} review {i}: " + " ".join(chr(97 + (i * 7 + k) % 26) * 3 for k in range(5)),
                    source="seed",
                    label=label,
                    label_probs=[1.0, 0.0, 0.0],
                    tags={"category": "books", "length": "short"},
                )
            )
    return out


def test_curate_warns_about_thin_labels_and_slices_unmatched_items_and_a_test_split_too_small(reviews, capsys):
    from distil.cli import main

    write_records(_records({"positive": 24, "negative": 3, "neutral": 3}), reviews.data_dir / "raw" / "seed-x.parquet")
    result = curate(reviews)
    assert result.thin_labels == {"negative": 3, "neutral": 3}
    text = "\n".join(result.warnings)
    assert "label negative: 3 curated item(s), under data.filters.min_per_label 5" in text
    assert "slice length=long: 0 curated item(s), under data.filters.min_per_slice 5" in text
    (small,) = [s for s in result.too_small if s.threshold == "fidelity_min"]
    assert small.n == len(result.splits["test"]) < 35 and small.items_needed == 35  # Wilson at 100% for 0.9
    assert f"fidelity_min 0.9: the test split has {small.n} item(s)" in text and "35 would decide it" in text
    assert result.notes == [
        "slice length: 30 of 30 curated items match none of its rules; they carry short 30 (a tag of their own, or "
        "the catch-all 'short'); if that is too many, widen the rules"
    ]
    report = json.loads((result.folder / "report.json").read_text())
    assert report["warnings"] == result.warnings and report["notes"] == result.notes
    assert report["too_small_to_decide"][0]["items_needed"] == 35
    assert main(["curate", "--spec", str(reviews.spec_path)]) == 0
    out = capsys.readouterr().out
    assert "warning: label negative: 3 curated item(s)" in out and "note: slice length: 30 of 30" in out


def test_the_readme_documents_slices_and_the_own_task_path():
    text = README.read_text()
    section = text[text.index("## Your own task") :]
    section = section[: section.index("\n## ", 4)]
    for words in (
        "distil init",
        "--task classify",
        "data.fields",
        "from_field",
        "catch-all",
        "inherit",
        "distil check",
        "distil gate lock --as",
        "distil run",
    ):
        assert words in section, words

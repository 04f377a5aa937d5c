"""The triage example's development file: the set its settings are chosen on, apart from seeds and gold."""

from __future__ import annotations

from collections import Counter

from distil.data.dedupe import near_duplicate_pairs, normalise
from distil.data.sources import read_inputs, tag_slices
from distil.spec.io import load_project

from ..conftest import EXAMPLES

TRIAGE = EXAMPLES / "triage"


def test_the_dev_file_shares_no_ticket_with_the_seeds_or_the_gold_set():
    spec = load_project(TRIAGE / "distil.yaml").spec
    dev = [item.input for item in read_inputs(TRIAGE / "dev.jsonl")]
    others = [item.input for name in (spec.data.seeds, spec.data.gold) for item in read_inputs(TRIAGE / name)]
    assert not {normalise(t) for t in dev} & {normalise(t) for t in others}
    assert len({normalise(t) for t in dev}) == len(dev)
    threshold = spec.data.filters.near_duplicate_threshold
    assert not [(a, b) for a, b, _ in near_duplicate_pairs(dev + others, threshold) if a < len(dev)]


def test_the_dev_file_is_balanced_and_tagged_as_its_slice_rules_say():
    spec = load_project(TRIAGE / "distil.yaml").spec
    dev = read_inputs(TRIAGE / "dev.jsonl", labels=spec.task.label_names)
    assert Counter(item.label for item in dev) == {name: 40 for name in spec.task.label_names}
    assert all(item.tags == tag_slices(item.input, spec.data.slices) for item in dev)


def test_the_spec_names_the_dev_file_neither_as_seeds_nor_as_gold():
    spec = load_project(TRIAGE / "distil.yaml").spec
    assert "dev.jsonl" not in (spec.data.seeds, spec.data.gold)

"""MUNGE on tabular rows, and `data.synthetic: munge` choosing it for tabular seeds."""

from __future__ import annotations

import json

import numpy as np
import pytest

from distil.data.sources import InputItem
from distil.data.synthetic import munge_inputs
from distil.data.tabular import munge, munge_items, nearest_neighbours, tabular_rows


def test_nearest_neighbours_finds_the_closest_other_row():
    x = np.array([[0.0, 0.0], [0.1, 0.0], [5.0, 5.0], [5.0, 5.2]])
    assert nearest_neighbours(x).tolist() == [1, 0, 3, 2]


def test_munge_stays_between_neighbours_and_keeps_categories():
    rng = np.random.default_rng(0)
    x = np.column_stack([rng.normal(0, 1, 200), rng.normal(10, 1, 200), rng.integers(0, 3, 200)])
    rows = munge(x, 1000, p=0.5, s=10.0, categorical=[2], seed=1)
    assert rows.shape == (1000, 3)
    assert set(np.unique(rows[:, 2])) <= {0.0, 1.0, 2.0}
    # with a large s the normal is narrow: new values sit close to real ones, far from uniform noise
    assert abs(rows[:, 1].mean() - 10) < 0.3 and rows[:, 0].std() < 1.5
    assert not np.isin(rows[:, 0], x[:, 0]).all()  # something changed
    # p = 0 leaves every row as a copy of a real row
    same = munge(x, 100, p=0.0, seed=2)
    assert all((x == r).all(1).any() for r in same)


def test_munge_rejects_bad_arguments():
    with pytest.raises(ValueError):
        munge(np.zeros((1, 3)), 10)
    with pytest.raises(ValueError):
        munge(np.zeros((4, 3)), 10, p=1.5)


def test_synthetic_munge_uses_tabular_munge_for_json_rows():
    seeds = [
        InputItem(json.dumps({"age": 20 + i, "colour": ["red", "blue"][i % 2], "score": 0.5 * i})) for i in range(20)
    ]
    assert tabular_rows(seeds) is not None
    items = munge_inputs(seeds, 50, seed=3)
    assert len(items) == 50 and all(i.source == "synthetic" for i in items)
    rows = [json.loads(i.input) for i in items]
    assert all(list(r) == ["age", "colour", "score"] for r in rows)
    assert all(r["colour"] in {"red", "blue"} and isinstance(r["age"], int) for r in rows)
    assert munge_inputs(seeds, 50, seed=3) == items  # deterministic in the seed


def test_csv_rows_and_text_keep_their_own_generators():
    csv = [InputItem(f"{i},{i * 2.0},{i % 3}") for i in range(10)]
    out = munge_items(csv, 7, seed=0)
    assert len(out) == 7 and all(len(o.input.split(",")) == 3 for o in out)
    text = [InputItem("the printer on floor two is jammed again"), InputItem("refund my order please")]
    assert tabular_rows(text) is None
    assert all(o.input for o in munge_inputs(text, 5))

"""The learning curve's training sets are nested and keep the labels' shares; its extrapolation says when it cannot.
Pure functions of benchmarks/triage_learning_curve.py: no teacher, no training."""

from __future__ import annotations

import importlib.util
import sys
from collections import Counter
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "benchmarks"


def curve_module():
    sys.path.insert(0, str(BENCH))
    spec = importlib.util.spec_from_file_location("bench_triage_learning_curve", BENCH / "triage_learning_curve.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up while they are made
    spec.loader.exec_module(module)
    return module


def test_every_prefix_keeps_the_labels_shares_and_the_order_is_one_shuffle():
    curve = curve_module()
    labels = ["billing"] * 50 + ["technical"] * 30 + ["account"] * 20  # grouped, as a split might hand them over
    order = curve.nested_order(labels, seed=0)
    assert sorted(order) == list(range(100))  # each ticket once: a smaller set is the start of every larger one
    for size in (10, 20, 40, 60):
        counts = Counter(labels[i] for i in order[:size])
        for label, share in (("billing", 0.5), ("technical", 0.3), ("account", 0.2)):
            assert abs(counts[label] - share * size) <= 1, (size, counts)
    assert curve.nested_order(labels, seed=0) == order
    assert curve.nested_order(labels, seed=1) != order


def test_the_extrapolation_is_along_log_size_and_refuses_a_flat_curve():
    curve = curve_module()
    said = curve.extrapolate([60, 120, 240, 480], [0.60, 0.65, 0.70, 0.75])  # +0.05 per doubling
    assert "+0.050 per doubling" in said and "0.90 at about 3,840 tickets by extrapolation" in said
    assert "flattened" not in said
    flattened = curve.extrapolate([60, 120, 240, 480], [0.60, 0.70, 0.80, 0.80])
    assert "from 240 to 480 it moved +0.000, so the curve has flattened" in flattened
    assert "only beyond 100 times" in curve.extrapolate([60, 120], [0.30, 0.31])
    assert "no extrapolation" in curve.extrapolate([60, 120], [0.7, 0.7])
    assert "too few sizes" in curve.extrapolate([60], [0.7])

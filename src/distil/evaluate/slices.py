"""Per-slice metrics with counts and bootstrap intervals.

Slices come from each record's ``tags`` (slice name -> value). Every (name, value) pair is scored
on the examples that carry it; an example without a tag for a slice name is left out of that name.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from distil.evaluate.metrics import mean_ci

_MIN_FOR_CI = 2  # one example gives a degenerate interval; say so with nulls instead


def slice_index(tags: Sequence[Mapping[str, str]]) -> dict[str, dict[str, np.ndarray]]:
    """``{slice name: {value: indices [k]}}`` from per-example tags; names and values sorted."""
    found: dict[str, dict[str, list[int]]] = {}
    for i, t in enumerate(tags):
        for name, value in (t or {}).items():
            found.setdefault(str(name), {}).setdefault(str(value), []).append(i)
    return {
        name: {value: np.array(idx, dtype=np.int64) for value, idx in sorted(values.items())}
        for name, values in sorted(found.items())
    }


def _nan_to_none(x: float) -> float | None:
    return None if x is None or (isinstance(x, float) and np.isnan(x)) else float(x)


def _mean_with_ci(values: np.ndarray, seed: int) -> tuple[float | None, list[float | None]]:
    if values.size == 0:
        return None, [None, None]
    point = float(values.mean())
    if values.size < _MIN_FOR_CI:
        return point, [None, None]
    lo, hi = mean_ci(values, seed=seed)
    return point, [lo, hi]


def per_slice(
    tags: Sequence[Mapping[str, str]],
    agreement: np.ndarray | None,
    predicted: np.ndarray | None = None,
    gold: np.ndarray | None = None,
    kl: np.ndarray | None = None,
    seed: int = 0,
) -> dict[str, dict[str, dict]]:
    """Score each slice value.

    Inputs are per example: ``agreement [n]`` (1/0, or ROUGE-like scores in [0, 1]), ``predicted [n]``
    and ``gold [n]`` class indices with -1 for "no gold label", ``kl [n]``. Each value gets ``n``,
    ``agreement`` with ``agreement_ci`` ([lo, hi] bootstrap 95%), ``n_gold``, ``accuracy`` with
    ``accuracy_ci`` and ``kl`` (mean); a measure with no data is null.
    """
    out: dict[str, dict[str, dict]] = {}
    for name, values in slice_index(tags).items():
        out[name] = {}
        for value, idx in values.items():
            row: dict = {"n": int(idx.size)}
            if agreement is not None:
                row["agreement"], row["agreement_ci"] = _mean_with_ci(np.asarray(agreement)[idx], seed)
            if predicted is not None and gold is not None:
                g = np.asarray(gold)[idx]
                has_gold = g >= 0
                correct = (np.asarray(predicted)[idx][has_gold] == g[has_gold]).astype(np.float64)
                row["n_gold"] = int(has_gold.sum())
                row["accuracy"], row["accuracy_ci"] = _mean_with_ci(correct, seed)
            if kl is not None:
                row["kl"] = _nan_to_none(float(np.mean(np.asarray(kl)[idx])))
            out[name][value] = row
    return out


def worst_slice(slices: Mapping[str, Mapping[str, Mapping]], measure: str = "agreement") -> tuple[str, float] | None:
    """The ``"name=value"`` with the lowest ``measure`` and that value, or None when no slice has it."""
    worst: tuple[str, float] | None = None
    for name, values in slices.items():
        for value, row in values.items():
            v = row.get(measure)
            if v is not None and (worst is None or v < worst[1]):
                worst = (f"{name}={value}", float(v))
    return worst

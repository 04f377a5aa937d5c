"""MUNGE (Bucilă, Caruana & Niculescu-Mizil 2006): synthetic tabular inputs near the real ones.

For each row, find its nearest neighbour; then, attribute by attribute with probability ``p``, move
the pair towards each other: a continuous value is redrawn from a normal centred on the neighbour's
value with sd = |difference| / s, a categorical value is swapped. Repeating the pass gives as many
new rows as wanted. The rows land where the data lives (unlike uniform noise), and the teacher labels
them, so a student can learn the teacher's function on a much larger transfer set.

``data.synthetic: munge`` uses this when the seed inputs are tabular rows (JSON objects of feature
values, or comma-separated numbers); free text keeps the word-level variant in ``synthetic.py``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence

import numpy as np

from distil.data.sources import InputItem


def nearest_neighbours(x: np.ndarray, categorical: Sequence[int] = ()) -> np.ndarray:
    """Index of each row's nearest other row. x: [N, D] float -> [N] int.

    Continuous columns are standardised and compared by squared Euclidean distance; a categorical
    column adds 1 when the values differ (Bucilă et al.'s Hamming term).
    """
    n, d = x.shape
    cat = np.zeros(d, dtype=bool)
    cat[list(categorical)] = True
    cont = x[:, ~cat].astype(float)
    scale = cont.std(0)
    cont = (cont - cont.mean(0)) / np.where(scale > 0, scale, 1.0)
    sq = (cont**2).sum(1)
    dist = sq[:, None] + sq[None, :] - 2 * cont @ cont.T
    if cat.any():
        dist = dist + (x[:, None, cat] != x[None, :, cat]).sum(-1)
    np.fill_diagonal(dist, np.inf)
    return dist.argmin(1)


def munge(
    x: np.ndarray, size: int, p: float = 0.5, s: float = 1.0, categorical: Sequence[int] = (), seed: int = 0
) -> np.ndarray:
    """``size`` synthetic rows made from x by MUNGE. x: [N, D] (N ≥ 2) -> [size, D].

    Each pass copies the data and, for every row e and its nearest neighbour e', changes each
    attribute with probability p: continuous e_a ~ N(e'_a, |e_a - e'_a|/s) and e'_a ~ N(e_a, same sd);
    categorical values swap. Both members of a pair are kept, so one pass yields 2N rows.
    """
    x = np.asarray(x, dtype=float)
    if x.ndim != 2 or len(x) < 2:
        raise ValueError("munge needs a 2-d array with at least two rows")
    if not 0.0 <= p <= 1.0 or s <= 0:
        raise ValueError("munge needs 0 ≤ p ≤ 1 and s > 0")
    rng = np.random.default_rng(seed)
    n, d = x.shape
    cat = np.zeros(d, dtype=bool)
    cat[list(categorical)] = True
    neighbour = nearest_neighbours(x, categorical)
    out = []
    for _ in range(math.ceil(size / (2 * n))):
        e, e2 = x.copy(), x[neighbour].copy()
        change = rng.random((n, d)) < p
        sd = np.abs(e - e2) / s
        new_e = np.where(cat, e2, rng.normal(e2, sd))
        new_e2 = np.where(cat, e, rng.normal(e, sd))
        out.append(np.where(change, new_e, e))
        out.append(np.where(change, new_e2, e2))
    rows = np.concatenate(out)
    return rows[rng.permutation(len(rows))[:size]]


# --- seed items holding tabular rows -----------------------------------------------------------------


def _parse_row(text: str) -> dict[str, float | str] | None:
    text = text.strip()
    if text.startswith("{"):
        try:
            value = json.loads(text)
        except json.JSONDecodeError:
            return None
        if (
            isinstance(value, dict)
            and value
            and all(isinstance(v, (int, float, str)) and not isinstance(v, bool) for v in value.values())
        ):
            return value
        return None
    parts = text.split(",")
    try:
        return {str(i): float(v) for i, v in enumerate(parts)} if len(parts) > 1 else None
    except ValueError:
        return None


def tabular_rows(seeds: Sequence[InputItem]) -> list[dict[str, float | str]] | None:
    """The seeds as rows of one shared set of columns, or None when they are not all tabular."""
    rows = [_parse_row(s.input) for s in seeds]
    if len(rows) < 2 or any(r is None for r in rows) or len({tuple(sorted(r)) for r in rows}) != 1:
        return None
    return rows  # type: ignore[return-value]


def munge_items(
    seeds: Sequence[InputItem], budget: int, seed: int = 0, p: float = 0.5, s: float = 1.0
) -> list[InputItem]:
    """``budget`` MUNGE rows from tabular seed items, written back in the seeds' own format.

    String-valued columns are categorical; a JSON seed gives JSON rows (same key order), a
    comma-separated seed gives comma-separated rows. Labels are left to the teacher.
    """
    rows = tabular_rows(seeds)
    if rows is None:
        raise ValueError(
            "munge_items needs tabular seeds (JSON objects with the same keys, or comma-separated numbers)"
        )
    if budget <= 0:
        return []
    columns = list(rows[0])
    categorical = [j for j, c in enumerate(columns) if any(isinstance(r[c], str) for r in rows)]
    codes: dict[int, list[str]] = {j: sorted({str(r[columns[j]]) for r in rows}) for j in categorical}
    x = np.array(
        [[codes[j].index(str(r[c])) if j in codes else float(r[c]) for j, c in enumerate(columns)] for r in rows]
    )
    synthetic = munge(x, budget, p=p, s=s, categorical=categorical, seed=seed)
    as_json = seeds[0].input.strip().startswith("{")
    integer = {
        j for j, c in enumerate(columns) if j not in codes and all(isinstance(r[c], int) for r in rows) and as_json
    }
    out = []
    for row in synthetic:
        values = [
            codes[j][int(v)] if j in codes else (int(round(v)) if j in integer else float(f"{v:.6g}"))
            for j, v in enumerate(row)
        ]
        text = json.dumps(dict(zip(columns, values, strict=True))) if as_json else ",".join(str(v) for v in values)
        out.append(InputItem(text, source="synthetic"))
    return out

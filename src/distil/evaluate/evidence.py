"""The evidence the gate decides on, from one evaluation document's per-item results.

Every measure is a point value with its 95% interval, its item count and the method that gave it:

- rates of yes/no items (top-1 agreement with the teacher, a slice's agreement): **Wilson score
  interval** from the count ``k`` of ``n``;
- graded per-item scores (generation fidelity, chrF) and ratios (student quality / teacher
  quality): **percentile bootstrap** over the items (paired: the same items resampled for both);
- latency p95: bootstrap over the timed requests (student and teacher resampled independently);
- the student against the baseline, on the same items: **exact McNemar** (one-sided binomial test on
  the discordant items) for agreement, **paired bootstrap** of the per-item difference for KL and for
  graded generation fidelity.

The result is small (counts, intervals, p-values; no per-item lists) and goes into the ledger's
evaluation summary, so ``distil decide`` needs nothing else. Pure functions of the document.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from distil.evaluate import metrics as m

N_RESAMPLES = 2000
WILSON = "Wilson score 95%"
BOOTSTRAP = f"bootstrap 95% ({N_RESAMPLES} resamples)"
PAIRED_BOOTSTRAP = f"paired bootstrap 95% ({N_RESAMPLES} resamples), one-sided p"
MCNEMAR = "exact McNemar (one-sided binomial on discordant items)"


def _finite(x: float) -> float | None:
    return None if x is None or not np.isfinite(x) else float(x)


def rate_measure(successes: int, n: int) -> dict[str, Any]:
    """A yes/no rate with its Wilson interval."""
    lo, hi = m.wilson_interval(successes, n)
    return {
        "value": _finite(successes / n) if n else None,
        "interval": [_finite(lo), _finite(hi)],
        "k": int(successes),
        "n": int(n),
        "method": WILSON,
    }


def mean_measure(values: np.ndarray, seed: int = 0) -> dict[str, Any]:
    """A mean of graded per-item scores with its bootstrap interval."""
    values = np.asarray(values, dtype=np.float64)
    if values.size == 0:
        return {"value": None, "interval": [None, None], "n": 0, "method": BOOTSTRAP}
    lo, hi = m.mean_ci(values, n_resamples=N_RESAMPLES, seed=seed) if values.size >= 2 else (float("nan"), float("nan"))
    return {
        "value": float(values.mean()),
        "interval": [_finite(lo), _finite(hi)],
        "n": int(values.size),
        "method": BOOTSTRAP,
    }


def ratio_measure(first: np.ndarray, second: np.ndarray, seed: int = 0) -> dict[str, Any]:
    """mean(first) / mean(second) on the same items, with a paired bootstrap interval."""
    a, b = np.asarray(first, dtype=np.float64), np.asarray(second, dtype=np.float64)
    if a.size == 0 or a.size != b.size or b.mean() == 0:
        return {"value": None, "interval": [None, None], "n": int(a.size), "method": "paired " + BOOTSTRAP}
    rng = np.random.default_rng(seed)
    index = rng.integers(0, a.size, size=(N_RESAMPLES, a.size))
    num, den = a[index].mean(axis=1), b[index].mean(axis=1)
    ratios = np.divide(num, den, out=np.full_like(num, np.nan), where=den > 0)
    ratios = ratios[np.isfinite(ratios)]
    lo, hi = np.percentile(ratios, [2.5, 97.5]) if ratios.size else (np.nan, np.nan)
    return {
        "value": float(a.mean() / b.mean()),
        "interval": [_finite(lo), _finite(hi)],
        "n": int(a.size),
        "method": "paired " + BOOTSTRAP,
    }


def p95_measure(
    samples_ms: list[float] | None, reference_ms: list[float] | None = None, seed: int = 0
) -> dict[str, Any] | None:
    """The p95 of ``samples_ms`` (or its ratio to ``reference_ms``'s p95) with a bootstrap interval."""
    if not samples_ms or (reference_ms is not None and not reference_ms):
        return None
    rng = np.random.default_rng(seed)
    s = np.asarray(samples_ms, dtype=np.float64)
    boot = np.percentile(s[rng.integers(0, s.size, size=(N_RESAMPLES, s.size))], 95, axis=1)
    value = float(np.percentile(s, 95))
    if reference_ms is not None:
        r = np.asarray(reference_ms, dtype=np.float64)
        ref_boot = np.percentile(r[rng.integers(0, r.size, size=(N_RESAMPLES, r.size))], 95, axis=1)
        boot, value = boot / ref_boot, value / float(np.percentile(r, 95))
    lo, hi = np.percentile(boot, [2.5, 97.5])
    return {
        "value": value,
        "interval": [float(lo), float(hi)],
        "n": int(s.size),
        "method": BOOTSTRAP + " over timed requests",
    }


def mcnemar_measure(first_right: np.ndarray, second_right: np.ndarray) -> dict[str, Any]:
    """First against second on the same yes/no items: discordant counts and the exact McNemar p-value."""
    a, b = np.asarray(first_right, dtype=bool), np.asarray(second_right, dtype=bool)
    only_first, only_second = int(np.sum(a & ~b)), int(np.sum(~a & b))
    n = int(a.size)
    return {
        "value": _finite((only_first - only_second) / n) if n else None,  # the difference of the two rates
        "only_student": only_first,
        "only_baseline": only_second,
        "n": n,
        "p_value": m.mcnemar_exact(only_first, only_second),
        "method": MCNEMAR,
    }


def paired_difference_measure(first: np.ndarray, second: np.ndarray, seed: int = 0) -> dict[str, Any]:
    """mean(first − second) on the same items, its paired bootstrap interval and one-sided p-value."""
    d = np.asarray(first, dtype=np.float64) - np.asarray(second, dtype=np.float64)
    boot = m.paired_bootstrap(d, n_resamples=N_RESAMPLES, seed=seed)
    return {
        "value": _finite(boot["value"]),
        "interval": [_finite(boot["lo"]), _finite(boot["hi"])],
        "n": boot["n"],
        "p_value": _finite(boot["p_value"]),
        "method": PAIRED_BOOTSTRAP,
    }


# --- from an evaluation document -------------------------------------------------------------------------


def _items(block: Mapping[str, Any], key: str) -> np.ndarray | None:
    values = (block.get("per_item") or {}).get(key)
    return None if values is None else np.asarray(values, dtype=np.float64)


def _quality_items(block: Mapping[str, Any]) -> np.ndarray | None:
    """Per-item quality, in :func:`distil.decide.quality_of`'s order: gold correctness, held-out
    correctness against gold labels, else the generation fidelity score."""
    for source in (block.get("gold") or {}, block):
        correct = _items(source, "correct")
        if correct is not None and correct.size:
            return correct
    return _items(block, "agreement") if block.get("kind") == "generate" else None


def _slice_measures(block: Mapping[str, Any], graded: bool) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for name, values in (block.get("slices") or {}).items():
        for value, row in values.items():
            n, rate = int(row.get("n") or 0), row.get("agreement")
            if rate is None or n == 0:
                continue
            if graded:
                lo, hi = row.get("agreement_ci") or [None, None]
                out[f"{name}={value}"] = {"value": float(rate), "interval": [lo, hi], "n": n, "method": BOOTSTRAP}
            else:
                out[f"{name}={value}"] = rate_measure(int(round(rate * n)), n)
    return out


def _label_recall_measures(document: Mapping[str, Any]) -> dict[str, dict[str, Any]] | None:
    """Each label's recall by the student as a Wilson rate: of the label's items, those the student gave it.

    Against the gold set's labels where a gold set was scored, else the teacher's labels on the held-out split; a
    label the reference never uses has no items (``n`` 0, no value). None for an evaluation without per-label
    figures (generation, or written before they existed)."""
    from distil.evaluate.figures import GOLD, HELD_OUT, has_gold, label_names, reference_figures, scored_set

    which = GOLD if has_gold(document) else HELD_OUT
    figures = reference_figures(scored_set(document, "student", which), which)
    if not figures:
        return None
    labels = label_names(document)
    out = {}
    for i, (hits, support) in enumerate(zip(figures["hits"], figures["support"], strict=True)):
        measure = rate_measure(hits, support) if support else {"value": None, "interval": [None, None], "n": 0}
        out[labels[i] if i < len(labels) else f"label {i}"] = {**measure, "reference": which}
    return out


def gate_evidence(document: Mapping[str, Any], seed: int = 0) -> dict[str, Any]:
    """Intervals and paired tests for every gate threshold, from the per-item results of ``document``."""
    student, teacher, baseline = (document.get(k) or {} for k in ("student", "teacher", "baseline"))
    graded = student.get("kind") == "generate"
    out: dict[str, Any] = {}
    agree_s, agree_b = _items(student, "agreement"), _items(baseline, "agreement")
    if agree_s is not None:
        out["agreement"] = (
            mean_measure(agree_s, seed) if graded else rate_measure(int(agree_s.sum()), int(agree_s.size))
        )
    out["slices"] = _slice_measures(student, graded)
    if not graded and (recall := _label_recall_measures(document)) is not None:
        out["label_recall"] = recall
    quality_s, quality_t = _quality_items(student), _quality_items(teacher)
    if quality_s is not None and graded and quality_t is None:
        quality_t = np.ones_like(quality_s)  # generation: the teacher's text is the reference, quality 1
    if quality_s is not None and quality_t is not None and quality_s.size == quality_t.size:
        out["quality_ratio"] = ratio_measure(quality_s, quality_t, seed)
    if agree_s is not None and agree_b is not None and agree_s.size == agree_b.size:
        out["beat_baseline"] = (
            paired_difference_measure(agree_s, agree_b, seed)
            if graded
            else mcnemar_measure(agree_s > 0.5, agree_b > 0.5)
        )
    kl_s, kl_b = _items(student, "kl"), _items(baseline, "kl")
    if kl_s is not None and kl_b is not None and kl_s.size == kl_b.size and kl_s.size:
        out["kl_vs_baseline"] = paired_difference_measure(kl_b, kl_s, seed)  # > 0: the student is closer to the teacher
    samples = lambda block: (block.get("latency") or {}).get("samples_ms")  # noqa: E731
    if (p95 := p95_measure(samples(student), seed=seed)) is not None:
        out["p95_ms"] = p95
    if (ratio := p95_measure(samples(student), samples(teacher), seed=seed)) is not None:
        out["p95_ratio"] = ratio
    return out

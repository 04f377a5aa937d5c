"""Task quality, fidelity to the teacher and calibration: pure functions of numpy arrays.

Label distributions are arrays ``[n, L]`` over the spec's labels in spec order; labels are integer
class indices ``[n]``. Divergences are in nats and use the teacher as the reference distribution
(``KL(teacher ‖ student)``), the direction a distillation loss minimises.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

# Probabilities are clipped here before a log: a student that puts exactly zero mass on a teacher
# label would otherwise give an infinite KL that swamps every other example in the mean.
EPS = 1e-12


# --- task quality ------------------------------------------------------------------------------------


def accuracy(predicted: np.ndarray, reference: np.ndarray) -> float:
    """Fraction of ``predicted [n]`` equal to ``reference [n]``; NaN when n == 0."""
    predicted, reference = np.asarray(predicted), np.asarray(reference)
    if predicted.size == 0:
        return float("nan")
    return float(np.mean(predicted == reference))


def macro_f1(predicted: np.ndarray, reference: np.ndarray, n_labels: int | None = None) -> float:
    """Unweighted mean of per-class F1 over classes present in ``reference`` or ``predicted``.

    A class that appears in neither contributes nothing (as in scikit-learn with ``labels=None``).
    """
    predicted, reference = np.asarray(predicted), np.asarray(reference)
    if predicted.size == 0:
        return float("nan")
    classes = np.union1d(predicted, reference) if n_labels is None else np.arange(n_labels)
    scores = []
    for c in classes:
        tp = np.sum((predicted == c) & (reference == c))
        fp = np.sum((predicted == c) & (reference != c))
        fn = np.sum((predicted != c) & (reference == c))
        if tp + fp + fn == 0:
            continue
        scores.append(2 * tp / (2 * tp + fp + fn))
    return float(np.mean(scores)) if scores else float("nan")


def confusion_matrix(predicted: np.ndarray, reference: np.ndarray, n_labels: int) -> np.ndarray:
    """``[L, L]`` counts; rows are the reference class, columns the predicted one."""
    out = np.zeros((n_labels, n_labels), dtype=np.int64)
    np.add.at(out, (np.asarray(reference, dtype=np.int64), np.asarray(predicted, dtype=np.int64)), 1)
    return out


# --- fidelity to the teacher ---------------------------------------------------------------------------


def _normalise(p: np.ndarray) -> np.ndarray:
    p = np.clip(np.asarray(p, dtype=np.float64), EPS, None)
    return p / p.sum(axis=-1, keepdims=True)


def agreement_per_example(teacher_probs: np.ndarray, student_probs: np.ndarray) -> np.ndarray:
    """``[n]`` 1.0 where the student's top-1 label is the teacher's, else 0.0."""
    return (np.argmax(teacher_probs, axis=-1) == np.argmax(student_probs, axis=-1)).astype(np.float64)


def kl_per_example(teacher_probs: np.ndarray, student_probs: np.ndarray) -> np.ndarray:
    """``[n]`` KL(teacher ‖ student) in nats for distributions ``[n, L]``."""
    p, q = _normalise(teacher_probs), _normalise(student_probs)
    return np.maximum(np.sum(p * (np.log(p) - np.log(q)), axis=-1), 0.0)


def js_per_example(teacher_probs: np.ndarray, student_probs: np.ndarray) -> np.ndarray:
    """``[n]`` Jensen-Shannon divergence in nats (symmetric, bounded by ln 2)."""
    p, q = _normalise(teacher_probs), _normalise(student_probs)
    m = 0.5 * (p + q)
    kl_pm = np.sum(p * (np.log(p) - np.log(m)), axis=-1)
    kl_qm = np.sum(q * (np.log(q) - np.log(m)), axis=-1)
    return np.maximum(0.5 * (kl_pm + kl_qm), 0.0)


def agreement(teacher_probs: np.ndarray, student_probs: np.ndarray) -> float:
    return float(np.mean(agreement_per_example(teacher_probs, student_probs))) if len(teacher_probs) else float("nan")


def mean_kl(teacher_probs: np.ndarray, student_probs: np.ndarray) -> float:
    return float(np.mean(kl_per_example(teacher_probs, student_probs))) if len(teacher_probs) else float("nan")


def mean_js(teacher_probs: np.ndarray, student_probs: np.ndarray) -> float:
    return float(np.mean(js_per_example(teacher_probs, student_probs))) if len(teacher_probs) else float("nan")


# --- calibration -------------------------------------------------------------------------------------


def reliability_bins(probs: np.ndarray, reference: np.ndarray, n_bins: int = 10) -> list[dict[str, float]]:
    """Equal-width confidence bins over the top-1 probability of ``probs [n, L]``.

    Each bin: ``lo``, ``hi``, ``count``, mean ``confidence`` and ``accuracy`` of its examples against
    ``reference [n]`` (NaN for empty bins). The last bin includes 1.0.
    """
    probs = np.asarray(probs, dtype=np.float64)
    confidence = probs.max(axis=-1) if len(probs) else np.zeros(0)
    correct = (probs.argmax(axis=-1) == np.asarray(reference)) if len(probs) else np.zeros(0, dtype=bool)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    index = np.clip(np.digitize(confidence, edges[1:-1], right=True), 0, n_bins - 1)
    bins = []
    for b in range(n_bins):
        mask = index == b
        count = int(mask.sum())
        bins.append(
            {
                "lo": float(edges[b]),
                "hi": float(edges[b + 1]),
                "count": count,
                "confidence": float(confidence[mask].mean()) if count else float("nan"),
                "accuracy": float(correct[mask].mean()) if count else float("nan"),
            }
        )
    return bins


def expected_calibration_error(probs: np.ndarray, reference: np.ndarray, n_bins: int = 10) -> float:
    """ECE: sum over bins of (bin share) × |accuracy − mean confidence|, from :func:`reliability_bins`."""
    if len(probs) == 0:
        return float("nan")
    bins = reliability_bins(probs, reference, n_bins)
    n = sum(b["count"] for b in bins)
    return float(sum(b["count"] / n * abs(b["accuracy"] - b["confidence"]) for b in bins if b["count"]))


# --- generation --------------------------------------------------------------------------------------


def exact_match(predicted: Sequence[str], reference: Sequence[str]) -> np.ndarray:
    """``[n]`` 1.0 where the texts are equal after stripping surrounding whitespace."""
    return np.array([float(p.strip() == r.strip()) for p, r in zip(predicted, reference, strict=True)])


def _lcs_length(a: Sequence[str], b: Sequence[str]) -> int:
    # One-row dynamic programme: O(len(a) * len(b)) time, O(len(b)) memory.
    if not a or not b:
        return 0
    row = [0] * (len(b) + 1)
    for x in a:
        prev_diag = 0
        for j, y in enumerate(b, start=1):
            keep = row[j]
            row[j] = prev_diag + 1 if x == y else max(row[j], row[j - 1])
            prev_diag = keep
    return row[-1]


def rouge_l(predicted: str, reference: str) -> float:
    """ROUGE-L F1 over lower-cased whitespace tokens (longest common subsequence, β = 1)."""
    p, r = predicted.lower().split(), reference.lower().split()
    if not p and not r:
        return 1.0
    lcs = _lcs_length(p, r)
    if lcs == 0:
        return 0.0
    precision, recall = lcs / len(p), lcs / len(r)
    return 2 * precision * recall / (precision + recall)


def rouge_l_per_example(predicted: Sequence[str], reference: Sequence[str]) -> np.ndarray:
    return np.array([rouge_l(p, r) for p, r in zip(predicted, reference, strict=True)])


# --- uncertainty -------------------------------------------------------------------------------------


def bootstrap_ci(
    statistic: Callable[..., float],
    *arrays: np.ndarray,
    n_resamples: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
) -> tuple[float, float]:
    """Percentile bootstrap interval of ``statistic(*arrays)``; the arrays are resampled together.

    Seeded, so the same inputs give the same interval. NaN bounds for empty input.
    """
    arrays = tuple(np.asarray(a) for a in arrays)
    n = len(arrays[0])
    if n == 0:
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    index = rng.integers(0, n, size=(n_resamples, n))
    values = np.array([statistic(*(a[i] for a in arrays)) for i in index], dtype=np.float64)
    values = values[~np.isnan(values)]
    if values.size == 0:
        return float("nan"), float("nan")
    tail = (1 - confidence) / 2 * 100
    lo, hi = np.percentile(values, [tail, 100 - tail])
    return float(lo), float(hi)


def mean_ci(values: np.ndarray, n_resamples: int = 1000, seed: int = 0) -> tuple[float, float]:
    """Bootstrap 95% interval of the mean of per-example ``values [n]`` (vectorised)."""
    values = np.asarray(values, dtype=np.float64)
    if values.size == 0:
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    means = values[rng.integers(0, values.size, size=(n_resamples, values.size))].mean(axis=1)
    lo, hi = np.percentile(means, [2.5, 97.5])
    return float(lo), float(hi)

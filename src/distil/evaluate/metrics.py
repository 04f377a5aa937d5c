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
    """Fraction of ``predicted [n]`` equal to ``reference [n]`` (scikit-learn's ``accuracy_score``); NaN when n == 0."""
    from sklearn.metrics import accuracy_score

    predicted, reference = np.asarray(predicted), np.asarray(reference)
    if predicted.size == 0:
        return float("nan")
    return float(accuracy_score(reference, predicted))


def macro_f1(predicted: np.ndarray, reference: np.ndarray, n_labels: int | None = None) -> float:
    """Unweighted mean of per-class F1 (scikit-learn's ``f1_score``, average="macro").

    A class that appears in neither ``predicted`` nor ``reference`` has no F1 and is left out of the mean
    (``zero_division=nan``), so an absent class neither helps nor hurts; one predicted and never right counts 0.
    """
    from sklearn.metrics import f1_score

    predicted, reference = np.asarray(predicted), np.asarray(reference)
    if predicted.size == 0:
        return float("nan")
    labels = None if n_labels is None else list(range(n_labels))
    return float(f1_score(reference, predicted, labels=labels, average="macro", zero_division=np.nan))


def macro_f1_resampled(predicted: np.ndarray, reference: np.ndarray, n_labels: int, index: np.ndarray) -> np.ndarray:
    """``[R]`` :func:`macro_f1` of each resample ``index [R, n]`` of the items, vectorised.

    The same F1 as scikit-learn's (2·tp / (2·tp + fp + fn) per class, classes with neither left out), from one
    confusion count per resample: a bootstrap asks for hundreds, and ``f1_score`` costs milliseconds a call.
    """
    predicted, reference = np.asarray(predicted, dtype=np.int64), np.asarray(reference, dtype=np.int64)
    resamples = index.shape[0]
    cells = (np.arange(resamples)[:, None] * n_labels + reference[index]) * n_labels + predicted[index]
    counts = np.bincount(cells.ravel(), minlength=resamples * n_labels * n_labels).reshape(resamples, n_labels, -1)
    tp = np.diagonal(counts, axis1=1, axis2=2).astype(np.float64)
    wrong = counts.sum(axis=1) + counts.sum(axis=2) - 2 * tp  # fp + fn
    with np.errstate(invalid="ignore", divide="ignore"):
        f1 = np.where(2 * tp + wrong > 0, 2 * tp / (2 * tp + wrong), np.nan)
    return np.nanmean(f1, axis=1)  # every resample has items, so some class has an F1


def confusion_matrix(predicted: np.ndarray, reference: np.ndarray, n_labels: int) -> np.ndarray:
    """``[L, L]`` counts (scikit-learn's ``confusion_matrix``); rows are the reference class, columns the predicted."""
    from sklearn.metrics import confusion_matrix as sk_confusion

    predicted, reference = np.asarray(predicted, dtype=np.int64), np.asarray(reference, dtype=np.int64)
    if predicted.size == 0:
        return np.zeros((n_labels, n_labels), dtype=np.int64)
    return sk_confusion(reference, predicted, labels=list(range(n_labels))).astype(np.int64)


def per_label(predicted: np.ndarray, reference: np.ndarray, n_labels: int) -> dict[str, list]:
    """Per class, in label order: ``precision``, ``recall``, ``f1`` (scikit-learn's
    ``precision_recall_fscore_support``; None where undefined: a class never predicted has no precision, one
    never in the reference no recall), ``support`` (items of the class in the reference), ``predicted`` (items
    the model gave the class) and ``hits`` (both)."""
    from sklearn.metrics import precision_recall_fscore_support

    predicted, reference = np.asarray(predicted, dtype=np.int64), np.asarray(reference, dtype=np.int64)
    labels = list(range(n_labels))
    if predicted.size:
        precision, recall, f1, support = precision_recall_fscore_support(
            reference, predicted, labels=labels, zero_division=np.nan
        )
    else:
        precision = recall = f1 = np.full(n_labels, np.nan)
        support = np.zeros(n_labels, dtype=np.int64)
    matrix = confusion_matrix(predicted, reference, n_labels)

    def plain(values: np.ndarray) -> list[float | None]:
        return [None if np.isnan(v) else float(v) for v in np.asarray(values, dtype=np.float64)]

    return {
        "precision": plain(precision),
        "recall": plain(recall),
        "f1": plain(f1),
        "support": [int(x) for x in support],
        "predicted": [int(x) for x in matrix.sum(axis=0)],
        "hits": [int(x) for x in np.diagonal(matrix)],
    }


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


# --- evidence for the gate: intervals, paired tests, items needed ------------------------------------------

Z95 = 1.959963984540054  # the two-sided 95% normal quantile; Wilson's z
ALPHA = 0.05
MAX_ITEMS = 10_000_000  # "items needed" beyond this is reported as out of reach


def wilson_interval(successes: int, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval of a rate ``successes / n`` (95% at the default z); NaN bounds when n == 0.

    Unlike the normal (Wald) interval it stays inside [0, 1] and does not collapse at 0 or n successes.
    """
    if n <= 0:
        return float("nan"), float("nan")
    p = successes / n
    denominator = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denominator
    half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denominator
    return float(max(0.0, centre - half)), float(min(1.0, centre + half))


def wilson_items_needed(rate: float, threshold: float, direction: str = "min", z: float = Z95) -> int | None:
    """The smallest n at which the Wilson bound at the observed ``rate`` clears ``threshold``.

    ``direction`` "min": the lower bound must reach the threshold; "max": the upper bound must stay at
    or under it. None when the observed rate itself is on the wrong side (no n would pass it), or when
    more than ``MAX_ITEMS`` would be needed.
    """
    if (direction == "min" and rate < threshold) or (direction == "max" and rate > threshold):
        return None

    def clears(n: int) -> bool:
        lo, hi = wilson_interval(rate * n, n, z)
        return lo >= threshold if direction == "min" else hi <= threshold

    return _smallest_n(clears)


def _smallest_n(clears: Callable[[int], bool], start: int = 1) -> int | None:
    """The smallest n ≥ start with ``clears(n)``, assuming clears is monotone in n (doubling, then bisection)."""
    hi = max(start, 1)
    while not clears(hi):
        if hi > MAX_ITEMS:
            return None
        hi *= 2
    lo = max(start, hi // 2)
    while lo < hi:
        mid = (lo + hi) // 2
        if clears(mid):
            hi = mid
        else:
            lo = mid + 1
    return hi


def mcnemar_exact(only_first: int, only_second: int) -> float:
    """One-sided exact McNemar p-value that the first model is right more often than the second.

    On paired items, only the discordant ones carry evidence: ``only_first`` items where the first is
    right and the second wrong, ``only_second`` the reverse. Under the null both are equally likely, so
    ``only_first ~ Binomial(only_first + only_second, 1/2)``; the p-value is P(X ≥ only_first).
    One-sided because the gate asks a directional question ("does the student beat the baseline?").
    1.0 with no discordant items.
    """
    from scipy.stats import binomtest

    discordant = only_first + only_second
    if discordant == 0:
        return 1.0
    return float(binomtest(only_first, discordant, 0.5, alternative="greater").pvalue)


def mcnemar_items_needed(only_first: int, only_second: int, n: int, alpha: float = ALPHA) -> int | None:
    """The smallest number of paired items at which McNemar at the observed discordance
    (``only_first / n`` and ``only_second / n``) reaches p < alpha; None when the first is not ahead."""
    if n <= 0 or only_first <= only_second:
        return None
    a, b = only_first / n, only_second / n

    def clears(m: int) -> bool:
        return mcnemar_exact(round(a * m), round(b * m)) < alpha

    return _smallest_n(clears, start=n)


def paired_bootstrap(differences: np.ndarray, n_resamples: int = 2000, seed: int = 0) -> dict[str, float]:
    """Paired bootstrap of the mean of per-item ``differences [n]`` (first minus second, on the same items).

    Returns the mean, its percentile 95% interval and a one-sided p-value that the mean is not above 0
    (the share of resamples whose mean is ≤ 0, with the +1 correction so it is never exactly 0).
    """
    d = np.asarray(differences, dtype=np.float64)
    if d.size == 0:
        return {"value": float("nan"), "lo": float("nan"), "hi": float("nan"), "p_value": float("nan"), "n": 0}
    rng = np.random.default_rng(seed)
    means = d[rng.integers(0, d.size, size=(n_resamples, d.size))].mean(axis=1)
    lo, hi = np.percentile(means, [2.5, 97.5])
    p = (np.sum(means <= 0) + 1) / (n_resamples + 1)
    return {"value": float(d.mean()), "lo": float(lo), "hi": float(hi), "p_value": float(p), "n": int(d.size)}


def bootstrap_items_needed(value: float, bound: float, threshold: float, n: int) -> int | None:
    """Items at which a bootstrap interval would clear ``threshold``, assuming its half-width shrinks
    as 1/√n at the observed spread: n · ((value − bound) / (value − threshold))². None when the
    value is not past the threshold in the bound's direction."""
    gap, spread = value - threshold, value - bound
    if n <= 0 or gap == 0 or gap * spread <= 0:
        return None
    needed = int(np.ceil(n * (spread / gap) ** 2))
    return needed if needed <= MAX_ITEMS else None


# --- generation: graded similarity to the teacher's text ---------------------------------------------------


def _char_ngrams(text: str, n: int) -> dict[str, int]:
    counts: dict[str, int] = {}
    for i in range(len(text) - n + 1):
        gram = text[i : i + n]
        counts[gram] = counts.get(gram, 0) + 1
    return counts


def chrf(predicted: str, reference: str, max_order: int = 6, beta: float = 2.0) -> float:
    """chrF (Popović 2015) in [0, 1]: character n-gram F-beta, n = 1..6, beta = 2 (recall weighs more).

    As the paper defines it: character n-gram precision and recall are each averaged over the orders
    1..6 (those both texts are long enough to have), then combined into one F-beta. (sacrebleu 2.x
    averages per-order F-scores instead; the two agree when every order has the same P and R.)
    Whitespace is removed before n-grams are taken, as in sacrebleu's default. Two empty texts score
    1; one empty text scores 0.
    """
    hyp, ref = "".join(predicted.split()), "".join(reference.split())
    if not hyp and not ref:
        return 1.0
    if not hyp or not ref:
        return 0.0
    precisions, recalls = [], []
    for n in range(1, max_order + 1):
        h, r = _char_ngrams(hyp, n), _char_ngrams(ref, n)
        if not h or not r:
            continue
        overlap = sum(min(count, r.get(gram, 0)) for gram, count in h.items())
        precisions.append(overlap / sum(h.values()))
        recalls.append(overlap / sum(r.values()))
    if not precisions:
        return 0.0
    p, r = float(np.mean(precisions)), float(np.mean(recalls))
    if p == 0 and r == 0:
        return 0.0
    b2 = beta * beta
    return (1 + b2) * p * r / (b2 * p + r)


def chrf_per_example(predicted: Sequence[str], reference: Sequence[str]) -> np.ndarray:
    return np.array([chrf(p, r) for p, r in zip(predicted, reference, strict=True)])

"""One model's quality, fidelity and calibration block, from its outputs and the teacher's.

These functions take arrays, not models: whatever ran the model (a trained student, the teacher
with its few-shot prompt, a plain numpy function in a test) hands its outputs in here.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from distil.evaluate import metrics as m
from distil.evaluate.slices import per_slice


def _none_if_nan(x: float) -> float | None:
    return None if x is None or np.isnan(x) else float(x)


def _ci(values: np.ndarray, seed: int) -> list[float | None]:
    if values.size < 2:
        return [None, None]
    return list(m.mean_ci(values, seed=seed))


def gold_indices(gold_labels: Sequence[str | None], label_names: Sequence[str]) -> np.ndarray:
    """``[n]`` class index of each gold label, -1 where there is none (or it is not a known label)."""
    position = {name: i for i, name in enumerate(label_names)}
    return np.array([position.get(g, -1) if g is not None else -1 for g in gold_labels], dtype=np.int64)


def disagreements(model_top: np.ndarray, teacher_top: np.ndarray, gold: np.ndarray) -> dict[str, int] | None:
    """Where the model's top label differs from the teacher's, on the gold-labelled items: how many, and which of
    the two (or neither) gold agrees with. None without gold labels.

    A model more accurate than its teacher cannot agree with it on the items the teacher gets wrong: when the
    model is right on most of these, agreement is limited by the teacher's mistakes, not by the model."""
    labelled = gold >= 0
    if not labelled.any():
        return None
    differ = labelled & (model_top != teacher_top)
    model_right = int((differ & (model_top == gold)).sum())
    teacher_right = int((differ & (teacher_top == gold)).sum())
    n = int(differ.sum())
    return {
        "of": int(labelled.sum()),
        "n": n,
        "model_right": model_right,
        "teacher_right": teacher_right,
        "neither": n - model_right - teacher_right,
    }


F1_RESAMPLES = 300


def _macro_f1_ci(predicted: np.ndarray, gold: np.ndarray, n_labels: int, seed: int) -> list[float | None]:
    """Percentile bootstrap 95% interval of macro-F1 over the gold-labelled items; nulls under two items."""
    if predicted.size < 2:
        return [None, None]
    index = np.random.default_rng(seed).integers(0, predicted.size, size=(F1_RESAMPLES, predicted.size))
    lo, hi = np.percentile(m.macro_f1_resampled(predicted, gold, n_labels, index), [2.5, 97.5])
    return [_none_if_nan(float(lo)), _none_if_nan(float(hi))]


def score_classifier(
    teacher_probs: np.ndarray,
    model_probs: np.ndarray,
    gold: np.ndarray,
    tags: Sequence[Mapping[str, str]],
    n_labels: int,
    seed: int = 0,
    n_bins: int = 10,
) -> dict:
    """Score label distributions ``model_probs [n, L]`` against ``teacher_probs [n, L]`` and ``gold [n]``.

    ``gold`` holds class indices with -1 for examples without a gold label. Accuracy and macro-F1 use
    the gold-labelled examples only (null when there are none; ``n_gold`` says how many there were), and so do
    ``per_label`` (precision, recall, F1, support, predicted, hits per label;
    :func:`~distil.evaluate.metrics.per_label`) and ``confusion`` (rows the gold label, columns the model's).
    ``per_label_vs_teacher`` and ``confusion_vs_teacher`` take the teacher's top-1 label as the reference on
    every item; ``disagreements`` counts, on the gold-labelled items, where the model's top label differs from
    the teacher's and which of the two gold sides with (:func:`disagreements`); ``predicted_counts`` is how
    often the model gave each label. ECE is measured against gold
    labels when every example has one, else against the teacher's top-1 label; ``ece_reference`` says which.
    """
    teacher_probs = np.asarray(teacher_probs, dtype=np.float64)
    model_probs = np.asarray(model_probs, dtype=np.float64)
    gold = np.asarray(gold, dtype=np.int64)
    if teacher_probs.shape != model_probs.shape or teacher_probs.shape[0] != gold.shape[0]:
        raise ValueError(f"shapes differ: teacher {teacher_probs.shape}, model {model_probs.shape}, gold {gold.shape}")
    predicted = model_probs.argmax(axis=-1) if len(model_probs) else np.zeros(0, dtype=np.int64)
    agree = m.agreement_per_example(teacher_probs, model_probs)
    kl = m.kl_per_example(teacher_probs, model_probs)
    js = m.js_per_example(teacher_probs, model_probs)
    has_gold = gold >= 0
    correct = (predicted[has_gold] == gold[has_gold]).astype(np.float64)

    if has_gold.size and has_gold.all():
        calib_reference, ece_reference = gold, "gold"
    else:
        calib_reference, ece_reference = teacher_probs.argmax(axis=-1), "teacher"
    f1_ci = _macro_f1_ci(predicted[has_gold], gold[has_gold], n_labels, seed)
    teacher_top = teacher_probs.argmax(axis=-1) if len(teacher_probs) else np.zeros(0, dtype=np.int64)
    return {
        "kind": "classify",
        "n": int(len(model_probs)),
        "n_gold": int(has_gold.sum()),
        "accuracy": _none_if_nan(m.accuracy(predicted[has_gold], gold[has_gold])),
        "accuracy_ci": _ci(correct, seed),
        "macro_f1": _none_if_nan(m.macro_f1(predicted[has_gold], gold[has_gold], n_labels)),
        "macro_f1_ci": [_none_if_nan(x) for x in f1_ci],
        "agreement": _none_if_nan(float(agree.mean()) if agree.size else float("nan")),
        "agreement_ci": _ci(agree, seed),
        "kl": _none_if_nan(float(kl.mean()) if kl.size else float("nan")),
        "kl_ci": _ci(kl, seed),
        "js": _none_if_nan(float(js.mean()) if js.size else float("nan")),
        "ece": _none_if_nan(m.expected_calibration_error(model_probs, calib_reference, n_bins)),
        "ece_reference": ece_reference,
        "reliability": m.reliability_bins(model_probs, calib_reference, n_bins) if len(model_probs) else [],
        "predicted_counts": np.bincount(predicted, minlength=n_labels).tolist(),
        "per_label": m.per_label(predicted[has_gold], gold[has_gold], n_labels) if has_gold.any() else None,
        "confusion": m.confusion_matrix(predicted[has_gold], gold[has_gold], n_labels).tolist()
        if has_gold.any()
        else None,
        "per_label_vs_teacher": m.per_label(predicted, teacher_top, n_labels),
        "confusion_vs_teacher": m.confusion_matrix(predicted, teacher_top, n_labels).tolist()
        if len(model_probs)
        else [],
        "disagreements": disagreements(predicted, teacher_top, gold),
        "slices": per_slice(tags, agree, predicted, gold, kl, seed=seed),
        # per item, in the records' order: the gate's intervals and paired tests are computed from these
        "per_item": {"agreement": agree.tolist(), "kl": kl.tolist(), "correct": correct.tolist()},
    }


def score_generator(
    teacher_texts: Sequence[str],
    model_texts: Sequence[str],
    tags: Sequence[Mapping[str, str]],
    seed: int = 0,
    token_agreement: Sequence[float] | None = None,
) -> dict:
    """Score generated texts against the teacher's, as graded similarities so a gate can pass on a number.

    ``fidelity`` (also stored as ``agreement``, the key the gate reads) is chrF (character n-grams
    1..6, β = 2) against the teacher's text; ROUGE-L F1 and exact match are reported beside it.
    ``token_agreement`` [n], when the model could be asked (a trained student), is the share of the
    teacher's answer tokens the model's greedy next token reproduces, teacher-forced. KL, JS and ECE
    need label distributions and are null for text.
    """
    chrf = m.chrf_per_example(model_texts, teacher_texts)
    rouge = m.rouge_l_per_example(model_texts, teacher_texts)
    em = m.exact_match(model_texts, teacher_texts)
    tokens = None if token_agreement is None else np.asarray(token_agreement, dtype=np.float64)
    mean = lambda x: _none_if_nan(float(x.mean()) if x.size else float("nan"))  # noqa: E731
    return {
        "kind": "generate",
        "n": len(model_texts),
        "n_gold": 0,
        "accuracy": None,
        "macro_f1": None,
        "fidelity_metric": "chrF",
        "fidelity": mean(chrf),
        "agreement": mean(chrf),
        "agreement_ci": _ci(chrf, seed),
        "chrf": mean(chrf),
        "chrf_ci": _ci(chrf, seed),
        "rouge_l": mean(rouge),
        "rouge_l_ci": _ci(rouge, seed),
        "exact_match": mean(em),
        "token_agreement": None if tokens is None else mean(tokens),
        "token_agreement_ci": [None, None] if tokens is None else _ci(tokens, seed),
        "kl": None,
        "js": None,
        "ece": None,
        "reliability": [],
        "slices": per_slice(tags, chrf, seed=seed),
        "per_item": {
            "agreement": chrf.tolist(),
            "rouge_l": rouge.tolist(),
            **({} if tokens is None else {"token_agreement": tokens.tolist()}),
        },
    }

"""Where an exported classify variant is scored, and its scores there.

A quantized export changes the model, so it is scored on its own against the teacher, on the same items the round
was: the locked test split (the teacher's label distributions recorded at labelling time) and the gold set (the
teacher's answers and the hand labels of the run's newest evaluation, read from its predictions file, so a variant
is compared with the round on the same teacher answers without the teacher being loaded again).

Agreement with the teacher and accuracy against hand labels are yes/no rates per item, so each comes with its
Wilson 95% interval, the interval the gate judges rates on (:func:`distil.evaluate.evidence.rate_measure`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from distil.evaluate.evidence import WILSON, rate_measure
from distil.evaluate.metrics import agreement, mean_js, mean_kl
from distil.evaluate.predictions import read_predictions
from distil.evaluate.scoring import gold_indices
from distil.runs import RunDir

TEST, GOLD = "test", "gold"


@dataclass(frozen=True)
class ScoringSet:
    """The items of one set and the teacher's answers on them."""

    name: str  # "test" or "gold"
    inputs: list[str]
    teacher: np.ndarray  # [n, L] the teacher's label distributions
    gold: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))  # [n] hand label index, -1: none


def classify_sets(run: RunDir, label_names: Sequence[str]) -> list[ScoringSet]:
    """The test split's items the teacher labelled, then the gold set's items the run's newest evaluation has the
    teacher's answer to (none when the run was never evaluated, or evaluated without a gold set)."""
    records = [r for r in run.dataset().records(TEST) if r.label_probs is not None]
    sets = [
        ScoringSet(
            TEST,
            [r.input for r in records],
            np.array([r.label_probs for r in records], dtype=np.float64).reshape(len(records), len(label_names)),
            gold_indices([r.gold_label for r in records], label_names),
        )
    ]
    if not run.predictions.is_file():
        return sets
    rows = [r for r in read_predictions(run.predictions, GOLD, "teacher") if r["distribution"] is not None]
    if rows:
        sets.append(
            ScoringSet(
                GOLD,
                [r["input"] for r in rows],
                np.array([r["distribution"] for r in rows], dtype=np.float64),
                gold_indices([r["gold_label"] for r in rows], label_names),
            )
        )
    return sets


def predict_sets(predict: Callable[[list[str]], np.ndarray], sets: Sequence[ScoringSet]) -> dict[str, np.ndarray]:
    """``predict``'s label distributions on every set, by set name."""
    return {s.name: np.asarray(predict(s.inputs), dtype=np.float64) for s in sets}


def compare_variant(
    reference_probs: np.ndarray, teacher_probs: np.ndarray, variant_probs: np.ndarray
) -> dict[str, float]:
    """Agreement of a variant with the teacher and with the model it was derived from; [n, L] each."""
    return {
        "agreement": agreement(teacher_probs, variant_probs),
        "kl": mean_kl(teacher_probs, variant_probs),
        "js": mean_js(teacher_probs, variant_probs),
        "agreement_with_float": agreement(reference_probs, variant_probs),
        "max_abs_prob_diff": float(np.max(np.abs(reference_probs - variant_probs)))
        if len(variant_probs)
        else float("nan"),
    }


def _rate(measure: dict[str, Any], name: str) -> dict[str, Any]:
    return {name: measure["value"], f"{name}_ci": measure["interval"], f"{name}_k": measure["k"]}


def scores_on(scoring: ScoringSet, probs: np.ndarray, reference: np.ndarray) -> dict[str, Any]:
    """One set's block: :func:`compare_variant`'s measures, ``n``, agreement with the teacher as ``k`` of ``n``
    with its Wilson interval, and accuracy against the hand labels the same way (over ``n_labelled`` items)."""
    block: dict[str, Any] = {**compare_variant(reference, scoring.teacher, probs), "n": len(probs)}
    predicted = probs.argmax(axis=-1) if len(probs) else np.zeros(0, dtype=np.int64)
    agreed = int((predicted == scoring.teacher.argmax(axis=-1)).sum()) if len(probs) else 0
    block.update(_rate(rate_measure(agreed, len(probs)), "agreement"))
    labelled = scoring.gold >= 0
    n_labelled = int(labelled.sum())
    if n_labelled:
        correct = int((predicted[labelled] == scoring.gold[labelled]).sum())
        block.update({**_rate(rate_measure(correct, n_labelled), "accuracy"), "n_labelled": n_labelled})
    block["interval_method"] = WILSON
    return block


def variant_scores(
    sets: Sequence[ScoringSet], probs: dict[str, np.ndarray], reference: dict[str, np.ndarray]
) -> dict[str, Any]:
    """A variant's block: its test-split scores at the top (as every variant evaluation has them) and its gold-set
    scores under ``gold``; ``reference`` is the float model it was derived from, on the same sets."""
    block: dict[str, Any] = {}
    for s in sets:
        scored = scores_on(s, probs[s.name], reference[s.name])
        if s.name == TEST:
            block.update(scored)
        else:
            block[s.name] = scored
    return block

"""Metrics on planted values: identical student, known confusions, known slices and intervals."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import f1_score

from distil.evaluate import metrics as m
from distil.evaluate.scoring import gold_indices, score_classifier, score_generator
from distil.evaluate.slices import per_slice


def _random_probs(n: int, labels: int, seed: int) -> np.ndarray:
    logits = np.random.default_rng(seed).normal(size=(n, labels))
    e = np.exp(logits)
    return e / e.sum(axis=1, keepdims=True)


def test_identical_student_has_full_agreement_and_zero_divergence():
    teacher = _random_probs(50, 3, seed=1)
    scored = score_classifier(teacher, teacher.copy(), np.full(50, -1), [{}] * 50, 3)
    assert scored["agreement"] == 1.0
    assert scored["kl"] == pytest.approx(0.0, abs=1e-12)
    assert scored["js"] == pytest.approx(0.0, abs=1e-12)
    assert scored["agreement_ci"] == [1.0, 1.0]


def test_kl_and_js_match_hand_computed_values():
    p = np.array([[0.5, 0.5]])
    q = np.array([[0.9, 0.1]])
    expected_kl = 0.5 * np.log(0.5 / 0.9) + 0.5 * np.log(0.5 / 0.1)
    assert m.mean_kl(p, q) == pytest.approx(expected_kl)
    mix = (p + q) / 2
    expected_js = 0.5 * np.sum(p * np.log(p / mix)) + 0.5 * np.sum(q * np.log(q / mix))
    assert m.mean_js(p, q) == pytest.approx(expected_js)
    assert m.mean_js(p, q) == pytest.approx(m.mean_js(q, p))  # symmetric
    assert m.mean_js(np.array([[1.0, 0.0]]), np.array([[0.0, 1.0]])) == pytest.approx(np.log(2), rel=1e-6)


def test_accuracy_and_macro_f1_match_scikit_learn_on_a_known_confusion():
    reference = np.array([0, 0, 0, 0, 1, 1, 1, 2, 2, 2])
    predicted = np.array([0, 0, 0, 1, 1, 1, 2, 2, 2, 0])
    assert m.accuracy(predicted, reference) == pytest.approx(0.7)
    assert m.macro_f1(predicted, reference) == pytest.approx(f1_score(reference, predicted, average="macro"))
    assert m.confusion_matrix(predicted, reference, 3).tolist() == [[3, 1, 0], [0, 2, 1], [1, 0, 2]]


def test_ece_and_reliability_bins_on_planted_confidences():
    # four examples at confidence 0.9 (three right), four at 0.6 (two right)
    probs = np.array([[0.9, 0.1]] * 4 + [[0.6, 0.4]] * 4)
    reference = np.array([0, 0, 0, 1, 0, 0, 1, 1])
    bins = m.reliability_bins(probs, reference, n_bins=10)
    by_count = [b for b in bins if b["count"]]
    assert [(b["count"], round(b["confidence"], 6), b["accuracy"]) for b in by_count] == [(4, 0.6, 0.5), (4, 0.9, 0.75)]
    assert m.expected_calibration_error(probs, reference) == pytest.approx(0.5 * 0.1 + 0.5 * 0.15)
    perfect = np.array([[1.0, 0.0]] * 5)
    assert m.expected_calibration_error(perfect, np.zeros(5, dtype=int)) == pytest.approx(0.0)


def test_known_confusion_gives_known_per_slice_table_and_intervals():
    # slice tone=urgent: 10 examples, student agrees on 8; tone=calm: 10 examples, agrees on all.
    teacher_labels = np.array([0, 1] * 10)
    student_labels = teacher_labels.copy()
    student_labels[[0, 2]] = 2  # two disagreements, both among the urgent examples
    tags = [{"tone": "urgent"}] * 10 + [{"tone": "calm"}] * 10
    gold = teacher_labels.copy()
    gold[10] = 1  # one calm example where the teacher (and student) is wrong
    teacher = np.eye(3)[teacher_labels] * 0.8 + 0.2 / 3
    student = np.eye(3)[student_labels] * 0.8 + 0.2 / 3
    scored = score_classifier(teacher, student, gold, tags, 3, seed=7)
    table = scored["slices"]["tone"]
    assert table["urgent"]["n"] == 10 and table["calm"]["n"] == 10
    assert table["urgent"]["agreement"] == pytest.approx(0.8)
    assert table["calm"]["agreement"] == 1.0
    assert table["calm"]["agreement_ci"] == [1.0, 1.0]
    assert table["urgent"]["accuracy"] == pytest.approx(0.8)
    assert table["calm"]["accuracy"] == pytest.approx(0.9)
    lo, hi = table["urgent"]["agreement_ci"]
    # the percentile bootstrap of a mean of 10 Bernoulli(0.8) draws: about 0.8 ± 1.96·sqrt(.16/10)
    assert lo < 0.8 < hi
    assert 0.45 <= lo <= 0.65 and hi == 1.0
    # seeded: the same inputs give the same interval; another seed may not
    again = score_classifier(teacher, student, gold, tags, 3, seed=7)["slices"]["tone"]["urgent"]["agreement_ci"]
    assert again == [lo, hi]
    assert scored["agreement"] == pytest.approx(0.9)
    assert scored["kl"] > 0


def test_bootstrap_interval_narrows_with_more_data_and_covers_the_estimate():
    rng = np.random.default_rng(0)
    small = (rng.random(40) < 0.7).astype(float)
    large = (rng.random(4000) < 0.7).astype(float)
    lo_s, hi_s = m.mean_ci(small)
    lo_l, hi_l = m.mean_ci(large)
    assert lo_s <= small.mean() <= hi_s and lo_l <= large.mean() <= hi_l
    assert hi_l - lo_l < (hi_s - lo_s) / 5
    width = 2 * 1.96 * np.sqrt(large.mean() * (1 - large.mean()) / large.size)
    assert hi_l - lo_l == pytest.approx(width, rel=0.15)


def test_gold_indices_and_slices_skip_missing_gold_labels():
    gold = gold_indices(["a", None, "b", "zzz"], ["a", "b"])
    assert gold.tolist() == [0, -1, 1, -1]
    table = per_slice([{"s": "x"}] * 4, np.ones(4), np.array([0, 0, 0, 0]), gold)
    assert table["s"]["x"]["n"] == 4 and table["s"]["x"]["n_gold"] == 2
    assert table["s"]["x"]["accuracy"] == pytest.approx(0.5)


def test_rouge_l_and_exact_match_on_known_texts():
    assert m.rouge_l("the cat sat on the mat", "the cat sat on the mat") == 1.0
    # LCS of "a b c d" and "a c d e" is "a c d" (3): P = 3/4, R = 3/4
    assert m.rouge_l("a b c d", "a c d e") == pytest.approx(0.75)
    assert m.rouge_l("x y", "a b") == 0.0
    scored = score_generator(
        ["refund issued", "reset password"], ["refund issued", "password reset now"], [{"k": "v"}] * 2
    )
    assert scored["exact_match"] == 0.5
    assert scored["rouge_l"] == pytest.approx((1.0 + 0.4) / 2)
    # generation fidelity is graded (chrF against the teacher's text), not exact match
    expected = (1.0 + m.chrf("password reset now", "reset password")) / 2  # (student text, teacher text)
    assert scored["fidelity"] == scored["agreement"] == scored["chrf"] == pytest.approx(expected)
    assert 0.5 < scored["agreement"] < 1.0 and scored["fidelity_metric"] == "chrF"
    with_tokens = score_generator(["a", "b"], ["a", "c"], [{}] * 2, token_agreement=[1.0, 0.5])
    assert with_tokens["token_agreement"] == pytest.approx(0.75) and with_tokens["per_item"]["token_agreement"] == [
        1.0,
        0.5,
    ]

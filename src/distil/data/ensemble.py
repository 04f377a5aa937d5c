"""Several teachers labelling one dataset (``data.teachers``): their label distributions combined into the record's,
each teacher's answer and provenance kept beside it, and how much they disagree.

Combining: ``mean`` is the weighted mean of the distributions (a mixture: an example one teacher is sure of and
another is not stays soft); ``product`` is a product of experts, the weighted geometric mean renormalised (a
label any teacher rules out is ruled out).

Disagreement of one example: the weighted Jensen-Shannon divergence of the teachers' distributions, H(mean) −
mean(H), over its largest possible value for that many teachers and labels (log of the smaller of the two when the
weights are equal; in general the entropy of the weights, capped at log of the label count), so it lies in [0, 1]:
0 when they give the same distribution, 1 when each is certain of a different label.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import numpy as np

from distil.data.records import Record
from distil.teachers.base import sha256_json

TINY = 1e-12  # floor under a probability before its log: a teacher's exact zero must not make the product NaN


def combine_distributions(probs: np.ndarray, weights: Sequence[float], method: str) -> np.ndarray:
    """[T, n, L] label distributions of T teachers -> [n, L] (``method``: mean | product), weights normalised."""
    w = np.asarray(weights, dtype=np.float64) / float(np.sum(weights))
    p = np.asarray(probs, dtype=np.float64)
    if method == "mean":
        return np.einsum("t,tnl->nl", w, p)
    if method == "product":
        logits = np.einsum("t,tnl->nl", w, np.log(np.clip(p, TINY, 1.0)))
        out = np.exp(logits - logits.max(axis=-1, keepdims=True))
        return out / out.sum(axis=-1, keepdims=True)
    raise ValueError(f"unknown combine method {method!r}")


def _entropy(p: np.ndarray) -> np.ndarray:
    return -(p * np.log(np.clip(p, TINY, 1.0))).sum(axis=-1)


def teacher_disagreement(probs: np.ndarray, weights: Sequence[float]) -> np.ndarray:
    """[T, n, L] -> [n] in [0, 1]: the weighted Jensen-Shannon divergence over its maximum (module docstring)."""
    w = np.asarray(weights, dtype=np.float64) / float(np.sum(weights))
    p = np.asarray(probs, dtype=np.float64)
    jsd = _entropy(np.einsum("t,tnl->nl", w, p)) - np.einsum("t,tn->n", w, _entropy(p))
    ceiling = min(float(_entropy(w)), float(np.log(p.shape[-1])))
    if ceiling <= 0:  # one teacher, or one label: nothing to disagree on
        return np.zeros(p.shape[1])
    return np.clip(jsd / ceiling, 0.0, 1.0)


def teacher_answer(record: Record) -> dict[str, Any]:
    """What one teacher said about one input, with its provenance: a ``Record.teacher_answers`` entry."""
    return {
        "teacher_id": record.teacher_id,
        "teacher_fingerprint": record.teacher_fingerprint,
        "prompt_hash": record.prompt_hash,
        "params_hash": record.params_hash,
        "label": record.label,
        "label_probs": record.label_probs,
        "rationale": record.rationale,
        "created_at": record.created_at,
        "cost": record.cost,
    }


def combined_records(
    per_teacher: Sequence[Sequence[Record]], weights: Sequence[float], method: str, label_names: Sequence[str]
) -> list[Record]:
    """One record per input from T teachers' records of the same inputs (same order): the combined distribution
    and its label; ``teacher_answers`` keeps each teacher's; provenance names them all (teacher id ``a+b``, a
    fingerprint over theirs, the method and weights), and the cost is the sum of their calls."""
    if len(per_teacher) == 1:
        return list(per_teacher[0])
    probs = np.asarray([[r.label_probs for r in records] for records in per_teacher], dtype=np.float64)
    combined = combine_distributions(probs, weights, method)
    disagreement = teacher_disagreement(probs, weights)
    out = []
    for i, first in enumerate(per_teacher[0]):
        answers = [records[i] for records in per_teacher]
        how = {"combine": method, "weights": list(weights)}
        out.append(
            replace(
                first,
                label=label_names[int(np.argmax(combined[i]))],
                label_probs=combined[i].tolist(),
                confidence=float(combined[i].max()),
                teacher_id="+".join(r.teacher_id or "" for r in answers),
                teacher_fingerprint=sha256_json([[r.teacher_fingerprint for r in answers], how]),
                prompt_hash=sha256_json([r.prompt_hash for r in answers]),
                params_hash=sha256_json([[r.params_hash for r in answers], how]),
                cost=float(sum(r.cost for r in answers)),
                teacher_answers=[teacher_answer(r) for r in answers],
                teacher_disagreement=float(disagreement[i]),
            )
        )
    return out


def record_disagreement(record: Record) -> float | None:
    """A record's teacher disagreement (None with fewer than two teacher answers)."""
    return record.teacher_disagreement if record.teacher_answers and len(record.teacher_answers) > 1 else None


def agreement_by_slice(records: Sequence[Record]) -> dict[str, dict[str, Any]]:
    """Per slice value (``name=value``, and ``all``), over the records labelled by several teachers: how many, the
    share on which every teacher's top label is the same, and the mean disagreement."""
    groups: dict[str, list[Record]] = {}
    for r in records:
        if record_disagreement(r) is None:
            continue
        for key in ["all", *(f"{k}={v}" for k, v in sorted(r.tags.items()))]:
            groups.setdefault(key, []).append(r)
    out = {}
    for key, rows in groups.items():
        same = [len({a["label"] for a in r.teacher_answers or []}) == 1 for r in rows]
        out[key] = {
            "n": len(rows),
            "top_label_agreement": round(float(np.mean(same)), 4),
            "mean_disagreement": round(float(np.mean([r.teacher_disagreement for r in rows])), 4),
        }
    return out

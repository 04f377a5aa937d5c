"""An evaluation's figures as the CLI, the report and the Markdown show them, and the warning for a degenerate model.

Where a gold set exists its figures come first: they are the only ones against labels a person gave, and the
gate's quality check reads them. Every figure carries its item count ("0.786 (44/56)"): a rate over three items
and a rate over three hundred must not look alike. A model that gives every item one label, or never gives a
label the reference has, can still agree with a teacher that leans the same way; :func:`label_warnings` names it.

All functions read an evaluation document (see :mod:`distil.evaluate.run`); none loads a model.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

MODELS = ("teacher", "student", "baseline")
# (where the set's figures sit in a model's block, its name in a sentence)
GOLD, HELD_OUT = "gold", "held-out"


def label_names(document: Mapping[str, Any]) -> list[str]:
    """The task's labels in spec order (``document["labels"]``), or ``label 0``, ``label 1``… for older documents."""
    labels = document.get("labels")
    if labels:
        return [str(x) for x in labels]
    counts = ((document.get("student") or {}).get("predicted_counts")) or []
    return [f"label {i}" for i in range(len(counts))]


def scored_set(document: Mapping[str, Any], model: str, which: str) -> dict[str, Any]:
    """A model's figures on the gold set or on the held-out split ({} when there are none)."""
    block = document.get(model) or {}
    scored = block.get("gold") if which == GOLD else block
    return scored if isinstance(scored, dict) else {}


def has_gold(document: Mapping[str, Any]) -> bool:
    return bool(scored_set(document, "student", GOLD).get("n_gold"))


def reference_figures(scored: Mapping[str, Any], which: str) -> dict[str, list] | None:
    """The per-label figures against the set's reference: the gold labels on the gold set, the teacher's labels on
    the held-out split (whose gold labels are few or none)."""
    return scored.get("per_label") if which == GOLD else scored.get("per_label_vs_teacher")


def ratio(value: float | None, k: int | None, n: int | None, digits: int = 3) -> str:
    """``0.786 (44/56)``; ``–`` when there is no value."""
    if value is None or n is None:
        return "–"
    return f"{value:.{digits}f} ({k}/{n})" if k is not None else f"{value:.{digits}f} (n={n})"


def _hits(scored: Mapping[str, Any], key: str) -> int | None:
    items = (scored.get("per_item") or {}).get(key)
    return None if items is None else int(round(sum(items)))


def gold_rows(document: Mapping[str, Any]) -> list[dict[str, str]]:
    """One row per model on the gold set: accuracy, macro-F1 and agreement with the teacher, each with its count,
    and where the model differs from the teacher, which of the two the gold label sides with."""
    rows = []
    for model in MODELS:
        scored = scored_set(document, model, GOLD)
        n_gold, n = scored.get("n_gold"), scored.get("n")
        rows.append(
            {
                "model": model,
                "accuracy": ratio(scored.get("accuracy"), _hits(scored, "correct"), n_gold),
                "macro_f1": ratio(scored.get("macro_f1"), None, n_gold),
                # the teacher is the reference of agreement: its own is 1 by definition and says nothing
                "agreement": "reference"
                if model == "teacher"
                else ratio(scored.get("agreement"), _hits(scored, "agreement"), n),
                "disagreements": "reference" if model == "teacher" else disagreement_text(scored.get("disagreements")),
            }
        )
    return rows


def disagreement_text(counts: Mapping[str, int] | None, model: str = "it") -> str:
    """``26 of 168: it is right on 20, the teacher on 4, neither on 2`` (– without gold labels)."""
    if not counts:
        return "–"
    if not counts["n"]:
        return f"none of {counts['of']}"
    return (
        f"{counts['n']} of {counts['of']}: {model} is right on {counts['model_right']}, the teacher on "
        f"{counts['teacher_right']}, neither on {counts['neither']}"
    )


def held_out_accuracy(scored: Mapping[str, Any]) -> str:
    """Held-out accuracy only beside its count of hand-labelled items: ``0.333 (1/3 labelled of 14)``."""
    n_gold, n = scored.get("n_gold"), scored.get("n")
    if not n_gold or scored.get("accuracy") is None:
        return f"– (0 labelled of {n})" if n else "–"
    return f"{scored['accuracy']:.3f} ({_hits(scored, 'correct')}/{n_gold} labelled of {n})"


def per_label_rows(document: Mapping[str, Any], which: str) -> list[dict[str, Any]]:
    """One row per label: its reference count, then each model's precision and recall with their counts."""
    labels = label_names(document)
    rows = []
    for i, label in enumerate(labels):
        row: dict[str, Any] = {"label": label, "support": None, "cells": {}}
        for model in MODELS:
            if which == HELD_OUT and model == "teacher":
                continue  # the held-out reference is the teacher itself
            figures = reference_figures(scored_set(document, model, which), which)
            if not figures or i >= len(figures["support"]):
                row["cells"][model] = {"precision": "–", "recall": "–"}
                continue
            row["support"] = figures["support"][i]
            hits, predicted, support = figures["hits"][i], figures["predicted"][i], figures["support"][i]
            row["cells"][model] = {
                "precision": ratio(figures["precision"][i], hits, predicted),
                "recall": ratio(figures["recall"][i], hits, support),
            }
        rows.append(row)
    return rows


def per_label_models(which: str) -> tuple[str, ...]:
    return MODELS[1:] if which == HELD_OUT else MODELS


def confusion_matrices(document: Mapping[str, Any], which: str) -> dict[str, list[list[int]]]:
    """Each model's confusion matrix on the set (rows the reference label, columns the model's), where it has one."""
    key = "confusion" if which == GOLD else "confusion_vs_teacher"
    out = {}
    for model in per_label_models(which):
        matrix = scored_set(document, model, which).get(key)
        if matrix:
            out[model] = matrix
    return out


def _warning_for(model: str, which: str, figures: Mapping[str, Sequence[int]], labels: Sequence[str]) -> str | None:
    support, predicted = list(figures["support"]), list(figures["predicted"])
    n = sum(support)
    in_reference = [i for i, s in enumerate(support) if s]
    given = [i for i, p in enumerate(predicted) if p]
    reference = "gold labels" if which == GOLD else "the teacher's labels"
    if len(in_reference) > 1 and len(given) == 1:
        return (
            f"{model} predicts only {labels[given[0]]}: all {n} {which} items, where {reference} use "
            f"{len(in_reference)} labels"
        )
    never = [i for i in in_reference if not predicted[i]]
    if never:
        missed = ", ".join(f"{labels[i]} ({support[i]} items)" for i in never)
        return f"{model} never predicts {missed} on the {n} {which} items ({reference})"
    return None


def label_warnings(document: Mapping[str, Any]) -> list[str]:
    """Every model that predicts one label only, or never predicts a label its reference has: on the gold set
    (against gold labels) and on the held-out split (against the teacher's labels; not for the teacher itself)."""
    labels = label_names(document)
    out = []
    for model in ("student", "baseline", "teacher"):
        for which in (GOLD, HELD_OUT):
            if which == HELD_OUT and model == "teacher":
                continue
            figures = reference_figures(scored_set(document, model, which), which)
            if figures and (warning := _warning_for(model, which, figures, labels)):
                out.append(warning)
    return out


# --- the held-out split, size and speed ----------------------------------------------------------------------

# (key, heading) of the held-out table; accuracy is shown with its count of hand-labelled items, never alone
HELD_OUT_COLUMNS = (
    ("agreement", "agreement with the teacher"),
    ("kl", "KL"),
    ("js", "JS"),
    ("ece", "ECE"),
    ("accuracy", "accuracy (labelled items)"),
)
GENERATE_COLUMNS = (
    ("agreement", "chrF with the teacher"),
    ("rouge_l", "ROUGE-L"),
    ("exact_match", "exact match"),
    ("token_agreement", "token agreement"),
)
SIZE_COLUMNS = (
    ("params", "params"),
    ("size_bytes", "MB stored"),
    ("served_bytes", "MB served"),
    ("peak_memory_bytes", "peak MB"),
    ("p50_ms", "p50 ms"),
    ("p95_ms", "p95 ms"),
    ("throughput_per_s", "items/s"),
)


def _number(value: Any, digits: int = 3) -> str:
    if value is None:
        return "–"
    if isinstance(value, int):
        return f"{value:,}"
    return f"{value:,.{digits}f}"


def is_generation(document: Mapping[str, Any]) -> bool:
    return (document.get("student") or {}).get("kind") == "generate"


def held_out_columns(document: Mapping[str, Any]) -> tuple[tuple[str, str], ...]:
    return GENERATE_COLUMNS if is_generation(document) else HELD_OUT_COLUMNS


def held_out_rows(document: Mapping[str, Any]) -> list[dict[str, str]]:
    """One row per model on the held-out split, the teacher's answers the reference; agreement with its count (a
    rate k/n for labels, a mean over n for graded text), accuracy only with its count of hand-labelled items."""
    graded = is_generation(document)
    rows = []
    for model in MODELS:
        scored = scored_set(document, model, HELD_OUT)
        row = {"model": model}
        for key, _ in held_out_columns(document):
            if key == "accuracy":
                row[key] = held_out_accuracy(scored)
            elif key == "agreement" and model == "teacher":
                row[key] = "reference"
            elif key == "agreement":
                k = None if graded else _hits(scored, "agreement")
                row[key] = ratio(scored.get("agreement"), k, scored.get("n"))
            else:
                row[key] = _number(scored.get(key))
        rows.append(row)
    return rows


def megabytes(value: int | None) -> str:
    """Bytes in MB: one decimal, or three significant digits under 0.1 MB (a tiny test model is not "0.0")."""
    if value is None:
        return "–"
    mb = value / 1e6
    return f"{mb:,.1f}" if mb >= 0.1 or mb == 0 else f"{mb:.3g}"


def size_rows(document: Mapping[str, Any]) -> list[dict[str, str]]:
    """One row per model: parameters, bytes as stored (on disk) and as served (weights in memory), memory, speed."""
    rows = []
    for model in MODELS:
        block = document.get(model) or {}
        row = {"model": model}
        for key, _ in SIZE_COLUMNS:
            value = block.get(key)
            if key.endswith("_bytes"):
                row[key] = megabytes(value)
            else:
                row[key] = _number(value, 1 if key.endswith(("_ms", "_per_s")) else 3)
        rows.append(row)
    return rows

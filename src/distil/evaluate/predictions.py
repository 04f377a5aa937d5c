"""Every model's answer on every evaluated item, kept next to the evaluation: ``<run>/predictions.parquet``.

``distil evaluate`` runs the teacher, the student and the baseline once; later steps read their answers
here instead of loading a model and predicting again: ``distil iterate`` mines the student's failures,
``distil serve`` calibrates its router on the validation rows, the report can list disagreements.

One row per (split, item, model). ``split`` is ``validation``, ``probe`` (teacher-labelled items set aside at
curate time, never trained on), ``test`` or ``gold``; ``model`` is
``teacher``, ``student`` or ``baseline``. A classify row has ``label`` (the top label) and
``distribution`` (over the task's labels, in spec order); a generate row has ``text``.
``gold_label`` is the label a person gave, where the item has one. ``recorded`` is true for the
teacher's answers taken from the curated records (written at labelling time) rather than asked again.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from distil.data.records import Record
from distil.errors import EvaluationError
from distil.files import write_with_atomic

SPLITS = ("validation", "probe", "test", "gold")
MODELS = ("teacher", "student", "baseline")

PREDICTIONS_SCHEMA = pa.schema(
    [
        pa.field("split", pa.string(), nullable=False),  # validation | probe | test | gold
        pa.field("item_id", pa.string(), nullable=False),  # the record's content id
        pa.field("input", pa.string(), nullable=False),
        pa.field("tags", pa.string(), nullable=False),  # JSON object: slice name -> value
        pa.field("model", pa.string(), nullable=False),  # teacher | student | baseline
        pa.field("label", pa.string()),  # classify: the top label's name
        pa.field("distribution", pa.list_(pa.float32())),  # classify: probabilities over task.labels
        pa.field("text", pa.string()),  # generate: the answer text
        pa.field("gold_label", pa.string()),  # what a person labelled the item, if anyone did
        pa.field("recorded", pa.bool_(), nullable=False),  # the teacher's answer from the records, not asked again
    ]
)


def prediction_rows(
    split: str,
    records: Sequence[Record],
    model: str,
    outputs: Any,
    label_names: Sequence[str] | None,
    recorded: bool = False,
) -> list[dict[str, Any]]:
    """One row per record for ``model``'s ``outputs`` on ``split``: distributions [n, L] when ``label_names``
    is given (classify), else texts."""
    if split not in SPLITS or model not in MODELS:
        raise ValueError(f"split must be one of {SPLITS} and model one of {MODELS}, got {split!r}, {model!r}")
    rows = []
    if label_names is not None:
        probs = np.asarray(outputs, dtype=np.float64).reshape(len(records), len(label_names))
        answers = [
            {"label": label_names[int(p.argmax())], "distribution": [float(x) for x in p], "text": None} for p in probs
        ]
    else:
        answers = [{"label": None, "distribution": None, "text": str(t)} for t in outputs]
    if len(answers) != len(records):
        raise ValueError(f"{model} on {split}: {len(answers)} outputs for {len(records)} items")
    for record, answer in zip(records, answers, strict=True):
        rows.append(
            {
                "split": split,
                "item_id": record.id,
                "input": record.input,
                "tags": json.dumps(record.tags, sort_keys=True, ensure_ascii=False),
                "model": model,
                **answer,
                "gold_label": record.gold_label,
                "recorded": recorded,
            }
        )
    return rows


def write_predictions(path: Path, rows: Sequence[dict[str, Any]]) -> Path:
    table = pa.Table.from_pylist(list(rows), schema=PREDICTIONS_SCHEMA)
    return write_with_atomic(path, lambda tmp: pq.write_table(table, tmp))


def read_predictions(path: Path, split: str | None = None, model: str | None = None) -> list[dict[str, Any]]:
    """The rows of ``path`` (of one split / model when given), tags parsed back into a dict.

    EvaluationError when the file is missing: the run was evaluated before predictions were kept, or not at all.
    """
    if not path.is_file():
        raise EvaluationError(
            f"{path} not found", hint="run `distil evaluate` on the run: it writes every model's answers there"
        )
    try:
        rows = pq.read_table(path).to_pylist()
    except (OSError, pa.ArrowInvalid) as exc:
        raise EvaluationError(
            f"{path}: not a readable predictions file: {exc}", hint="run `distil evaluate` again"
        ) from None
    out = []
    for row in rows:
        if (split is None or row["split"] == split) and (model is None or row["model"] == model):
            row["tags"] = json.loads(row["tags"] or "{}")
            out.append(row)
    return out


def paired(path: Path, split: str, model: str) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """(teacher row, ``model`` row) per item of ``split``, in the order the file holds them."""
    teacher = {r["item_id"]: r for r in read_predictions(path, split, "teacher")}
    return [(teacher[r["item_id"]], r) for r in read_predictions(path, split, model) if r["item_id"] in teacher]

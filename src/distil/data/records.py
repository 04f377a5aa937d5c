"""The record: one Parquet row per example, immutable once written.

Shards are written through :mod:`distil.files`, so a reader never sees a half-written file. Curation writes new files;
it never edits a shard in place.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from distil.errors import DataError
from distil.files import write_with_atomic

SOURCES = ("seed", "synthetic", "traffic", "targeted", "gold")

RECORD_SCHEMA = pa.schema(
    [
        pa.field("id", pa.string(), nullable=False),  # sha256 of the input text: same input, same id
        pa.field("input", pa.string(), nullable=False),
        pa.field("tags", pa.string(), nullable=False),  # JSON object: slice name -> value
        pa.field("source", pa.string(), nullable=False),  # one of SOURCES
        pa.field("gold_label", pa.string()),  # the label a person gave (seeds, gold set), if any
        pa.field("teacher_text", pa.string()),  # the teacher's answer text (generate tasks, rationales' answer)
        pa.field("label", pa.string()),  # the teacher's label (argmax of label_probs) for classify tasks
        pa.field("label_probs", pa.list_(pa.float32())),  # teacher distribution over task.labels, in spec order
        pa.field("topk_ids", pa.list_(pa.list_(pa.int32()))),  # per answer token: the teacher's top-k token ids
        pa.field("topk_logprobs", pa.list_(pa.list_(pa.float32()))),  # ... and their log-probabilities
        # an API teacher's answer tokens as text: per token, the written token then its top alternatives, with
        # their log-probabilities in topk_logprobs (topk_ids then stays null: its ids are not the student's)
        pa.field("topk_tokens", pa.list_(pa.list_(pa.string()))),
        pa.field("rationale", pa.string()),
        pa.field("confidence", pa.float32()),  # max label probability, or mean token probability for text
        pa.field("teacher_id", pa.string()),
        pa.field("teacher_fingerprint", pa.string()),  # weights hash, or API base URL + model + date
        pa.field("prompt_hash", pa.string()),  # sha256 of the prompt template (with its shots)
        pa.field("params_hash", pa.string()),  # sha256 of the generation / scoring parameters
        pa.field("created_at", pa.string()),  # ISO 8601, UTC
        pa.field("cost", pa.float64()),  # what the teacher call cost, in the spec's currency (0 for local)
        pa.field("split", pa.string()),  # train | validation | test once curated; null in raw shards
        # several teachers (data.teachers): JSON list, each teacher's answer and provenance; the fields above then
        # hold the combined label and name all the teachers
        pa.field("teacher_answers", pa.string()),
        pa.field("teacher_disagreement", pa.float32()),  # in [0, 1], see distil.data.ensemble
    ]
)
COLUMNS = tuple(RECORD_SCHEMA.names)
# Columns added after shards were written, oldest group first; an older shard reads them as null.
COLUMN_GENERATIONS = (("topk_tokens",), ("teacher_answers", "teacher_disagreement"))
LATER_COLUMNS = frozenset(name for group in COLUMN_GENERATIONS for name in group)


def content_id(text: str) -> str:
    return "sha256:" + hashlib.sha256(text.encode("utf-8")).hexdigest()


def now_iso() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


@dataclass
class Record:
    input: str
    source: str
    tags: dict[str, str] = field(default_factory=dict)
    gold_label: str | None = None
    teacher_text: str | None = None
    label: str | None = None
    label_probs: list[float] | None = None
    topk_ids: list[list[int]] | None = None
    topk_logprobs: list[list[float]] | None = None
    topk_tokens: list[list[str]] | None = None
    rationale: str | None = None
    confidence: float | None = None
    teacher_id: str | None = None
    teacher_fingerprint: str | None = None
    prompt_hash: str | None = None
    params_hash: str | None = None
    created_at: str = field(default_factory=now_iso)
    cost: float = 0.0
    split: str | None = None
    teacher_answers: list[dict[str, Any]] | None = None
    teacher_disagreement: float | None = None
    id: str = ""

    def __post_init__(self) -> None:
        if self.source not in SOURCES:
            raise ValueError(f"source must be one of {SOURCES}, got {self.source!r}")
        if not self.id:
            self.id = content_id(self.input)

    def to_row(self) -> dict[str, Any]:
        row = asdict(self)
        row["tags"] = json.dumps(self.tags, sort_keys=True, ensure_ascii=False)
        if self.teacher_answers is not None:
            row["teacher_answers"] = json.dumps(self.teacher_answers, sort_keys=True, ensure_ascii=False)
        return row

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> Record:
        data = {k: row.get(k) for k in COLUMNS}
        data["tags"] = json.loads(data["tags"] or "{}")
        data["cost"] = data["cost"] or 0.0
        data["teacher_answers"] = json.loads(data["teacher_answers"]) if data["teacher_answers"] else None
        return cls(**data)


def write_records(records: Sequence[Record], path: str | Path) -> Path:
    """Write records to ``path`` atomically (temp file in the same folder, fsync, rename)."""
    return write_table_atomic(pa.Table.from_pylist([r.to_row() for r in records], schema=RECORD_SCHEMA), path)


def write_table_atomic(table: pa.Table, path: str | Path) -> Path:
    """Write any Arrow table as Parquet at ``path`` so that a reader never sees a half-written file."""
    return write_with_atomic(path, lambda tmp: pq.write_table(table, tmp))


def read_records(paths: str | Path | Iterable[str | Path]) -> list[Record]:
    """Read one shard, every shard in a folder (sorted, hidden temp files skipped), or a list of shards."""
    if isinstance(paths, (str, Path)):
        p = Path(paths)
        files = sorted(f for f in p.glob("*.parquet") if not f.name.startswith(".")) if p.is_dir() else [p]
    else:
        files = [Path(p) for p in paths]
    out: list[Record] = []
    for f in files:
        try:
            # ParquetFile reads one file without the dataset layer, whose import (pandas with it) costs a second
            with pq.ParquetFile(f) as shard:
                table = shard.read()
        except (OSError, pa.ArrowInvalid) as exc:
            raise DataError(f"{f}: not a readable Parquet shard: {exc}") from None
        missing = set(COLUMNS) - set(table.column_names) - LATER_COLUMNS
        if missing:
            raise DataError(f"{f}: not a distil record shard (missing columns {', '.join(sorted(missing))})")
        out.extend(Record.from_row(row) for row in table.to_pylist())
    return out

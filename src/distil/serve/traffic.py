"""The traffic log: served requests, sampled and redacted (or not kept at all), appended to Parquet shards.

What is kept follows the spec's ``maintenance``: a share ``traffic_sample_rate`` of requests; their text
with personal data masked (``redact``, see :mod:`distil.serve.redaction`), as written, or not at all
(``store_inputs: false``: the route, label distribution and confidence only); shards older than
``traffic_retention_days`` are deleted (:func:`prune_traffic`, run by ``distil serve`` at start and by
``distil monitor``).

Rows are buffered in memory and flushed to a new shard ``.distil/traffic/traffic-<time>-<id>.parquet``
every ``flush_every_n`` rows, every ``flush_every_s`` seconds, and on close. A shard is written to a
temporary name in the same folder, fsynced and renamed, so a reader never sees half a file and a
graceful shutdown (which closes the log after the last request) loses nothing.
"""

from __future__ import annotations

import datetime as dt
import random
import threading
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from distil.data.records import write_table_atomic
from distil.errors import DataError
from distil.serve.redaction import redact

_SHARD_STAMP = "%Y%m%dT%H%M%S%f"  # shard names carry the time they were written; retention reads it back
TRAFFIC_SCHEMA = pa.schema(
    [
        pa.field("timestamp", pa.timestamp("us", tz="UTC"), nullable=False),
        pa.field("request_id", pa.string(), nullable=False),
        pa.field("endpoint", pa.string(), nullable=False),  # /v1/classify or /v1/chat/completions
        pa.field("model", pa.string()),  # the run id that served it
        pa.field("input", pa.string(), nullable=False),  # redacted when redaction is on; "" when inputs are not stored
        pa.field("route", pa.string(), nullable=False),  # student | teacher | student_fallback (teacher saturated)
        pa.field("answer", pa.string()),  # the label, or the generated text (null when inputs are not stored)
        pa.field("distribution", pa.list_(pa.float32())),  # over the task's labels (classify), else null
        pa.field("confidence", pa.float32()),  # the student's max probability
        pa.field("redacted", pa.bool_(), nullable=False),
    ]
)


def traffic_dir(state_dir: Path) -> Path:
    return Path(state_dir) / "traffic"


class TrafficLog:
    """Thread-safe buffered writer of served requests. Use as a context manager or call :meth:`close`."""

    def __init__(
        self,
        folder: str | Path,
        sample_rate: float = 1.0,
        redaction: bool = True,
        flush_every_n: int = 256,
        flush_every_s: float = 10.0,
        seed: int | None = None,
        store_inputs: bool = True,
    ):
        if not 0.0 <= sample_rate <= 1.0:
            raise DataError(f"traffic sample rate must be in [0, 1], got {sample_rate}")
        self.folder = Path(folder)
        self.sample_rate = sample_rate
        self.redaction = redaction
        self.store_inputs = store_inputs
        self.flush_every_n = max(1, int(flush_every_n))
        self.flush_every_s = flush_every_s
        self._rng = random.Random(seed)
        self._rows: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self._write_lock = threading.Lock()  # one shard written at a time, in order
        self._closed = threading.Event()
        self.written = 0
        self.shards: list[Path] = []
        self._timer = threading.Thread(target=self._flush_periodically, name="traffic-flush", daemon=True)
        if flush_every_s > 0:
            self._timer.start()

    def __enter__(self) -> TrafficLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def record(
        self,
        endpoint: str,
        model: str,
        inputs: Sequence[str],
        routes: Sequence[str],
        answers: Sequence[str],
        distributions: Sequence[Sequence[float] | None],
        confidences: Sequence[float | None],
    ) -> int:
        """Add one row per input (each kept with probability ``sample_rate``); returns how many were kept."""
        now = dt.datetime.now(dt.UTC)
        rows = []
        for text, route, answer, dist, conf in zip(inputs, routes, answers, distributions, confidences, strict=True):
            if self.sample_rate < 1.0 and self._rng.random() >= self.sample_rate:
                continue
            rows.append(
                {
                    "timestamp": now,
                    "request_id": uuid.uuid4().hex,
                    "endpoint": endpoint,
                    "model": model,
                    "input": self._kept(text) or "",
                    "route": route,
                    "answer": answer if (dist is not None and self.store_inputs) else self._kept(answer),
                    "distribution": list(dist) if dist is not None else None,
                    "confidence": conf,
                    "redacted": self.redaction and self.store_inputs,
                }
            )
        if not rows:
            return 0
        with self._lock:
            self._rows.extend(rows)
            full = len(self._rows) >= self.flush_every_n
        if full:
            self.flush()
        return len(rows)

    def warm_up(self) -> None:
        """Load now what the first logged request and the first shard would: the redaction's recognisers (about
        2 s), and what pyarrow loads on its first conversion of rows (pandas: about 40 MiB and 30,000 objects, which
        would otherwise arrive with the first shard, a burst of load after the server started)."""
        if self.redaction and self.store_inputs:
            redact("warm up: mail a@b.example")
        pq.write_table(pa.Table.from_pylist([], schema=TRAFFIC_SCHEMA), pa.BufferOutputStream())

    def _kept(self, text: str | None) -> str | None:
        """What of a request's text goes into the log: nothing, the text redacted, or the text as written.
        A classify answer is a label (kept as is); a generated answer is text like the input."""
        if not self.store_inputs or text is None:
            return None
        return redact(text) if self.redaction else text

    def flush(self) -> Path | None:
        """Write buffered rows to a new shard atomically; returns its path (None when nothing was buffered)."""
        with self._write_lock:
            with self._lock:
                rows, self._rows = self._rows, []
            if not rows:
                return None
            try:
                path = _write_shard(self.folder, rows)
            except BaseException:
                with self._lock:  # put them back so a later flush retries them
                    self._rows = rows + self._rows
                raise
            self.written += len(rows)
            self.shards.append(path)
            return path

    def close(self) -> None:
        self._closed.set()
        if self._timer.is_alive():
            self._timer.join(timeout=5)
        self.flush()

    def _flush_periodically(self) -> None:
        while not self._closed.wait(self.flush_every_s):
            try:
                self.flush()
            except OSError:
                pass  # the disk may be back next time; rows stay buffered


def _write_shard(folder: Path, rows: list[dict[str, Any]]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    stamp = dt.datetime.now(dt.UTC).strftime(_SHARD_STAMP)
    path = folder / f"traffic-{stamp}-{uuid.uuid4().hex[:8]}.parquet"
    write_table_atomic(pa.Table.from_pylist(rows, schema=TRAFFIC_SCHEMA), path)
    return path


def read_traffic(
    folder: str | Path, since: dt.datetime | None = None, until: dt.datetime | None = None
) -> list[dict[str, Any]]:
    """Every logged row in ``[since, until)``, oldest first. Temporary files of unfinished writes are skipped."""
    folder = Path(folder)
    shards = sorted(p for p in folder.glob("traffic-*.parquet")) if folder.is_dir() else []
    rows: list[dict[str, Any]] = []
    for shard in shards:
        try:
            table = pq.read_table(shard, schema=TRAFFIC_SCHEMA)
        except (OSError, pa.ArrowInvalid) as exc:
            raise DataError(f"{shard}: unreadable traffic shard: {exc}") from None
        rows.extend(table.to_pylist())
    if since is not None:
        rows = [r for r in rows if r["timestamp"] >= since]
    if until is not None:
        rows = [r for r in rows if r["timestamp"] < until]
    rows.sort(key=lambda r: r["timestamp"])
    return rows


def write_traffic_rows(folder: str | Path, rows: list[dict[str, Any]]) -> Path:
    """Write already-formed rows (tests, imports from another log) as one shard."""
    full = [
        {
            "request_id": uuid.uuid4().hex,
            "endpoint": "/v1/classify",
            "model": None,
            "route": "student",
            "answer": None,
            "distribution": None,
            "confidence": None,
            "redacted": False,
            **r,
        }
        for r in rows
    ]
    return _write_shard(Path(folder), full)


def shard_written_at(path: Path) -> dt.datetime | None:
    """When a shard was written, from its name (``traffic-<time>-<id>.parquet``); None for other names."""
    parts = path.stem.split("-")
    try:
        return dt.datetime.strptime(parts[1], _SHARD_STAMP).replace(tzinfo=dt.UTC) if len(parts) == 3 else None
    except ValueError:
        return None


def prune_traffic(folder: str | Path, retention_days: int | None, now: dt.datetime | None = None) -> list[Path]:
    """Delete shards written more than ``retention_days`` ago (None: keep everything); returns what was deleted.

    A shard is written after its newest row, so every row of a deleted shard is older than the retention."""
    folder = Path(folder)
    if retention_days is None or not folder.is_dir():
        return []
    cutoff = (now or dt.datetime.now(dt.UTC)) - dt.timedelta(days=retention_days)
    deleted = []
    for shard in sorted(folder.glob("traffic-*.parquet")):
        written = shard_written_at(shard)
        if written is not None and written < cutoff:
            shard.unlink(missing_ok=True)
            deleted.append(shard)
    return deleted

"""The traffic log: served requests, sampled and optionally redacted, appended to Parquet shards.

Rows are buffered in memory and flushed to a new shard ``.distil/traffic/traffic-<time>-<id>.parquet``
every ``flush_every_n`` rows, every ``flush_every_s`` seconds, and on close. A shard is written to a
temporary name in the same folder, fsynced and renamed, so a reader never sees half a file and a
graceful shutdown (which closes the log after the last request) loses nothing.
"""

from __future__ import annotations

import datetime as dt
import random
import re
import threading
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from distil.data.records import write_table_atomic
from distil.errors import DataError

TRAFFIC_SCHEMA = pa.schema(
    [
        pa.field("timestamp", pa.timestamp("us", tz="UTC"), nullable=False),
        pa.field("request_id", pa.string(), nullable=False),
        pa.field("endpoint", pa.string(), nullable=False),  # /v1/classify or /v1/chat/completions
        pa.field("model", pa.string()),  # the run id that served it
        pa.field("input", pa.string(), nullable=False),  # redacted when redaction is on
        pa.field("route", pa.string(), nullable=False),  # student | teacher
        pa.field("answer", pa.string()),  # the label, or the generated text
        pa.field("distribution", pa.list_(pa.float32())),  # over the task's labels (classify), else null
        pa.field("confidence", pa.float32()),  # the student's max probability
        pa.field("redacted", pa.bool_(), nullable=False),
    ]
)

# Order matters: e-mails first (they contain digits), then phone numbers, then any long digit run.
_EMAIL = re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}")
_PHONE = re.compile(r"(?<!\w)\+?\(?\d{1,4}\)?(?:[ .-]?\(?\d{2,4}\)?){2,5}(?!\w)")
_DIGITS = re.compile(r"\d{6,}")


def redact(text: str) -> str:
    """Mask e-mail addresses, phone numbers and runs of 6+ digits (card, account and order numbers)."""
    text = _EMAIL.sub("[EMAIL]", text)
    text = _PHONE.sub(lambda m: "[PHONE]" if sum(c.isdigit() for c in m.group()) >= 7 else m.group(), text)
    return _DIGITS.sub("[NUMBER]", text)


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
    ):
        if not 0.0 <= sample_rate <= 1.0:
            raise DataError(f"traffic sample rate must be in [0, 1], got {sample_rate}")
        self.folder = Path(folder)
        self.sample_rate = sample_rate
        self.redaction = redaction
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
                    "input": redact(text) if self.redaction else text,
                    "route": route,
                    "answer": redact(answer) if (self.redaction and answer) else answer,
                    "distribution": list(dist) if dist is not None else None,
                    "confidence": conf,
                    "redacted": self.redaction,
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
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%S%f")
    path = folder / f"traffic-{stamp}-{uuid.uuid4().hex[:8]}.parquet"
    write_table_atomic(pa.Table.from_pylist(rows, schema=TRAFFIC_SCHEMA), path)
    return path


def read_traffic(folder: str | Path, since: dt.datetime | None = None, until: dt.datetime | None = None) -> list[dict[str, Any]]:
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
    full = [{"request_id": uuid.uuid4().hex, "endpoint": "/v1/classify", "model": None, "route": "student",
             "answer": None, "distribution": None, "confidence": None, "redacted": False, **r} for r in rows]
    return _write_shard(Path(folder), full)

"""The on-disk cache of teacher calls, so a rerun after a crash or Ctrl-C repeats no finished call.

A call's key is sha256(teacher fingerprint, full prompt, parameters); its value is the JSON of what
the teacher answered. SQLite commits each batch atomically: a call is either fully cached or not.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from distil.teachers.base import sha256_json


def call_key(fingerprint: str, prompt: str, params: Mapping[str, Any]) -> str:
    return sha256_json([fingerprint, prompt, dict(params)])


class CallCache:
    """Key -> JSON value store in one SQLite file (WAL, so two commands may share it)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._connect() as conn:
            conn.execute("CREATE TABLE IF NOT EXISTS calls (key TEXT PRIMARY KEY, value TEXT NOT NULL)")

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, timeout=30.0)
        conn.execute("PRAGMA journal_mode = WAL")
        return conn

    def get_many(self, keys: Iterable[str]) -> dict[str, Any]:
        keys = list(dict.fromkeys(keys))
        found: dict[str, Any] = {}
        conn = self._connect()
        try:
            for start in range(0, len(keys), 500):
                chunk = keys[start : start + 500]
                marks = ",".join("?" for _ in chunk)
                for key, value in conn.execute(f"SELECT key, value FROM calls WHERE key IN ({marks})", chunk):
                    found[key] = json.loads(value)
        finally:
            conn.close()
        return found

    def put_many(self, values: Mapping[str, Any]) -> None:
        conn = self._connect()
        try:
            with conn:
                conn.executemany(
                    "INSERT OR REPLACE INTO calls (key, value) VALUES (?, ?)",
                    [(k, json.dumps(v)) for k, v in values.items()],
                )
        finally:
            conn.close()

    def __len__(self) -> int:
        conn = self._connect()
        try:
            return int(conn.execute("SELECT COUNT(*) FROM calls").fetchone()[0])
        finally:
            conn.close()

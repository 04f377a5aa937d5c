"""The ledger: an append-only, hash-chained SQLite record of everything a project did.

Every event row stores ``prev_hash`` (the previous row's hash) and ``hash``, the sha256 of its own
canonical content including ``prev_hash``; changing any column of any row breaks the chain at that
row. Events may name files with their content hash, which ``verify`` rechecks. Typed tables
(teachers, gates, datasets, runs, evaluations, decisions) index the events for queries.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import sqlite3
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from distil.errors import LedgerError
from distil.ledger.migrations import MIGRATIONS

GENESIS = "sha256:" + "0" * 64
TYPED_TABLES = ("teachers", "gates", "datasets", "runs", "evaluations", "decisions", "alerts")


def canonical_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)


def sha256_text(text: str) -> str:
    return "sha256:" + hashlib.sha256(text.encode("utf-8")).hexdigest()


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return "sha256:" + h.hexdigest()


def hash_tree(path: str | Path) -> dict[str, str]:
    """Content hashes of a file, or of every file under a folder (relative names, sorted)."""
    p = Path(path)
    if p.is_file():
        return {p.name: sha256_file(p)}
    return {str(f.relative_to(p)): sha256_file(f) for f in sorted(p.rglob("*")) if f.is_file()}


def event_hash(seq: int, ts: str, kind: str, actor: str, payload: str, prev_hash: str) -> str:
    return sha256_text(canonical_json([seq, ts, kind, actor, payload, prev_hash]))


@dataclass(frozen=True)
class Event:
    seq: int
    ts: str
    kind: str
    actor: str
    payload: dict[str, Any]
    prev_hash: str
    hash: str


@dataclass(frozen=True)
class VerifyResult:
    ok: bool
    checked: int
    broken_seq: int | None = None
    reason: str = ""


class Ledger:
    """Open (creating if needed) the ledger at ``path``; WAL mode and a busy timeout let two commands share it."""

    def __init__(self, path: str | Path, busy_timeout_s: float = 30.0):
        self.path = Path(path)
        self.busy_timeout_s = busy_timeout_s
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self._connect() as conn:
                self._migrate(conn)
        except sqlite3.DatabaseError as exc:
            raise LedgerError(f"{self.path}: cannot open the ledger: {exc}") from None

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        conn = sqlite3.connect(self.path, timeout=self.busy_timeout_s, isolation_level=None)
        try:
            conn.row_factory = sqlite3.Row
            conn.execute(f"PRAGMA busy_timeout = {int(self.busy_timeout_s * 1000)}")
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute("PRAGMA foreign_keys = ON")
            yield conn
        finally:
            conn.close()

    def _migrate(self, conn: sqlite3.Connection) -> None:
        conn.execute("BEGIN IMMEDIATE")
        try:
            conn.execute(
                "CREATE TABLE IF NOT EXISTS migrations (number INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at TEXT NOT NULL)"
            )
            done = {row[0] for row in conn.execute("SELECT number FROM migrations")}
            for number, migration in enumerate(MIGRATIONS, start=1):
                if number not in done:
                    migration(conn)
                    conn.execute(
                        "INSERT INTO migrations (number, name, applied_at) VALUES (?, ?, ?)",
                        (number, migration.__name__, _now()),
                    )
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise

    # --- writing ----------------------------------------------------------------------------------

    def append(
        self,
        kind: str,
        payload: dict[str, Any],
        actor: str = "",
        files: Sequence[str | Path] = (),
        table: str | None = None,
        row: dict[str, Any] | None = None,
    ) -> Event:
        """Append one event (and, with ``table``/``row``, its typed row) in a single transaction.

        ``files`` are hashed now and rechecked by :meth:`verify`; paths are stored as given.
        """
        if table is not None and table not in TYPED_TABLES:
            raise ValueError(f"unknown ledger table {table!r}")
        body = dict(payload)
        if files:
            body["files"] = {self._recorded_path(f): hash_tree(f) for f in files}
        for attempt in range(20):
            try:
                with self._connect() as conn:
                    conn.execute("BEGIN IMMEDIATE")
                    try:
                        last = conn.execute("SELECT seq, hash FROM events ORDER BY seq DESC LIMIT 1").fetchone()
                        seq = (last["seq"] + 1) if last else 1
                        prev = last["hash"] if last else GENESIS
                        ts = _now()
                        if table is not None:
                            # the typed row goes in first so its stored form can be hashed into the event:
                            # editing a typed row later is then caught by verify like editing the event
                            conn.execute("PRAGMA defer_foreign_keys = ON")
                            values = {**(row or {}), "event_seq": seq}
                            cols = ", ".join(values)
                            marks = ", ".join("?" for _ in values)
                            conn.execute(
                                f"INSERT INTO {table} ({cols}) VALUES ({marks})",
                                [canonical_json(v) if isinstance(v, (dict, list)) else v for v in values.values()],
                            )
                            body["typed_row"] = {"table": table, "sha256": _typed_row_hash(conn, table, seq)}
                        payload_text = canonical_json(body)
                        digest = event_hash(seq, ts, kind, actor, payload_text, prev)
                        conn.execute(
                            "INSERT INTO events (seq, ts, kind, actor, payload, prev_hash, hash) VALUES (?, ?, ?, ?, ?, ?, ?)",
                            (seq, ts, kind, actor, payload_text, prev, digest),
                        )
                        conn.execute("COMMIT")
                    except BaseException:
                        conn.execute("ROLLBACK")
                        raise
                return Event(seq, ts, kind, actor, body, prev, digest)
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) and "busy" not in str(exc):
                    raise LedgerError(f"{self.path}: cannot write the ledger: {exc}") from None
                time.sleep(0.05 * (attempt + 1))
        raise LedgerError(f"{self.path}: the ledger stayed locked by another command", hint="wait for it to finish, then retry")

    def _recorded_path(self, path: str | Path) -> str:
        """A file inside the project is recorded relative to it, so verify still finds it after the folder moves."""
        p = Path(path)
        if p.is_absolute():
            try:
                return str(p.resolve().relative_to(self.path.parent.parent.resolve()))
            except ValueError:
                pass
        return str(path)

    # --- reading ----------------------------------------------------------------------------------

    def events(self, kind: str | None = None, newest_first: bool = False, limit: int | None = None) -> list[Event]:
        sql = "SELECT * FROM events"
        args: list[Any] = []
        if kind:
            sql += " WHERE kind = ?"
            args.append(kind)
        sql += " ORDER BY seq " + ("DESC" if newest_first else "ASC")
        if limit:
            sql += f" LIMIT {int(limit)}"
        with self._connect() as conn:
            rows = conn.execute(sql, args).fetchall()
        return [_event(r) for r in rows]

    def rows(self, table: str, where: str = "", args: Sequence[Any] = (), order: str = "event_seq DESC") -> list[dict[str, Any]]:
        if table not in TYPED_TABLES:
            raise ValueError(f"unknown ledger table {table!r}")
        sql = f"SELECT * FROM {table}" + (f" WHERE {where}" if where else "") + f" ORDER BY {order}"
        with self._connect() as conn:
            return [dict(r) for r in conn.execute(sql, list(args)).fetchall()]

    def latest(self, table: str, where: str = "", args: Sequence[Any] = ()) -> dict[str, Any] | None:
        found = self.rows(table, where, args)
        return found[0] if found else None

    def verify(self, check_files: bool = True, base: Path | None = None) -> VerifyResult:
        """Recompute the hash chain; with ``check_files``, recheck recorded files still on disk."""
        prev = GENESIS
        checked = 0
        with self._connect() as conn:
            rows = conn.execute("SELECT * FROM events ORDER BY seq ASC").fetchall()
        expected_seq = 1
        for r in rows:
            seq = r["seq"]
            if seq != expected_seq:
                return VerifyResult(False, checked, seq, f"row {seq}: sequence gap (expected {expected_seq}); a row was deleted")
            if r["prev_hash"] != prev:
                return VerifyResult(False, checked, seq, f"row {seq}: prev_hash does not match row {seq - 1}")
            digest = event_hash(seq, r["ts"], r["kind"], r["actor"], r["payload"], r["prev_hash"])
            if digest != r["hash"]:
                return VerifyResult(False, checked, seq, f"row {seq} ({r['kind']}): content does not match its hash")
            typed = json.loads(r["payload"]).get("typed_row")
            if typed and typed.get("table") in TYPED_TABLES:
                with self._connect() as conn:
                    found = _typed_row_hash(conn, typed["table"], seq)
                if found != typed.get("sha256"):
                    return VerifyResult(False, checked, seq, f"row {seq} ({r['kind']}): its {typed['table']} row was changed or removed")
            if check_files:
                problem = _check_files(json.loads(r["payload"]).get("files") or {}, base or self.path.parent.parent)
                if problem:
                    return VerifyResult(False, checked, seq, f"row {seq} ({r['kind']}): {problem}")
            prev = r["hash"]
            expected_seq += 1
            checked += 1
        return VerifyResult(True, checked)


def _check_files(files: dict[str, dict[str, str]], base: Path) -> str:
    for recorded, hashes in files.items():
        root = Path(recorded)
        root = root if root.is_absolute() else base / root
        if not root.exists():
            continue  # a removed file is not tampering; a changed one is
        for name, digest in hashes.items():
            target = root if root.is_file() else root / name
            if not target.exists():
                continue
            if sha256_file(target) != digest:
                return f"file {target} changed since it was recorded"
    return ""


def _typed_row_hash(conn: sqlite3.Connection, table: str, seq: int) -> str | None:
    """sha256 of the typed row(s) of event ``seq`` as stored (None when there is none)."""
    rows = [dict(r) for r in conn.execute(f"SELECT * FROM {table} WHERE event_seq = ?", (seq,)).fetchall()]
    return sha256_text(canonical_json(rows)) if rows else None


def _event(r: sqlite3.Row) -> Event:
    return Event(r["seq"], r["ts"], r["kind"], r["actor"], json.loads(r["payload"]), r["prev_hash"], r["hash"])


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="microseconds")

"""The ledger: an append-only, hash-chained SQLite record of everything a project did.

Every event row stores ``prev_hash`` (the previous row's hash) and ``hash``, the sha256 of its own
canonical content including ``prev_hash``; changing any column of any row breaks the chain at that
row. Typed tables (teachers, gates, datasets, runs, evaluations, decisions, alerts) index the events
for queries; each typed row is hashed into the payload of the event that wrote it, so a changed,
added or forged typed row no longer matches any event. Events may name files (relative to the
project) with their content hash, which ``verify`` rechecks. Acts of people carry a signature and the
chain's head at signing (see ``distil.ledger.keys``).

What it cannot catch alone: anyone able to write the file can rewrite the whole chain, or drop its
newest rows, consistently. Signed acts stop the first for every row before the newest signature; a
head kept elsewhere (``distil ledger head``) stops the second.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import sqlite3
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from distil.errors import LedgerError
from distil.ledger.keys import (
    SIGNED_ACTS,
    Signer,
    act_message,
    remember_head,
    remembered_head,
    signature_holds,
)
from distil.ledger.migrations import MIGRATIONS
from distil.spec.names import same_person

GENESIS = "sha256:" + "0" * 64
TYPED_TABLES = (
    "teachers",
    "gates",
    "datasets",
    "runs",
    "evaluations",
    "decisions",
    "alerts",
    "evaluation_sets",
    "deployments",
)


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
    problems: tuple[str, ...] = ()  # every problem found, the first one is ``reason``
    unsigned: tuple[int, ...] = ()  # acts of people (SIGNED_ACTS) that carry no signature
    signed: int = 0
    missing: tuple[str, ...] = ()  # recorded files no longer on disk


class Ledger:
    """Open (creating if needed) the ledger at ``path``; WAL mode and a busy timeout let two commands share it.

    ``root`` is the project folder recorded files are relative to (default: the folder above ``.distil/``,
    taken as written, so a symlinked ``.distil`` does not move it). ``trusted_keys`` (name -> public key, from
    the spec's ``roles.keys``) makes acts of people count only when signed by the person named.
    """

    def __init__(
        self,
        path: str | Path,
        busy_timeout_s: float = 30.0,
        root: str | Path | None = None,
        trusted_keys: dict[str, str] | None = None,
    ):
        self.path = Path(path)
        self.root = Path(os.path.abspath(root if root is not None else Path(os.path.abspath(path)).parent.parent))
        self.trusted_keys = dict(trusted_keys) if trusted_keys else None
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
                "CREATE TABLE IF NOT EXISTS migrations (number INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at "
                "TEXT NOT NULL)"
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
        signer: Signer | None = None,
    ) -> Event:
        """Append one event (and, with ``table``/``row``, its typed row) in a single transaction.

        ``files`` are hashed now and rechecked by :meth:`verify`; they are recorded relative to the
        project root. With ``signer`` (see :func:`distil.ledger.keys.signer_for`) the event carries
        the chain's head at signing and the actor's signature over kind, actor and payload.
        """
        if table is not None and table not in TYPED_TABLES:
            raise ValueError(f"unknown ledger table {table!r}")
        body = dict(payload)
        if files:
            body["files"] = {self.recorded_path(f): hash_tree(f) for f in files}
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
                        if signer is not None:
                            body["signed_head"] = {"seq": seq - 1, "hash": prev}
                            body["signature"] = signer(act_message(kind, actor, body))
                        payload_text = canonical_json(body)
                        digest = event_hash(seq, ts, kind, actor, payload_text, prev)
                        conn.execute(
                            "INSERT INTO events (seq, ts, kind, actor, payload, prev_hash, hash) VALUES (?, ?, ?, ?, "
                            "?, ?, ?)",
                            (seq, ts, kind, actor, payload_text, prev, digest),
                        )
                        ledger_id = (
                            digest if seq == 1 else conn.execute("SELECT hash FROM events WHERE seq = 1").fetchone()[0]
                        )
                        conn.execute("COMMIT")
                    except BaseException:
                        conn.execute("ROLLBACK")
                        raise
                if signer is not None:
                    remember_head(ledger_id, seq, digest)
                return Event(seq, ts, kind, actor, body, prev, digest)
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) and "busy" not in str(exc):
                    raise LedgerError(f"{self.path}: cannot write the ledger: {exc}") from None
                time.sleep(0.05 * (attempt + 1))
        raise LedgerError(
            f"{self.path}: the ledger stayed locked by another command", hint="wait for it to finish, then retry"
        )

    def recorded_path(self, path: str | Path) -> str:
        """How a file is named in the ledger: relative to the project root when it lies inside it (through a
        symlinked ``.distil`` too), so verify still finds it after the folder moves; else absolute."""
        absolute = Path(os.path.abspath(path))
        state = self.root / ".distil"
        candidates = [
            (absolute, self.root, Path()),  # as written
            (absolute.resolve(), self.root.resolve(), Path()),  # through symlinks on both sides
            (absolute.resolve(), state.resolve(), Path(".distil")),  # .distil is a link to elsewhere
        ]
        for target, base, prefix in candidates:
            try:
                return str(prefix / target.relative_to(base))
            except ValueError:
                continue
        return str(absolute)

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

    def event(self, seq: int) -> Event | None:
        with self._connect() as conn:
            row = conn.execute("SELECT * FROM events WHERE seq = ?", (seq,)).fetchone()
        return _event(row) if row else None

    def file_problems(self, seq: int, unrecorded: bool = False) -> list[str]:
        """What is wrong with the files event ``seq`` recorded: changed or missing ones and, with ``unrecorded``,
        files that now lie in a recorded folder but were not there when it was recorded. [] when all hold."""
        event = self.event(seq)
        files = (event.payload.get("files") or {}) if event else {}
        problems = [problem for problem, _ in _file_problems(files, self.root)]
        if unrecorded:
            for recorded, hashes in files.items():
                folder = Path(recorded) if Path(recorded).is_absolute() else self.root / recorded
                if folder.is_dir():
                    extra = sorted(
                        str(f.relative_to(folder))
                        for f in folder.rglob("*")
                        if f.is_file() and str(f.relative_to(folder)) not in hashes
                    )
                    problems += [f"file {recorded}/{name} was not there when it was recorded" for name in extra]
        return problems

    def head(self) -> tuple[int, str]:
        """(seq, hash) of the newest event; (0, GENESIS) for an empty ledger. Keep it elsewhere to detect truncation."""
        with self._connect() as conn:
            row = conn.execute("SELECT seq, hash FROM events ORDER BY seq DESC LIMIT 1").fetchone()
        return (row["seq"], row["hash"]) if row else (0, GENESIS)

    def rows(
        self, table: str, where: str = "", args: Sequence[Any] = (), order: str = "event_seq DESC"
    ) -> list[dict[str, Any]]:
        """Typed rows as stored, unchecked. Anything that decides from them reads :meth:`verified_rows`."""
        if table not in TYPED_TABLES:
            raise ValueError(f"unknown ledger table {table!r}")
        sql = f"SELECT * FROM {table}" + (f" WHERE {where}" if where else "") + f" ORDER BY {order}"
        with self._connect() as conn:
            return [dict(r) for r in conn.execute(sql, list(args)).fetchall()]

    def latest(self, table: str, where: str = "", args: Sequence[Any] = ()) -> dict[str, Any] | None:
        found = self.rows(table, where, args)
        return found[0] if found else None

    def verified_rows(
        self, table: str, where: str = "", args: Sequence[Any] = (), order: str = "event_seq DESC"
    ) -> list[dict[str, Any]]:
        """Like :meth:`rows`, but every row must be bound to its event: the event exists, hashes to its stored
        hash, links to the event before it, names this table with the row's hash, and (for an act of a person
        in a project with keys) is signed by that person. Refuses (LedgerError) naming the first row that is not."""
        found = self.rows(table, where, args, order)
        with self._connect() as conn:
            for seq in dict.fromkeys(r["event_seq"] for r in found):
                problem = _binding_problem(conn, table, seq, self.trusted_keys)
                if problem:
                    raise LedgerError(
                        f"{self.path}: the {table} row of event {seq} does not verify: {problem}",
                        hint="run `distil ledger verify`; restore .distil/ledger.db from a copy you trust",
                    )
        return found

    def verified_latest(self, table: str, where: str = "", args: Sequence[Any] = ()) -> dict[str, Any] | None:
        found = self.verified_rows(table, where, args)
        return found[0] if found else None

    # --- verifying --------------------------------------------------------------------------------

    def verify(
        self,
        check_files: bool = True,
        base: Path | None = None,
        allow_missing: bool = False,
        head: tuple[int, str] | None = None,
    ) -> VerifyResult:
        """Check everything the ledger holds: the hash chain, every typed row against its event (and no typed
        row without one), signatures and the heads they carry, the heads signers kept and ``head`` (a
        ``distil ledger head`` kept elsewhere), and with ``check_files`` every recorded file (a missing one
        is a problem unless ``allow_missing``)."""
        base = Path(base) if base is not None else self.root
        problems: list[tuple[int | None, str]] = []
        unsigned: list[int] = []
        missing: list[str] = []
        hashes: dict[int, str] = {}
        signed = 0
        prev, expected = GENESIS, 1
        with self._connect() as conn:
            rows = conn.execute("SELECT * FROM events ORDER BY seq ASC").fetchall()
            for r in rows:
                seq = r["seq"]
                label = f"row {seq} ({r['kind']})"
                if seq != expected:
                    problems.append(
                        (
                            seq,
                            f"row {seq}: sequence gap (expected {expected}); row(s) {expected}..{seq - 1} were deleted",
                        )
                    )
                if r["prev_hash"] != prev:
                    problems.append((seq, f"row {seq}: prev_hash does not match row {seq - 1}"))
                if event_hash(seq, r["ts"], r["kind"], r["actor"], r["payload"], r["prev_hash"]) != r["hash"]:
                    problems.append((seq, f"{label}: content does not match its hash"))
                hashes[seq] = r["hash"]
                prev, expected = r["hash"], seq + 1
                try:
                    payload = json.loads(r["payload"])
                except ValueError:
                    problems.append((seq, f"{label}: payload is not JSON"))
                    continue
                typed = payload.get("typed_row") or {}
                if typed:
                    table = typed.get("table")
                    found = _typed_row_hash(conn, table, seq) if table in TYPED_TABLES else None
                    if found != typed.get("sha256"):
                        problems.append((seq, f"{label}: its {table} row was changed or removed"))
                act_problem, is_signed = _signature_problem(r, payload, self.trusted_keys, signed > 0)
                if act_problem:
                    problems.append((seq, f"{label}: {act_problem}"))
                if is_signed:
                    signed += 1
                elif r["kind"] in SIGNED_ACTS and not act_problem:
                    unsigned.append(seq)
                if check_files:
                    for problem, gone in _file_problems(payload.get("files") or {}, base):
                        if gone:
                            missing.append(gone)
                            if allow_missing:
                                continue
                        problems.append((seq, f"{label}: {problem}"))
            for table in TYPED_TABLES:
                for (seq,) in conn.execute(f"SELECT DISTINCT event_seq FROM {table} ORDER BY event_seq").fetchall():
                    if seq not in hashes:
                        problems.append((seq, f"{table} row bound to event {seq}: no such event (a forged row)"))
                        continue
                    named = (
                        json.loads(conn.execute("SELECT payload FROM events WHERE seq = ?", (seq,)).fetchone()[0]) or {}
                    ).get("typed_row") or {}
                    if named.get("table") != table:
                        problems.append(
                            (
                                seq,
                                f"{table} row bound to event {seq}: that event does not bind a {table} row (a forged "
                                "row)",
                            )
                        )
        first = hashes.get(1)
        kept = [("the head you gave", head)] if head is not None else []
        remembered = remembered_head(first) if first else None
        if remembered is not None:
            kept.append(("the last head signed here", remembered))
        for what, (seq, digest) in kept:
            if hashes.get(seq) != digest:
                last = max(hashes, default=0)
                problems.append(
                    (
                        seq,
                        f"{what}, {seq}:{digest}, is not in the chain (it ends at row {last}): rows were deleted or "
                        "rewritten",
                    )
                )
        problems.sort(key=lambda p: (p[0] is None, p[0] or 0))
        messages = tuple(dict.fromkeys(m for _, m in problems))
        return VerifyResult(
            ok=not problems,
            checked=len(rows),
            broken_seq=problems[0][0] if problems else None,
            reason=messages[0] if messages else "",
            problems=messages,
            unsigned=tuple(unsigned),
            signed=signed,
            missing=tuple(missing),
        )


def _signature_problem(
    r: sqlite3.Row, payload: dict[str, Any], trusted: dict[str, str] | None, after_signed: bool
) -> tuple[str, bool]:
    """(problem or "", whether the event carries a good signature) for one event."""
    signature = payload.get("signature")
    if signature is None:
        if trusted and after_signed and r["kind"] in SIGNED_ACTS:
            return (
                f"an act by {r['actor']} with no signature after signed acts; it was added without {r['actor']}'s key",
                False,
            )
        return "", False
    if not signature_holds(signature, act_message(r["kind"], r["actor"], payload)):
        return "its signature does not hold (the act was changed after it was signed, or forged)", False
    if payload.get("signed_head") != {"seq": r["seq"] - 1, "hash": r["prev_hash"]}:
        return "the head it was signed at is not the row before it", False
    if trusted is not None and r["kind"] in SIGNED_ACTS and signature.get("key") != _trusted_key(trusted, r["actor"]):
        return f"signed with a key that is not {r['actor']}'s in the spec's roles.keys", False
    return "", True


def _trusted_key(trusted: dict[str, str], actor: str) -> str | None:
    return next((key for name, key in trusted.items() if same_person(name, actor)), None)


def _binding_problem(conn: sqlite3.Connection, table: str, seq: int, trusted: dict[str, str] | None) -> str:
    """Why the typed row(s) of event ``seq`` in ``table`` are not bound to it ("" when they are)."""
    r = conn.execute("SELECT * FROM events WHERE seq = ?", (seq,)).fetchone()
    if r is None:
        return "no such event (a forged row)"
    if event_hash(seq, r["ts"], r["kind"], r["actor"], r["payload"], r["prev_hash"]) != r["hash"]:
        return f"event {seq} does not match its hash"
    before = conn.execute("SELECT hash FROM events WHERE seq = ?", (seq - 1,)).fetchone()
    if (before["hash"] if before else GENESIS) != r["prev_hash"]:
        return f"event {seq} does not link to the event before it"
    try:
        payload = json.loads(r["payload"])
    except ValueError:
        return f"event {seq}'s payload is not JSON"
    typed = payload.get("typed_row") or {}
    if typed.get("table") != table:
        return f"event {seq} ({r['kind']}) does not bind a {table} row (a forged row)"
    if typed.get("sha256") != _typed_row_hash(conn, table, seq):
        return "the row was changed, or another row was added under the same event"
    after_signed = False
    if trusted and payload.get("signature") is None:
        after_signed = (
            conn.execute(
                "SELECT 1 FROM events WHERE seq < ? AND payload LIKE '%\"signature\":{%' LIMIT 1", (seq,)
            ).fetchone()
            is not None
        )
    problem, _ = _signature_problem(r, payload, trusted, after_signed)
    return problem


def _file_problems(files: dict[str, dict[str, str]], base: Path) -> Iterator[tuple[str, str]]:
    """(problem, missing path or "") for each recorded file that changed or is gone."""
    for recorded, hashes in files.items():
        root = Path(recorded)
        root = root if root.is_absolute() else base / root
        if not root.exists():
            yield f"recorded file {recorded} is missing", recorded
            continue
        for name, digest in hashes.items():
            target = root if root.is_file() else root / name
            shown = recorded if root.is_file() else f"{recorded}/{name}"
            if not target.exists():
                yield f"recorded file {shown} is missing", shown
            elif sha256_file(target) != digest:
                yield f"file {shown} changed since it was recorded", ""


def _typed_row_hash(conn: sqlite3.Connection, table: str, seq: int) -> str | None:
    """sha256 of the typed row(s) of event ``seq`` as stored (None when there is none)."""
    rows = [dict(r) for r in conn.execute(f"SELECT * FROM {table} WHERE event_seq = ?", (seq,)).fetchall()]
    return sha256_text(canonical_json(rows)) if rows else None


def _event(r: sqlite3.Row) -> Event:
    return Event(r["seq"], r["ts"], r["kind"], r["actor"], json.loads(r["payload"]), r["prev_hash"], r["hash"])


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="microseconds")

"""The ledger: append-only, hash-chained, tamper-evident, safe under concurrent writers."""

from __future__ import annotations

import multiprocessing
import sqlite3

import pytest

from distil.ledger.store import Ledger


def _filled(tmp_path, n=5) -> Ledger:
    ledger = Ledger(tmp_path / ".distil" / "ledger.db")
    for i in range(n):
        ledger.append("test.event", {"i": i, "note": f"event {i}"}, actor="alice")
    return ledger


def test_chain_links_every_row(tmp_path):
    ledger = _filled(tmp_path)
    events = ledger.events()
    assert [e.seq for e in events] == [1, 2, 3, 4, 5]
    assert all(b.prev_hash == a.hash for a, b in zip(events, events[1:], strict=False))
    assert all(e.hash.startswith("sha256:") for e in events)
    assert ledger.verify().ok


def test_migrations_are_recorded_once(tmp_path):
    path = tmp_path / "ledger.db"
    Ledger(path)
    Ledger(path)
    with sqlite3.connect(path) as conn:
        rows = conn.execute("SELECT number, name FROM migrations ORDER BY number").fetchall()
        mode = conn.execute("PRAGMA journal_mode").fetchone()[0]
    assert [r[0] for r in rows] == list(range(1, len(rows) + 1))
    assert len(rows) >= 2
    assert mode == "wal"


@pytest.mark.parametrize("column", ["ts", "kind", "actor", "payload", "prev_hash", "hash"])
def test_changing_any_column_is_reported_at_that_row(tmp_path, column):
    ledger = _filled(tmp_path)
    with sqlite3.connect(ledger.path) as conn:
        conn.execute(f"UPDATE events SET {column} = {column} || 'x' WHERE seq = 3")
    result = ledger.verify()
    assert not result.ok
    assert result.broken_seq == 3
    assert "row 3" in result.reason


def test_deleted_row_is_reported(tmp_path):
    ledger = _filled(tmp_path)
    with sqlite3.connect(ledger.path) as conn:
        conn.execute("DELETE FROM events WHERE seq = 2")
    result = ledger.verify()
    assert not result.ok and result.broken_seq == 3


def test_changed_file_is_reported(tmp_path):
    ledger = Ledger(tmp_path / ".distil" / "ledger.db")
    shard = tmp_path / "shard.parquet"
    shard.write_bytes(b"original bytes")
    ledger.append("dataset.curated", {"name": "d"}, files=[shard])
    assert ledger.verify(base=tmp_path).ok
    shard.write_bytes(b"changed bytes!")
    result = ledger.verify(base=tmp_path)
    assert not result.ok and "shard.parquet changed" in result.reason


def test_typed_rows_are_written_with_their_event(tmp_path):
    ledger = Ledger(tmp_path / "ledger.db")
    event = ledger.append(
        "gate.locked",
        {"v": 1},
        actor="maria",
        table="gates",
        row={"version": 1, "sha256": "sha256:x", "canonical": "{}", "locked_by": "maria", "reason": ""},
    )
    row = ledger.latest("gates")
    assert row["event_seq"] == event.seq and row["locked_by"] == "maria"


def _writer(path, worker, count):
    ledger = Ledger(path)
    for i in range(count):
        ledger.append("concurrent", {"worker": worker, "i": i}, actor=f"w{worker}")


def test_two_processes_writing_at_once_keep_the_chain(tmp_path):
    path = tmp_path / "ledger.db"
    Ledger(path)
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_writer, args=(path, w, 40)) for w in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    ledger = Ledger(path)
    assert len(ledger.events()) == 80
    assert ledger.verify().ok

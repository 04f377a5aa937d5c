"""Numbered ledger migrations. Each is applied once, in order, and recorded in ``migrations``.

Append new functions at the end; never edit or reorder one that has shipped.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable


def m001_events(conn: sqlite3.Connection) -> None:
    conn.execute(
        """CREATE TABLE events (
            seq INTEGER PRIMARY KEY,
            ts TEXT NOT NULL,
            kind TEXT NOT NULL,
            actor TEXT NOT NULL,
            payload TEXT NOT NULL,
            prev_hash TEXT NOT NULL,
            hash TEXT NOT NULL UNIQUE
        )"""
    )
    conn.execute("CREATE INDEX events_kind ON events (kind)")


def m002_typed_tables(conn: sqlite3.Connection) -> None:
    conn.execute(
        """CREATE TABLE teachers (
            event_seq INTEGER NOT NULL REFERENCES events(seq),
            teacher_id TEXT NOT NULL,
            fingerprint TEXT NOT NULL,
            licence TEXT NOT NULL
        )"""
    )
    conn.execute(
        """CREATE TABLE gates (
            event_seq INTEGER NOT NULL REFERENCES events(seq),
            version INTEGER NOT NULL,
            sha256 TEXT NOT NULL,
            canonical TEXT NOT NULL,
            locked_by TEXT NOT NULL,
            reason TEXT NOT NULL
        )"""
    )
    conn.execute(
        """CREATE TABLE datasets (
            event_seq INTEGER NOT NULL REFERENCES events(seq),
            dataset_hash TEXT NOT NULL,
            stage TEXT NOT NULL,
            path TEXT NOT NULL,
            counts TEXT NOT NULL
        )"""
    )
    conn.execute(
        """CREATE TABLE runs (
            event_seq INTEGER NOT NULL REFERENCES events(seq),
            run_id TEXT NOT NULL,
            dataset_hash TEXT NOT NULL,
            role TEXT NOT NULL,
            path TEXT NOT NULL,
            metrics TEXT NOT NULL
        )"""
    )
    conn.execute(
        """CREATE TABLE evaluations (
            event_seq INTEGER NOT NULL REFERENCES events(seq),
            run_id TEXT NOT NULL,
            variant TEXT NOT NULL,
            path TEXT NOT NULL,
            summary TEXT NOT NULL
        )"""
    )
    conn.execute(
        """CREATE TABLE decisions (
            event_seq INTEGER NOT NULL REFERENCES events(seq),
            run_id TEXT NOT NULL,
            decision TEXT NOT NULL,
            validator TEXT NOT NULL,
            driver TEXT NOT NULL,
            evaluation_seq INTEGER NOT NULL
        )"""
    )
    conn.execute(
        """CREATE TABLE alerts (
            event_seq INTEGER NOT NULL REFERENCES events(seq),
            source TEXT NOT NULL,
            message TEXT NOT NULL
        )"""
    )


def m003_evaluation_sets(conn: sqlite3.Connection) -> None:
    # The locked test split and gold set: every later dataset and evaluation is held to these items.
    conn.execute(
        """CREATE TABLE evaluation_sets (
            event_seq INTEGER NOT NULL REFERENCES events(seq),
            name TEXT NOT NULL,
            gate_version INTEGER NOT NULL,
            item_ids TEXT NOT NULL,
            sha256 TEXT NOT NULL,
            size INTEGER NOT NULL,
            path TEXT NOT NULL,
            reason TEXT NOT NULL
        )"""
    )


def m004_deployments(conn: sqlite3.Connection) -> None:
    # A run put into service (`distil serve`) and taken out of it: one row per `deployment` event (stopped_at
    # null) and one per `deployment.stopped` event (started_seq names the deployment it ends).
    conn.execute(
        """CREATE TABLE deployments (
            event_seq INTEGER NOT NULL REFERENCES events(seq),
            run_id TEXT NOT NULL,
            decision_seq INTEGER,
            allow_unshipped INTEGER NOT NULL,
            operator TEXT NOT NULL,
            host TEXT NOT NULL,
            port INTEGER NOT NULL,
            started_at TEXT NOT NULL,
            stopped_at TEXT,
            started_seq INTEGER
        )"""
    )


MIGRATIONS: list[Callable[[sqlite3.Connection], None]] = [
    m001_events,
    m002_typed_tables,
    m003_evaluation_sets,
    m004_deployments,
]

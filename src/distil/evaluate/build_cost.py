"""What building a run's student cost, summed from the ledger (the arithmetic is in :mod:`distil.evaluate.cost`).

The build is everything recorded before the run was trained, the run's own training included: earlier
rounds are part of what it took to get here.

- **teacher calls**: every raw shard a ``dataset.generated`` event names (recorded before the run's
  ``run.trained`` rows) is read and each record's ``cost`` (the price of the teacher call that labelled it,
  written at labelling time) is summed, once per distinct call (input, teacher fingerprint, prompt and
  parameters): a shard written again from the call cache repeats records, not calls. A shard that is gone
  from disk is named in the note and its calls are not counted.
- **training time**: the ``seconds`` in each ``run.trained`` row's metrics (the optimiser steps' time over
  every call that trained that role; rows from before ``seconds`` was recorded give ``tokens / tokens_per_s``,
  the same number), for every run recorded up to and including this one.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from distil.evaluate.cost import BuildLedger
from distil.spec.io import Project

CALL_COLUMNS = ("id", "teacher_fingerprint", "prompt_hash", "params_hash", "cost")


def role_seconds(metrics: dict[str, Any]) -> float:
    """Training seconds of one ``run.trained`` row's metrics (0 when it records neither seconds nor a token rate)."""
    if metrics.get("seconds") is not None:
        return float(metrics["seconds"])
    tokens, rate = metrics.get("tokens"), metrics.get("tokens_per_s")
    return float(tokens) / float(rate) if tokens and rate else 0.0


def recorded_calls(shards: list[Path]) -> dict[tuple[Any, ...], float]:
    """One entry per distinct teacher call in ``shards``: (input id, fingerprint, prompt hash, params hash) -> cost."""
    calls: dict[tuple[Any, ...], float] = {}
    for shard in shards:
        table = pq.read_table(shard, columns=list(CALL_COLUMNS)).to_pylist()
        for row in table:
            calls.setdefault(tuple(row[k] for k in CALL_COLUMNS[:-1]), float(row["cost"] or 0.0))
    return calls


def ledger_build_cost(project: Project, run_id: str) -> BuildLedger:
    """Teacher calls and training seconds recorded for building ``run_id`` (see the module docstring)."""
    ledger = project.ledger
    runs = ledger.verified_rows("runs", order="event_seq ASC")
    own = [r["event_seq"] for r in runs if r["run_id"] == run_id]
    cutoff = max(own) if own else None  # a run the ledger does not know: everything recorded so far
    training = {
        f"{r['run_id']}/{r['role']}": role_seconds(json.loads(r["metrics"] or "{}"))
        for r in runs
        if cutoff is None or r["event_seq"] <= cutoff
    }
    raw = [
        r
        for r in ledger.verified_rows("datasets", "stage = ?", ("raw",), order="event_seq ASC")
        if cutoff is None or r["event_seq"] < cutoff
    ]
    shards: dict[Path, None] = {}
    missing: list[str] = []
    for row in raw:
        event = ledger.event(row["event_seq"])
        for relative in (event.payload.get("shards") or []) if event else []:
            path = project.root / relative
            if path.is_file():
                shards.setdefault(path, None)
            else:
                missing.append(relative)
    calls = recorded_calls(list(shards))
    note = f"shards missing, their calls not counted: {', '.join(missing)}" if missing else ""
    return BuildLedger(len(calls), sum(calls.values()), training, len(raw), note)

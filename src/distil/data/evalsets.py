"""Locked evaluation sets: the test split and the gold set that every round is compared on.

The first curate after a gate lock freezes the test split. Its file is copied to
``.distil/data/evaluation/test-<hash12>.parquet`` and an ``evaluation_set.locked`` event with an
``evaluation_sets`` row records its item ids, the sha256 of its canonical content, its size, the gate
version and the reason. The gold set is registered the same way (the sha256 of its file and its ids).

From then on every curate (iterate rounds, traffic refreshes, re-curates) copies that file byte for byte
into the new dataset's ``test.parquet``: no new item enters test, and the test items and their
near-duplicates are kept out of train, validation and the probe pool. ``distil evaluate`` refuses a test
split or gold file whose hash differs from the locked one, so agreement is compared round over round on
the same items. A new gate version may lock a new test split, with a reason (``distil curate
--new-test-set REASON``).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from distil.data.records import COLUMN_GENERATIONS, Record, content_id, read_records
from distil.errors import EvaluationSetError
from distil.files import write_bytes_atomic
from distil.ledger.keys import Signer, signer_for
from distil.ledger.store import sha256_file
from distil.spec.io import Project
from distil.teachers.base import sha256_json

TABLE = "evaluation_sets"
EVENT = "evaluation_set.locked"


@dataclass(frozen=True)
class LockedSet:
    name: str  # "test" or "gold"
    gate_version: int
    item_ids: list[str]
    sha256: str
    size: int
    path: str  # relative to the project: the frozen test file, or the gold file
    reason: str
    event_seq: int


@dataclass(frozen=True)
class SplitPlan:
    """What a curate does with the test split: keep the frozen one, or split afresh and lock the result."""

    frozen: list[Record] | None  # the locked test records to keep (None: split afresh)
    frozen_path: Path | None
    lock_version: int | None  # the gate version to lock the new test split under (None: lock nothing)
    reason: str


def content_hash(records: Sequence[Record], without: Sequence[str] = ()) -> str:
    """sha256 of the records' canonical content (every column but ``without``, in file order)."""
    return sha256_json([{k: v for k, v in r.to_row().items() if k not in without} for r in records])


def content_hashes(records: Sequence[Record]) -> list[str]:
    """Every hash these records could have been locked under: today's columns first, then each earlier column set.

    A set locked before a column existed was hashed without it; read back now, that column is null in every record.
    Dropping the newer columns only while they are all null keeps an upgrade from reading as a changed split, and
    a value written into one of them still changes every hash.
    """
    hashes, dropped = [content_hash(records)], []
    for group in reversed(COLUMN_GENERATIONS):
        if any(getattr(r, name) is not None for r in records for name in group):
            break
        dropped += group
        hashes.append(content_hash(records, dropped))
    return hashes


def locked_set(project: Project, name: str) -> LockedSet | None:
    """The newest locked evaluation set called ``name`` (``test`` / ``gold``), or None.

    Read through the ledger's verified rows: a hand-edited hash or id list is refused, not trusted."""
    rows = project.ledger.verified_rows(TABLE, "name = ?", (name,))
    if not rows:
        return None
    row = rows[0]
    return LockedSet(
        name=row["name"],
        gate_version=row["gate_version"],
        item_ids=json.loads(row["item_ids"]),
        sha256=row["sha256"],
        size=row["size"],
        path=row["path"],
        reason=row["reason"],
        event_seq=row["event_seq"],
    )


def read_locked_test(project: Project, locked: LockedSet) -> list[Record]:
    """The locked test records from their frozen file, checked against the ledger's hash."""
    path = project.path(locked.path)
    if not path.is_file():
        raise EvaluationSetError(
            f"{path}: the locked test split (gate version {locked.gate_version}, {locked.size} items) is missing",
            hint="restore .distil/data/evaluation from a backup; `distil ledger verify` names every recorded file",
        )
    records = read_records(path)
    if locked.sha256 not in content_hashes(records):
        raise EvaluationSetError(
            f"{path}: the locked test split changed since it was locked (ledger row {locked.event_seq})",
            hint="restore the file from a backup",
        )
    return records


def plan_test_split(project: Project, new_test_set: str = "") -> SplitPlan:
    """Keep the locked test split; lock one at the first curate after a gate lock; relock only for a new gate version.

    ``new_test_set`` is the reason for locking a new test split (allowed once per gate version).
    """
    from distil.spec.gate import locked_gate

    gate = locked_gate(project)
    test = locked_set(project, "test")
    if new_test_set.strip():
        if gate is None or (test is not None and gate.version <= test.gate_version):
            locked_under = f"gate version {test.gate_version}" if test else "no gate"
            raise EvaluationSetError(
                f"curate --new-test-set: the test split is locked under {locked_under}; a new test split needs a new "
                "gate version",
                hint=f"lock a new gate version first: `distil gate lock --as {project.spec.roles.sponsor} "
                '--reason "..."`',
            )
        return SplitPlan(None, None, gate.version, new_test_set.strip())
    if test is not None:
        require_locked_gold(project)
        return SplitPlan(read_locked_test(project, test), project.path(test.path), None, "")
    if gate is not None:
        return SplitPlan(None, None, gate.version, f"first curate after gate version {gate.version} was locked")
    return SplitPlan(None, None, None, "")  # no gate yet: nothing to lock


def lock_evaluation_sets(
    project: Project, test_path: Path, gate_version: int, reason: str, actor: str = ""
) -> list[LockedSet]:
    """Freeze ``test_path`` as the locked test split and register the gold set; one ledger row each, signed by
    ``actor`` (default: the driver) where the spec sets keys."""
    actor = actor or project.spec.roles.driver
    signer = signer_for(project, actor)  # refused before anything is written when the actor cannot sign
    records = read_records(test_path)
    digest = content_hash(records)
    frozen = project.data_dir / "evaluation" / f"test-{digest.split(':')[1][:12]}.parquet"
    write_bytes_atomic(frozen, test_path.read_bytes())
    out = [_append(project, "test", gate_version, [r.id for r in records], digest, frozen, reason, actor, signer)]
    if project.spec.data.gold:
        from distil.data.sources import read_gold_inputs

        gold = project.path(project.spec.data.gold)
        ids = [content_id(item.input) for item in read_gold_inputs(gold, project.spec)]
        out.append(_append(project, "gold", gate_version, ids, sha256_file(gold), gold, reason, actor, signer))
    return out


def _append(
    project: Project,
    name: str,
    gate_version: int,
    ids: list[str],
    digest: str,
    path: Path,
    reason: str,
    actor: str,
    signer: Signer | None,
) -> LockedSet:
    rel = _relative(project, path)
    row = {
        "name": name,
        "gate_version": gate_version,
        "item_ids": ids,
        "sha256": digest,
        "size": len(ids),
        "path": rel,
        "reason": reason,
    }
    event = project.ledger.append(
        EVENT,
        {k: v for k, v in row.items() if k != "item_ids"},
        actor=actor,
        files=[path],
        table=TABLE,
        row=row,
        signer=signer,
    )
    return LockedSet(name, gate_version, ids, digest, len(ids), rel, reason, event.seq)


def _relative(project: Project, path: Path) -> str:
    try:
        return str(path.resolve().relative_to(project.root.resolve()))
    except ValueError:
        return str(path)


def require_locked_gold(project: Project) -> LockedSet | None:
    """Refuse (EvaluationSetError) when the spec's gold file differs from the registered one."""
    gold = locked_set(project, "gold")
    if gold is None:
        return None
    current = project.path(project.spec.data.gold) if project.spec.data.gold else None
    if current is None or not current.is_file() or sha256_file(current) != gold.sha256:
        raise EvaluationSetError(
            f"data.gold: {current or 'no gold set'} is not the gold set registered under gate version "
            f"{gold.gate_version} ({gold.path}, {gold.size} items, {gold.sha256[:19]})",
            hint="restore the registered gold file; a new gold set needs a new gate version and `distil curate "
            "--new-test-set REASON`",
        )
    return gold


def require_locked_test(project: Project, folder: Path) -> LockedSet | None:
    """Refuse (EvaluationSetError, exit 2) a dataset whose test split, or a gold file, differs from the locked one.

    Called before evaluation so every round is compared on the same items. Returns the locked test set,
    or None when none is locked yet (the dataset was curated before the gate was locked).
    """
    test = locked_set(project, "test")
    if test is not None:
        path = Path(folder) / "test.parquet"
        hashes = content_hashes(read_records(path)) if path.is_file() else ["missing"]
        if test.sha256 not in hashes:
            raise EvaluationSetError(
                f"evaluate: {path} is not the locked test split (gate version {test.gate_version}, {test.size} items, "
                f"{test.sha256[:19]}; found {hashes[0][:19]}), so this round could not be compared with the others",
                hint="rebuild the dataset with `distil curate` (it keeps the locked test split), then train and "
                "evaluate again",
            )
    require_locked_gold(project)
    return test

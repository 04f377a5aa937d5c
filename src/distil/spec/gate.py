"""The success gate: locked in the ledger before anything is built, checked by every step that relies on it."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from distil.errors import GateError, RoleError
from distil.ledger.store import canonical_json, sha256_text
from distil.spec.io import Project
from distil.spec.models import Gate


def canonical_gate(gate: Gate) -> str:
    return canonical_json(gate.model_dump(mode="json"))


def gate_hash(gate: Gate) -> str:
    return sha256_text(canonical_gate(gate))


@dataclass(frozen=True)
class LockedGate:
    version: int
    sha256: str
    thresholds: dict[str, Any]
    locked_by: str
    locked_at: str
    reason: str
    event_seq: int


def locked_gate(project: Project) -> LockedGate | None:
    """The newest locked gate version, or None when the gate was never locked."""
    row = project.ledger.latest("gates")
    if row is None:
        return None
    event = project.ledger.events(kind="gate.locked", newest_first=True, limit=1)[0]
    return LockedGate(
        version=row["version"],
        sha256=row["sha256"],
        thresholds=json.loads(row["canonical"]),
        locked_by=row["locked_by"],
        locked_at=event.ts,
        reason=row["reason"],
        event_seq=row["event_seq"],
    )


def gate_changes(locked: LockedGate, gate: Gate) -> list[str]:
    now = gate.model_dump(mode="json")
    keys = sorted(set(now) | set(locked.thresholds))
    return [f"{k} {locked.thresholds.get(k)!r} → {now.get(k)!r}" for k in keys if locked.thresholds.get(k) != now.get(k)]


def lock_gate(project: Project, actor: str, reason: str = "") -> tuple[LockedGate, bool]:
    """Lock the spec's gate as ``actor`` (who must be the sponsor). Returns (gate, newly_locked)."""
    sponsor = project.spec.roles.sponsor
    if actor.strip().lower() != sponsor.strip().lower():
        raise RoleError(
            f"roles.sponsor: only the sponsor ({sponsor}) may lock the gate, not {actor or 'an unnamed user'}",
            hint=f"run `distil gate lock --as {sponsor}`",
        )
    gate = project.spec.gate
    digest = gate_hash(gate)
    current = locked_gate(project)
    if current is not None and current.sha256 == digest:
        return current, False
    if current is not None and not reason.strip():
        raise GateError(
            f"gate: version {current.version} is already locked and the spec's gate differs "
            f"({'; '.join(gate_changes(current, gate))})",
            hint=f'give the reason for a new version: `distil gate lock --as {sponsor} --reason "..."`',
        )
    version = 1 if current is None else current.version + 1
    canonical = canonical_gate(gate)
    event = project.ledger.append(
        "gate.locked",
        {"version": version, "sha256": digest, "gate": json.loads(canonical), "reason": reason},
        actor=actor,
        table="gates",
        row={"version": version, "sha256": digest, "canonical": canonical, "locked_by": actor, "reason": reason},
    )
    return LockedGate(version, digest, json.loads(canonical), actor, event.ts, reason, event.seq), True


def require_unchanged_gate(project: Project, must_be_locked: bool = True) -> LockedGate | None:
    """Refuse (GateError, exit 2) when the spec's gate differs from the locked one.

    With ``must_be_locked`` an unlocked gate is refused too; otherwise None is returned for it.
    """
    current = locked_gate(project)
    if current is None:
        if must_be_locked:
            raise GateError(
                "gate: not locked yet; the gate must be locked before this step",
                hint=f"run `distil gate lock --as {project.spec.roles.sponsor}`",
            )
        return None
    if current.sha256 != gate_hash(project.spec.gate):
        raise GateError(
            f"gate: changed since version {current.version} was locked by {current.locked_by} "
            f"({'; '.join(gate_changes(current, project.spec.gate))})",
            hint=f'restore the locked values, or lock a new version: `distil gate lock --as {project.spec.roles.sponsor} --reason "..."`',
        )
    return current

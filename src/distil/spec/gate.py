"""The success gate: locked in the ledger before anything is built, checked by every step that relies on it.

The lock covers the ``cost`` section too: prices and volume decide the payback threshold, so raising the
teacher's price after the lock is a gate change like lowering ``fidelity_min``. Locks written before the
cost was covered (their canonical form is the gate alone) are still read, and compared on the gate alone.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from distil.errors import GateError, RoleError
from distil.ledger.keys import signer_for
from distil.ledger.store import canonical_json, sha256_text
from distil.spec.io import Project
from distil.spec.models import Cost, Gate, Spec
from distil.spec.names import same_person

# Thresholds added after gates were first locked. While one is unset it is left out of the locked form, so every
# gate locked before it existed (which was judged without it) keeps its hash and still verifies.
ADDED_AFTER_LOCKS = ("min_label_recall", "size_max_bytes")


def gate_terms(gate: Gate) -> dict[str, Any]:
    """The gate as a lock holds it: every threshold, less those of ``ADDED_AFTER_LOCKS`` that are unset."""
    terms = gate.model_dump(mode="json")
    return {k: v for k, v in terms.items() if not (k in ADDED_AFTER_LOCKS and v is None)}


def gate_as_locked(gate: Gate, locked_thresholds: dict[str, Any]) -> dict[str, Any]:
    """The gate in the form ``locked_thresholds`` holds it: an added threshold the lock spells out, even unset, is
    kept, so a lock written either way is compared like for like."""
    full = gate.model_dump(mode="json")
    return {**gate_terms(gate), **{k: full[k] for k in ADDED_AFTER_LOCKS if k in locked_thresholds}}


def canonical_gate(gate: Gate) -> str:
    return canonical_json(gate_terms(gate))


def gate_hash(gate: Gate) -> str:
    return sha256_text(canonical_gate(gate))


def locked_terms(spec: Spec) -> dict[str, Any]:
    """What a gate lock covers: the thresholds and the cost section they are judged with."""
    return {"gate": gate_terms(spec.gate), "cost": spec.cost.model_dump(mode="json")}


def terms_hash(spec: Spec) -> str:
    return sha256_text(canonical_json(locked_terms(spec)))


def cost_as_locked(spec: Spec, locked_cost: dict[str, Any]) -> dict[str, Any]:
    """The spec's cost section as a lock written before some of its fields existed would hold it: a field the
    lock lacks is left out while it keeps its default (the lock was judged with that default), so adding a
    field to ``cost`` does not change every earlier lock."""
    cost = spec.cost.model_dump(mode="json")
    defaults = Cost().model_dump(mode="json")
    return {k: v for k, v in cost.items() if k in locked_cost or v != defaults.get(k)}


@dataclass(frozen=True)
class LockedGate:
    version: int
    sha256: str
    thresholds: dict[str, Any]
    locked_by: str
    locked_at: str
    reason: str
    event_seq: int
    cost: dict[str, Any] | None = None  # None: a lock from before the cost section was covered
    signed: bool = False

    def matches(self, spec: Spec) -> bool:
        gate = gate_as_locked(spec.gate, self.thresholds)
        if self.cost is None:
            return self.sha256 == sha256_text(canonical_json(gate))
        terms = {"gate": gate, "cost": cost_as_locked(spec, self.cost)}
        return self.sha256 == sha256_text(canonical_json(terms))


def locked_gate(project: Project) -> LockedGate | None:
    """The newest locked gate version, or None when the gate was never locked. Only a row bound to its
    (signed, where the spec sets keys) ``gate.locked`` event counts: a forged row is refused, not read."""
    row = project.ledger.verified_latest("gates")
    if row is None:
        return None
    event = project.ledger.event(row["event_seq"])
    canonical = json.loads(row["canonical"])
    covers_cost = isinstance(canonical, dict) and set(canonical) == {"gate", "cost"}
    return LockedGate(
        version=row["version"],
        sha256=row["sha256"],
        thresholds=canonical["gate"] if covers_cost else canonical,
        locked_by=row["locked_by"],
        locked_at=event.ts if event else "",
        reason=row["reason"],
        event_seq=row["event_seq"],
        cost=canonical["cost"] if covers_cost else None,
        signed=bool(event and event.payload.get("signature")),
    )


def gate_changes(locked: LockedGate, spec: Spec) -> list[str]:
    """What differs between the locked terms and the spec's, one "field old → new" per change."""
    now = gate_as_locked(spec.gate, locked.thresholds)
    changes = [
        f"{k} {locked.thresholds.get(k)!r} → {now.get(k)!r}"
        for k in sorted(set(now) | set(locked.thresholds))
        if locked.thresholds.get(k) != now.get(k)
    ]
    if locked.cost is not None:
        cost = cost_as_locked(spec, locked.cost)
        changes += [
            f"cost.{k} {locked.cost.get(k)!r} → {cost.get(k)!r}"
            for k in sorted(set(cost) | set(locked.cost))
            if locked.cost.get(k) != cost.get(k)
        ]
    return changes


def lock_gate(project: Project, actor: str, reason: str = "") -> tuple[LockedGate, bool]:
    """Lock the spec's gate as ``actor`` (who must be the sponsor). Returns (gate, newly_locked)."""
    sponsor = project.spec.roles.sponsor
    if not same_person(actor, sponsor):
        raise RoleError(
            f"roles.sponsor: only the sponsor ({sponsor}) may lock the gate, not {actor or 'an unnamed user'}",
            hint=f"run `distil gate lock --as {sponsor}`",
        )
    digest = terms_hash(project.spec)
    current = locked_gate(project)
    if current is not None and (
        current.sha256 == digest or (current.cost is not None and current.matches(project.spec))
    ):
        return current, False
    if current is not None and not reason.strip():
        raise GateError(
            f"gate: version {current.version} is already locked and the spec's gate or cost differs "
            f"({'; '.join(gate_changes(current, project.spec))})",
            hint=f'give the reason for a new version: `distil gate lock --as {sponsor} --reason "..."`',
        )
    signer = signer_for(project, actor)
    version = 1 if current is None else current.version + 1
    terms = locked_terms(project.spec)
    event = project.ledger.append(
        "gate.locked",
        {"version": version, "sha256": digest, **terms, "reason": reason},
        actor=actor,
        table="gates",
        row={
            "version": version,
            "sha256": digest,
            "canonical": canonical_json(terms),
            "locked_by": actor,
            "reason": reason,
        },
        signer=signer,
    )
    return LockedGate(
        version, digest, terms["gate"], actor, event.ts, reason, event.seq, terms["cost"], signer is not None
    ), True


def require_locked_gate(project: Project) -> LockedGate:
    """Refuse (GateError, exit 2) while the gate was never locked: no teacher is called, no data is built, before
    the sponsor has said what success is."""
    current = locked_gate(project)
    if current is None:
        sponsor = project.spec.roles.sponsor
        raise GateError(
            f"gate: not locked yet; no teacher is called before the sponsor ({sponsor}) locks the gate",
            hint=f"run `distil check`, then `distil gate lock --as {sponsor}`",
        )
    return current


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
    if not current.matches(project.spec):
        raise GateError(
            f"gate: changed since version {current.version} was locked by {current.locked_by} "
            f"({'; '.join(gate_changes(current, project.spec))})",
            hint="restore the locked values, or lock a new version: `distil gate lock --as "
            f'{project.spec.roles.sponsor} --reason "..."`',
        )
    return current

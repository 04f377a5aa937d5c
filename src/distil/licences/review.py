"""Licence reviews: what the registry proposes for a teacher, and the reviewer's signed act in the ledger.

A review is a ``licence.reviewed`` event written by the person the spec names in
``teachers[].licence.reviewed_by`` (signed with their key when the spec sets keys). It covers the
licence record as written at the time (its hash is in the payload), so editing the record afterwards
asks for a new review. A licence distil's registry does not know is refused until such a review exists.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from distil.errors import LicenceError, RoleError
from distil.ledger.keys import act_message, signature_holds, signer_for
from distil.ledger.store import Event, canonical_json, sha256_text
from distil.licences import Duty, LicenceEntry, find_licence
from distil.spec.io import Project
from distil.spec.models import Licence, Spec, TeacherSpec
from distil.spec.names import same_person

REVIEW_EVENT = "licence.reviewed"


def registry_entry(licence: Licence | None) -> LicenceEntry | None:
    """The registry entry a licence record names (by ``id``, else by ``name``), or None when unknown."""
    if licence is None:
        return None
    return find_licence(licence.id, "" if licence.id.strip() else licence.name)


def record_hash(licence: Licence) -> str:
    """What a review covers: the licence record as the spec writes it."""
    return sha256_text(canonical_json(licence.model_dump(mode="json")))


@dataclass(frozen=True)
class RecordedReview:
    teacher_id: str
    reviewer: str
    record_sha256: str
    permitted: str
    signed: bool
    event_seq: int
    ts: str


def _review_holds(event: Event, trusted: dict[str, str] | None) -> bool:
    """An unsigned review counts only where the spec sets no keys; a signed one only when its signature holds
    and the key is the reviewer's own in the spec."""
    signature = event.payload.get("signature")
    if not trusted:
        return signature is None or signature_holds(signature, act_message(event.kind, event.actor, event.payload))
    if not isinstance(signature, dict) or not signature_holds(
        signature, act_message(event.kind, event.actor, event.payload)
    ):
        return False
    return signature.get("key") == next((key for name, key in trusted.items() if same_person(name, event.actor)), None)


def recorded_reviews(project: Project) -> dict[str, RecordedReview]:
    """The newest review that holds, per teacher id."""
    out: dict[str, RecordedReview] = {}
    for event in project.ledger.events(kind=REVIEW_EVENT):
        payload = event.payload
        if not isinstance(payload.get("teacher_id"), str) or not _review_holds(event, project.spec.roles.keys or None):
            continue
        out[payload["teacher_id"]] = RecordedReview(
            payload["teacher_id"],
            event.actor,
            str(payload.get("record_sha256", "")),
            str(payload.get("distillation_permitted", "")),
            isinstance(payload.get("signature"), dict),
            event.seq,
            event.ts,
        )
    return out


def review_covers(review: RecordedReview | None, teacher: TeacherSpec) -> bool:
    """Whether ``review`` was made of the teacher's licence record as the spec writes it now."""
    return review is not None and teacher.licence is not None and review.record_sha256 == record_hash(teacher.licence)


def review_licence(project: Project, teacher_id: str, actor: str) -> Event:
    """Record ``actor``'s review of the teacher's licence record as a (signed) ``licence.reviewed`` event.

    The actor must be the reviewer the record names, and the record must state a verdict: the spec, not
    the ledger, is where the verdict is written, and the ledger holds who stood behind it and when.
    """
    spec = project.spec
    teacher = spec.teacher(teacher_id)
    where = f"teachers[{spec.teachers.index(teacher)}].licence"
    lic = teacher.licence
    if lic is None:
        raise LicenceError(
            f"{where}: teacher {teacher.id!r} has no licence record to review",
            hint="write its name, terms and distillation_permitted under teachers[].licence first",
        )
    if not lic.reviewed_by.strip():
        raise RoleError(
            f"{where}.reviewed_by is empty: name the person who read {teacher.id!r}'s terms",
            hint=f"set {where}.reviewed_by: {actor}, then run this again",
        )
    if not same_person(actor, lic.reviewed_by):
        raise RoleError(
            f"{where}.reviewed_by names {lic.reviewed_by}; only they may record this review, not {actor}",
            hint=f"run `distil licence review {teacher.id} --as {lic.reviewed_by}`",
        )
    if lic.distillation_permitted == "unknown":
        entry = registry_entry(lic)
        proposal = f" (the registry proposes {entry.distillation_permitted!r} under {entry.name})" if entry else ""
        raise LicenceError(
            f"{where}.distillation_permitted is unknown: write the verdict of the review{proposal}",
            hint=f"set {where}.distillation_permitted to yes, conditional or no",
        )
    entry = registry_entry(lic)
    payload: dict[str, Any] = {
        "teacher_id": teacher.id,
        "licence": lic.model_dump(mode="json"),
        "record_sha256": record_hash(lic),
        "distillation_permitted": lic.distillation_permitted,
        "registry": None
        if entry is None
        else {
            "id": entry.id,
            "distillation_permitted": entry.distillation_permitted,
            "review_required": entry.review_required,
            "source": str(entry.source.url),
            "version": entry.source.version,
        },
        "duties": [d.describe() for d in (entry.duties if entry else [])],
    }
    return project.ledger.append(REVIEW_EVENT, payload, actor=actor, signer=signer_for(project, actor))


# --- what the student inherits -------------------------------------------------------------------------


@dataclass(frozen=True)
class InheritedDuty:
    teacher_id: str
    licence: str  # the registry entry's name
    duty: Duty


def inherited_duties(spec: Spec) -> list[InheritedDuty]:
    """Every duty a student distilled from the spec's teachers inherits, per the registry."""
    out = []
    for teacher in spec.teachers:
        entry = registry_entry(teacher.licence)
        if entry is not None:
            out.extend(InheritedDuty(teacher.id, entry.name, duty) for duty in entry.duties)
    return out


def duty_lines(spec: Spec) -> list[str]:
    """The inherited duties in words, one line each, for reports and model cards."""
    return [f"{d.licence} (teacher {d.teacher_id}): {d.duty.describe()}" for d in inherited_duties(spec)]

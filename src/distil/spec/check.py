"""`distil check`: licence gating of teachers and qualification of the play's trigger."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from distil.errors import LicenceError
from distil.spec.io import Project
from distil.spec.models import Spec, TeacherSpec
from distil.spec.placeholders import is_placeholder


def licence_problem(spec: Spec, teacher: TeacherSpec, reviews: Mapping[str, Any] | None = None) -> str:
    """Why data may not be collected from ``teacher`` (empty when it may), naming the spec field.

    The registry's proposal is never a review: a named reviewer is always needed. A licence the registry
    does not know also needs that reviewer's recorded review (``reviews``: teacher id -> the newest
    ``licence.reviewed`` act, from :func:`distil.licences.review.recorded_reviews`; None skips that check).
    """
    from distil.licences.review import registry_entry, review_covers

    # a teacher written elsewhere (a stack's generalist in stack.yaml) is named by its id, not a place in the spec
    where = f"teachers[{spec.teachers.index(teacher)}].licence" if teacher in spec.teachers else f"{teacher.id}.licence"
    lic = teacher.licence
    if lic is None:
        return (
            f"{where}: teacher {teacher.id!r} has no licence record; distil collects no data before its terms are "
            "recorded"
        )
    if lic.distillation_permitted == "no":
        return f"{where}.distillation_permitted: teacher {teacher.id!r}'s terms do not permit distillation"
    entry = registry_entry(lic)
    named = f"{where}.id {lic.id!r}" if lic.id.strip() else f"{where}.name {lic.name or '(empty)'!r}"
    if not lic.reviewed_by.strip() or is_placeholder(lic.reviewed_by):
        if entry is not None:
            return (
                f"{where}.reviewed_by is empty for teacher {teacher.id!r}: the registry proposes "
                f"distillation_permitted: {entry.distillation_permitted} under {entry.name} ({entry.clause[:80]}), "
                "but a named person must read the terms"
            )
        if lic.distillation_permitted == "unknown":
            return (
                f"{where}.distillation_permitted is unknown and {where}.reviewed_by is empty for teacher {teacher.id!r}"
            )
        return (
            f"{named} is not in distil's licence registry and {where}.reviewed_by is empty for teacher {teacher.id!r}: "
            f"a named person must read its terms"
        )
    if entry is None and reviews is not None and not review_covers(reviews.get(teacher.id), teacher):
        return (
            f"{named} is not in distil's licence registry and its review is not recorded for teacher {teacher.id!r}: "
            f"run `distil licence review {teacher.id} --as {lic.reviewed_by}`"
        )
    return ""


def require_licence(spec: Spec, teacher: TeacherSpec, reviews: Mapping[str, Any] | None = None) -> None:
    """Raise LicenceError unless the teacher's recorded terms allow collecting data from it."""
    problem = licence_problem(spec, teacher, reviews)
    if problem:
        raise LicenceError(problem)


@dataclass
class Qualification:
    """What the spec says about the play's trigger: figures where it has them, a plain note where not."""

    play: str
    trigger: str
    figures: list[tuple[str, str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def monthly_costs(spec: Spec) -> tuple[float, float, float]:
    """(teacher spend, student spend, savings) per month from the cost section."""
    c = spec.cost
    teacher = c.teacher_per_1m_requests * c.monthly_requests / 1e6
    student = c.student_per_1m_requests * c.monthly_requests / 1e6
    return teacher, student, teacher - student


def qualify_play(spec: Spec) -> Qualification:
    q = Qualification(play=spec.play.kind, trigger=spec.play.trigger.strip())
    if not q.trigger:
        q.notes.append("play.trigger is empty: the spec gives no evidence in words that this play is worth running")
    c, gate, cur = spec.cost, spec.gate, spec.cost.currency
    if spec.play.kind == "cost":
        if c.monthly_requests == 0 or c.teacher_per_1m_requests == 0:
            q.notes.append("cost: no monthly volume or teacher price given, so the teacher spend cannot be shown")
        else:
            teacher, student, savings = monthly_costs(spec)
            q.figures.append(("monthly teacher spend", f"{teacher:,.2f} {cur}"))
            q.figures.append(("monthly student spend", f"{student:,.2f} {cur}"))
            q.figures.append(("monthly savings", f"{savings:,.2f} {cur}"))
            q.notes.append(
                "cost: an estimate from the spec's typed prices; `distil evaluate` measures the payback the gate is "
                "judged on (throughput on this machine, escalations, the ledger's build cost)"
            )
            if savings <= 0:
                q.notes.append("cost: the student costs as much as the teacher; a cost play cannot pay back")
            elif c.build_cost > 0:
                months = c.build_cost / savings
                q.figures.append(("payback of the build cost", f"{months:.1f} months"))
                if gate.payback_months_max is not None:
                    needed = c.build_cost / gate.payback_months_max
                    q.figures.append(("savings the gate's payback needs", f"{needed:,.2f} {cur}/month"))
    elif spec.play.kind == "latency":
        if gate.p95_latency_max_vs_teacher is not None:
            q.figures.append(("p95 latency target", f"≤ {gate.p95_latency_max_vs_teacher:.0%} of the teacher's"))
        if gate.p95_latency_max_ms is not None:
            q.figures.append(("p95 latency target", f"≤ {gate.p95_latency_max_ms:g} ms"))
        if gate.p95_latency_max_vs_teacher is None and gate.p95_latency_max_ms is None:
            q.notes.append(
                "latency: the gate sets no latency target (gate.p95_latency_max_vs_teacher or p95_latency_max_ms)"
            )
        q.notes.append("latency: the teacher's own latency is measured by `distil evaluate`; none is recorded yet")
    elif spec.play.kind == "stability":
        if gate.retraining_path:
            q.figures.append(("retraining path", gate.retraining_path))
        else:
            q.notes.append("stability: gate.retraining_path is empty; document how the student is retrained")
    elif spec.play.kind == "specialization":
        if spec.data.gold:
            q.figures.append(("domain evaluation set", spec.data.gold))
        else:
            q.notes.append(
                "specialization: data.gold is empty; a domain evaluation set is the evidence this play needs"
            )
    return q


def check_project(project: Project) -> tuple[Qualification, list[str]]:
    """Qualification of the play and what stops the project before any data is collected: placeholders left
    by `distil init`, a gate with no threshold, licence problems of every teacher, data files that are missing
    (empty when none). The data files themselves are read by :func:`distil.data.audit.audit_data_files`."""
    from distil.data.audit import data_files
    from distil.licences.review import recorded_reviews
    from distil.spec.placeholders import placeholder_problems

    spec = project.spec
    reviews = recorded_reviews(project)
    problems = placeholder_problems(spec)
    problems += [
        p
        for t in spec.teachers
        if not (t.licence and is_placeholder(t.licence.reviewed_by))  # already named as a placeholder
        and (p := licence_problem(spec, t, reviews))
    ]
    for name, path in data_files(project):
        if not path.exists():
            problems.append(
                f"{name}: {path} does not exist; write one JSON object per line with `{spec.data.fields.input}`"
                + (f" and `{spec.data.fields.label}`" if spec.task.kind == "classify" else "")
                + " (or point data.fields at your columns)"
            )
    return qualify_play(spec), problems

"""Build the teacher a spec names: licence checked first, registered in the ledger once per fingerprint."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from distil.data.sources import read_seed_inputs
from distil.errors import TeacherError
from distil.spec.check import require_licence
from distil.spec.gate import require_locked_gate
from distil.spec.io import Project
from distil.spec.models import Spec, TeacherSpec
from distil.teachers.base import choose_shots
from distil.teachers.batch_journal import LedgerJournal
from distil.teachers.hf_local import HFLocalTeacher
from distil.teachers.openai_compat import OpenAICompatTeacher
from distil.teachers.shared_weights import LOCAL_SCHEMES, SharedLocalModels
from distil.teachers.urls import public_source, public_url


def seed_shots(project: Project) -> list[tuple[str, str]]:
    """The few-shot examples the spec's seeds give (empty when the seeds file is missing or unlabelled)."""
    seeds = project.path(project.spec.data.seeds)
    if not seeds.is_file():
        return []
    labelled = [(item.input, item.label) for item in read_seed_inputs(seeds, project.spec) if item.label]
    return choose_shots(project.spec.task, labelled)


def register_teacher(project: Project, teacher: Any, teacher_spec: TeacherSpec, actor: str = "") -> bool:
    """Append ``teacher.registered`` unless this teacher id + fingerprint is already in the ledger.

    A GGUF teacher runs from a dequantized copy in the user cache; that copy's content hash is recorded
    too, and a later process whose copy hashes differently for the same GGUF is refused."""
    ledger = project.ledger
    dequantized = _dequantized_hash(teacher_spec)
    known = ledger.verified_rows(
        "teachers", "teacher_id = ? AND fingerprint = ?", (teacher_spec.id, teacher.fingerprint)
    )
    for row in known:
        event = ledger.event(row["event_seq"])
        recorded = event.payload.get("dequantized_sha256") if event else None
        if dequantized and recorded and recorded != dequantized:
            raise TeacherError(
                f"teacher {teacher_spec.id!r}: its dequantized cache hashes to {dequantized[:19]}…, not the "
                f"{recorded[:19]}… ledger row {row['event_seq']} (teacher.registered) recorded for this GGUF file",
                hint="delete the teacher's folder under the distil cache (teachers/); the next run rebuilds it",
            )
    if known:
        return False
    licence = teacher_spec.licence.model_dump(mode="json") if teacher_spec.licence else {}
    payload = {
        "teacher_id": teacher_spec.id,
        "source": public_source(teacher_spec.source),
        "fingerprint": teacher.fingerprint,
        "capabilities": teacher.capabilities.as_dict(),
        "licence": licence,
    }
    if dequantized:
        payload["dequantized_sha256"] = dequantized
    ledger.append(
        "teacher.registered",
        payload,
        actor=actor or project.spec.roles.driver,  # every act has an actor: the driver calls the teacher
        table="teachers",
        row={"teacher_id": teacher_spec.id, "fingerprint": teacher.fingerprint, "licence": licence},
    )
    return True


def _dequantized_hash(teacher_spec: TeacherSpec) -> str | None:
    """A GGUF teacher's cached folder hash (from its bytes, once per process); None for other sources."""
    if teacher_spec.scheme != "gguf":
        return None
    from distil.teachers.loading import dequantized_fingerprint, local_model_folder

    return dequantized_fingerprint(local_model_folder(teacher_spec.source)[0])


def build_teacher(
    spec: Spec | Project,
    teacher_spec: TeacherSpec | None = None,
    *,
    project: Project | None = None,
    shots: Sequence[tuple[str, str]] | None = None,
    actor: str = "",
    shared: SharedLocalModels | None = None,
    **options: Any,
):
    """The teacher for ``teacher_spec`` (default: the spec's first teacher).

    Pass the :class:`Project` (as ``spec`` or ``project=``) so the few-shot examples come from the
    project's seeds and the teacher is recorded in the ledger; with a bare Spec, give ``shots``.
    A project's gate must be locked, and the licence is checked, before anything is loaded or called.
    ``shared``: a local teacher borrows its weights from there (loaded once for every teacher on the same files).
    """
    if isinstance(spec, Project):
        project, spec = spec, spec.spec
    teacher_spec = teacher_spec or spec.teacher()
    from distil.licences.review import recorded_reviews

    if project is not None:
        require_locked_gate(project)  # nothing is asked of a teacher before the sponsor has locked the gate
    require_licence(spec, teacher_spec, recorded_reviews(project) if project is not None else None)
    if shots is None:
        shots = seed_shots(project) if project is not None else []
    scheme = teacher_spec.scheme
    if scheme in LOCAL_SCHEMES:
        if shared is not None and "model" not in options:
            options = {**shared.teacher_parts(teacher_spec.source), **options}
        teacher = HFLocalTeacher(teacher_spec, spec.task, shots, **options)
    elif scheme == "openai":
        per_call = spec.cost.teacher_per_1m_requests / 1e6
        if teacher_spec.batch:
            per_call *= 1.0 - teacher_spec.batch_discount
        teacher = OpenAICompatTeacher(teacher_spec, spec.task, shots, cost_per_call=per_call, **options)
        if project is not None:
            base_url = public_url(teacher.base_url)
            teacher.batch_journal = LedgerJournal(project.ledger, teacher_spec.id, base_url, actor)
    else:
        raise TeacherError(
            f"teachers[].source {teacher_spec.source!r}: {scheme}: sources cannot label data",
            hint="use hf:, gguf: or openai:",
        )
    if project is not None:
        register_teacher(project, teacher, teacher_spec, actor=actor)
    return teacher

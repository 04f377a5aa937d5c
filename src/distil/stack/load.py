"""Check and load a stack: every specialist (and the router model) is a shipped run of a project whose ledger
verifies.

The checks run before any model is loaded, in the order a reader of the paper trail would make them: the
project's whole ledger verifies (`distil ledger verify`: the chain, every typed row, signatures, recorded files);
the run named (default: the newest run decided ship) has a newest verified decision of ``ship``
(:func:`distil.serve.deployment.ship_decision`, the check `distil serve` makes). A failure is one line naming the
specialist and the project, exit 2.

Loading reuses `distil serve`'s: :func:`distil.serve.runs.load_served` loads the student (its files checked against
the ledger first) and its calibrated threshold; the generalist is built with each specialist's project, so it
answers that specialist's task with its labels, prompt and few-shot examples, and its licence is checked there. A
local generalist's weights are loaded once for the whole stack (:class:`~distil.teachers.shared_weights.
SharedLocalModels`): each specialist's teacher keeps its own prompt state over the one model, and all of them take
that model's one lock.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from distil.errors import DeploymentError, DistilError, LedgerError, SpecError
from distil.runs import latest_run
from distil.serve.deployment import ship_decision
from distil.serve.runs import LockedPredictor, ServedModel, load_served
from distil.spec.io import Project, load_project
from distil.spec.models import TeacherSpec
from distil.stack.spec import CALIBRATE, Stack, TeacherRef
from distil.teachers.registry import build_teacher
from distil.teachers.shared_weights import LOCAL_SCHEMES, SharedLocalModels

ROUTER = "router"  # how the router model is named in messages and /v1/models


@dataclass(frozen=True)
class CheckedRun:
    """A specialist (or the router) whose project's ledger verifies and whose run was decided ship."""

    name: str
    project: Project
    run_id: str
    decision_seq: int


@dataclass
class LoadedStack:
    """What the stack server serves: each specialist as `distil serve` would serve it, escalating to the
    generalist; the router model (no teacher) when the stack routes by one."""

    stack: Stack
    specialists: dict[str, ServedModel]
    router: ServedModel | None
    checked: list[CheckedRun]
    generalist_id: str


def _about(stack: Stack, name: str, exc: DistilError) -> DistilError:
    """``exc`` again, its message prefixed by the stack file and the specialist it concerns."""
    return type(exc)(f"{stack.path.name}: {name}: {exc.message}", hint=exc.hint)


def open_project(stack: Stack, name: str, relative: str) -> Project:
    try:
        return load_project(stack.project_path(relative))
    except DistilError as exc:
        raise _about(stack, name, exc) from None


def require_verified_ledger(stack: Stack, name: str, project: Project) -> None:
    """The project's whole ledger verifies, recorded files included, as `distil ledger verify` checks it."""
    result = project.ledger.verify()
    if not result.ok:
        raise LedgerError(
            f"{stack.path.name}: {name}: the ledger of {project.spec_path} does not verify: {result.reason}",
            hint=f"run `distil ledger verify --spec {project.spec_path}`; restore its .distil/ledger.db from a copy "
            "you trust",
        )


def check_run(stack: Stack, name: str, relative: str, run_id: str | None) -> CheckedRun:
    """The run ``name`` serves, after its project's ledger verifies and its newest decision is ship."""
    project = open_project(stack, name, relative)
    require_verified_ledger(stack, name, project)
    try:
        run = run_id or latest_run(project, shipped_first=True).run_id
    except DistilError as exc:
        raise _about(stack, name, exc) from None
    decision = ship_decision(project, run)
    if decision is None:
        newest = project.ledger.verified_latest("decisions", "run_id = ?", (run,))
        said = f"its newest decision is {newest['decision']}" if newest else "it has no decision"
        raise DeploymentError(
            f"{stack.path.name}: {name}: run {run} of {project.spec_path} was not decided ship ({said}); a stack "
            "serves shipped runs only",
            hint=f"run `distil decide --spec {project.spec_path} --as <validator>`, or name a shipped run in "
            f"{stack.path.name}",
        )
    return CheckedRun(name, project, run, int(decision["event_seq"]))


def check_stack(stack: Stack) -> list[CheckedRun]:
    """Every specialist, then the router model (named ``router``) when the stack routes by one."""
    checked = [check_run(stack, s.name, s.project, s.run) for s in stack.spec.specialists]
    if stack.spec.routing.by == "router":
        ref = stack.spec.routing.router
        assert ref is not None  # the spec refuses `by: router` without one
        checked.append(check_run(stack, ROUTER, ref.project, ref.run))
    return checked


def generalist_spec(stack: Stack) -> TeacherSpec:
    """The generalist's teacher entry: written in the stack file, or found in the project it names."""
    given = stack.spec.generalist
    if isinstance(given, TeacherSpec):
        return given
    assert isinstance(given, TeacherRef)
    project = open_project(stack, "generalist", given.project)
    try:
        return project.spec.teacher(given.teacher)
    except DistilError as exc:
        raise _about(stack, "generalist", exc) from None


def build_generalist(project: Project, teacher: TeacherSpec, shared: SharedLocalModels) -> LockedPredictor:
    """The generalist for ``project``'s task (its labels, prompt and seeds' few-shot examples); a local one runs on
    the weights in ``shared``, loaded by the first specialist that asks, and takes their lock."""
    built = build_teacher(project, teacher, shared=shared)
    if teacher.scheme in LOCAL_SCHEMES:
        return LockedPredictor(built, lock=shared.weights(teacher.source).lock)
    return LockedPredictor(built)


def load_specialist(
    stack: Stack, checked: CheckedRun, teacher: TeacherSpec | None, shared: SharedLocalModels | None = None
) -> ServedModel:
    """The specialist as `distil serve` loads it, with the generalist (built for its task, on the weights in
    ``shared``) as its teacher and the stack's limits; ``teacher`` None: nothing escalates (the router model)."""
    entry = next((s for s in stack.spec.specialists if s.name == checked.name), None)
    threshold = 0.0 if entry is None else None if entry.threshold == CALIBRATE else float(entry.threshold)
    try:
        served = load_served(checked.project, checked.run_id, threshold=threshold, with_teacher=False)
        if served.kind != "classify":
            raise DeploymentError(
                f"run {checked.run_id} is a {served.kind} task; a stack serves classify specialists (the threshold "
                "for escalation is a label's probability)"
            )
        shared = shared if shared is not None else SharedLocalModels()
        generalist = build_generalist(checked.project, teacher, shared) if teacher is not None else None
    except DistilError as exc:
        raise _about(stack, checked.name, exc) from None
    return replace(
        served,
        teacher=generalist,
        teacher_id=teacher.id if teacher is not None else None,
        threshold=served.threshold if teacher is not None else 0.0,
        limits=stack.spec.serve,
    )


def require_router_labels(stack: Stack, router: ServedModel) -> None:
    """Every label the router model can give names a specialist: its top label is where a request goes."""
    names = {s.name for s in stack.spec.specialists}
    unknown = [label for label in router.labels if label not in names]
    if unknown:
        raise SpecError(
            f"{stack.path.name}: router: run {router.run_id} has labels {', '.join(map(repr, unknown))} that name no "
            f"specialist ({', '.join(sorted(names))})",
            hint="train the router on a task whose labels are the specialists' names, or rename the specialists",
        )


def load_stack(stack: Stack, with_generalist: bool = True) -> LoadedStack:
    """Check every specialist (and the router), then load them; nothing is loaded when a check fails."""
    checked = check_stack(stack)
    teacher = generalist_spec(stack)
    shared = SharedLocalModels()  # one copy of a local generalist's weights, whatever the number of specialists
    specialists = {
        c.name: load_specialist(stack, c, teacher if with_generalist else None, shared)
        for c in checked
        if c.name != ROUTER
    }
    router = None
    for c in checked:
        if c.name == ROUTER:
            router = load_specialist(stack, c, None)
            require_router_labels(stack, router)
    return LoadedStack(stack, specialists, router, checked, teacher.id)

"""``stack.yaml``: several shipped specialists, one generalist they escalate to, and how a request finds its
specialist.

    name: support
    specialists:
      - name: billing
        project: billing/distil.yaml        # relative to stack.yaml
        run: r7                             # default: the project's newest run decided ship
        threshold: calibrate                # default: the run's calibrated threshold, as `distil serve` finds it
      - name: tech
        project: tech/distil.yaml
        threshold: 0.8
    generalist:
      project: billing/distil.yaml          # a teacher entry of that project ...
      teacher: big
      # ... or a teacher entry written here: {id, source, licence, ...} as under `teachers:` in distil.yaml
    routing:
      by: task                              # the request's `task` field names the specialist
      # by: router, router: {project: router/distil.yaml, run: r2}   # a classify student whose labels are the names
    serve: {queue_depth: 64, ...}           # as `serve:` in distil.yaml, for the whole stack

The models map 1:1 onto the file; :func:`load_stack_spec` turns every failure into one ``SpecError`` line naming the
file and the field.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import yaml
from pydantic import Field, ValidationError, field_validator, model_validator

from distil.errors import SpecError
from distil.spec.io import _describe, _field_path, _UniqueKeyLoader
from distil.spec.models import ServeSpec, TeacherSpec, _Model
from distil.spec.names import run_id_problem

CALIBRATE = "calibrate"  # the word distil.yaml's router.threshold uses
CALIBRATE_ALIASES = ("calibrated",)  # read as CALIBRATE: the word stack.yaml first used
GENERALIST = "generalist"  # the `model` name that asks the generalist alone
_NAME = r"^[a-z0-9][a-z0-9_-]*$"  # a specialist's name is a `model` name, a metric label and a router label


class SpecialistEntry(_Model):
    name: str = Field(pattern=_NAME, description="The specialist's name: a `model` name, a `task` value, a label.")
    project: str = Field(min_length=1, description="Path to the specialist's distil.yaml, relative to stack.yaml.")
    run: str | None = Field(None, description="Run id to serve (default: the project's newest run decided ship).")
    threshold: float | Literal["calibrate"] = Field(
        CALIBRATE,
        description="Confidence at or above which the specialist answers, else the generalist does; 'calibrate': "
        "the project's router.threshold, else calibrated on the run's validation split (as `distil serve`).",
    )

    @field_validator("threshold", mode="before")
    @classmethod
    def _one_word(cls, value: object) -> object:
        return CALIBRATE if isinstance(value, str) and value.strip() in CALIBRATE_ALIASES else value

    @field_validator("run")
    @classmethod
    def _plain_run_id(cls, value: str | None) -> str | None:
        if value is not None and (problem := run_id_problem(value)):
            raise ValueError(problem)
        return value

    @field_validator("threshold")
    @classmethod
    def _threshold_range(cls, value: float | str) -> float | str:
        if not isinstance(value, str) and not 0.0 <= value <= 1.0:
            raise ValueError(f"must be in [0, 1] or 'calibrate', got {value}")
        return value


class TeacherRef(_Model):
    project: str = Field(min_length=1, description="Path to a distil.yaml whose `teachers:` holds the entry.")
    teacher: str | None = Field(None, description="The entry's id (default: that project's first teacher).")


class RunRef(_Model):
    project: str = Field(min_length=1, description="Path to the router's distil.yaml, relative to stack.yaml.")
    run: str | None = Field(None, description="Run id (default: the project's newest run decided ship).")


class Routing(_Model):
    by: Literal["task", "router"] = Field(
        "task",
        description="task: the request's `task` field (or a specialist's name as `model`) picks the specialist; "
        "router: a classify student whose labels are the specialists' names picks it when the request names none.",
    )
    router: RunRef | None = Field(None, description="The router model, with `by: router`.")

    @model_validator(mode="after")
    def _router_given(self) -> Routing:
        if self.by == "router" and self.router is None:
            raise ValueError("routing.router: give {project, run} of the router model with `by: router`")
        return self


class StackSpec(_Model):
    name: str = Field(pattern=_NAME, description="The stack's name: the `model` name that routes a request.")
    specialists: list[SpecialistEntry] = Field(min_length=1, description="The shipped students that answer.")
    generalist: TeacherRef | TeacherSpec = Field(
        description="Who answers what a specialist is unsure of: {project, teacher} naming a teacher entry, or an "
        "entry written here. It answers each specialist's task with that specialist's labels and prompt."
    )
    routing: Routing = Field(default_factory=Routing, description="How a request finds its specialist.")
    serve: ServeSpec = Field(default_factory=ServeSpec, description="Queues, deadlines and limits, per specialist.")

    @model_validator(mode="after")
    def _distinct_names(self) -> StackSpec:
        names = [s.name for s in self.specialists]
        taken = {self.name, GENERALIST, "distil", "student", "teacher"}
        for name in names:
            if names.count(name) > 1:
                raise ValueError(f"specialists: the name {name!r} is given twice; names must differ")
            if name in taken:
                raise ValueError(f"specialists: the name {name!r} is reserved (the stack's name or a model alias)")
        return self


@dataclass(frozen=True)
class Stack:
    """A stack spec and the file it was read from; project paths resolve against the file's folder."""

    path: Path
    spec: StackSpec

    @property
    def root(self) -> Path:
        return self.path.parent

    @property
    def state_dir(self) -> Path:
        """Where the stack keeps what it writes (the traffic log, monitor reports)."""
        return self.root / ".distil" / f"stack-{self.spec.name}"

    def project_path(self, relative: str | os.PathLike[str]) -> Path:
        p = Path(relative).expanduser()
        return p if p.is_absolute() else self.root / p

    def specialist(self, name: str) -> SpecialistEntry:
        for entry in self.spec.specialists:
            if entry.name == name:
                return entry
        raise SpecError(f"{self.path}: no specialist named {name!r}")


def stack_from_text(text: str, source: str) -> StackSpec:
    try:
        data = yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise SpecError(
            f"{source}: malformed YAML{where}: {getattr(exc, 'problem', None) or 'not valid YAML'}"
        ) from None
    if not isinstance(data, dict):
        raise SpecError(f"{source}: the top level must be a mapping (name, specialists, generalist, routing)")
    try:
        return StackSpec.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        message = _describe(first)
        names_itself = first["type"] == "value_error" and (not first["loc"] or message.startswith(str(first["loc"][0])))
        where = "" if names_itself else f"{_field_path(first['loc'])} "
        raise SpecError(f"{source}: {where}{message}") from None


def load_stack_spec(path: str | os.PathLike[str]) -> Stack:
    """The stack file at ``path``, validated; SpecError naming the file and the field otherwise."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise SpecError(f"{path}: stack file not found", hint="write a stack.yaml (see docs/stack.md)")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise SpecError(f"{path}: cannot read the stack file: {exc}") from None
    return Stack(path=path.resolve(), spec=stack_from_text(text, str(path)))

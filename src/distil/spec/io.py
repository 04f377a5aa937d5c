"""Load and validate ``distil.yaml``; locate the project folder and its state folder ``.distil/``."""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from distil.errors import SpecError, StateError
from distil.spec.models import Spec

DEFAULT_SPEC = "distil.yaml"
_UNION_MEMBERS = {"float", "int", "str", "bool"}  # pydantic's names for the members of `float | Literal[...]`
# Fields that moved: a spec written before the move gets told where the field lives now.
MOVED = {"cost.teacher_batch_discount": "teachers[i].batch_discount (the discount is each API teacher's own term)"}


def _field_path(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif str(part).startswith(("function-", "literal[", "union[")) or "[" in str(part) or part in _UNION_MEMBERS:
            continue  # pydantic's names for union members and validators say nothing to a user
        else:
            out += ("." if out else "") + str(part)
    return out or "(top level)"


def _describe(error: dict[str, Any]) -> str:
    kind, ctx, got = error["type"], error.get("ctx") or {}, error.get("input")
    shown = repr(got) if not isinstance(got, (dict, list)) else type(got).__name__
    if len(shown) > 60:
        shown = shown[:57] + "..."
    bounds = {
        "greater_than_equal": "≥ {ge}",
        "less_than_equal": "≤ {le}",
        "greater_than": "> {gt}",
        "less_than": "< {lt}",
    }
    if kind in bounds:
        shown_ctx = {k: f"{v:g}" if isinstance(v, float) else v for k, v in ctx.items()}
        return f"must be {bounds[kind].format(**shown_ctx)}, got {shown}"
    if kind == "finite_number":
        return f"must be a finite number, got {shown}"
    if kind == "extra_forbidden":
        moved = MOVED.get(_field_path(error["loc"]))
        return f"has moved to {moved}" if moved else "is not a known field (check its spelling or remove it)"
    if kind == "missing":
        return "is required"
    message = error["msg"].removeprefix("Value error, ")
    return f"{message[0].lower()}{message[1:]}, got {shown}" if kind != "value_error" else message


def spec_from_data(data: Any, source: str = DEFAULT_SPEC) -> Spec:
    """Validate already-parsed YAML; every failure becomes one :class:`SpecError` line naming the field."""
    if not isinstance(data, dict):
        raise SpecError(
            f"{source}: the top level must be a mapping of sections (task, play, roles, ...), got {type(data).__name__}"
        )
    try:
        return Spec.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        more = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
        message = _describe(first)
        # a rule across fields (a model validator) names its own fields: "task.labels: ..." under loc ("task",)
        names_itself = first["type"] == "value_error" and (not first["loc"] or message.startswith(str(first["loc"][0])))
        where = "" if names_itself else f"{_field_path(first['loc'])} "
        raise SpecError(f"{source}: {where}{message}{more}") from None
    except (ValueError, TypeError, RecursionError) as exc:
        raise SpecError(f"{source}: invalid spec: {exc}") from None


class _UniqueKeyLoader(yaml.SafeLoader):
    """A SafeLoader that refuses a key written twice in one mapping: YAML keeps the last silently, so a second
    ``fidelity_min`` (or a second ``gate:`` section) would be what gets locked, unseen by a reader of the first."""


def _construct_unique_mapping(loader: _UniqueKeyLoader, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
    seen: dict[Any, int] = {}
    for key_node, _ in node.value:
        if key_node.tag == "tag:yaml.org,2002:merge":
            continue
        key = loader.construct_object(key_node, deep=deep)
        line = key_node.start_mark.line + 1
        try:
            first = seen.setdefault(key, line)
        except TypeError:
            continue  # an unhashable key: the mapping constructor reports it
        if first != line:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r} at line {line} (first at line {first})", key_node.start_mark
            )
    return yaml.SafeLoader.construct_mapping(loader, node, deep=deep)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_unique_mapping)


def spec_from_text(text: str, source: str = DEFAULT_SPEC) -> Spec:
    try:
        data = yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or "not valid YAML"
        raise SpecError(f"{source}: malformed YAML{where}: {problem}") from None
    except (ValueError, TypeError, RecursionError) as exc:
        raise SpecError(f"{source}: malformed YAML: {exc}") from None
    return spec_from_data(data, source)


@dataclass(frozen=True)
class Project:
    """A spec and the folder it lives in. State goes to ``<folder>/.distil/``."""

    spec_path: Path
    spec: Spec

    @property
    def root(self) -> Path:
        return self.spec_path.parent

    @property
    def state_dir(self) -> Path:
        return self.root / ".distil"

    @property
    def ledger_path(self) -> Path:
        return self.state_dir / "ledger.db"

    @property
    def data_dir(self) -> Path:
        return self.state_dir / "data"

    @property
    def runs_dir(self) -> Path:
        return self.state_dir / "runs"

    def path(self, relative: str | os.PathLike[str]) -> Path:
        """A path from the spec (seeds, gold set) resolved against the project folder."""
        p = Path(relative)
        return p if p.is_absolute() else self.root / p

    @cached_property
    def ledger(self):  # noqa: ANN201 - import kept lazy so spec loading stays light
        from distil.ledger.store import Ledger

        # the ledger opened through a project trusts only the keys its spec gives people
        return Ledger(self.ledger_path, root=self.root, trusted_keys=self.spec.roles.keys or None)


def check_state_dir(state_dir: Path) -> None:
    """Refuse a ``.distil`` that is there but is not a folder (or a symlink to one): every step would fail
    on it later with an OS error; a missing one is fine, the first step that writes creates it."""
    if not os.path.lexists(state_dir):
        return
    if state_dir.is_symlink():
        try:
            target = state_dir.resolve(strict=True)
        except FileNotFoundError:
            raise StateError(f"{state_dir}: a symlink to {os.readlink(state_dir)}, which does not exist") from None
        except (RuntimeError, OSError):  # Python raises RuntimeError on a loop before 3.13, OSError (ELOOP) after
            raise StateError(f"{state_dir}: a symlink loop; it leads back to itself") from None
        if not target.is_dir():
            raise StateError(f"{state_dir}: a symlink to {target}, which is not a folder")
    elif not state_dir.is_dir():
        raise StateError(f"{state_dir}: not a folder (a file is in the way of the project's state folder)")


def load_project(spec_path: str | os.PathLike[str] | None = None) -> Project:
    path = Path(spec_path or DEFAULT_SPEC).expanduser()
    if path.is_dir():
        path = path / DEFAULT_SPEC
    if not path.is_file():
        raise SpecError(f"{path}: spec not found", hint="run `distil init` to create one, or pass --spec PATH")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise SpecError(f"{path}: cannot read the spec: {exc}") from None
    project = Project(spec_path=path.resolve(), spec=spec_from_text(text, source=str(path)))
    check_state_dir(project.state_dir)
    return project

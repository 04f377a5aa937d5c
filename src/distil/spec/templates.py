"""`distil init`: a shipped example, or the commented spec of a new task (see :mod:`distil.spec.starter`)."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel

from distil.errors import SpecError
from distil.files import write_text_atomic
from distil.spec.io import DEFAULT_SPEC, spec_from_text
from distil.spec.models import PLAYS, Gate, Spec

# Each play's default gate (the trigger the play is judged on, plus a quality floor).
PLAY_GATES: dict[str, dict[str, Any]] = {
    "cost": {"quality_min_vs_teacher": 0.95, "fidelity_min": 0.9, "payback_months_max": 6, "max_iterations": 3},
    "latency": {
        "p95_latency_max_vs_teacher": 0.33,
        "fidelity_min": 0.9,
        "quality_min_vs_teacher": 0.95,
        "max_iterations": 3,
    },
    "stability": {
        "quality_min_vs_teacher": 0.95,
        "fidelity_min": 0.9,
        "retraining_path": "distil iterate --from-traffic, run by the operator each refresh cadence",
        "max_iterations": 3,
    },
    "specialization": {"quality_min_vs_teacher": 1.0, "per_slice_fidelity_min": 0.8, "max_iterations": 3},
}


def examples_dir() -> Path:
    """Shipped examples: ``examples/`` of a source checkout, else the copy inside the package."""
    here = Path(__file__).resolve()
    for candidate in (here.parents[3] / "examples", here.parents[1] / "examples"):
        if candidate.is_dir():
            return candidate
    raise SpecError("no examples folder found next to the distil package", hint="reinstall distil from its source tree")


def example_names() -> list[str]:
    return sorted(p.name for p in examples_dir().iterdir() if (p / DEFAULT_SPEC).is_file())


def render_commented(model: BaseModel, indent: int = 0) -> str:
    """YAML for ``model`` with each field's help text as a comment above it."""
    pad = "  " * indent
    lines: list[str] = []
    data = model.model_dump(mode="json")
    for name, info in type(model).model_fields.items():
        value = getattr(model, name)
        if info.description:
            lines.append(f"{pad}# {info.description}")
        if isinstance(value, BaseModel):
            lines.append(f"{pad}{name}:")
            lines.append(render_commented(value, indent + 1))
        elif isinstance(value, list) and value and isinstance(value[0], BaseModel):
            lines.append(f"{pad}{name}:")
            for item in value:
                body = render_commented(item, indent + 2).splitlines()
                first = next(i for i, line in enumerate(body) if not line.strip().startswith("#"))
                body[first] = f"{pad}  - " + body[first].lstrip()
                lines.extend(body)
        else:
            dumped = yaml.safe_dump({name: data[name]}, sort_keys=False, allow_unicode=True, width=100).rstrip()
            lines.extend(pad + line for line in dumped.splitlines())
    return "\n".join(lines)


def init_project(
    target: Path,
    example: str | None = None,
    play: str | None = None,
    force: bool = False,
    task: str | None = None,
    labels: list[str] | None = None,
) -> Path:
    """Create ``target/distil.yaml``: a shipped example (with its data) or, for your own task, a commented spec
    with placeholders and no data (``task``: classify, the default, or generate). Refuses to overwrite a spec."""
    from distil.spec.starter import TASKS, starter_text

    if play is not None and play not in PLAYS:
        raise SpecError(f"--play must be one of {', '.join(PLAYS)}, got {play!r}")
    if example and (task or labels):
        raise SpecError("--example copies a finished example; --task and --labels start your own task: give one")
    if task is not None and task not in TASKS:
        raise SpecError(f"--task must be one of {', '.join(TASKS)}, got {task!r}")
    if labels and task == "generate":
        raise SpecError("--labels: a generate task has no labels; drop --labels or use --task classify")
    spec_path = target / DEFAULT_SPEC
    if spec_path.exists() and not force:
        raise SpecError(f"{spec_path} already exists", hint="choose another folder, or pass --force to overwrite it")
    if not example:
        text = starter_text(task or "classify", labels or [], play or "cost", PLAY_GATES[play or "cost"])
        spec_from_text(text, str(spec_path))  # what we write must load, placeholders and all
        target.mkdir(parents=True, exist_ok=True)
        return write_text_atomic(spec_path, text)
    source = examples_dir() / example
    if not (source / DEFAULT_SPEC).is_file():
        raise SpecError(
            f"--example: no example named {example!r}", hint=f"known examples: {', '.join(example_names())}"
        )
    target.mkdir(parents=True, exist_ok=True)
    for item in source.iterdir():
        if item.name == DEFAULT_SPEC:
            continue
        dest = target / item.name
        if item.is_dir():
            shutil.copytree(item, dest, dirs_exist_ok=True)
        else:
            shutil.copy2(item, dest)
    spec = spec_from_text((source / DEFAULT_SPEC).read_text(encoding="utf-8"), str(source / DEFAULT_SPEC))
    if play is not None:
        spec = spec.model_copy(
            update={"play": spec.play.model_copy(update={"kind": play}), "gate": Gate(**PLAY_GATES[play])}
        )
    return write_spec(spec_path, spec)


def parse_labels(text: str | None) -> list[str]:
    """``--labels a,b,c`` as a list (empty when not given); names are checked when the spec loads."""
    return [name.strip() for name in (text or "").split(",") if name.strip()]


def write_spec(spec_path: Path, spec: Spec) -> Path:
    """Write ``spec`` as commented YAML to ``spec_path`` (atomically), checking it loads back."""
    header = (
        f"# distil project spec. Every field is explained in the comment above it.\n"
        f"# Validate with `distil check`; lock the gate with `distil gate lock --as {spec.roles.sponsor}`.\n\n"
    )
    text = header + render_commented(spec) + "\n"
    spec_from_text(text, str(spec_path))  # what we write must load back as the same spec
    return write_text_atomic(spec_path, text)

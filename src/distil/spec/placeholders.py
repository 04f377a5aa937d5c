"""Placeholders `distil init` writes for what only the project's people can say (who, whose terms, which gate),
and the check that refuses a spec until each is filled in."""

from __future__ import annotations

from typing import Any

from distil.spec.models import Gate, Spec

PLACEHOLDER = "<fill in"


def placeholder(what: str) -> str:
    """The text `distil init` writes where a person must write ``what``."""
    return f"{PLACEHOLDER}: {what}>"


def is_placeholder(value: object) -> bool:
    return isinstance(value, str) and PLACEHOLDER in value


def placeholder_fields(spec: Spec) -> list[tuple[str, str]]:
    """(dotted field, text) of every value in the spec that is still a placeholder, in the spec's order."""
    found: list[tuple[str, str]] = []

    def walk(value: Any, where: str) -> None:
        if isinstance(value, dict):
            for key, child in value.items():
                walk(child, f"{where}.{key}" if where else str(key))
        elif isinstance(value, list):
            for i, child in enumerate(value):
                walk(child, f"{where}[{i}]")
        elif is_placeholder(value):
            found.append((where, value))

    walk(spec.model_dump(mode="json"), "")
    return found


def gate_is_empty(gate: Gate) -> bool:
    """No threshold set: such a gate passes every student, so it decides nothing."""
    checked = gate.model_dump(exclude={"max_iterations"})
    return not any(value for value in checked.values() if value is not None)


def placeholder_problems(spec: Spec) -> list[str]:
    """What is left to fill in before any data is collected, one line per field, naming it."""
    problems = [
        f"{where}: still the placeholder {text!r}; write yours in distil.yaml"
        for where, text in placeholder_fields(spec)
    ]
    if gate_is_empty(spec.gate):
        problems.append(
            "gate: no threshold is set, so every student would pass; set at least one in distil.yaml (e.g. "
            "gate.fidelity_min: 0.9, gate.quality_min_vs_teacher: 0.95), then `distil gate lock --as SPONSOR`"
        )
    return problems

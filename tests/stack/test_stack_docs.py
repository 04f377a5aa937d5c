"""docs/stack.md's worked example can be followed: every `distil` command it shows exists with the options and
arguments it gives, and its stack.yaml is a valid stack."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

from distil.cli import main
from distil.stack.spec import stack_from_text
from tests.test_hints import unexpected_arguments

STACK_DOC = Path(__file__).parents[2] / "docs" / "stack.md"


def worked_example() -> str:
    text = STACK_DOC.read_text(encoding="utf-8")
    return text[text.index("## A worked example") :]


def blocks(text: str, language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", text, flags=re.DOTALL)


def test_every_command_of_the_worked_example_exists(capsys):
    commands = [
        shlex.split(line, comments=True)[1:]
        for block in blocks(worked_example(), "sh")
        for line in block.splitlines()
        if line.startswith("distil ")
    ]
    assert len(commands) >= 12
    assert ["stack", "serve", "support/stack.yaml", "--as", "ops", "--port", "8000"] in commands
    broken = []
    for tokens in commands:
        code = main([*tokens, "--help"])
        err = capsys.readouterr().err.strip()
        if code != 0:
            broken.append(f"`distil {shlex.join(tokens)}`: {err.splitlines()[0] if err else code}")
        elif extra := unexpected_arguments(list(tokens)):
            broken.append(f"`distil {shlex.join(tokens)}`: takes no argument {extra[0]!r}")
    assert not broken, "docs/stack.md's worked example shows commands that do not run:\n" + "\n".join(broken)


def test_the_worked_examples_stack_yaml_is_a_valid_stack():
    (text,) = blocks(worked_example(), "yaml")
    spec = stack_from_text(text, "docs/stack.md")
    assert [s.name for s in spec.specialists] == ["triage", "tone"] and spec.routing.by == "task"

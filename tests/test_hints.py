"""Every command the CLI prints as a hint exists, with the options it names.

A hint is any ``distil ...`` command in a string of the package (error hints, ``next:`` lines, help
examples, spec comments) or in the what-next block after a cadence. Each is run with ``--help`` appended:
click rejects an unknown command or option before it shows the help, so a hint such as
``distil evaluate --run X`` fails here. Positional arguments the command does not take fail too.
"""

from __future__ import annotations

import ast
import re
import shlex
from pathlib import Path
from types import SimpleNamespace

import pytest
import typer

import distil
from distil.cli import app, main

SOURCE = Path(distil.__file__).parent
PLACEHOLDER = "NAME"  # what an f-string's {field} becomes
# A command starts after a backtick, "next: ", "Example: ", "&& ", a column gap or the string's start; it ends at
# a backtick, the end of the line, or shell syntax / prose punctuation (;|>&(),).
HINT = re.compile(r"(?:`|next: |Example: |&& |^\s*|\s{2,})(distil [^`\n;|>&(),]*)", re.MULTILINE)


def _text(node: ast.AST) -> str | None:
    """A string literal as it would print: an f-string's fields replaced, ``+`` of strings joined."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.JoinedStr):
        return "".join(v.value if isinstance(v, ast.Constant) else PLACEHOLDER for v in node.values)
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
        left, right = _text(node.left), _text(node.right)
        if left is not None or right is not None:
            return (left or "") + (right or "")
    return None


def hints_in(text: str) -> list[str]:
    text = re.sub(r"<[^<>\s]*>", PLACEHOLDER, text)  # `distil decide --as <validator>`
    return [m.group(1).strip() for m in HINT.finditer(text)]


def source_hints() -> dict[str, str]:
    """Every hint in the package's strings -> the file it is in."""
    found: dict[str, str] = {}
    for path in sorted(SOURCE.rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        inside: set[int] = set()
        for node in ast.walk(tree):  # outer nodes first, so a joined string is read whole, not in parts
            if id(node) in inside or (text := _text(node)) is None:
                continue
            inside.update(id(child) for child in ast.walk(node))
            for hint in hints_in(text):
                found.setdefault(hint, str(path.relative_to(SOURCE)))
    return found


def what_next_hints(tmp_path: Path) -> list[str]:
    from distil.cli.cadence import what_next
    from distil.spec.io import load_project
    from distil.spec.templates import init_project

    spec = init_project(tmp_path / "demo", example="triage")
    project = load_project(spec)
    result = SimpleNamespace(report_path=tmp_path / "report.html", run_id="r1")
    return [hint for line in what_next(project, result) for hint in hints_in(line)]


def unexpected_arguments(tokens: list[str]) -> list[str]:
    """Positional arguments the named command does not take (``--help`` alone does not catch them)."""
    command, path = typer.main.get_command(app), ["distil"]
    while tokens and tokens[0] in getattr(command, "commands", {}):
        path.append(tokens[0])
        command = command.commands[tokens.pop(0)]
    return command.make_context(" ".join(path), tokens, resilient_parsing=True).args


def test_hints_are_found_where_they_are_printed():
    hints = source_hints()
    assert len(hints) > 50
    assert "distil gate lock --as NAME" in hints  # an error hint, from an f-string
    assert "distil evaluate NAME" in hints  # train's `next:` line
    assert "distil init demo --example triage" in hints  # a help example


def test_the_finder_catches_a_hint_that_names_no_real_option(capsys):
    """A hint naming an option the command lacks, as `train` once printed, fails the check below."""
    (hint,) = hints_in("wrote r1; next: distil evaluate --run r1")
    assert main([*shlex.split(hint)[1:], "--help"]) == 2
    assert "No such option: --run" in capsys.readouterr().err


def test_every_printed_hint_is_a_command_that_exists(tmp_path, capsys):
    after_cadence = what_next_hints(tmp_path)
    assert len(after_cadence) == 2  # decide, serve
    hints = {**source_hints(), **{h: "the what-next block" for h in after_cadence}}
    broken = []
    for hint, where in sorted(hints.items()):
        tokens = shlex.split(hint)[1:]
        code = main([*tokens, "--help"])
        out = capsys.readouterr()
        if code != 0:
            broken.append(f"{where}: `{hint}`: {out.err.strip().splitlines()[0] if out.err.strip() else code}")
        elif extra := unexpected_arguments(tokens):
            broken.append(f"{where}: `{hint}`: takes no argument {extra[0]!r}")
    assert not broken, "hints that do not run:\n" + "\n".join(broken)


@pytest.mark.parametrize(
    "argv, named",
    [
        (["evaluate", "--run", "r1"], "No such option: --run"),
        (["decide", "--bogus"], "No such option: --bogus"),
        (["licence", "show"], "Missing argument"),
        (["nosuch"], "No such command"),
    ],
)
def test_a_usage_error_is_one_line_a_hint_and_exit_2(argv, named, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and named in err[0] and err[0].startswith("error: ")
    assert err[1].startswith("hint: run `distil") and "--help" in err[1]

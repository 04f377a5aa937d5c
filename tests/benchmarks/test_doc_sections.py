"""docs/benchmarks.md holds only what the scripts in benchmarks/ wrote: every section names the command that
wrote it, that command's script is in the repository, takes the flags the command gives it and writes a section
of that name and heading; nothing lies outside the sections but the header. A static check: nothing is run."""

from __future__ import annotations

import ast
import re
import shlex
from dataclasses import dataclass
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "benchmarks"
DOC = BENCH.parent / "docs" / "benchmarks.md"
SECTION = re.compile(r"<!-- begin:(?P<name>\S+) -->\n(?P<body>.*?)<!-- end:(?P=name) -->\n?", re.S)
COMMAND = re.compile(r"^Machine: .*Command: `(?P<command>[^`]+)`\.(?: Load average when written [^\n]*)?$", re.M)
WRITERS = ("write_section", "sized_main")  # benchmarks/_report.py: the one way a section is written


@dataclass
class Section:
    name: str
    heading: str
    command: str


def doc_sections(text: str) -> list[Section]:
    sections = []
    for match in SECTION.finditer(text):
        body = match.group("body")
        heading = body.splitlines()[0]
        command = COMMAND.search(body)
        sections.append(
            Section(
                match.group("name"),
                heading.removeprefix("## ") if heading.startswith("## ") else "",
                command.group("command") if command else "",
            )
        )
    return sections


def string_pattern(node: ast.expr) -> str | None:
    """A regex for the strings an expression of literals can build (an f-string's fields match any text);
    None for anything else, such as a variable: a section name must be visible in the script."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return re.escape(node.value)
    if isinstance(node, ast.JoinedStr):
        return "".join(re.escape(v.value) if isinstance(v, ast.Constant) else ".+" for v in node.values)
    if isinstance(node, ast.IfExp):
        body, orelse = string_pattern(node.body), string_pattern(node.orelse)
        return None if body is None or orelse is None else f"(?:{body}|{orelse})"
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
        left, right = string_pattern(node.left), string_pattern(node.right)
        return None if left is None or right is None else left + right
    return None


def calls_to(tree: ast.Module, names: tuple[str, ...]) -> list[ast.Call]:
    """Calls of a function or method with one of ``names``."""

    def name(call: ast.Call) -> str | None:
        return call.func.id if isinstance(call.func, ast.Name) else getattr(call.func, "attr", None)

    return [n for n in ast.walk(tree) if isinstance(n, ast.Call) and name(n) in names]


def section_writers(tree: ast.Module) -> list[tuple[str | None, str | None]]:
    """(name pattern, heading pattern) of every call that writes a section."""
    return [(string_pattern(c.args[0]), string_pattern(c.args[1])) for c in calls_to(tree, WRITERS) if len(c.args) >= 2]


def option_strings(tree: ast.Module) -> set[str]:
    """The flags a script's argparse parser takes."""
    return {
        a.value
        for c in calls_to(tree, ("add_argument",))
        for a in c.args
        if isinstance(a, ast.Constant) and isinstance(a.value, str) and a.value.startswith("-")
    }


def report_module() -> ast.Module:
    return ast.parse((BENCH / "_report.py").read_text(encoding="utf-8"))


def report_header() -> str:
    """``_report.HEADER``: what write_section puts above the first section."""
    assigned = (n for n in report_module().body if isinstance(n, ast.Assign))
    return next(n.value.value for n in assigned if n.targets[0].id == "HEADER")


def problems(text: str) -> list[str]:
    """What in ``text`` (docs/benchmarks.md) no script in benchmarks/ wrote, or writes no more."""
    header = report_header().strip()
    found = []
    outside = SECTION.sub("", text).strip()
    if outside != header:
        found.append(f"text outside the sections (typed by hand?): {outside.replace(header, '').strip()[:120]!r}")
    for s in doc_sections(text):
        words = shlex.split(s.command) if s.command else []
        if len(words) < 2 or words[0] != "python" or not words[1].startswith("benchmarks/"):
            found.append(f"{s.name}: no `python benchmarks/...` command ({s.command!r})")
            continue
        script = BENCH.parent / words[1]
        if not script.is_file():
            found.append(f"{s.name}: {words[1]} is not in the repository")
            continue
        tree = ast.parse(script.read_text(encoding="utf-8"))
        writers = section_writers(tree)
        options = option_strings(tree) | (option_strings(report_module()) if calls_to(tree, ("sized_main",)) else set())
        unknown = [w.split("=")[0] for w in words[2:] if w.startswith("--") and w.split("=")[0] not in options]
        if unknown:
            found.append(f"{s.name}: {words[1]} takes no {', '.join(unknown)}")
        if not any(
            name and heading and re.fullmatch(name, s.name) and re.fullmatch(heading, s.heading)
            for name, heading in writers
        ):
            found.append(f"{s.name}: {words[1]} writes no section named {s.name!r} with the heading {s.heading!r}")
    return found


def test_every_section_of_the_benchmarks_doc_was_written_by_a_script_in_the_repository():
    text = DOC.read_text(encoding="utf-8")
    assert doc_sections(text), "docs/benchmarks.md has no sections"
    assert problems(text) == []


SAMPLE = """<!-- begin:munge -->
## MUNGE model compression (Bucilă et al. 2006) on breast cancer and wine

Machine: x86_64. Date: 2026-01-01. Command: `python benchmarks/munge.py --size full`.

| a | b |
<!-- end:munge -->
"""


@pytest.mark.parametrize(
    ("change", "complaint"),
    [
        (lambda doc: doc + "\nA figure typed by hand: 0.93.\n", "outside the sections"),
        (lambda doc: doc.replace("benchmarks/munge.py", "benchmarks/gone.py"), "not in the repository"),
        (lambda doc: doc.replace("--size full", "--epochs 3"), "takes no --epochs"),
        (lambda doc: doc.replace("## MUNGE model", "## MUNGE's model"), "writes no section"),
        (lambda doc: doc.replace(":munge -->", ":munged -->"), "writes no section named"),
        (lambda doc: doc.replace(" Command: `python benchmarks/munge.py --size full`.", ""), "no `python benchmarks/"),
    ],
)
def test_the_check_finds_what_no_script_wrote(change, complaint):
    good = report_header() + "\n" + SAMPLE
    assert problems(good) == []
    assert any(complaint in p for p in problems(change(good)))


def test_a_section_heading_built_by_an_expression_of_literals_is_matched():
    tree = ast.parse('write_section("quick_" + ("a" if x else "b"), f"Run ({d})" + (" (installed)" if y else ""), b)')
    ((name, heading),) = section_writers(tree)
    assert re.fullmatch(name, "quick_a") and re.fullmatch(name, "quick_b") and not re.fullmatch(name, "quick_c")
    assert re.fullmatch(heading, "Run (cpu) (installed)") and re.fullmatch(heading, "Run (cuda)")
    assert section_writers(ast.parse("write_section(name, title, body)")) == [(None, None)]  # a variable names nothing

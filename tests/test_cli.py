"""The command line: the gate's life cycle, one-line errors with exit 2, help on every command."""

from __future__ import annotations

import importlib
import re
import sqlite3
import subprocess
import sys
from pathlib import Path

import typer

from distil.cli import app, main

README = Path(__file__).parents[1] / "README.md"


def run(*argv: str) -> int:
    return main(list(argv))


def all_commands() -> list[tuple[str, object]]:
    root = typer.main.get_command(app)
    out = []

    def walk(group, prefix):
        for name, cmd in group.commands.items():
            full = f"{prefix} {name}".strip()
            out.append((full, cmd))
            if hasattr(cmd, "commands"):
                walk(cmd, full)

    walk(root, "")
    return out


def test_every_command_has_help_and_is_in_the_readme():
    readme = README.read_text()
    commands = all_commands()
    assert len(commands) >= 6
    for name, cmd in commands:
        assert (cmd.help or "").strip(), f"`distil {name}` has no help text"
        if not hasattr(cmd, "commands"):
            assert "Example:" in cmd.help, f"`distil {name}` help has no example"
            assert f"distil {name}" in readme, f"`distil {name}` is not listed in README.md"


ARCHITECTURE = Path(__file__).parents[1] / "docs" / "architecture.md"
DOTTED = re.compile(r"(?<![\w./-])distil(?:\.[A-Za-z_]\w*)+")
FILE_NAMES = {"distil.yaml"}  # a dotted word that is a file, not a module


def resolve(dotted: str) -> object:
    """Import the longest module prefix of ``dotted`` and getattr the rest."""
    parts = dotted.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            value = importlib.import_module(".".join(parts[:cut]))
        except ModuleNotFoundError:
            continue
        for name in parts[cut:]:
            value = getattr(value, name)
        return value
    raise ModuleNotFoundError(dotted)


def test_every_dotted_name_in_the_architecture_resolves():
    names = sorted(set(DOTTED.findall(ARCHITECTURE.read_text())) - FILE_NAMES)
    assert len(names) >= 10
    broken = []
    for name in names:
        try:
            resolve(name)
        except (ImportError, AttributeError) as exc:
            broken.append(f"{name}: {exc}")
    assert not broken, "docs/architecture.md names what does not exist:\n" + "\n".join(broken)


def test_every_command_that_records_an_actor_takes_the_one_as_option():
    takes_as = {}
    for name, cmd in all_commands():
        for param in getattr(cmd, "params", []):
            if "--as" in getattr(param, "opts", []):
                takes_as[name] = param
    assert {
        "run",
        "iterate",
        "quickstart",
        "train",
        "evaluate",
        "generate",
        "curate",
        "decide",
        "gate lock",
        "export",
    } <= set(takes_as)
    for name, param in takes_as.items():
        assert param.envvar == "DISTIL_USER", f"`distil {name} --as` does not read $DISTIL_USER"


def test_help_exits_zero_for_every_command(capsys):
    for name, _ in all_commands():
        assert run(*name.split(), "--help") == 0
        assert "Usage" in capsys.readouterr().out


def test_gate_life_cycle(tmp_path, capsys):
    demo = tmp_path / "demo"
    assert run("init", str(demo), "--example", "triage") == 0
    spec = str(demo / "distil.yaml")
    assert run("check", "--spec", spec) == 0
    assert "monthly teacher spend" in capsys.readouterr().out

    assert run("gate", "lock", "--as", "quinn", "--spec", spec) == 2  # not the sponsor
    assert "only the sponsor" in capsys.readouterr().err
    assert run("gate", "lock", "--as", "maria", "--spec", spec) == 0

    text = (demo / "distil.yaml").read_text()
    (demo / "distil.yaml").write_text(text.replace("fidelity_min: 0.95", "fidelity_min: 0.9", 1))
    capsys.readouterr()
    assert run("check", "--spec", spec) == 2
    err = capsys.readouterr().err
    assert "gate" in err and "fidelity_min 0.95 → 0.9" in err
    assert len([line for line in err.splitlines() if line.startswith("error:")]) == 1

    assert run("gate", "lock", "--as", "maria", "--spec", spec) == 2  # a new version needs a reason
    assert run("gate", "lock", "--as", "maria", "--reason", "loosened after review", "--spec", spec) == 0
    assert run("check", "--spec", spec) == 0
    capsys.readouterr()
    assert run("gate", "show", "--spec", spec) == 0
    out = capsys.readouterr().out
    assert "v2" in out and "loosened after review" in out
    assert run("ledger", "verify", "--spec", spec) == 0


def test_ledger_verify_exits_1_naming_the_changed_row(tmp_path, capsys):
    demo = tmp_path / "demo"
    run("init", str(demo), "--example", "triage")
    spec = str(demo / "distil.yaml")
    run("gate", "lock", "--as", "maria", "--spec", spec)
    run("gate", "lock", "--as", "maria", "--spec", spec)  # unchanged: no new row
    with sqlite3.connect(demo / ".distil" / "ledger.db") as conn:
        conn.execute("UPDATE events SET actor = 'mallory' WHERE seq = 1")
    capsys.readouterr()
    assert run("ledger", "verify", "--spec", spec) == 1
    assert "row 1" in capsys.readouterr().err


def test_licence_refusal_names_the_field(tmp_path, capsys):
    demo = tmp_path / "demo"
    run("init", str(demo), "--example", "triage")
    path = demo / "distil.yaml"
    path.write_text(path.read_text().replace("distillation_permitted: 'yes'", "distillation_permitted: 'no'"))
    capsys.readouterr()
    assert run("check", "--spec", str(path)) == 2
    assert "teachers[0].licence.distillation_permitted" in capsys.readouterr().err


def test_user_errors_are_one_line_with_exit_2_and_no_traceback(tmp_path):
    spec = tmp_path / "distil.yaml"
    spec.write_text("task:\n  kind: classify\n  bogus: 1\n")
    proc = subprocess.run(
        [sys.executable, "-m", "distil", "check", "--spec", str(spec)], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert lines[0].startswith("error: ") and lines[1].startswith("hint: ")

"""Hostile input at the command line: specs, seed and gold files, the `.distil` folder, run ids and usage
mistakes that once ended in a traceback or in silently wrong output. Each is one `error:` line naming the
field or file, exit 2, and nothing written before is lost."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from distil.cli import main
from tests.reliability.helpers import run_cli


def _hashes(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


@pytest.fixture
def project(tmp_path) -> Path:
    """The triage example, as `distil init` writes it; returns the spec's path."""
    assert main(["init", str(tmp_path / "p"), "--example", "triage"]) == 0
    return tmp_path / "p" / "distil.yaml"


def _edit(spec: Path, change: Callable[[dict], None]) -> None:
    data = yaml.safe_load(spec.read_text())
    change(data)
    spec.write_text(yaml.safe_dump(data, sort_keys=False, allow_unicode=True))


def _refused(capsys, *argv: str) -> str:
    """Run `distil ARGV` in this process; assert exit 2 with one error line and a hint, return that line."""
    capsys.readouterr()
    assert main(list(argv)) == 2
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert "Traceback" not in err and len(lines) == 2, err
    assert lines[0].startswith("error: ") and lines[1].startswith("hint: "), err
    return lines[0]


def _set(path: str, value: object) -> Callable[[dict], None]:
    def change(data: dict) -> None:
        *parents, last = path.split(".")
        for key in parents:
            data = data[int(key)] if isinstance(data, list) else data.setdefault(key, {})
        data[last] = value

    return change


# --- the spec ------------------------------------------------------------------------------------------

SPEC_CASES = [
    # (what is set, value, what the error line must say)
    ("train.seed", 2**70, "train.seed must be < 4294967296"),
    ("train.seed", -1, "train.seed must be ≥ 0"),
    ("data.seed", -1, "data.seed must be ≥ 0"),
    ("task.few_shot.template", "Ticket\nCategory: {label}", "task.few_shot.template write {input} once"),
    ("task.labels.0.words", [""], "task.labels[0].words is empty"),
    ("task.labels.1.name", "  ", "task.labels[1].name is empty"),
    ("task.labels.1.words", ["Billing"], "the word 'Billing' is given to both 'billing' and 'technical'"),
    ("data.split", {"train": float("nan"), "validation": 0.1, "test": 0.1}, "data.split.train must be a finite number"),
    ("data.split", {"train": 0.9, "validation": 0.1, "test": 0.0}, "data.split test is 0"),
    ("task.content_free_inputs", [], "task.content_free_inputs is empty while task.calibrate is true"),
    ("router.threshold", float("inf"), "router.threshold must be a finite number"),
    ("data.filters.max_entropy", float("inf"), "data.filters.max_entropy must be a finite number"),
    ("gate.fidelity_min", float("nan"), "gate.fidelity_min must be a finite number"),
    ("cost.build_cost", float("inf"), "cost.build_cost must be a finite number"),
    ("name", "triage\x1b[2J\x1b[31m", "name 'triage\\x1b[2J\\x1b[31m' holds a control character (U+001B)"),
    (
        "task.labels.0.name",
        "bill\x1b]0;owned\x07ing",
        "task.labels[0].name 'bill\\x1b]0;owned\\x07ing' holds a control character",
    ),
    ("data.slices.0.name", "to\u202ene", "data.slices[0].name 'to\\u202ene' holds a control character (U+202E)"),
    ("cost.currency", "US\rD", "cost.currency 'US\\rD' holds a control character"),
    ("cost.currency", "US\ud800", "cost.currency 'US\\ud800' holds a lone surrogate (U+D800)"),
    ("router.specialists", ["../.."], "router.specialists run id '../..': not a plain name"),
]


@pytest.mark.parametrize(("field", "value", "expected"), SPEC_CASES, ids=[f"{f}={v!r}"[:40] for f, v, _ in SPEC_CASES])
def test_a_spec_whose_output_would_be_wrong_is_refused_at_check(project, capsys, field, value, expected):
    _edit(project, _set(field, value))
    line = _refused(capsys, "check", "--spec", str(project))
    assert expected in line, line


def test_an_empty_content_free_list_is_accepted_with_calibration_off(project, capsys):
    _edit(project, lambda d: d["task"].update(content_free_inputs=[], calibrate=False))
    assert main(["check", "--spec", str(project)]) == 0


# --- usage mistakes ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "argv",
    [("evaluate", "--run", "x"), ("train", "--bogus"), ("train", "--epochs", "3"), ("check", "--spec"), ("nosuch",)],
)
def test_a_usage_mistake_is_one_line_and_exit_2(argv):
    done = run_cli(*argv)
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 2 and lines[0].startswith("error: ") and lines[1].startswith("hint: run `distil"), done.stderr


# --- the `.distil` folder ------------------------------------------------------------------------------

STATE_DIRS = {
    "dangling symlink": (lambda state: os.symlink(state.parent / "gone", state), "which does not exist"),
    "regular file": (lambda state: state.write_text("not a folder"), "not a folder"),
    "symlink loop": (lambda state: os.symlink(state, state), "a symlink loop"),
    "symlink to a file": (lambda state: os.symlink(state.parent / "distil.yaml", state), "which is not a folder"),
}


@pytest.mark.parametrize("kind", list(STATE_DIRS))
@pytest.mark.parametrize("argv", [("check",), ("gate", "lock", "--as", "maria"), ("ledger", "verify")])
def test_a_state_folder_that_is_not_a_folder_is_named(project, capsys, kind, argv):
    make, expected = STATE_DIRS[kind]
    state = project.parent / ".distil"
    make(state)
    before = _hashes(project.parent)
    line = _refused(capsys, *argv, "--spec", str(project))
    assert line.startswith(f"error: {state}: ") and expected in line, line
    assert _hashes(project.parent) == before and os.path.lexists(state)


# --- seed and gold files -------------------------------------------------------------------------------

GOOD = '{"input": "I was charged twice", "label": "billing"}\n'
SEED_FILES = [
    # (file name, bytes, what the error line must say after "error: <file>")
    (
        "seeds.jsonl",
        (GOOD + '{"input": "x", "n": ' + "1" * 5000 + "}\n").encode(),
        ":2: not a usable JSON line (Exceeds the limit",
    ),
    ("seeds.jsonl", (GOOD + '{"input": ' + "9" * 5000 + "}\n").encode(), ":2: not a usable JSON line"),
    ("seeds.jsonl", (GOOD + '{"input": ["a", "list"]}\n').encode(), ":2: `input` must be text, got list"),
    ("seeds.jsonl", (GOOD + "[" * 100_000 + "]" * 100_000 + "\n").encode(), ":2: JSON nested too deeply"),
    ("seeds.jsonl", b"", ": the file has no items"),
    ("seeds.jsonl", b"\n  \n\n", ": the file has no items"),
    ("seeds.csv", b"input,label\n", ": the file has no items"),
    (
        "seeds.csv",
        b"input,label\nok,billing\n" + b"x" * 140_000 + b",billing\n",
        ":3: a field is longer than 131,072 characters",
    ),
    # an opening quote never closed swallows the rest of the file
    (
        "seeds.csv",
        b'input,label\nok,billing\n"first row,billing\nsecond row,technical\nthird row,account\n',
        ":3: malformed CSV",
    ),
    # a stray quote closed two rows later merges three rows into one
    (
        "seeds.csv",
        b'input,label\n"first row,billing\nsecond row,technical\nthird row",account\nfourth,billing\n',
        ":2: lines up to 4 were read as one row, but 'first row,billing' inside it reads as a row of its own",
    ),
]


@pytest.mark.parametrize(("name", "body", "expected"), SEED_FILES, ids=[f"{n}-{e[:30]}" for n, _, e in SEED_FILES])
def test_a_broken_seeds_file_is_named_with_its_line_at_check(project, capsys, name, body, expected):
    seeds = project.parent / name
    seeds.write_bytes(body)
    _edit(project, _set("data.seeds", name))
    line = _refused(capsys, "check", "--spec", str(project))
    assert line.startswith(f"error: {seeds}{expected}"), line


def test_a_csv_input_over_several_lines_is_still_read(project, capsys):
    seeds = project.parent / "seeds.csv"
    seeds.write_text('input,label\n"Hello,\nmy invoice is wrong, please fix it",billing\nthe app crashes,technical\n')
    _edit(project, _set("data.seeds", "seeds.csv"))
    assert main(["check", "--spec", str(project)]) == 0


@pytest.mark.parametrize("kind", ["device", "fifo", "folder"])
def test_a_seeds_path_that_is_not_a_regular_file_says_so(project, capsys, kind):
    seeds = project.parent / "seeds.jsonl"
    seeds.unlink()
    {"device": lambda: os.symlink("/dev/zero", seeds), "fifo": lambda: os.mkfifo(seeds), "folder": seeds.mkdir}[kind]()
    line = _refused(capsys, "check", "--spec", str(project))
    assert line.startswith(f"error: {seeds}: not a regular file"), line


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (
            '{"input": "x", "label": "billing"}\n{"input": "my invoice", "label": "refunds"}\n',
            ":2: label 'refunds' is not one of task.labels",
        ),
        ('{"input": "x", "label": "billing"}\n{"input": "my invoice"}\n', ":2: no label in column `label`"),
        ("", ": the file has no items"),
    ],
)
def test_a_gold_set_with_an_unknown_label_or_no_items_is_refused_at_check_and_curate(project, capsys, body, expected):
    gold = project.parent / "gold.jsonl"
    gold.write_text(body)
    assert _refused(capsys, "check", "--spec", str(project)).startswith(f"error: {gold}{expected}")

    from distil.data.curate import reference_texts
    from distil.errors import DataError
    from distil.spec.io import load_project

    with pytest.raises(DataError, match="gold.jsonl" + expected.replace("(", r"\(")[:12]):
        reference_texts(load_project(project))


# --- run ids -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "argv",
    [
        ("evaluate", "{id}"),
        ("serve", "{id}"),
        ("report", "{id}"),
        ("export", "{id}"),
        ("decide", "--run", "{id}", "--as", "quinn"),
    ],
)
def test_a_run_id_of_5000_characters_is_refused_by_name(project, capsys, argv):
    assert main(["gate", "lock", "--as", "maria", "--spec", str(project)]) == 0
    before = _hashes(project.parent)
    line = _refused(capsys, *(a.format(id="r" * 5000) for a in argv), "--spec", str(project))
    assert line == f"error: run id {'r' * 40!r}…: longer than 128 characters", line
    assert _hashes(project.parent) == before


def test_a_usage_error_does_not_echo_a_huge_argument():
    done = run_cli("decide", "x" * 5000)
    assert done.returncode == 2 and len(done.stderr.splitlines()[0]) <= 210, done.stderr[:300]


# --- an API teacher's URL with credentials -------------------------------------------------------------


def test_url_credentials_with_an_api_key_are_refused_and_alone_are_sent_as_basic_auth(tmp_path):
    from tests.reliability.fault_server import FaultConfig, FaultServer
    from tests.reliability.helpers import fault_project

    with FaultServer(FaultConfig()) as server:
        source = server.source().replace("http://", "http://ann:s3cret@")
        both = fault_project(tmp_path / "both", source, 6, timeout_s=5, api_key_env="TEACHER_KEY")
        done = run_cli("generate", "--spec", str(both), TEACHER_KEY="sk-test")
        assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr[-800:]
        assert done.stderr.startswith("error: teachers[].source of teacher") and "user:password@" in done.stderr
        assert "s3cret" not in done.stderr and not (both.parent / ".distil" / "data" / "raw").exists()

        alone = fault_project(tmp_path / "alone", source, 6, timeout_s=5)
        done = run_cli("generate", "--spec", str(alone))
        assert done.returncode == 0, done.stderr[-800:]
        assert server.stats.authorization and all(h.startswith("Basic ") for h in server.stats.authorization)
        assert "s3cret" not in done.stdout + done.stderr


@pytest.mark.parametrize(
    "source", ["openai:http://127.0.0.1:notaport/v1#m", "openai:ftp://127.0.0.1/v1#m", "openai:/v1#m"]
)
def test_a_base_url_that_is_not_http_with_a_host_is_a_teacher_error(source):
    from distil.errors import TeacherError
    from distil.teachers.openai_compat import parse_source

    with pytest.raises(TeacherError, match="not an http\\(s\\) URL with a host"):
        parse_source(source)

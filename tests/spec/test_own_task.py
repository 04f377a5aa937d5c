"""A new user's own task: `distil init --task` writes a spec with placeholders and no data; `distil check`
refuses it until each is filled, then reads every data file the spec names (columns mapped by data.fields);
no teacher is asked anything before the gate is locked, and every act in the ledger has an actor."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml

from distil.cli import main
from distil.data.audit import audit_data_files
from distil.data.curate import curate
from distil.data.generate import label_new_inputs
from distil.errors import GateError
from distil.spec.io import load_project
from tests.conftest import ASSETS

REVIEWS = ASSETS / "reviews"  # product reviews with columns text, sentiment, category


def fill(spec_path: Path, teacher_dir: Path, mapped: bool = True) -> None:
    """Fill what `distil init --task classify` left, as the README's "Your own task" says, on a tiny teacher."""
    spec = yaml.safe_load(spec_path.read_text())
    spec["task"]["instruction"] = "Say how a product review feels: positive, negative or neutral."
    spec["task"]["labels"] = [
        {"name": "positive"},
        {"name": "negative", "words": ["bad"]},  # the tiny tokenizer spells words: give each its own first token
        {"name": "neutral", "words": ["info"]},
    ]
    spec["task"]["few_shot"]["per_label"] = 1
    spec["roles"].update(sponsor="ana", driver="ben", validator="cleo")
    spec["teachers"][0]["source"] = f"hf:{teacher_dir}"
    spec["teachers"][0]["licence"]["reviewed_by"] = "ana"
    spec["student"] = {"init": "teacher-layers:2"}
    if mapped:
        spec["data"]["fields"] = {"input": "text", "label": "sentiment", "tags": []}
    spec["data"]["slices"] = [
        {"name": "category", "from_field": "category"},
        {"name": "length", "values": {"long": {"min_words": 10}, "short": {}}},
    ]
    spec["data"]["synthetic_budget"] = 6
    spec["gate"]["fidelity_min"] = 0.9
    spec["train"] = {"epochs": 1, "max_length": 96}
    spec_path.write_text(yaml.safe_dump(spec, sort_keys=False))


def new_project(tmp_path: Path, *args: str) -> Path:
    assert (
        main(["init", str(tmp_path / "p"), "--task", "classify", "--labels", "positive,negative,neutral", *args]) == 0
    )
    return tmp_path / "p" / "distil.yaml"


def with_data(spec_path: Path) -> None:
    for name in ("seeds.jsonl", "gold.jsonl"):
        shutil.copy(REVIEWS / name, spec_path.parent / name)


def test_init_task_writes_placeholders_and_no_data_and_check_refuses_them(tmp_path, capsys):
    spec_path = new_project(tmp_path)
    assert sorted(p.name for p in spec_path.parent.iterdir()) == ["distil.yaml"]  # no example data
    spec = load_project(spec_path).spec
    assert spec.task.label_names == ["positive", "negative", "neutral"]
    assert "ticket" not in spec_path.read_text().lower()  # nothing of the support-ticket example
    capsys.readouterr()
    assert main(["check", "--spec", str(spec_path)]) == 2
    out = capsys.readouterr()
    for field in ("task.instruction", "roles.sponsor", "roles.validator", "teachers[0].licence.reviewed_by", "gate:"):
        assert f"to fix: {field}" in out.out
    assert "data.seeds" in out.out and "does not exist" in out.out
    assert out.err.startswith("error: ") and out.err.count("\nerror") == 0


def test_init_writes_a_generate_spec_and_keeps_the_examples(tmp_path):
    assert main(["init", str(tmp_path / "g"), "--task", "generate"]) == 0
    spec = load_project(tmp_path / "g" / "distil.yaml").spec
    assert spec.task.kind == "generate" and spec.data.gold is None
    assert main(["init", str(tmp_path / "g2"), "--task", "generate", "--labels", "a,b"]) == 2
    assert main(["init", str(tmp_path / "t"), "--example", "triage"]) == 0
    assert (tmp_path / "t" / "seeds.jsonl").is_file()
    assert main(["check", "--spec", str(tmp_path / "t" / "distil.yaml")]) == 0  # the example still passes


def test_check_reads_every_data_file_and_names_the_columns_and_the_fix(tmp_path, tiny_teacher_dir, capsys):
    spec_path = new_project(tmp_path)
    with_data(spec_path)
    fill(spec_path, tiny_teacher_dir, mapped=False)
    capsys.readouterr()
    assert main(["check", "--spec", str(spec_path)]) == 2
    err = capsys.readouterr().err
    assert "seeds.jsonl:1: no `input` column (columns found: text, sentiment, category)" in err
    assert "data.fields: {input: text}" in err

    fill(spec_path, tiny_teacher_dir, mapped=True)
    gold = spec_path.parent / "gold.jsonl"
    lines = gold.read_text().splitlines()
    bad = json.loads(lines[3]) | {"sentiment": "angry"}
    gold.write_text("\n".join([*lines[:3], json.dumps(bad), *lines[4:]]) + "\n")
    assert main(["check", "--spec", str(spec_path)]) == 2
    err = capsys.readouterr().err
    assert "gold.jsonl:4: label 'angry' is not one of task.labels (positive, negative, neutral)" in err

    shutil.copy(REVIEWS / "gold.jsonl", gold)
    seeds = spec_path.parent / "seeds.jsonl"
    seeds.write_text(seeds.read_text() + seeds.read_text().splitlines()[0] + "\n")  # a repeated seed
    assert main(["check", "--spec", str(spec_path)]) == 0
    assert "1 repeated input(s), curate keeps one of each: line 46 repeats line 1" in capsys.readouterr().out
    seeds_audit, gold_audit = audit_data_files(load_project(spec_path))
    repeated = json.loads(seeds.read_text().splitlines()[0])["sentiment"]
    assert seeds_audit.per_label == {label: 15 + (label == repeated) for label in ("positive", "negative", "neutral")}
    assert seeds_audit.per_slice["category"] == {"books": 15, "electronics": 15 + 1, "food": 15}
    assert gold_audit.field == "data.gold" and sum(gold_audit.per_label.values()) == gold_audit.items == 27


def test_no_teacher_before_the_gate_is_locked_and_every_act_has_an_actor(tmp_path, tiny_teacher_dir, capsys):
    from distil.teachers.registry import build_teacher

    spec_path = new_project(tmp_path)
    with_data(spec_path)
    fill(spec_path, tiny_teacher_dir)
    spec = yaml.safe_load(spec_path.read_text())
    spec["data"]["synthetic_budget"] = 0
    spec_path.write_text(yaml.safe_dump(spec, sort_keys=False))
    project = load_project(spec_path)
    with pytest.raises(GateError, match="no teacher is called") as refused:
        build_teacher(project)
    assert "distil gate lock --as ana" in refused.value.hint
    capsys.readouterr()
    assert main(["generate", "--spec", str(spec_path)]) == 2
    assert "distil gate lock --as ana" in capsys.readouterr().err
    assert not project.ledger.events() and not (project.data_dir / "raw").exists()

    assert main(["gate", "lock", "--as", "ana", "--spec", str(spec_path)]) == 0
    assert main(["generate", "--spec", str(spec_path)]) == 0  # no --as: the driver acts
    events = project.ledger.events()
    assert [e.kind for e in events] == ["gate.locked", "teacher.registered", "dataset.generated"]
    assert [e.actor for e in events] == ["ana", "ben", "ben"]
    label_new_inputs(project, ["the zip broke on day one"])  # library calls given no actor: the driver's acts
    curate(project)
    later = project.ledger.events()[3:]
    assert [e.kind for e in later] == [
        "dataset.generated",
        "evaluation_set.locked",
        "evaluation_set.locked",
        "dataset.curated",
    ]
    assert {e.actor for e in later} == {"ben"}

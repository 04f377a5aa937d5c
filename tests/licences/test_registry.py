"""The licence registry: every entry sourced and dated; check proposes from it, refuses what it does not know
until a named reviewer's review is recorded (signed where the spec sets keys); duties reach the model card."""

from __future__ import annotations

import shutil

import pytest
import yaml

from distil.cli import main
from distil.errors import LicenceError, RoleError
from distil.licences import REGISTRY_FILE, find_licence, load_registry, registry
from distil.licences.review import duty_lines, recorded_reviews, review_licence
from distil.spec.check import check_project
from distil.spec.io import load_project
from tests.conftest import EXAMPLES

EXPECTED = {
    "apache-2.0",
    "mit",
    "llama-3",
    "llama-3.1",
    "llama-3.2",
    "llama-3.3",
    "gemma",
    "qwen",
    "qwen-research",
    "openai-terms",
    "anthropic-terms",
    "gemini-api-terms",
    "mistral-terms",
}


def test_registry_loads_and_every_entry_has_a_dated_source_and_a_clause():
    entries = registry().licences
    assert {e.id for e in entries} >= EXPECTED
    for e in entries:
        assert str(e.source.url).startswith("https://") and e.source.read_on.year >= 2024 and e.source.version.strip()
        assert e.clause.strip() and all(d.clause.strip() for d in e.duties)
        if e.distillation_permitted == "conditional":
            assert e.conditions


def test_known_duties_are_recorded():
    assert find_licence("llama-3.1").name_prefix == "Llama"
    assert find_licence("llama-3").name_prefix == "Llama 3"
    assert any("Built with Llama" in d.text for d in find_licence("llama-3.3").duties)
    gemma = find_licence(name="Gemma Terms of Use")
    assert gemma.id == "gemma" and {d.kind for d in gemma.duties} >= {"use_restrictions", "notice"}
    assert find_licence(name="apache 2.0").distillation_permitted == "yes"
    assert find_licence(name="Some Custom Licence") is None and find_licence("no-such-id") is None


def test_a_registry_entry_without_a_source_is_refused(tmp_path):
    data = yaml.safe_load(REGISTRY_FILE.read_text())
    del data["licences"][0]["source"]
    path = tmp_path / "registry.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(ValueError, match="source"):
        load_registry(path)


def _project(tmp_path, licence: dict):
    root = tmp_path / "p"
    shutil.copytree(EXAMPLES / "triage", root)
    spec = yaml.safe_load((root / "distil.yaml").read_text())
    spec["teachers"][0]["licence"] = licence
    (root / "distil.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    return root / "distil.yaml"


def test_check_proposes_the_verdict_and_duties_of_a_known_licence(tmp_path, capsys):
    spec = _project(tmp_path, {"id": "llama-3.1", "distillation_permitted": "conditional", "reviewed_by": "maria"})
    assert main(["check", "--spec", str(spec)]) == 0
    out = capsys.readouterr().out
    assert (
        "smollm2 (llama-3.1) duty the student inherits" in out
        and 'must begin with "Llama"' in out
        and "Built with Llama" in out
    )
    assert "smollm2 (llama-3.1) condition: " in out
    # the proposal is not a review: without a named reviewer, check refuses and says what the registry proposes
    spec = _project(tmp_path / "b", {"id": "llama-3.1"})
    assert main(["check", "--spec", str(spec)]) == 2
    err = capsys.readouterr().err
    assert "teachers[0].licence.reviewed_by is empty" in err and "proposes distillation_permitted: conditional" in err


def test_an_unknown_licence_is_refused_until_its_review_is_recorded(tmp_path, capsys):
    spec = _project(tmp_path, {"name": "Acme Model Licence v2", "distillation_permitted": "yes"})
    assert main(["check", "--spec", str(spec)]) == 2
    assert "not in distil's licence registry" in capsys.readouterr().err
    data = yaml.safe_load(spec.read_text())
    data["teachers"][0]["licence"]["reviewed_by"] = "maria"
    spec.write_text(yaml.safe_dump(data, sort_keys=False))
    assert main(["check", "--spec", str(spec)]) == 2  # a named reviewer is not enough: the review must be recorded
    assert "distil licence review smollm2 --as maria" in capsys.readouterr().err
    project = load_project(spec)
    with pytest.raises(RoleError, match="maria"):
        review_licence(project, "smollm2", "sam")  # only the reviewer the record names
    assert main(["licence", "review", "smollm2", "--as", "maria", "--spec", str(spec)]) == 0
    assert main(["check", "--spec", str(spec)]) == 0
    # editing the record afterwards asks for a new review
    data["teachers"][0]["licence"]["terms"] = "https://example.com/acme-v3"
    spec.write_text(yaml.safe_dump(data, sort_keys=False))
    _, problems = check_project(load_project(spec))
    assert problems and "review is not recorded" in problems[0]


def test_a_review_without_a_verdict_is_refused(tmp_path):
    spec = _project(tmp_path, {"id": "gemma", "reviewed_by": "maria"})
    with pytest.raises(LicenceError, match="proposes 'conditional'"):
        review_licence(load_project(spec), "smollm2", "maria")


def test_the_review_is_signed_when_the_spec_sets_keys(tmp_path):
    from distil.ledger.keys import create_key

    _, public = create_key("maria")
    spec = _project(
        tmp_path, {"name": "Acme Model Licence v2", "distillation_permitted": "yes", "reviewed_by": "maria"}
    )
    data = yaml.safe_load(spec.read_text())
    data["roles"]["keys"] = {"maria": public}
    spec.write_text(yaml.safe_dump(data, sort_keys=False))
    project = load_project(spec)
    event = review_licence(project, "smollm2", "maria")
    assert event.payload["signature"]["key"] == public and event.payload["registry"] is None
    assert recorded_reviews(project)["smollm2"].signed
    assert project.ledger.verify(check_files=False).ok
    # an unsigned review written around the key does not count in a project that signs
    project.ledger.append(
        "licence.reviewed",
        {**{k: v for k, v in event.payload.items() if k not in ("signature", "signed_head")}},
        actor="maria",
    )
    assert recorded_reviews(project)["smollm2"].event_seq == event.seq


def test_duties_reach_the_report_lines_and_the_model_card(tmp_path, tiny_teacher_dir):
    from distil.export import MODEL_CARD, export_run
    from tests.serve.conftest import record_trained, write_classify_run

    spec = _project(tmp_path, {"id": "llama-3.3", "distillation_permitted": "conditional", "reviewed_by": "maria"})
    write_classify_run(spec.parent / ".distil" / "runs" / "r1")
    project = load_project(spec)
    record_trained(project, "r1")  # export loads only a student whose files the ledger recorded
    assert any('must begin with "Llama"' in line for line in duty_lines(project.spec))
    result = export_run(project, "r1", "safetensors")
    card = (result.folder / MODEL_CARD).read_text()
    assert "Built with Llama" in card and 'begins with "Llama"' in card and "llama-3.3" in card

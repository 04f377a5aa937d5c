"""A stack serves shipped runs of projects whose ledgers verify, and says which specialist is not one (exit 2)."""

from __future__ import annotations

import re

import pytest

from distil.cli import main
from distil.errors import DeploymentError, LedgerError, SpecError
from distil.spec.io import load_project
from distil.stack.deployment import plan_stack, record_stack_start, record_stack_stop
from distil.stack.load import check_stack, load_stack
from distil.stack.spec import load_stack_spec
from tests.ledger.conftest import execute
from tests.stack.conftest import record_decision, stack_body, write_stack


def test_check_names_each_shipped_run(stack_root, capsys):
    path = write_stack(stack_root, stack_body(by="router"))
    assert main(["stack", "check", str(path)]) == 0
    out = capsys.readouterr().out
    assert all(name in out for name in ("triage", "mood", "router", "ship (ledger event"))


def test_a_specialist_without_a_ship_decision_is_refused(stack_root, capsys):
    mood = load_project(stack_root / "mood" / "distil.yaml")
    record_decision(mood, "r1", "iterate")  # the newest decision of the run named is what counts
    path = write_stack(stack_root, stack_body())
    assert main(["stack", "check", str(path)]) == 2
    err = capsys.readouterr().err
    assert "stack.yaml: mood: run r1" in err and "its newest decision is iterate" in err
    assert "distil decide --spec" in err
    assert main(["stack", "serve", str(path), "--as", "ops"]) == 2  # refused before anything is loaded or served
    assert "stack.yaml: mood: run r1" in capsys.readouterr().err
    with pytest.raises(DeploymentError, match="mood"):
        load_stack(load_stack_spec(path))


def test_a_tampered_ledger_is_refused(stack_root, capsys):
    triage = load_project(stack_root / "triage" / "distil.yaml")
    execute(triage.ledger.path, "UPDATE decisions SET validator = 'mallory'")
    path = write_stack(stack_root, stack_body())
    assert main(["stack", "check", str(path)]) == 2
    err = capsys.readouterr().err
    assert "stack.yaml: triage: the ledger of" in err and "does not verify" in err
    with pytest.raises(LedgerError, match="triage"):
        check_stack(load_stack_spec(path))


def test_a_changed_student_file_is_refused(stack_root, capsys):
    (stack_root / "mood" / ".distil" / "runs" / "r1" / "student" / "distil_task.json").write_text("{}")
    assert main(["stack", "check", str(write_stack(stack_root, stack_body()))]) == 2
    assert "stack.yaml: mood: the ledger of" in capsys.readouterr().err


def test_each_project_records_the_deployment(stack_root):
    stack = load_stack_spec(write_stack(stack_root, stack_body()))
    started = record_stack_start(plan_stack(stack, check_stack(stack), "ops", "127.0.0.1", 8123))
    record_stack_stop(started)
    for name in ("triage", "mood"):
        project = load_project(stack_root / name / "distil.yaml")
        start, stop = project.ledger.verified_rows("deployments", order="event_seq ASC")
        assert (start["run_id"], start["operator"], start["port"]) == ("r1", "ops", 8123)
        assert stop["started_seq"] == start["event_seq"]
        assert project.ledger.verify().ok  # signed by the operator's key
    with pytest.raises(Exception, match="triage: roles.operator: only the operator"):
        plan_stack(stack, check_stack(stack), "dev", "127.0.0.1", 8123)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"specialists": []}, "specialists"),
        ({"routing": {"by": "router"}}, "routing.router"),
        ({"specialists": [{"name": "Mood!", "project": "m"}]}, "specialists[0].name"),
        ({"specialists": [{"name": "a", "project": "m", "threshold": 1.5}]}, "specialists[0].threshold"),
        ({"specialists": [{"name": "a", "project": "m"}, {"name": "a", "project": "n"}]}, "given twice"),
        ({"specialists": [{"name": "generalist", "project": "m"}]}, "reserved"),
    ],
)
def test_a_bad_stack_file_names_the_field(tmp_path, change, message):
    body = {**stack_body(), **change}
    with pytest.raises(SpecError, match=re.escape(message)) as raised:
        load_stack_spec(write_stack(tmp_path, body))
    assert str(raised.value).startswith(str(tmp_path / "stack.yaml"))


def test_a_router_whose_labels_name_no_specialist_is_refused(stack_root):
    body = stack_body(by="router")
    body["specialists"][1]["name"] = "feelings"  # the router still says `mood`
    with pytest.raises(SpecError, match=r"router: run r1 has labels 'mood' that name no specialist"):
        load_stack(load_stack_spec(write_stack(stack_root, body)))


@pytest.mark.parametrize("word", ["calibrate", "calibrated"])
def test_a_calibrated_threshold_is_written_as_in_distil_yaml_or_as_stacks_first_word(tmp_path, word):
    body = stack_body()
    body["specialists"][0]["threshold"] = word
    stack = load_stack_spec(write_stack(tmp_path, body))
    assert stack.spec.specialists[0].threshold == "calibrate"
    assert stack.spec.specialists[1].threshold == 0.0
    body["specialists"][0]["threshold"] = "calibration"
    with pytest.raises(SpecError, match=re.escape("specialists[0].threshold")):
        load_stack_spec(write_stack(tmp_path, body))

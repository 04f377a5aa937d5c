"""``distil evaluate`` / ``decide`` / ``report`` through the CLI: roles, the gate lock and the ledger rows."""

from __future__ import annotations

import json

import pytest

from distil.cli import main
from distil.decide import record_decision
from distil.errors import GateError, RoleError
from distil.evaluate.run import evaluate_run
from distil.spec.io import load_project

from .conftest import build_run, numpy_models


def test_decision_row_records_validator_driver_and_evaluation(run_project):
    _, _ = evaluate_run(run_project, models=numpy_models(flip_student=5), threads=1)
    evaluation_seq = run_project.ledger.rows("evaluations")[0]["event_seq"]
    decision, target, event = record_decision(run_project, "quinn")
    # student disagrees on inputs with index % 5 == 1: fidelity < 0.95, first round -> iterate
    assert decision.decision == "iterate"
    row = run_project.ledger.rows("decisions")[0]
    assert (row["validator"], row["driver"], row["evaluation_seq"], row["run_id"]) == (
        "quinn",
        "dev",
        evaluation_seq,
        "run-1",
    )
    assert {c["name"] for c in event.payload["checks"]} >= {"fidelity_min", "beat_baseline"}


def test_kill_after_a_plateau_across_rounds(run_project):
    evaluate_run(run_project, models=numpy_models(flip_student=5), threads=1)
    build_run(run_project, "run-2")
    run_project.ledger.append("iteration", {"from_run": "run-1"}, actor="dev")
    evaluate_run(run_project, "run-2", models=numpy_models(flip_student=5), threads=1)
    decision, target, _ = record_decision(run_project, "quinn")
    assert target["run_id"] == "run-2"
    assert decision.decision == "kill" and "< 1 point" in decision.reason
    assert len(decision.fidelity_by_round) == 2


def test_the_driver_may_not_decide(run_project, capsys):
    evaluate_run(run_project, models=numpy_models(), threads=1)
    with pytest.raises(RoleError):
        record_decision(run_project, "dev")
    code = main(["decide", "--as", "dev", "--spec", str(run_project.spec_path)])
    assert code == 2
    err = capsys.readouterr().err
    assert "driver" in err and err.count("\n") == 2  # one error line and one hint, no traceback
    assert run_project.ledger.rows("decisions") == []


def test_decide_refuses_a_changed_gate(run_project, capsys):
    evaluate_run(run_project, models=numpy_models(), threads=1)
    run_project.spec_path.write_text(
        run_project.spec_path.read_text().replace("max_iterations: 3", "max_iterations: 9")
    )
    with pytest.raises(GateError):
        record_decision(load_project(run_project.spec_path), "quinn")
    assert main(["decide", "--as", "quinn", "--spec", str(run_project.spec_path)]) == 2
    assert "changed since version 1" in capsys.readouterr().err
    assert main(["evaluate", "--spec", str(run_project.spec_path)]) == 2


def test_decide_and_report_commands(run_project, capsys):
    evaluate_run(run_project, models=numpy_models(), threads=1)
    assert main(["decide", "--as", "quinn", "--spec", str(run_project.spec_path)]) == 0
    out = capsys.readouterr().out
    assert "decision for run run-1" in out and "fidelity_min" in out
    assert main(["report", "--spec", str(run_project.spec_path)]) == 0
    out = capsys.readouterr().out
    assert "report.html" in out and "report.md" in out
    decision = json.loads(json.dumps(run_project.ledger.rows("decisions")[0]))
    assert decision["decision"] in {"ship", "iterate", "kill"}


def test_decide_takes_the_run_as_evaluate_does_or_as_an_option(run_project, capsys):
    evaluate_run(run_project, models=numpy_models(), threads=1)
    spec = str(run_project.spec_path)
    assert main(["decide", "run-1", "--as", "quinn", "--spec", spec]) == 0
    assert "decision for run run-1" in capsys.readouterr().out
    assert main(["decide", "--run", "run-1", "--as", "quinn", "--spec", spec]) == 0
    assert main(["decide", "nope", "--as", "quinn", "--spec", spec]) == 2
    assert "nope" in capsys.readouterr().err
    assert main(["decide", "run-1", "--run", "other", "--as", "quinn", "--spec", spec]) == 2
    assert "name different runs" in capsys.readouterr().err
    assert len(run_project.ledger.rows("decisions")) == 2


def test_commands_have_help_with_an_example():
    from distil.cli.evaluate import decide, evaluate, report

    for command in (evaluate, decide, report):
        assert "Example: distil" in command.__doc__


def test_a_quantized_variant_is_shown_beside_the_round_never_taken_as_it(run_project, capsys):
    evaluate_run(run_project, models=numpy_models(), threads=1)
    distilled_seq = run_project.ledger.rows("evaluations")[0]["event_seq"]
    # the row `distil export --quantize int8` appends, with its flat summary
    summary = {
        "agreement": 0.91,
        "agreement_distilled": 0.92,
        "agreement_with_float": 0.99,
        "size_bytes": 1000,
        "n": 24,
    }
    run_project.ledger.append(
        "evaluation",
        {"run_id": "run-1", "variant": "quantized", "summary": summary},
        actor="dev",
        table="evaluations",
        row={"run_id": "run-1", "variant": "quantized", "path": "x", "summary": summary},
    )
    decision, target, event = record_decision(run_project, "quinn")
    assert target["variant"] == "distilled" and target["event_seq"] == distilled_seq
    assert not any(c.detail.endswith("not measured") for c in decision.checks)  # the round has its figures
    assert event.payload["variants"]["quantized"]["summary"]["agreement"] == 0.91
    assert main(["decide", "--as", "quinn", "--spec", str(run_project.spec_path)]) == 0
    out = " ".join(capsys.readouterr().out.split())  # the console wraps long lines
    assert "variant quantized" in out and "not decided on" in out and "agreement 0.910" in out
    for status in ("pass", "FAIL", "undecided"):
        if any(c.status == status for c in decision.checks):
            assert status in out


def test_decide_rewrites_the_report_so_it_shows_the_decision(run_project, capsys):
    from distil.evaluate.report import write_report

    evaluate_run(run_project, models=numpy_models(flip_student=5), threads=1)
    html, md = write_report(run_project)
    assert "No decision recorded yet" in html.read_text() and "**Decision: not recorded yet**" in md.read_text()
    assert main(["decide", "--as", "quinn", "--spec", str(run_project.spec_path)]) == 0
    assert f"report with the decision: {html}" in capsys.readouterr().out.replace("\n", "")
    assert "No decision recorded yet" not in html.read_text()
    assert '<p class="decision" id="decision">iterate</p>' in html.read_text()
    assert "**Decision: iterate**" in md.read_text()

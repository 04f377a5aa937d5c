"""`distil review` refuses to serve beyond loopback without a key; `distil decide --decision` takes the
validator's outcome through the same rules (more cautious with a reason, never more permissive)."""

from __future__ import annotations

from distil.cli import main


def test_review_beyond_loopback_without_a_key_exits_2(reviewed, capsys, monkeypatch):
    _, spec = reviewed
    monkeypatch.delenv("DISTIL_REVIEW_KEY", raising=False)
    assert main(["review", "--host", "0.0.0.0", "--spec", str(spec)]) == 2
    err = capsys.readouterr().err
    assert "error: --host 0.0.0.0: the review app is bound beyond loopback without a key" in err and "--api-key" in err


def test_decide_with_a_more_permissive_outcome_is_refused(reviewed, capsys):
    project, spec = reviewed
    assert main(["decide", "--as", "quinn", "--decision", "ship", "--spec", str(spec)]) == 2
    assert "ship is refused" in capsys.readouterr().err
    assert project.ledger.rows("decisions") == []


def test_decide_with_a_more_cautious_outcome_and_a_reason_is_recorded(reviewed, capsys):
    project, spec = reviewed
    assert (
        main(["decide", "--as", "quinn", "--decision", "kill", "--reason", "the budget is gone", "--spec", str(spec)])
        == 0
    )
    rows = project.ledger.verified_rows("decisions")
    assert [r["decision"] for r in rows] == ["kill"]
    event = project.ledger.event(rows[0]["event_seq"])
    assert event.payload["ruled"] == "iterate" and event.payload["note"] == "the budget is gone"

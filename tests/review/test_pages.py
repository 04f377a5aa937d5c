"""Every page of the review app over HTTP on a finished tiny run: status and what it must show; the sign-off
through the decide code, its refusals, and the key guard beyond loopback."""

from __future__ import annotations

import html
import re

import pytest
from fastapi.testclient import TestClient

from distil.errors import ReviewError
from distil.review.app import create_app, require_safe_binding


@pytest.fixture
def client(reviewed):
    _, spec = reviewed
    return TestClient(create_app(spec))


def token(html: str) -> str:
    return re.search(r'name="token" value="([^"]+)"', html).group(1)


def test_project_page_shows_play_roles_teachers_gate_and_sets(client, reviewed):
    project, _ = reviewed
    page = client.get("/")
    assert page.status_code == 200
    text = page.text
    assert f'id="play">{project.spec.play.kind}<' in text and "<strong>billing, technical, account</strong>" in text
    for person in ("maria", "dev", "quinn", "ops"):
        assert f"<td>{person}</td>" in text
    assert "smollm2" in text and "Apache-2.0" in text
    gate = project.ledger.verified_latest("gates")
    assert gate["sha256"] in text and "<td>1</td>" in text  # the locked version and its hash


def test_rounds_page_has_one_row_per_round_with_checks_intervals_and_chart(client):
    text = client.get("/rounds").text
    rows = re.findall(r'<a href="/runs/([^"]+)" class="run-link">', text)
    assert rows == ["run-1"]
    assert re.search(r"fidelity_min</strong>\s*0\.792 \[0\.60, 0\.91\] vs 0\.950 — <span class=\"status\">FAIL", text)
    svg = re.search(r"<svg[^>]*class=\"chart\".*?</svg>", text, re.S).group(0)
    assert 'class="threshold"' in svg and 'class="whisker"' in svg and "fidelity threshold 0.95" in svg
    assert 'id="verdict"' in text and "iterate" in text


def test_run_page_shows_slices_models_curves_cost_and_curation(client):
    text = client.get("/runs/run-1").text
    assert "tone=urgent" in text and "tone=calm" in text
    slices = re.search(r'<table id="slices">.*?</table>', text, re.S).group(0)
    assert slices.count("[") >= 6  # teacher, baseline and student interval on each of two slices
    assert "payback_months" in text and "teacher_per_1m_requests" in text
    assert text.count('<svg xmlns="http://www.w3.org/2000/svg"') >= 3  # reliability + a chart per curve quantity
    assert "Training: loss" in text and "Training: val agreement" in text
    assert "min_confidence" in text and "teacher max probability below 0.4" in text
    # held-out accuracy never alone: beside its count of hand-labelled items of the split
    assert "held-out accuracy (labelled items)" in text
    models = re.search(r"<th>model</th>.*?</tbody>", text, re.S).group(0)
    assert len(re.findall(r"labelled of \d+\)", models)) == 3, models


def test_unknown_run_is_a_404_page_with_a_hint(client):
    page = client.get("/runs/no-such-run")
    assert page.status_code == 404 and "no folder" in page.text and "Next:" in page.text


def test_disagreements_are_every_differing_item_filtered_by_slice_and_search(client, reviewed):
    project, _ = reviewed
    from distil.evaluate.predictions import read_predictions

    rows = read_predictions(project.runs_dir / "run-1" / "predictions.parquet")
    answers = {(r["split"], r["item_id"], r["model"]): r for r in rows if r["split"] in ("test", "gold")}
    differing = {
        (s, i)
        for (s, i, m), r in answers.items()
        if m == "student" and r["label"] != answers[(s, i, "teacher")]["label"]
    }
    assert differing, "the fixture's student must disagree somewhere"

    text = client.get("/runs/run-1/disagreements").text
    body = re.search(r'<table id="disagreements".*?</table>', text, re.S).group(0)
    assert body.count("<tr data-tags") == len(differing)
    assert re.search(r'<span class="txt">billing 0\.\d\d</span>', body)  # each distribution over the task's label names

    urgent = client.get("/runs/run-1/disagreements", params={"slice": "tone=urgent"}).text
    tags = re.findall(r'<tr data-tags="([^"]*)"', urgent)
    expected = {(s, i) for s, i in differing if answers[(s, i, "teacher")]["tags"].get("tone") == "urgent"}
    assert len(tags) == len(expected) and all("tone=urgent" in t for t in tags)

    some = next(answers[(s, i, "teacher")]["input"] for s, i in sorted(differing))
    found = client.get("/runs/run-1/disagreements", params={"q": some}).text
    assert found.count("<tr data-tags") >= 1 and some in found

    wrong = re.search(r'<table id="teacher-wrong".*?</table>', text, re.S).group(0)
    n_wrong = sum(
        1
        for (s, i, m), r in answers.items()
        if m == "teacher" and r["gold_label"] is not None and r["label"] != r["gold_label"]
    )
    assert wrong.count("<tr><td>") == n_wrong


def test_signoff_records_a_decision_row_through_decide(client, reviewed):
    project, _ = reviewed
    page = client.get("/signoff")
    assert "the locked gate's rules say" in page.text
    reply = client.post(
        "/signoff",
        data={
            "token": token(page.text),
            "run_id": "run-1",
            "name": "quinn",
            "decision": "kill",
            "reason": "the urgent slice is too thin to trust",
        },
        follow_redirects=True,
    )
    assert reply.status_code == 200 and 'id="recorded"' in reply.text
    rows = project.ledger.verified_rows("decisions")
    assert len(rows) == 1 and rows[0]["decision"] == "kill" and rows[0]["validator"] == "quinn"
    event = project.ledger.event(rows[0]["event_seq"])
    assert event.payload["ruled"] == "iterate" and "urgent slice is too thin" in event.payload["reason"]
    assert "the urgent slice is too thin" in reply.text  # the page shows who decided what, when, and why


@pytest.mark.parametrize(
    ("name", "decision", "expected"),
    [
        ("dev", "iterate", "is the driver and may not sign"),
        ("maria", "iterate", "only the validator (quinn) may decide"),
        ("quinn", "ship", "ship is refused: the locked gate's rules say iterate"),
        ("quinn", "kill", "needs a reason"),
    ],
)
def test_a_refused_signoff_shows_the_reason_and_records_nothing(client, reviewed, name, decision, expected):
    project, _ = reviewed
    page = client.get("/signoff")
    reply = client.post(
        "/signoff",
        data={"token": token(page.text), "run_id": "run-1", "name": name, "decision": decision, "reason": ""},
    )
    assert reply.status_code == 409
    refusal = html.unescape(re.search(r'<div class="refusal" id="refusal".*?</div>', reply.text, re.S).group(0))
    assert expected in refusal
    assert project.ledger.rows("decisions") == []


def test_signoff_is_refused_when_the_gate_changed(client, reviewed):
    project, spec = reviewed
    page = client.get("/signoff")
    spec.write_text(spec.read_text().replace("fidelity_min: 0.95", "fidelity_min: 0.5"))
    assert "fidelity_min: 0.5" in spec.read_text()
    reply = client.post(
        "/signoff",
        data={"token": token(page.text), "run_id": "run-1", "name": "quinn", "decision": "iterate", "reason": ""},
    )
    assert reply.status_code == 409 and "changed" in reply.text and project.ledger.rows("decisions") == []


def test_a_signoff_without_the_form_token_is_refused(client, reviewed):
    project, _ = reviewed
    reply = client.post("/signoff", data={"token": "forged", "run_id": "run-1", "name": "quinn", "decision": "iterate"})
    assert reply.status_code == 403 and project.ledger.rows("decisions") == []


def test_after_launch_shows_traffic_and_escalation(client):
    text = client.get("/after-launch").text
    assert re.search(r"<strong>8</strong> logged requests; <strong>25\.0%</strong> escalated", text)
    assert 'id="no-monitor"' in text


def test_beyond_loopback_a_key_is_required(reviewed):
    with pytest.raises(ReviewError, match="without a key"):
        require_safe_binding("0.0.0.0", None)
    require_safe_binding("127.0.0.1", None)
    require_safe_binding("::1", None)
    require_safe_binding("0.0.0.0", "k")
    _, spec = reviewed
    guarded = TestClient(create_app(spec, api_key="sekret"))
    assert guarded.get("/rounds").status_code == 401
    assert (
        guarded.get("/rounds", headers={"Accept": "text/html"}, follow_redirects=False)
        .headers["location"]
        .startswith("/login")
    )
    assert guarded.get("/rounds", headers={"Authorization": "Bearer sekret"}).status_code == 200
    assert guarded.post("/login", data={"key": "wrong", "next": "/rounds"}).status_code == 401
    assert guarded.post("/login", data={"key": "sekret", "next": "/rounds"}, follow_redirects=True).status_code == 200
    assert guarded.get("/rounds").status_code == 200  # the cookie the login set

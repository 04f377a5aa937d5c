"""The stack over real HTTP on 127.0.0.1: requests reach the specialist they name (by `task` or `model`), unsure
ones escalate to the generalist and are counted per specialist, a router model routes by its top label."""

from __future__ import annotations

import json

import httpx

from distil.serve.traffic import TrafficLog, read_traffic, traffic_dir
from distil.stack.load import load_stack
from distil.stack.server import create_stack_app
from distil.stack.spec import load_stack_spec
from tests.serve.conftest import loop_held_behind, running_server, wait_for
from tests.stack.conftest import MOOD_LABELS, TRIAGE_LABELS, stack_body, write_stack


def _metric(text: str, name: str, **labels: str) -> float:
    shown = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))  # prometheus sorts them
    for line in text.splitlines():
        if line.startswith(f"{name}{{{shown}}} "):
            return float(line.split()[-1])
    raise AssertionError(f"{name}{{{shown}}} not in /metrics:\n" + "\n".join(x for x in text.splitlines() if name in x))


def test_task_and_model_pick_the_specialist(stack_root):
    stack = load_stack_spec(write_stack(stack_root, stack_body()))
    traffic = TrafficLog(traffic_dir(stack.state_dir), redaction=False, flush_every_s=0)
    with running_server(create_stack_app(load_stack(stack), api_key="sk-stack", traffic=traffic)) as (url, _):
        client = httpx.Client(base_url=url, headers={"Authorization": "Bearer sk-stack"}, timeout=60)
        names = [m["id"] for m in client.get("/v1/models").json()["data"]]
        assert names == ["support", "triage", "mood", "generalist"]

        mood = client.post("/v1/classify", json={"input": ["I am furious", "all good"], "task": "mood"}).json()
        assert [d["specialist"] for d in mood["data"]] == ["mood", "mood"]
        assert all(d["label"] in MOOD_LABELS and set(d["distribution"]) == set(MOOD_LABELS) for d in mood["data"])
        assert {(d["route"], d["escalated"], d["routed_by"]) for d in mood["data"]} == {("student", False, "task")}

        chat = client.post(
            "/v1/chat/completions", json={"model": "triage", "messages": [{"role": "user", "content": "refund me"}]}
        ).json()
        assert chat["model"] == "triage" and chat["distil"]["specialist"] == "triage"
        assert chat["choices"][0]["message"]["content"] in TRIAGE_LABELS and chat["distil"]["routed_by"] == "model"

        stream = client.post(
            "/v1/chat/completions",
            json={"task": "mood", "stream": True, "messages": [{"role": "user", "content": "so calm"}]},
        )
        events = [json.loads(e[6:]) for e in stream.text.split("\n\n") if e.startswith("data: {")]
        assert stream.headers["content-type"].startswith("text/event-stream") and stream.text.endswith("[DONE]\n\n")
        assert {e["model"] for e in events} == {"mood"} and events[-1]["distil"]["specialist"] == "mood"

        missing = client.post("/v1/classify", json={"input": "which one?"})
        assert missing.status_code == 400 and missing.json()["error"]["code"] == "missing_task"
        unknown = client.post("/v1/classify", json={"input": "x", "task": "legal"})
        assert unknown.status_code == 400 and unknown.json()["error"]["param"] == "task"
        assert client.post("/v1/classify", json={"input": "x", "model": "nope"}).status_code == 404
        assert httpx.post(f"{url}/v1/classify", json={"input": "x", "task": "mood"}).status_code == 401  # no key
        empty = client.post("/v1/classify", json={"input": " ", "task": "mood"})  # the specialist's own refusal
        assert empty.status_code == 400 and empty.json()["error"]["code"] == "invalid_text"

        metrics = client.get("/metrics").text
        assert _metric(metrics, "distil_specialist_requests_total", specialist="mood", routed_by="task") == 2
        assert _metric(metrics, "distil_specialist_requests_total", specialist="triage", routed_by="model") == 1
        assert _metric(metrics, "distil_specialist_escalations_total", specialist="mood") == 0
    rows = read_traffic(traffic_dir(stack.state_dir))
    assert sorted(r["model"] for r in rows) == ["mood", "mood", "mood", "triage"]


def test_unsure_requests_escalate_to_the_generalist(stack_root):
    stack = load_stack_spec(write_stack(stack_root, stack_body(threshold_triage=1.0)))
    with running_server(create_stack_app(load_stack(stack))) as (url, _):
        client = httpx.Client(base_url=url, timeout=60)
        triage = client.post("/v1/classify", json={"input": ["my invoice is wrong", "app crashes"], "task": "triage"})
        assert [(d["specialist"], d["route"], d["escalated"]) for d in triage.json()["data"]] == [
            ("triage", "teacher", True)
        ] * 2
        mood = client.post("/v1/classify", json={"input": "calm day", "model": "mood"}).json()["data"][0]
        assert (mood["route"], mood["escalated"]) == ("student", False)
        alone = client.post(
            "/v1/chat/completions",
            json={"model": "generalist", "task": "mood", "messages": [{"role": "user", "content": "grr"}]},
        ).json()
        assert alone["model"] == "generalist" and alone["distil"]["route"] == "teacher"
        assert alone["choices"][0]["message"]["content"] in MOOD_LABELS  # the generalist answers mood's task

        metrics = client.get("/metrics").text
        assert _metric(metrics, "distil_specialist_escalations_total", specialist="triage") == 2
        assert _metric(metrics, "distil_specialist_escalations_total", specialist="mood") == 0  # asked, not unsure
        assert _metric(metrics, "distil_specialist_answers_total", specialist="mood", route="teacher") == 1
        assert _metric(metrics, "distil_specialist_answers_total", specialist="mood", route="student") == 1
        assert _metric(metrics, "distil_specialist_threshold", specialist="triage") == 1.0


def test_a_router_model_routes_by_its_top_label(stack_root):
    stack = load_stack_spec(write_stack(stack_root, stack_body(by="router")))
    # the tiny random router (seed 3) sends the first three to `triage` and the rest to `mood`
    texts = ["refund", "the app crashes on login", "hello there friend"] + [
        f"ticket number {i}: my mood" for i in range(4)
    ]
    with running_server(create_stack_app(load_stack(stack))) as (url, _):
        client = httpx.Client(base_url=url, timeout=60)
        assert "router" in [m["id"] for m in client.get("/v1/models").json()["data"]]
        said = [
            d["label"] for d in client.post("/v1/classify", json={"input": texts, "model": "router"}).json()["data"]
        ]
        routed = client.post("/v1/classify", json={"input": texts}).json()["data"]
        assert [d["index"] for d in routed] == list(range(len(texts)))
        assert [d["specialist"] for d in routed] == said and set(said) == {"triage", "mood"}
        assert all(d["routed_by"] == "router" and 0 < d["router_confidence"] <= 1 for d in routed)
        labels = {"triage": TRIAGE_LABELS, "mood": MOOD_LABELS}
        assert all(d["label"] in labels[d["specialist"]] for d in routed)
        chat = client.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": texts[0]}]}).json()
        assert chat["distil"]["specialist"] == said[0] and chat["model"] == said[0]
        explicit = client.post("/v1/classify", json={"input": texts[0], "task": "mood"}).json()["data"][0]
        assert explicit["specialist"] == "mood" and explicit["routed_by"] == "task"  # `task` still wins


def test_readiness_says_busy_while_the_event_loop_runs_behind(stack_root):
    """The loop held behind (as hundreds of other requests would hold it): the stack's /readyz says busy with the lag,
    and new requests get 429, while every specialist's queue is empty."""
    body = {**stack_body(), "serve": {"max_loop_lag_s": 0.1}}
    stack = load_stack_spec(write_stack(stack_root, body))
    with running_server(create_stack_app(load_stack(stack))) as (url, server), httpx.Client(base_url=url) as client:
        ready = client.get("/readyz").json()
        assert ready["status"] == "ready" and ready["loop_lag_ms"] < 100
        with loop_held_behind(server):
            wait_for(lambda: client.get("/readyz").status_code == 503, "readiness saw the loop behind", attempts=50)
            busy = client.get("/readyz").json()
            assert busy["status"] == "busy" and busy["loop_lag_ms"] > 100
            assert {q["load"] for q in busy["queues"].values()} == {0}
            refused = client.post("/v1/classify", json={"input": "refund me", "task": "triage"})
            assert refused.status_code == 429 and refused.json()["error"]["code"] == "server_busy"
        wait_for(lambda: client.get("/readyz").status_code == 200, "the loop caught up")

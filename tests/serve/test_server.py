"""The server over real HTTP on 127.0.0.1: auth, errors, routing, metrics, the traffic log."""

from __future__ import annotations

import json
import threading

import httpx
import numpy as np
import pytest
import torch

from distil.serve.runs import load_served
from distil.serve.server import create_app
from distil.serve.traffic import TrafficLog, read_traffic
from distil.spec.io import load_project
from tests.serve.conftest import LABELS, running_server

KEY = "sk-test-123"
AUTH = {"Authorization": f"Bearer {KEY}"}
TEXTS = [
    "I was charged twice this month",
    "The app crashes when I upload a file",
    "How do I change my e-mail address?",
    "refund please",
]


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    torch.set_num_threads(1)


@pytest.fixture
def served(classify_project):
    project = load_project(classify_project)
    return load_served(project, "r1", threshold=0.0)


def test_auth_errors_and_openai_error_bodies(served):
    with running_server(create_app(served, api_key=KEY, max_body_bytes=2048)) as (url, _):
        with httpx.Client(base_url=url, timeout=30) as c:
            assert c.get("/healthz").status_code == 200  # probes need no key
            for headers in ({}, {"Authorization": "Bearer wrong"}):
                r = c.post("/v1/classify", json={"input": "hi"}, headers=headers)
                assert r.status_code == 401 and r.json()["error"]["type"] == "invalid_api_key"
            assert c.get("/metrics").status_code == 401

            r = c.post(
                "/v1/classify", content=b'{"input": "unterminated', headers={**AUTH, "content-type": "application/json"}
            )
            assert r.status_code == 400 and r.json()["error"]["code"] == "json_invalid"
            r = c.post(
                "/v1/classify",
                content=b"\xff\xfe not json at all",
                headers={**AUTH, "content-type": "application/json"},
            )
            assert r.status_code == 400
            r = c.post("/v1/classify", json={"input": 42}, headers=AUTH)
            assert r.status_code == 400 and r.json()["error"]["param"].startswith("input")
            r = c.post("/v1/classify", json={"input": []}, headers=AUTH)
            assert r.status_code == 400 and r.json()["error"]["param"] == "input"
            r = c.post("/v1/classify", json={"input": "x", "model": "other"}, headers=AUTH)
            assert r.status_code == 404 and r.json()["error"]["code"] == "model_not_found"  # as OpenAI's API says
            # a lone surrogate, an empty text, whitespace only: 400 naming the input, never a 500 or a label
            for sent, param in (("\ud800 x", "input"), ("", "input"), (["ok", "  \n"], "input[1]")):
                r = c.post(
                    "/v1/classify",
                    content=json.dumps({"input": sent}).encode(),
                    headers={**AUTH, "content-type": "application/json"},
                )
                assert r.status_code == 400, (sent, r.status_code, r.text)
                assert r.json()["error"] == {
                    "message": r.json()["error"]["message"],
                    "type": "invalid_request_error",
                    "param": param,
                    "code": "invalid_text",
                }
            assert (
                "U+D800"
                in c.post(
                    "/v1/classify",
                    content=b'{"input": "\\ud800 x"}',
                    headers={**AUTH, "content-type": "application/json"},
                ).json()["error"]["message"]
            )
            r = c.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": ""}]}, headers=AUTH)
            assert r.status_code == 400 and r.json()["error"]["param"] == "messages"
            r = c.post(
                "/v1/chat/completions",
                json={"messages": [{"role": "user", "content": [{"type": "text", "text": 7}]}]},
                headers=AUTH,
            )
            assert r.status_code == 400 and r.json()["error"]["param"].startswith("messages")
            # half a surrogate pair as a key or as the model's name is a 4xx, and echoed as an escape
            for sent, status in ((b'{"input": "x", "\\udc00": 1}', 400), (b'{"input": "x", "model": "\\ud800"}', 404)):
                r = c.post("/v1/classify", content=sent, headers={**AUTH, "content-type": "application/json"})
                assert r.status_code == status and r.json()["error"]["message"], r.text
            r = c.post("/v1/chat/completions", json={"messages": []}, headers=AUTH)
            assert r.status_code == 400
            r = c.post("/v1/classify", json={"input": "x" * 5000}, headers=AUTH)
            assert r.status_code == 413 and "limit" in r.json()["error"]["message"]

            def chunks():  # no content-length: the limit must hold for streamed bodies too
                for _ in range(10):
                    yield b"x" * 1000

            r = c.post("/v1/classify", content=chunks(), headers={**AUTH, "content-type": "application/json"})
            assert r.status_code == 413
            assert c.get("/nope", headers=AUTH).status_code == 404
            assert c.get("/nope", headers=AUTH).json()["error"]["type"] == "not_found_error"
            # after all that, the server still answers
            r = c.post("/v1/classify", json={"input": TEXTS[0]}, headers=AUTH)
            assert r.status_code == 200
            metrics = c.get("/metrics", headers=AUTH).text
            assert 'distil_requests_total{endpoint="/v1/classify",status="400"} 9' in metrics
            assert 'distil_requests_total{endpoint="/v1/classify",status="404"} 2' in metrics
            assert 'distil_requests_total{endpoint="/v1/classify",status="413"} 2' in metrics
            assert 'endpoint="other",status="404"} 2' in metrics and "/nope" not in metrics


def test_classify_chat_and_models_agree_with_the_student(served):
    expected = served.student.label_distribution(TEXTS)
    with running_server(create_app(served)) as (url, _):
        with httpx.Client(base_url=url, timeout=30) as c:
            data = c.post("/v1/classify", json={"input": TEXTS}).json()["data"]
            assert [d["label"] for d in data] == [LABELS[i] for i in expected.argmax(axis=1)]
            got = np.array([[d["distribution"][lab] for lab in LABELS] for d in data])
            np.testing.assert_allclose(got, expected, atol=1e-6)
            assert {d["route"] for d in data} == {"student"}  # threshold 0: the student answers all

            chat = c.post(
                "/v1/chat/completions", json={"model": "r1", "messages": [{"role": "user", "content": TEXTS[1]}]}
            ).json()
            assert chat["object"] == "chat.completion"
            assert chat["choices"][0]["message"]["content"] == LABELS[int(expected[1].argmax())]
            assert c.get("/v1/models").json()["data"][0]["id"] == "r1"


def test_low_confidence_request_escalates_to_the_teacher(served):
    student_conf = served.student.label_distribution(TEXTS).max(axis=1)
    order = np.argsort(student_conf)
    low, high = TEXTS[order[0]], TEXTS[order[-1]]
    served.threshold = float((student_conf[order[0]] + student_conf[order[-1]]) / 2)
    teacher_probs = served.teacher.label_distribution([low])[0]
    with running_server(create_app(served)) as (url, _):
        with httpx.Client(base_url=url, timeout=60) as c:
            data = c.post("/v1/classify", json={"input": [low, high]}).json()["data"]
            assert [d["route"] for d in data] == ["teacher", "student"]
            np.testing.assert_allclose([data[0]["distribution"][lab] for lab in LABELS], teacher_probs, atol=1e-6)
            assert data[0]["label"] == LABELS[int(teacher_probs.argmax())]
            metrics = c.get("/metrics").text
            assert "distil_escalations_total 1" in metrics
            assert "distil_escalated_share 0.5" in metrics
            assert "distil_blended_cost_per_1m_requests 340.0" in metrics  # 40 + 0.5 × 600 (triage prices)


def test_traffic_is_logged_and_nothing_is_lost_across_a_graceful_restart(served, tmp_path):
    folder = tmp_path / "traffic"
    sent = 0
    for restart in range(2):
        log = TrafficLog(folder, redaction=True, flush_every_n=1000, flush_every_s=0)  # only the shutdown flushes
        with running_server(create_app(served, traffic=log)) as (url, _):
            with httpx.Client(base_url=url, timeout=30) as c:
                errors = []

                def client(i: int, restart: int = restart, errors: list = errors) -> None:
                    r = c.post(
                        "/v1/classify", json={"input": [f"mail me at a{i}@example.com ({restart})", TEXTS[i % 4]]}
                    )
                    if r.status_code != 200:
                        errors.append(r.status_code)

                threads = [threading.Thread(target=client, args=(i,)) for i in range(6)]
                for t in threads:
                    t.start()
                for t in threads:
                    t.join()
                assert not errors
                sent += 12
        assert log.written == 12  # flushed by the app's shutdown, not by a size or time trigger
    rows = read_traffic(folder)
    assert len(rows) == sent
    assert sum("[EMAIL]" in r["input"] for r in rows) == 12 and not any("@example.com" in r["input"] for r in rows)
    assert {r["route"] for r in rows} == {"student"} and all(
        r["answer"] in LABELS and len(r["distribution"]) == 3 for r in rows
    )
    assert [r["timestamp"] for r in rows] == sorted(r["timestamp"] for r in rows)


def test_generate_run_answers_chat_and_refuses_classify(tmp_path):
    import json

    from distil.serve.runs import ServedModel, load_student
    from tests.conftest import build_tiny_causal_lm

    folder = build_tiny_causal_lm(tmp_path / "student", layers=2, hidden=32)
    (folder / "distil_task.json").write_text(
        json.dumps(
            {"kind": "generate", "prompt_template": "Summarise: {input}\n", "max_length": 64, "max_new_tokens": 4}
        )
    )
    student = load_student(folder)
    expected = student.generate(["the printer is on fire"], max_new_tokens=3)[0]
    log = TrafficLog(tmp_path / "traffic", redaction=False, flush_every_s=0)
    served = ServedModel("g1", "generate", [], student, None, 0.0)
    with running_server(create_app(served, traffic=log)) as (url, _):
        with httpx.Client(base_url=url, timeout=30) as c:
            r = c.post(
                "/v1/chat/completions",
                json={
                    "messages": [
                        {"role": "system", "content": "be brief"},
                        {"role": "user", "content": [{"type": "text", "text": "the printer is on fire"}]},
                    ],
                    "max_tokens": 3,
                },
            )
            assert r.status_code == 200 and r.json()["choices"][0]["message"]["content"] == expected
            r = c.post("/v1/classify", json={"input": "x"})
            assert r.status_code == 400 and r.json()["error"]["code"] == "wrong_task"
            streamed = c.post(
                "/v1/chat/completions",
                json={
                    "messages": [{"role": "user", "content": "the printer is on fire"}],
                    "stream": True,
                    "max_tokens": 3,
                },
            )
            assert streamed.status_code == 200 and streamed.headers["content-type"].startswith("text/event-stream")
            assert streamed.text.endswith("data: [DONE]\n\n")
    rows = read_traffic(tmp_path / "traffic")
    assert [(r["input"], r["answer"], r["distribution"]) for r in rows] == [
        ("the printer is on fire", expected, None)
    ] * 2

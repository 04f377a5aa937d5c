"""The stack's generalist over real HTTP on 127.0.0.1: one local model in memory however many specialists escalate
to it, each asking it its own task; a generalist that fails is an OpenAI-style error to whoever asked it directly,
and the specialist's own answer, marked as a fallback, to a request that only escalated."""

from __future__ import annotations

import json

import httpx
import numpy as np
import yaml

from distil.spec.io import load_project
from distil.stack.load import load_stack
from distil.stack.server import create_stack_app
from distil.stack.spec import load_stack_spec
from distil.teachers.registry import build_teacher
from tests.serve.conftest import running_server
from tests.stack.conftest import MOOD_LABELS, TRIAGE_LABELS, stack_body, write_stack
from tests.teachers.openai_server import RunningServer, ServerState

TEXTS = ["my invoice is wrong", "the app crashes", "so calm today"]
ERROR_FIELDS = {"message", "type", "param", "code"}


def test_specialists_share_one_local_generalist_and_each_asks_it_its_own_task(stack_root):
    stack = load_stack_spec(write_stack(stack_root, stack_body(threshold_triage=1.0, threshold_mood=1.0)))
    loaded = load_stack(stack)
    triage, mood = loaded.specialists["triage"].teacher, loaded.specialists["mood"].teacher
    assert triage.predictor is not mood.predictor  # each its own prompt, labels and few-shot examples ...
    assert triage.predictor.model is mood.predictor.model  # ... over one copy of the weights
    assert triage.predictor.tokenizer is mood.predictor.tokenizer and triage._lock is mood._lock
    # what each specialist's teacher answers when built on its own, with its own copy of the weights
    alone = {
        name: build_teacher(load_project(stack_root / name / "distil.yaml")).label_distribution(TEXTS)
        for name in ("triage", "mood")
    }
    with running_server(create_stack_app(loaded)) as (url, _):
        client = httpx.Client(base_url=url, timeout=60)
        for name, labels in (("triage", TRIAGE_LABELS), ("mood", MOOD_LABELS)):
            data = client.post("/v1/classify", json={"input": TEXTS, "task": name}).json()["data"]
            assert {(d["specialist"], d["route"], d["escalated"]) for d in data} == {(name, "teacher", True)}
            assert all(list(d["distribution"]) == labels for d in data)
            served = np.array([[d["distribution"][label] for label in labels] for d in data])
            np.testing.assert_allclose(served, alone[name], atol=1e-4)


def _failing_generalist(stack_root, base_url: str) -> dict:
    """A stack whose generalist, written in stack.yaml, is an OpenAI-compatible server at ``base_url``; triage is
    unsure of everything (threshold 1), mood of nothing."""
    triage_spec = yaml.safe_load((stack_root / "triage" / "distil.yaml").read_text())
    body = stack_body(threshold_triage=1.0)
    body["generalist"] = {
        "id": "remote",
        "source": f"openai:{base_url}#big",
        "licence": triage_spec["teachers"][0]["licence"],
    }
    return body


def test_a_failing_generalist_is_an_error_when_asked_and_a_fallback_when_escalated_to(stack_root):
    with RunningServer(ServerState(fail_first=10**6, fail_status=500, retry_after="0")) as broken:
        stack = load_stack_spec(write_stack(stack_root, _failing_generalist(stack_root, broken.base_url)))
        with running_server(create_stack_app(load_stack(stack))) as (url, _):
            client = httpx.Client(base_url=url, timeout=60)
            direct = [
                client.post("/v1/classify", json={"input": "refund", "model": "generalist", "task": "triage"}),
                client.post(
                    "/v1/chat/completions",
                    json={"model": "generalist", "task": "mood", "messages": [{"role": "user", "content": "grr"}]},
                ),
            ]
            for reply in direct:
                assert reply.status_code == 502, reply.text
                error = reply.json()["error"]
                assert set(error) == ERROR_FIELDS and error["code"] == "teacher_error"
                assert error["type"] == "server_error" and "generalist" in error["message"]
                assert "Traceback" not in reply.text and "`student`" not in error["message"]

            routed = client.post("/v1/classify", json={"input": TEXTS, "task": "triage"})
            assert routed.status_code == 200
            for item in routed.json()["data"]:
                assert (item["route"], item["fallback"], item["escalated"]) == (
                    "student_fallback",
                    "teacher_error",
                    False,
                )
                assert item["specialist"] == "triage" and item["label"] in TRIAGE_LABELS
            chat = client.post(
                "/v1/chat/completions", json={"model": "triage", "messages": [{"role": "user", "content": "refund"}]}
            ).json()
            assert (chat["distil"]["route"], chat["distil"]["fallback"]) == ("student_fallback", "teacher_error")
            assert chat["model"] == "triage" and chat["choices"][0]["message"]["content"] in TRIAGE_LABELS
            sure = client.post("/v1/classify", json={"input": "calm", "task": "mood"}).json()["data"][0]
            assert (sure["route"], sure["escalated"]) == ("student", False)  # a sure specialist never asks it
        assert broken.state.requests > 0  # the generalist was asked, and failed


def test_a_busy_generalist_keeps_its_status_and_retry_after_in_the_stacks_words():
    from fastapi.responses import JSONResponse

    from distil.serve.server import error_body
    from distil.stack.server import generalist_refusal

    busy = JSONResponse(
        error_body(
            "the teacher is busy (teacher_busy); retry after 1 s, or send model `student`",
            "rate_limit_error",
            code="teacher_busy",
        ),
        status_code=429,
        headers={"Retry-After": "1"},
    )
    said = generalist_refusal(busy, "triage")
    error = json.loads(said.body)["error"]
    assert (said.status_code, said.headers["retry-after"], error["code"], error["type"]) == (
        429,
        "1",
        "teacher_busy",
        "rate_limit_error",
    )
    assert error["message"] == "the generalist is busy (teacher_busy); retry after 1 s, or send model `triage`"
    other = JSONResponse(error_body("input: give at least one text", code="empty_input"), status_code=400)
    assert generalist_refusal(other, "triage") is other  # the specialist's own refusals pass as they were

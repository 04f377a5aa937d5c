"""The stack's part of docs/api.md says what the stack sends: its answers over real HTTP on 127.0.0.1 validate
against the bodies documented for it, and carry no field those bodies do not name."""

from __future__ import annotations

import httpx
from pydantic import BaseModel

from distil.serve.schema import ErrorBody, ErrorDetail
from distil.stack.load import load_stack
from distil.stack.schema import (
    StackChatResponse,
    StackClassifyResponse,
    StackDistilAnswer,
    StackHealth,
    StackLabelAnswer,
    StackModelList,
    StackReadiness,
)
from distil.stack.server import create_stack_app
from distil.stack.spec import load_stack_spec
from tests.serve.conftest import running_server
from tests.stack.conftest import stack_body, write_stack


def _documented(model: type[BaseModel], body: dict) -> None:
    model.model_validate(body)
    assert set(body) <= set(model.model_fields), f"{model.__name__} does not name {set(body) - set(model.model_fields)}"


def test_what_the_stack_sends_is_what_docs_api_md_documents(stack_root):
    stack = load_stack_spec(write_stack(stack_root, stack_body(threshold_triage=1.0, by="router")))
    with running_server(create_stack_app(load_stack(stack))) as (url, _):
        client = httpx.Client(base_url=url, timeout=60)
        _documented(StackHealth, client.get("/healthz").json())
        _documented(StackReadiness, client.get("/readyz").json())
        _documented(StackModelList, client.get("/v1/models").json())
        texts = ["refund", "the app crashes on login", "ticket number 1: my mood"]
        answers = [
            client.post("/v1/classify", json={"input": texts}).json(),  # routed by the router
            client.post("/v1/classify", json={"input": texts, "task": "triage"}).json(),  # escalated
            client.post("/v1/classify", json={"input": texts[0], "model": "generalist", "task": "mood"}).json(),
            client.post("/v1/classify", json={"input": texts[0], "model": "router"}).json(),
        ]
        for answer in answers:
            _documented(StackClassifyResponse, answer)
            for item in answer["data"]:
                _documented(StackLabelAnswer, item)
        assert {"router_confidence", "specialist", "routed_by", "escalated"} <= set(answers[0]["data"][0])
        assert {item["route"] for item in answers[1]["data"]} == {"teacher"}
        for body in (
            {"messages": [{"role": "user", "content": texts[0]}]},
            {"model": "generalist", "task": "triage", "messages": [{"role": "user", "content": texts[1]}]},
        ):
            chat = client.post("/v1/chat/completions", json=body).json()
            _documented(StackChatResponse, chat)
            _documented(StackDistilAnswer, chat["distil"])
        errors = [
            client.post("/v1/classify", json={"input": "x", "task": "legal"}),
            client.post("/v1/classify", json={"input": "x", "model": "nope"}),
            client.post("/v1/classify", json={"input": "x", "extra": 1}),
        ]
        assert [r.status_code for r in errors] == [400, 404, 400]
        for r in errors:
            _documented(ErrorBody, r.json())
            _documented(ErrorDetail, r.json()["error"])

"""docs/api.md is the server's own OpenAPI schema written out: regenerated here and compared, and the bodies it
documents are checked against what the server sends over real HTTP."""

from __future__ import annotations

import httpx
import torch
from fastapi.routing import APIRoute

from distil.serve.apidoc import (
    DOC_PATH,
    api_page,
    api_schema,
    documentation_app,
    documentation_stack_app,
    main,
    render,
)
from distil.serve.runs import load_served
from distil.serve.schema import (
    ChatResponse,
    ClassifyResponse,
    ErrorBody,
    ErrorDetail,
    Health,
    ModelList,
    Readiness,
)
from distil.serve.server import create_app
from distil.spec.io import load_project
from tests.serve.conftest import running_server

KEY = "sk-doc-123"
AUTH = {"Authorization": f"Bearer {KEY}"}


def test_docs_api_md_is_the_servers_schema_as_it_is_now():
    assert DOC_PATH.read_text(encoding="utf-8") == api_page(), (
        "docs/api.md is out of date: run `python -m distil.serve.apidoc`"
    )


def test_the_stacks_routes_fields_and_model_names_are_documented():
    text = api_page()
    stack_part = text[text.index("## The stack: `distil stack serve`") :]
    routes = [(m, r.path) for r in documentation_stack_app().routes if isinstance(r, APIRoute) for m in r.methods]
    assert len(routes) >= 6
    for method, path in routes:
        assert f"#### `{method} {path}` (stack)" in stack_part, f"the stack's {method} {path} is not documented"
    for name in ("StackClassifyRequest", "StackChatRequest", "StackLabelAnswer", "StackDistilAnswer"):
        assert f"#### {name}\n" in stack_part
    for field in ("specialist", "routed_by", "escalated", "router_confidence"):
        assert f"| `{field}` |" in stack_part.split("#### StackLabelAnswer")[1]
        assert f"| `{field}` |" in stack_part.split("#### StackDistilAnswer")[1]
    task_row = next(line for line in stack_part.splitlines() if line.startswith("| `task` |"))
    model_row = next(line for line in stack_part.splitlines() if line.startswith("| `model` | string or null |"))
    assert "The specialist to answer" in task_row and "`generalist`" in model_row and "`router`" in model_row
    assert "`missing_task`" in stack_part and "`unknown_task`" in stack_part and "`conflict`" in stack_part
    assert "#### ErrorBody" not in stack_part  # a body the single-run part documents is linked, not repeated
    schema = api_schema(documentation_stack_app())
    for path, operations in schema["paths"].items():
        for method, operation in operations.items():
            statuses = set(operation["responses"])
            assert "200" in statuses and statuses - {"200"}, f"stack {method} {path}: no errors documented"
            if path.startswith("/v1/chat") or path.startswith("/v1/classify"):
                assert {"400", "401", "404", "429", "502"} <= statuses, f"stack {method} {path}: {sorted(statuses)}"


def test_every_route_is_documented_with_its_request_answer_and_errors():
    text = render(api_schema())
    routes = [(m, r.path) for r in documentation_app().routes if isinstance(r, APIRoute) for m in r.methods]
    assert len(routes) >= 5
    for method, path in routes:
        assert f"### `{method} {path}`" in text, f"{method} {path} is not documented"
    schema = api_schema()
    for path, operations in schema["paths"].items():
        for method, operation in operations.items():
            statuses = set(operation["responses"])
            assert "200" in statuses and statuses - {"200"}, f"{method} {path}: no errors documented"
            assert "422" not in statuses  # the server answers a bad body with 400, not FastAPI's 422
            if path not in ("/healthz", "/readyz"):  # the probes are open
                assert "401" in statuses, f"{method} {path}: the API key's 401 is not documented"
    for name in schema["components"]["schemas"]:
        assert f"### {name}\n" in text
    assert "| `input` | string or list of string | yes |" in text  # the /v1/classify request body


def test_check_mode_fails_on_a_stale_file_and_passes_on_a_fresh_one(tmp_path, capsys):
    out = tmp_path / "api.md"
    out.write_text("# an old page\n")
    assert main(["--check", "--out", str(out)]) == 1
    assert "out of date" in capsys.readouterr().err
    assert main(["--out", str(out)]) == 0 and main(["--check", "--out", str(out)]) == 0


def test_the_documented_bodies_are_the_ones_the_server_sends(classify_project):
    torch.set_num_threads(1)
    served = load_served(load_project(classify_project), "r1", threshold=0.0)
    documented_error = set(ErrorDetail.model_fields)
    with running_server(create_app(served, api_key=KEY, max_body_bytes=2048)) as (url, _):
        with httpx.Client(base_url=url, timeout=30) as c:
            Health.model_validate(c.get("/healthz").json())
            Readiness.model_validate(c.get("/readyz").json())
            ModelList.model_validate(c.get("/v1/models", headers=AUTH).json())
            answer = c.post("/v1/classify", json={"input": ["charged twice", "app crashes"]}, headers=AUTH).json()
            assert len(ClassifyResponse.model_validate(answer).data) == 2
            chat = c.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": "hi"}]}, headers=AUTH)
            assert ChatResponse.model_validate(chat.json()).distil.distribution is not None
            errors = [
                c.post("/v1/classify", json={"input": "x"}),  # 401
                c.post("/v1/classify", content=b"{", headers={**AUTH, "content-type": "application/json"}),  # 400
                c.post("/v1/classify", json={"input": []}, headers=AUTH),  # 400, this route's own code
                c.post("/v1/classify", json={"input": "x" * 5000}, headers=AUTH),  # 413
                c.get("/nope", headers=AUTH),  # 404
            ]
            assert [r.status_code for r in errors] == [401, 400, 400, 413, 404]
            for r in errors:
                assert set(ErrorBody.model_validate(r.json()).error.model_dump()) == documented_error
                assert set(r.json()["error"]) == documented_error

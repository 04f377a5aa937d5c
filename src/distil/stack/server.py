"""One OpenAI-compatible endpoint in front of several specialists: `/v1/chat/completions`, `/v1/classify`,
`/v1/models`, `/healthz`, `/readyz`, `/metrics`.

Each specialist is served by `distil serve`'s own app (:func:`distil.serve.server.create_app`), with the
generalist as its teacher: its queue, its calibrated threshold, its escalation and fallback, its response shapes
and its errors are the single-run server's. This app only picks the specialist and forwards the request to that
app in-process (ASGI, no socket): the API key, the body limits and the request metrics are checked once, here,
by the same :class:`~distil.serve.server.GuardMiddleware`.

A request finds its specialist by, in order:

* ``model``: a specialist's name asks it directly; ``generalist`` asks the generalist alone (on the task the
  ``task`` field or the router picks); ``router`` asks the router model itself; the stack's name (or ``distil``,
  or nothing) routes the request;
* ``task``: a specialist's name;
* the router model, when the stack has one: its top label is the specialist's name (each text of a
  `/v1/classify` list is routed on its own).

Answers say which specialist answered (``specialist``), how it was picked (``routed_by``: model, task or router),
and whether the generalist answered (``escalated``), beside the single-run server's ``route``.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from pydantic import Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from distil.serve.metrics import ServerMetrics
from distil.serve.openai_shapes import model_list
from distil.serve.schema import CRASH_ERROR, KEY_ERROR, STREAM_ANSWER, errors, text_route_errors
from distil.serve.server import (
    DEFAULT_MAX_INPUTS,
    SHOWN_CHARS,
    ChatRequest,
    ClassifyRequest,
    GuardMiddleware,
    Probe,
    _message_text,
    create_app,
    error_body,
    invalid_request_response,
    probe_answerer,
)
from distil.serve.traffic import TrafficLog
from distil.stack.load import ROUTER, LoadedStack
from distil.stack.metrics import SpecialistMetrics
from distil.stack.schema import (
    MODEL_HELP,
    STACK_NOT_READY,
    TASK_HELP,
    StackChatResponse,
    StackClassifyResponse,
    StackHealth,
    StackModelList,
    StackReadiness,
    stack_route_errors,
)
from distil.stack.spec import GENERALIST


class StackClassifyRequest(ClassifyRequest):
    model: str | None = Field(None, description=MODEL_HELP)
    task: str | None = Field(None, description=TASK_HELP)


class StackChatRequest(ChatRequest):
    model: str | None = Field(None, description=MODEL_HELP)
    task: str | None = Field(None, description=TASK_HELP)


class _Refused(Exception):
    """A request the stack itself refuses (the specialist's app refuses the rest, in its own words)."""

    def __init__(self, status: int, message: str, param: str | None, code: str):
        super().__init__(message)
        self.status, self.message, self.param, self.code = status, message, param, code


class _Passed(Exception):
    """A specialist's (or the router's) refusal, passed to the client as it was given."""

    def __init__(self, response: Response):
        super().__init__(response.status_code)
        self.response = response


class SpecialistTraffic:
    """The stack's one traffic log as a specialist's app writes to it: each row names the specialist. The stack
    warms the log up and closes it once, not each specialist."""

    def __init__(self, log: TrafficLog, specialist: str):
        self.log, self.specialist = log, specialist

    def warm_up(self) -> None:
        pass

    def close(self) -> None:
        pass

    def record(self, endpoint: str, model: str, *columns: Any) -> int:
        return self.log.record(endpoint, self.specialist, *columns)


async def asgi_post(app: Any, path: str, body: dict[str, Any]) -> Response:
    """POST ``body`` as JSON to the ASGI ``app`` in-process; its whole response (a stream read to its end)."""
    data = json.dumps(body).encode()
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode())],
        "client": ("127.0.0.1", 0),
        "server": ("127.0.0.1", 0),
    }
    done = asyncio.Event()
    sent = {"body": False}
    start: dict[str, Any] = {}
    chunks: list[bytes] = []

    async def receive() -> dict[str, Any]:
        if not sent["body"]:
            sent["body"] = True
            return {"type": "http.request", "body": data, "more_body": False}
        await done.wait()  # a streaming response listens for a disconnect: there is none until it is read
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            start.update(message)
        elif message["type"] == "http.response.body":
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                done.set()

    try:
        await app(scope, receive, send)
    finally:
        done.set()
    headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in start.get("headers", [])}
    headers.pop("content-length", None)
    return Response(b"".join(chunks), status_code=start.get("status", 500), headers=headers)


GENERALIST_REFUSALS = ("teacher_error", "teacher_busy", "teacher_slow")  # a specialist app's codes for its teacher


def generalist_refusal(reply: Response, specialist: str) -> Response:
    """A specialist app's refusal of a request for its teacher, in the stack's words: the generalist failed or was
    busy, and what to send instead is the specialist's name (the app says `student`, a name the stack does not
    take). Status, code and ``Retry-After`` stay the app's; any other refusal passes as it was."""
    try:
        error = json.loads(reply.body).get("error") or {}
    except (ValueError, AttributeError):
        return reply
    code = error.get("code")
    if code not in GENERALIST_REFUSALS:
        return reply
    retry_after = reply.headers.get("retry-after")
    if code == "teacher_error":
        message = f"the generalist failed to answer; retry, or send model `{specialist}`"
    else:
        message = f"the generalist is busy ({code}); retry after {retry_after} s, or send model `{specialist}`"
    return JSONResponse(
        error_body(message, error.get("type") or "server_error", error.get("param"), code),
        status_code=reply.status_code,
        headers={"Retry-After": retry_after} if retry_after else None,
    )


def _with_stack_fields(answer: dict[str, Any], specialist: str, routed_by: str, router_confidence: float | None):
    """A single-run answer (a /v1/classify item or a chat completion's ``distil``) with the stack's fields."""
    answer["specialist"] = specialist
    answer["routed_by"] = routed_by
    answer["escalated"] = answer.get("route") == "teacher"
    if router_confidence is not None:
        answer["router_confidence"] = router_confidence
    return answer


def _annotated_stream(body: bytes, model: str, stack_fields: Callable[[dict[str, Any]], dict[str, Any]]) -> bytes:
    """A chat completion's server-sent events with ``model`` renamed and the stack's fields on its ``distil``."""
    out = []
    for event in body.decode("utf-8").split("\n\n"):
        if event.startswith("data: {"):
            chunk = json.loads(event[len("data: ") :])
            chunk["model"] = model
            if "distil" in chunk:
                chunk["distil"] = stack_fields(chunk["distil"])
            event = "data: " + json.dumps(chunk, separators=(",", ":"))
        out.append(event)
    return "\n\n".join(out).encode("utf-8")


def create_stack_app(
    loaded: LoadedStack,
    api_key: str | None = None,
    traffic: TrafficLog | None = None,
    max_inputs: int = DEFAULT_MAX_INPUTS,
) -> FastAPI:
    """The app serving ``loaded`` behind the API key and the limits of the stack's ``serve``; ``traffic`` (one log
    for the stack, each row naming its specialist) is closed when the app shuts down."""
    spec = loaded.stack.spec
    limits = spec.serve
    inner = {
        name: create_app(
            served, max_inputs=max_inputs, traffic=SpecialistTraffic(traffic, name) if traffic is not None else None
        )
        for name, served in loaded.specialists.items()
    }
    router_app = create_app(loaded.router, max_inputs=max_inputs) if loaded.router is not None else None
    metrics = ServerMetrics(spec.name)
    per_specialist = SpecialistMetrics({name: served.threshold for name, served in loaded.specialists.items()})
    names = [spec.name, *inner, GENERALIST] + ([ROUTER] if router_app is not None else [])
    shown_names = ", ".join(map(repr, names))

    @asynccontextmanager
    async def lifespan(_: FastAPI):
        if traffic is not None:
            await asyncio.to_thread(traffic.warm_up)
        async with AsyncExitStack() as apps:  # each specialist's app starts and stops as `distil serve`'s does
            for guard in [*inner.values(), *([router_app] if router_app is not None else [])]:
                await apps.enter_async_context(guard.app.router.lifespan_context(guard.app))
            yield
        if traffic is not None:
            traffic.close()

    app = FastAPI(title=f"stack {spec.name}", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.state.metrics = metrics
    app.state.specialist_metrics = per_specialist
    app.state.inner = inner

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        return invalid_request_response(exc)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        type_ = "not_found_error" if exc.status_code == 404 else "invalid_request_error"
        return JSONResponse(error_body(str(exc.detail), type_), status_code=exc.status_code)

    @app.exception_handler(Exception)
    async def _crash(_: Request, exc: Exception) -> JSONResponse:  # as `distil serve` answers one: never a traceback
        return JSONResponse(error_body(f"internal error: {type(exc).__name__}", "server_error"), status_code=500)

    @app.exception_handler(_Refused)
    async def _refused(_: Request, exc: _Refused) -> JSONResponse:
        type_ = "not_found_error" if exc.status == 404 else "invalid_request_error"
        return JSONResponse(error_body(exc.message, type_, exc.param, exc.code), status_code=exc.status)

    @app.exception_handler(_Passed)
    async def _passed(_: Request, exc: _Passed) -> Response:
        return exc.response

    def _target(model: str | None, task: str | None) -> tuple[str | None, str]:
        """(the specialist ``model`` or ``task`` names, or None: the router picks; who answers: student | teacher
        | router)."""
        model = model or ""
        if task is not None and task not in inner:
            raise _Refused(
                400,
                f"task: no specialist {task[:SHOWN_CHARS]!r}; this stack has {', '.join(inner)}",
                "task",
                "unknown_task",
            )
        if model in inner:
            if task is not None and task != model:
                raise _Refused(400, f"task: {task!r} contradicts model {model!r}; send one of them", "task", "conflict")
            return model, "student"
        if model in (spec.name, "distil", ""):
            return task, "student"
        if model == GENERALIST:
            return task, "teacher"
        if model == ROUTER and router_app is not None:
            return None, ROUTER
        shown = model[:SHOWN_CHARS] + ("…" if len(model) > SHOWN_CHARS else "")
        raise _Refused(
            404,
            f"model: the model {shown!r} does not exist; this stack serves {shown_names}",
            "model",
            "model_not_found",
        )

    async def _route(texts: list[str]) -> list[tuple[str, float]]:
        """(specialist, router confidence) per text, from the router model's top label."""
        if router_app is None:
            raise _Refused(
                400,
                f"task: this stack routes by the request's `task` field; send one of {', '.join(inner)}",
                "task",
                "missing_task",
            )
        reply = await asgi_post(router_app, "/v1/classify", {"input": texts})
        if reply.status_code != 200:
            raise _Passed(reply)
        return [(item["label"], float(item["confidence"])) for item in json.loads(reply.body)["data"]]

    async def _ask(name: str, path: str, body: dict[str, Any], routed_by: str) -> Response:
        """Forward ``body`` to specialist ``name``'s app; its response, timed and counted for ``name``."""
        start = time.perf_counter()
        reply = await asgi_post(inner[name], path, body)
        if reply.status_code != 200:
            raise _Passed(generalist_refusal(reply, name) if body.get("model") == "teacher" else reply)
        seconds = time.perf_counter() - start
        if reply.media_type == "text/event-stream" or reply.headers.get("content-type", "").startswith("text/event"):
            routes = [
                json.loads(e[6:])["distil"]["route"] for e in reply.body.decode().split("\n\n") if '"distil"' in e
            ]
        else:
            answer = json.loads(reply.body)
            routes = [d["route"] for d in answer["data"]] if "data" in answer else [answer["distil"]["route"]]
        per_specialist.observe(name, routed_by, routes, seconds, escalated=body.get("model") != "teacher")
        metrics.observe_routes(routes, 0.0)
        return reply

    @app.get(
        "/metrics",
        response_class=PlainTextResponse,
        responses={
            200: {"content": {"text/plain": {}}, "description": "Prometheus text exposition format 0.0.4."},
            **text_route_errors(KEY_ERROR),
        },
    )
    async def prometheus() -> PlainTextResponse:
        """The server's request counts, latencies and routes, then per specialist: requests, answers per route,
        escalations to the generalist, latency and threshold (label `specialist`)."""
        return PlainTextResponse(
            metrics.render() + per_specialist.render(), media_type="text/plain; version=0.0.4; charset=utf-8"
        )

    @app.get("/v1/models", response_model=StackModelList, responses=errors(KEY_ERROR))
    async def models() -> dict[str, Any]:
        """Every name `model` may take: the stack (routed), each specialist, the generalist, and the router."""
        return model_list(names)

    @app.post(
        "/v1/classify",
        response_model=StackClassifyResponse,
        response_model_exclude_none=True,
        responses=stack_route_errors(),
    )
    async def classify(body: StackClassifyRequest) -> Any:
        """Label one text or a list: each answer with its label, distribution, route, and the specialist that
        answered; texts the router sends to different specialists are answered by each and put back in order."""
        named, who = _target(body.model, body.task)
        texts = [body.input] if isinstance(body.input, str) else list(body.input)
        forwarded = {"input": body.input, "model": "student" if who == ROUTER else who}
        if who == ROUTER:
            reply = await asgi_post(router_app, "/v1/classify", forwarded)
            if reply.status_code != 200:
                raise _Passed(reply)
            return JSONResponse({**json.loads(reply.body), "model": ROUTER})
        if named is not None:
            reply = await _ask(named, "/v1/classify", forwarded, "model" if body.model == named else "task")
            answer = json.loads(reply.body)
            for item in answer["data"]:
                _with_stack_fields(item, named, "model" if body.model == named else "task", None)
            return JSONResponse({**answer, "model": body.model or spec.name})
        if not texts:
            forwarded["model"] = "student"  # the first specialist's app refuses an empty list in its own words
            raise _Passed(await asgi_post(next(iter(inner.values())), "/v1/classify", forwarded))
        picked = await _route(texts)
        groups: dict[str, list[int]] = {}
        for i, (name, _) in enumerate(picked):
            groups.setdefault(name, []).append(i)
        replies = await asyncio.gather(
            *(
                _ask(name, "/v1/classify", {"input": [texts[i] for i in index], "model": who}, "router")
                for name, index in groups.items()
            )
        )
        data: list[dict[str, Any] | None] = [None] * len(texts)
        for (name, index), reply in zip(groups.items(), replies, strict=True):
            for i, item in zip(index, json.loads(reply.body)["data"], strict=True):
                data[i] = _with_stack_fields({**item, "index": i}, name, "router", picked[i][1])
        return JSONResponse({"object": "list", "model": body.model or spec.name, "data": data})

    @app.post(
        "/v1/chat/completions",
        response_model=StackChatResponse,
        response_model_exclude_none=True,
        responses={**STREAM_ANSWER, **stack_route_errors()},
    )
    async def chat(body: StackChatRequest) -> Any:
        """A chat completion on the last user message, answered by the specialist the request names or the router
        picks (routed and escalated as `distil serve` does), with the specialist in `distil.specialist`."""
        named, who = _target(body.model, body.task)
        forwarded = body.model_dump(exclude_unset=True, exclude={"task"})
        forwarded["model"] = "student" if who == ROUTER else who
        if who == ROUTER:
            reply = await asgi_post(router_app, "/v1/chat/completions", forwarded)
            if reply.status_code != 200:
                raise _Passed(reply)
            return reply
        routed_by, confidence = ("model" if body.model == named else "task"), None
        if named is None:
            users = [m for m in body.messages if m.role == "user"]
            if not users:
                raise _Refused(400, "messages: include at least one user message", "messages", "no_user_message")
            ((named, confidence),) = await _route([_message_text(users[-1])])
            routed_by = "router"
        reply = await _ask(named, "/v1/chat/completions", forwarded, routed_by)
        model = GENERALIST if who == "teacher" else named

        def stack_fields(extra: dict[str, Any]) -> dict[str, Any]:
            return _with_stack_fields(extra, named, routed_by, confidence)

        if reply.headers.get("content-type", "").startswith("text/event-stream"):
            return Response(_annotated_stream(reply.body, model, stack_fields), media_type="text/event-stream")
        answer = json.loads(reply.body)
        answer["model"] = model
        answer["distil"] = stack_fields(answer["distil"])
        return JSONResponse(answer)

    def _readiness() -> tuple[int, dict[str, Any]]:
        queues = {name: guard.app.state.queues["student"] for name, guard in inner.items()}
        # every specialist's app watches the same event loop: the stack is behind when any of them says so
        lags = [guard.app.state.loop_lag for guard in inner.values()]
        ready = not any(q.full for q in queues.values()) and not any(lag.over for lag in lags)
        return 200 if ready else 503, {
            "status": "ready" if ready else "busy",
            "model": spec.name,
            "queues": {name: {"load": q.load, "depth": q.depth} for name, q in queues.items()},
            "loop_lag_ms": round(max(lag.lag_s for lag in lags) * 1000, 1),
        }

    probes: dict[str, Probe] = {
        "/healthz": lambda: (200, {"status": "ok", "model": spec.name, "kind": "classify"}),
        "/readyz": _readiness,
    }

    answer_probe = probe_answerer(probes, metrics)  # answered by the connection, as `distil serve` answers them

    @app.get("/healthz", response_model=StackHealth, responses=errors(CRASH_ERROR))
    async def healthz() -> dict[str, Any]:
        """Liveness: the stack's name."""
        return probes["/healthz"]()[1]

    @app.get(
        "/readyz",
        response_model=StackReadiness,
        responses={503: {"model": StackReadiness, "description": STACK_NOT_READY}},
    )
    async def readyz() -> JSONResponse:
        """Readiness: no specialist's queue is full and the event loop is less than `serve.max_loop_lag_s` behind;
        each specialist's queue load and depth, and the loop's lag."""
        status, body = _readiness()
        return JSONResponse(body, status_code=status)

    guard = GuardMiddleware(app, api_key, limits.max_body_bytes, metrics, limits.body_timeout_s, limits)
    guard.answer_probe = answer_probe
    return guard  # type: ignore[return-value]

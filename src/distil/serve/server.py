"""The OpenAI-compatible server: `/v1/chat/completions`, `/v1/models`, `/v1/classify`, `/healthz`, `/metrics`.

Bad input never gets a 5xx: malformed JSON and schema violations are 400 with an OpenAI-style
error body (``{"error": {"message", "type", "param", "code"}}``), a missing or wrong API key is 401,
a body over the size limit is 413. Model calls run in the thread pool (the endpoints are plain
functions), so a slow model never blocks the event loop that accepts connections. On shutdown
uvicorn stops accepting, lets requests in flight finish, then the lifespan closes the traffic log.
"""

from __future__ import annotations

import hmac
import time
import uuid
from contextlib import asynccontextmanager
from typing import Any, Literal

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from distil.serve.metrics import ServerMetrics
from distil.serve.router import Router, RouteTiming
from distil.serve.runs import ServedModel
from distil.serve.schema import (
    BODY_ERROR,
    CRASH_ERROR,
    KEY_ERROR,
    SIZE_ERROR,
    ChatResponse,
    ClassifyResponse,
    Health,
    ModelList,
    errors,
    text_route_errors,
)
from distil.serve.traffic import TrafficLog

OPEN_PATHS = ("/healthz",)  # no API key needed: load balancers probe it
KNOWN_PATHS = ("/healthz", "/metrics", "/v1/models", "/v1/classify", "/v1/chat/completions")
DEFAULT_MAX_BODY_BYTES = 1 << 20
DEFAULT_MAX_INPUTS = 64


def error_body(
    message: str, type_: str = "invalid_request_error", param: str | None = None, code: str | None = None
) -> dict[str, Any]:
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


def _error_response(
    status: int,
    message: str,
    type_: str,
    param: str | None = None,
    code: str | None = None,
    headers: dict | None = None,
) -> JSONResponse:
    return JSONResponse(error_body(message, type_, param, code), status_code=status, headers=headers)


# --- request bodies -------------------------------------------------------------------------------


class ClassifyRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    input: str | list[str] = Field(description="One text or a list of texts to classify.")
    model: str | None = Field(None, description="The served run id, or `distil`; empty: the served run.")


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="allow")
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[dict[str, Any]] | None = Field(
        None, description='Text, or OpenAI content parts; only parts with `"type": "text"` are read.'
    )


class ChatRequest(BaseModel):
    model_config = ConfigDict(extra="allow")  # OpenAI clients send many optional fields; unknown ones are ignored
    model: str | None = Field(None, description="The served run id, or `distil`; empty: the served run.")
    messages: list[ChatMessage] = Field(
        min_length=1, description="The conversation; the last user message is the input, the rest is ignored."
    )
    max_tokens: int | None = Field(None, ge=1, le=4096, description="Generate runs: the most new tokens to write.")
    stream: bool = Field(False, description="Must be false: streaming is not supported.")


def _message_text(message: ChatMessage) -> str:
    if isinstance(message.content, str):
        return message.content
    return "".join(part.get("text", "") for part in message.content or [] if part.get("type") == "text")


# --- the ASGI guard: size limit and API key, before any body is parsed ------------------------------


class GuardMiddleware:
    """Reject oversize bodies (413) and missing keys (401); time every request for `/metrics`."""

    def __init__(self, app: Any, api_key: str | None, max_body_bytes: int, metrics: ServerMetrics):
        self.app = app
        self.api_key = api_key
        self.max_body_bytes = max_body_bytes
        self.metrics = metrics

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status_seen = {"code": 500}

        async def send_tracking(message: dict) -> None:
            if message["type"] == "http.response.start":
                status_seen["code"] = message["status"]
            await send(message)

        path = scope.get("path", "")
        self.metrics.in_flight += 1
        try:
            rejection = self._check_key(scope) if path not in OPEN_PATHS else None
            if rejection is None:
                rejection, receive = await self._bounded_body(scope, receive)
            if rejection is not None:
                await rejection(scope, receive, send_tracking)
            else:
                await self.app(scope, receive, send_tracking)
        finally:
            self.metrics.in_flight -= 1
            # Unknown paths share one label, so a scanner cannot grow the metrics without bound.
            self.metrics.observe_request(
                path if path in KNOWN_PATHS else "other", status_seen["code"], time.perf_counter() - start
            )

    def _check_key(self, scope: dict) -> JSONResponse | None:
        if not self.api_key:
            return None
        headers = dict(scope.get("headers") or [])
        given = headers.get(b"authorization", b"").decode("latin-1")
        token = (
            given[7:].strip()
            if given.lower().startswith("bearer ")
            else headers.get(b"x-api-key", b"").decode("latin-1")
        )
        if token and hmac.compare_digest(token.encode(), self.api_key.encode()):
            return None
        return _error_response(
            401,
            "missing or invalid API key: send `Authorization: Bearer <key>`",
            "invalid_api_key",
            code="invalid_api_key",
            headers={"WWW-Authenticate": "Bearer"},
        )

    async def _bounded_body(self, scope: dict, receive: Any) -> tuple[JSONResponse | None, Any]:
        """Read the whole body (at most the limit), then replay it to the app."""
        too_big = _error_response(
            413,
            f"request body is larger than the limit of {self.max_body_bytes} bytes",
            "invalid_request_error",
            code="request_too_large",
        )
        headers = dict(scope.get("headers") or [])
        declared = headers.get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_body_bytes:
            return too_big, receive
        chunks: list[bytes] = []
        size = 0
        more = True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return None, receive
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body_bytes:
                return too_big, receive
            chunks.append(chunk)
            more = message.get("more_body", False)
        body = b"".join(chunks)
        replayed = {"done": False}

        async def replay() -> dict:
            if not replayed["done"]:
                replayed["done"] = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        return None, replay


# --- the application -------------------------------------------------------------------------------


def create_app(
    served: ServedModel,
    api_key: str | None = None,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    max_inputs: int = DEFAULT_MAX_INPUTS,
    traffic: TrafficLog | None = None,
) -> FastAPI:
    """The FastAPI app serving ``served``; ``traffic`` (optional) is closed when the app shuts down."""
    metrics = ServerMetrics(
        served.run_id,
        served.student_per_1m,
        served.teacher_per_1m,
        served.threshold if served.kind == "classify" else None,
    )
    router = None
    if served.kind == "classify":
        teacher_fn = served.teacher.label_distribution if served.teacher is not None else None
        router = Router(served.student.label_distribution, teacher_fn, served.labels, served.threshold)

    @asynccontextmanager
    async def lifespan(_: FastAPI):
        yield
        if traffic is not None:
            traffic.close()

    app = FastAPI(title="distil", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.state.metrics = metrics
    app.state.router = router
    app.state.served = served

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {"msg": "invalid request", "loc": ()}
        loc = [str(x) for x in first.get("loc", ()) if x != "body"]
        if first.get("type") == "json_invalid":
            return _error_response(
                400,
                f"malformed JSON body: {first.get('ctx', {}).get('error', first['msg'])}",
                "invalid_request_error",
                code="json_invalid",
            )
        param = ".".join(loc) or None
        message = f"{param}: {first['msg']}" if param else first["msg"]
        return _error_response(400, message, "invalid_request_error", param=param, code=first.get("type"))

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        type_ = "not_found_error" if exc.status_code == 404 else "invalid_request_error"
        return _error_response(exc.status_code, str(exc.detail), type_, headers=getattr(exc, "headers", None))

    @app.exception_handler(Exception)
    async def _crash(_: Request, exc: Exception) -> JSONResponse:
        return _error_response(500, f"internal error: {type(exc).__name__}", "server_error")

    def _check_model(name: str | None) -> None:
        if name not in (None, "", served.run_id, "distil"):
            raise _BadRequest(
                f"model: unknown model {name!r}; this server serves {served.run_id!r}", "model", "model_not_found"
            )

    def _route(inputs: list[str], endpoint: str):
        timing = RouteTiming()
        answers = router.route(inputs, timing)
        metrics.observe_routes([a.route for a in answers], timing.router_s)
        if traffic is not None:
            traffic.record(
                endpoint,
                served.run_id,
                inputs,
                [a.route for a in answers],
                [a.label for a in answers],
                [a.distribution for a in answers],
                [a.confidence for a in answers],
            )
        return answers

    @app.exception_handler(_BadRequest)
    async def _bad(_: Request, exc: _BadRequest) -> JSONResponse:
        return _error_response(400, exc.message, "invalid_request_error", exc.param, exc.code)

    @app.get("/healthz", response_model=Health, responses=errors(CRASH_ERROR))
    def healthz() -> dict[str, Any]:
        """Liveness for load balancers: the run served and its task."""
        return {"status": "ok", "model": served.run_id, "kind": served.kind}

    @app.get(
        "/metrics",
        response_class=PlainTextResponse,
        responses={
            200: {"content": {"text/plain": {}}, "description": "Prometheus text exposition format 0.0.4."},
            **text_route_errors(KEY_ERROR),
        },
    )
    def prometheus() -> PlainTextResponse:
        """Request counts and latencies per route and status, requests in flight, routes taken, the router's
        threshold and the blended cost, in Prometheus' text format."""
        return PlainTextResponse(metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8")

    @app.get("/v1/models", response_model=ModelList, responses=errors(KEY_ERROR))
    def models() -> dict[str, Any]:
        """The served run, as OpenAI's model list."""
        entry = {"id": served.run_id, "object": "model", "created": int(time.time()), "owned_by": "distil"}
        return {"object": "list", "data": [entry]}

    @app.post(
        "/v1/classify",
        response_model=ClassifyResponse,
        responses=errors(
            BODY_ERROR,
            KEY_ERROR,
            SIZE_ERROR,
            CRASH_ERROR,
            extra={
                400: "This route's codes: `model_not_found` (a `model` that is not the served run), `wrong_task` "
                "(the run generates text), `empty_input` (an empty list), `too_many_inputs` (more texts than the "
                f"server's limit, {DEFAULT_MAX_INPUTS} by default)."
            },
        ),
    )
    def classify(body: ClassifyRequest) -> dict[str, Any]:
        """Label one text or a list of texts: each answer with its label, every label's probability, who answered
        (the student, or the teacher when the student was unsure) and the student's confidence. Classify runs only."""
        _check_model(body.model)
        if router is None:
            raise _BadRequest(
                f"run {served.run_id} is a {served.kind} task; use /v1/chat/completions", None, "wrong_task"
            )
        inputs = [body.input] if isinstance(body.input, str) else list(body.input)
        if not inputs:
            raise _BadRequest("input: give at least one text", "input", "empty_input")
        if len(inputs) > max_inputs:
            raise _BadRequest(
                f"input: at most {max_inputs} texts per request, got {len(inputs)}", "input", "too_many_inputs"
            )
        answers = _route(inputs, "/v1/classify")
        return {
            "object": "list",
            "model": served.run_id,
            "data": [
                {
                    "index": i,
                    "label": a.label,
                    "distribution": dict(zip(served.labels, a.distribution, strict=True)),
                    "route": a.route,
                    "confidence": a.confidence,
                }
                for i, a in enumerate(answers)
            ],
        }

    @app.post(
        "/v1/chat/completions",
        response_model=ChatResponse,
        response_model_exclude_none=True,
        responses=errors(
            BODY_ERROR,
            KEY_ERROR,
            SIZE_ERROR,
            CRASH_ERROR,
            extra={400: "This route's codes: `model_not_found`, `unsupported` (`stream: true`), `no_user_message`."},
        ),
    )
    def chat(body: ChatRequest) -> dict[str, Any]:
        """OpenAI-compatible chat completion on the last user message: a label for a classify run (routed like
        /v1/classify), generated text for a generate run."""
        _check_model(body.model)
        if body.stream:
            raise _BadRequest("stream: streaming is not supported; send stream=false", "stream", "unsupported")
        users = [m for m in body.messages if m.role == "user"]
        if not users:
            raise _BadRequest("messages: include at least one user message", "messages", "no_user_message")
        text = _message_text(users[-1])
        extra: dict[str, Any] = {}
        if router is not None:
            answer = _route([text], "/v1/chat/completions")[0]
            content = answer.label
            extra = {"route": answer.route, "distribution": dict(zip(served.labels, answer.distribution, strict=True))}
        else:
            content = served.student.generate(
                [text], **({"max_new_tokens": body.max_tokens} if body.max_tokens else {})
            )[0]
            metrics.observe_routes(["student"], 0.0)
            if traffic is not None:
                traffic.record("/v1/chat/completions", served.run_id, [text], ["student"], [content], [None], [None])
            extra = {"route": "student"}
        return {
            "id": f"chatcmpl-{uuid.uuid4().hex}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": served.run_id,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}],
            "usage": {
                "prompt_tokens": len(text.split()),
                "completion_tokens": len(content.split()),
                "total_tokens": len(text.split()) + len(content.split()),
            },
            "distil": extra,
        }

    return GuardMiddleware(app, api_key, max_body_bytes, metrics)  # type: ignore[return-value]


class _BadRequest(Exception):
    def __init__(self, message: str, param: str | None, code: str | None):
        super().__init__(message)
        self.message, self.param, self.code = message, param, code


def make_server(app: Any, host: str = "127.0.0.1", port: int = 8000, graceful_timeout_s: float = 30.0):
    """A uvicorn.Server for ``app``; ``server.run()`` blocks, ``server.should_exit = True`` stops it gracefully."""
    import uvicorn

    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        log_level="warning",
        timeout_graceful_shutdown=graceful_timeout_s,
        timeout_keep_alive=5,
        limit_concurrency=256,
        lifespan="on",
        access_log=False,
    )
    return uvicorn.Server(config)

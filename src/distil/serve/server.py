"""The OpenAI-compatible server: `/v1/chat/completions`, `/v1/models`, `/v1/classify`, `/healthz`, `/readyz`,
`/metrics`.

Bad input never gets a 5xx: malformed JSON, schema violations, empty texts and lone surrogates are 400 with an
OpenAI-style error body (``{"error": {"message", "type", "param", "code"}}``), an unknown model is 404, a
missing or wrong API key is 401, a body over the size limit is 413, one that does not arrive in time is 408.

Under load the server degrades instead of queueing without bound (``serve`` in the spec): each model sits
behind a bounded micro-batching queue (:mod:`distil.serve.batching`). A request that finds the student's
queue full is refused at once with 429 and ``Retry-After``; one the student has not started on within
``deadline_s`` is refused the same way and dropped. So is a new model request while the event loop runs more
than ``max_loop_lag_s`` behind (:mod:`distil.serve.pressure`): every request, answer and probe waits its turn in
that loop, and a refusal costs it a fraction of an answer, so the loop never saturates. Escalations have their
own, smaller queue and deadline; when the teacher is saturated, slow or failing, the student's answer is given,
marked ``student_fallback``.
The endpoints run on the event loop and only await the models' futures; `/healthz` and `/readyz` are answered by
the connection itself as their bytes arrive (:mod:`distil.serve.connections`), without an ASGI task. The objects
loaded at startup are frozen out of the garbage collector's passes, whose full walks of them stalled every thread,
and after a burst the allocator's free pages go back to the system (:mod:`distil.serve.memory`).
On shutdown uvicorn stops accepting, lets requests in flight finish, then the lifespan stops the model queues
and closes the traffic log.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import math
import re
import time
import uuid
from collections.abc import Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from distil.serve.batching import MicroBatcher, QueueFull
from distil.serve.context import Fitted, as_sent
from distil.serve.memory import freeze_startup_heap, thaw_startup_heap, trim_after_bursts
from distil.serve.metrics import ServerMetrics
from distil.serve.openai_shapes import label_logprobs, model_list, model_names, stream_events, token_count, token_pieces
from distil.serve.pressure import LoopLag
from distil.serve.router import Routed, Router
from distil.serve.runs import ServedModel
from distil.serve.schema import (
    CRASH_ERROR,
    KEY_ERROR,
    MODEL_ROUTE_ERRORS,
    NOT_READY,
    STREAM_ANSWER,
    ChatResponse,
    ClassifyResponse,
    Health,
    ModelList,
    Readiness,
    errors,
    text_route_errors,
)
from distil.serve.traffic import TrafficLog
from distil.spec.models import ServeSpec

OPEN_PATHS = ("/healthz", "/readyz")  # no API key needed: load balancers probe them
MODEL_PATHS = ("/v1/classify", "/v1/chat/completions")
KNOWN_PATHS = ("/healthz", "/readyz", "/metrics", "/v1/models", "/v1/classify", "/v1/chat/completions")
DEFAULT_MAX_BODY_BYTES = 1 << 20
DEFAULT_MAX_INPUTS = 64
SHOWN_CHARS = 80  # of a client's own text echoed in an error message


def error_body(
    message: str, type_: str = "invalid_request_error", param: str | None = None, code: str | None = None
) -> dict[str, Any]:
    return {"error": {"message": _printable(message), "type": type_, "param": _printable(param), "code": code}}


def _printable(text: str | None) -> str | None:
    """A client's text as it can go into a UTF-8 JSON body: a lone surrogate would fail the encoding (a 500)."""
    return None if text is None else text.encode("utf-8", "backslashreplace").decode("utf-8")


def _error_response(
    status: int,
    message: str,
    type_: str,
    param: str | None = None,
    code: str | None = None,
    headers: dict | None = None,
) -> JSONResponse:
    return JSONResponse(error_body(message, type_, param, code), status_code=status, headers=headers)


def invalid_request_response(exc: RequestValidationError) -> JSONResponse:
    """400 naming the first field a request body got wrong (or ``json_invalid`` for a body that is not JSON)."""
    first = exc.errors()[0] if exc.errors() else {"msg": "invalid request", "loc": ()}
    loc = [str(x)[:SHOWN_CHARS] for x in first.get("loc", ()) if x != "body"]
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


# --- request bodies -------------------------------------------------------------------------------


class ClassifyRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    input: str | list[str] = Field(description="One text or a list of texts to classify.")
    model: str | None = Field(
        None, description="As in /v1/chat/completions: a name `/v1/models` lists; `distil` or empty: the student."
    )


class ContentPart(BaseModel):
    model_config = ConfigDict(extra="allow")
    type: str
    text: str | None = None


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="allow")
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[ContentPart] | None = Field(
        None, description='Text, or OpenAI content parts; only parts with `"type": "text"` are read.'
    )


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="allow")
    include_usage: bool | None = Field(None, description="true: the last chunk carries `usage`.")


class ChatRequest(BaseModel):
    model_config = ConfigDict(extra="allow")  # OpenAI clients send many optional fields; unknown ones are ignored
    model: str | None = Field(
        None,
        description="A name `/v1/models` lists: the served run id, the project's name or `student` (the student, "
        "routed as usual), `teacher` (the teacher alone, when the server has one); `distil` or empty: the student.",
    )
    messages: list[ChatMessage] = Field(
        min_length=1, description="The conversation; the last user message is the input, the rest is ignored."
    )
    max_tokens: int | None = Field(None, ge=1, le=4096, description="Generate runs: the most new tokens to write.")
    stream: bool | None = Field(
        False,
        description="true: the answer as server-sent events (`data: <chat.completion.chunk>`), one chunk for a label, "
        "one per token for generated text (sent once the text is generated), then `data: [DONE]`.",
    )
    stream_options: StreamOptions | None = Field(None, description="With `stream`: `include_usage` adds `usage`.")
    logprobs: bool | None = Field(
        False,
        description="Classify runs: the answering model's label distribution as `choices[].logprobs` (the label is "
        "one token, spelled as the label). Generate runs refuse it.",
    )
    top_logprobs: int | None = Field(
        None, ge=0, le=20, description="With `logprobs`: how many of the most likely labels to list (at most all)."
    )
    n: int | None = Field(
        None, ge=1, description="Choices to return: 1. More is refused (400, param `n`): the answer is deterministic."
    )


def _message_text(message: ChatMessage) -> str:
    if isinstance(message.content, str):
        return message.content
    return "".join(part.text or "" for part in message.content or [] if part.type == "text")


def text_problem(text: str) -> str | None:
    """Why a text cannot be served (None when it can): empty, or not encodable as UTF-8 (a lone surrogate)."""
    if not text.strip():
        return "is empty; send the text to answer"
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        return (
            f"holds a lone surrogate (U+{ord(text[exc.start]):04X}) at character {exc.start}; send valid Unicode "
            "(escape pairs as \\ud83d\\ude00, not half of one)"
        )
    return None


# --- the ASGI guard: size limit, body deadline and API key, before any body is parsed ----------------


class GuardMiddleware:
    """Reject oversize bodies (413), slow bodies (408) and missing keys (401), and refuse model requests while the
    server is busy (429, before any parsing: a refusal must cost next to nothing); time every request for
    `/metrics`."""

    def __init__(
        self,
        app: Any,
        api_key: str | None,
        max_body_bytes: int,
        metrics: ServerMetrics,
        body_timeout_s: float = 10.0,
        limits: ServeSpec | None = None,
        refuse_when_busy: Callable[[], JSONResponse | None] | None = None,
    ):
        self.app = app
        self.api_key = api_key
        self.max_body_bytes = max_body_bytes
        self.metrics = metrics
        self.body_timeout_s = body_timeout_s
        self.limits = limits or ServeSpec()  # what make_server configures uvicorn with
        self.refuse_when_busy = refuse_when_busy
        self.answer_probe: Callable[[str], tuple[int, bytes] | None] | None = None  # for make_server's connections

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
            if rejection is None and path in MODEL_PATHS and self.refuse_when_busy is not None:
                rejection = self.refuse_when_busy()
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
        """Read the whole body (at most the limit, within the body deadline), then replay it to the app."""
        too_big = _error_response(
            413,
            f"request body is larger than the limit of {self.max_body_bytes} bytes",
            "invalid_request_error",
            code="request_too_large",
            headers={"Connection": "close"},
        )
        headers = dict(scope.get("headers") or [])
        declared = headers.get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_body_bytes:
            return too_big, receive
        chunks: list[bytes] = []
        size = 0
        more = True
        try:
            async with asyncio.timeout(self.body_timeout_s):
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
        except TimeoutError:
            slow = _error_response(
                408,
                f"the request body did not arrive within {self.body_timeout_s:g} s",
                "invalid_request_error",
                code="request_timeout",
                headers={"Connection": "close"},
            )
            return slow, receive
        body = b"".join(chunks)
        replayed = {"done": False}

        async def replay() -> dict:
            if not replayed["done"]:
                replayed["done"] = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        return None, replay


# --- refusals and the model queues ------------------------------------------------------------------


class _BadRequest(Exception):
    def __init__(self, message: str, param: str | None, code: str | None, status: int = 400):
        super().__init__(message)
        self.message, self.param, self.code, self.status = message, param, code, status


class _Overloaded(Exception):
    """429: the student's queue is full, or it did not start on the request in time."""

    def __init__(self, message: str, code: str, retry_after_s: int):
        super().__init__(message)
        self.message, self.code, self.retry_after_s = message, code, retry_after_s


async def answer_from(queue: MicroBatcher, inputs: Sequence[str], wait_s: float, wait_if_started: bool, **params: Any):
    """The model's rows for ``inputs``: QueueFull at once when its queue is full; TimeoutError when it has not
    answered within ``wait_s`` — unless it has started and ``wait_if_started``, then its answer. A request it had
    not started is withdrawn, so a time-out costs no model work."""
    future = queue.submit(inputs, **params)
    waiting = asyncio.wrap_future(future)
    try:
        return await asyncio.wait_for(asyncio.shield(waiting), wait_s)
    except TimeoutError:
        if future.cancel() or not wait_if_started:
            raise
        return await waiting


@dataclass(frozen=True)
class Generated:
    """One generated answer, counted and cut where the student's tokenizer cuts it (in the student's worker)."""

    fitted: Fitted
    text: str
    tokens: int  # the student's tokens in ``text``; its words when the server has no tokenizer
    pieces: list[str] | None  # the stream's chunks, when the request streams


def _word_pieces(text: str) -> list[str]:
    """Without a tokenizer, a stream's chunks are words with the spaces after them (they join back to the text)."""
    return re.findall(r"\S+\s*|\s+", text)


Probe = Callable[[], tuple[int, dict[str, Any]]]  # a probe's status and body


def model_queues(served: ServedModel) -> tuple[MicroBatcher, MicroBatcher | None]:
    """(student queue, teacher queue or None) with the limits of ``served.limits``.

    A student pass first cuts its texts to the student's context (``served.fit``) and answers with
    ``[(Fitted, row or text)]`` per input, so the tokenizing happens in the student's worker, never on the
    event loop, and the teacher is asked about the same cut texts."""
    limits = served.limits
    fit = served.fit.fit_all if served.fit is not None else as_sent

    def fitted_distribution(texts: list[str]) -> list[tuple[Fitted, np.ndarray]]:
        fitted = fit(texts)
        rows = np.asarray(served.student.label_distribution([f.text for f in fitted]), dtype=np.float64)
        return list(zip(fitted, rows, strict=True))

    tokenizer = served.fit.tokenizer if served.fit is not None else None

    def fitted_generation(texts: list[str], streamed: bool = False, **params: Any) -> list[Generated]:
        fitted = fit(texts)
        out = []
        for f, text in zip(fitted, served.student.generate([f.text for f in fitted], **params), strict=True):
            if tokenizer is None:
                out.append(Generated(f, text, len(text.split()), _word_pieces(text) if streamed else None))
            else:
                pieces = token_pieces(tokenizer, text) if streamed else None
                out.append(Generated(f, text, token_count(tokenizer, text), pieces))
        return out

    if served.kind == "classify":
        student = MicroBatcher(
            fitted_distribution, limits.max_batch, limits.batch_wait_s, served.labels, limits.queue_depth, "student"
        )
    else:  # generation is one request per pass: its parameters (max_tokens) differ per request
        student = MicroBatcher(fitted_generation, 1, 0.0, (), limits.queue_depth, "student")
    teacher = None
    if served.teacher is not None and served.kind == "classify":
        teacher = MicroBatcher(
            served.teacher.label_distribution,
            limits.max_batch,
            limits.batch_wait_s,
            served.labels,
            limits.teacher_queue_depth,
            "teacher",
        )
    return student, teacher


# --- the application -------------------------------------------------------------------------------


def create_app(
    served: ServedModel,
    api_key: str | None = None,
    max_body_bytes: int | None = None,
    max_inputs: int = DEFAULT_MAX_INPUTS,
    traffic: TrafficLog | None = None,
) -> FastAPI:
    """The app serving ``served`` with the limits of ``served.limits``; ``traffic`` (optional) is closed, and the
    model queues stopped, when the app shuts down."""
    limits = served.limits
    metrics = ServerMetrics(
        served.run_id,
        served.student_per_1m,
        served.teacher_per_1m,
        served.threshold if served.kind == "classify" else None,
    )
    student_queue, teacher_queue = model_queues(served)
    router = None
    if served.kind == "classify":
        teacher_fn = teacher_queue.label_distribution if teacher_queue is not None else None
        router = Router(student_queue.label_distribution, teacher_fn, served.labels, served.threshold)
    retry_after = max(1, math.ceil(limits.deadline_s))
    loop_lag = LoopLag(limits.max_loop_lag_s)
    # `model` may name the student (run id, project name, `student`) or the teacher; `distil` and empty: the student
    names = model_names(
        served.run_id, served.project_name or served.run_id, router is not None and teacher_queue is not None
    )
    accepted = {**names, "distil": "student", "": "student"}
    tokenizer = served.fit.tokenizer if served.fit is not None else None
    label_tokens = {  # counted once, here: the tokenizer is the student worker's once the server runs
        label: token_count(tokenizer, label) if tokenizer is not None else len(label.split()) for label in served.labels
    }

    @asynccontextmanager
    async def lifespan(_: FastAPI):
        if traffic is not None:  # before the first connection is accepted, so no request pays for it
            await asyncio.to_thread(traffic.warm_up)
        freeze_startup_heap()  # last, so the models and whatever warming up built are frozen; before any connection
        trimmer = asyncio.create_task(
            trim_after_bursts(lambda: student_queue.passes, lambda: metrics.in_flight > 0 or student_queue.load > 0)
        )
        watcher = asyncio.create_task(loop_lag.watch())
        yield
        watcher.cancel()
        trimmer.cancel()
        thaw_startup_heap()
        for queue in (student_queue, teacher_queue):
            if queue is not None:
                queue.stop()
        if traffic is not None:
            traffic.close()

    app = FastAPI(title="distil", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.state.metrics = metrics
    app.state.router = router
    app.state.served = served
    app.state.queues = {"student": student_queue, "teacher": teacher_queue}
    app.state.loop_lag = loop_lag

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        return invalid_request_response(exc)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        type_ = "not_found_error" if exc.status_code == 404 else "invalid_request_error"
        return _error_response(exc.status_code, str(exc.detail), type_, headers=getattr(exc, "headers", None))

    @app.exception_handler(Exception)
    async def _crash(_: Request, exc: Exception) -> JSONResponse:
        return _error_response(500, f"internal error: {type(exc).__name__}", "server_error")

    @app.exception_handler(_BadRequest)
    async def _bad(_: Request, exc: _BadRequest) -> JSONResponse:
        type_ = "server_error" if exc.status >= 500 else "invalid_request_error"
        return _error_response(exc.status, exc.message, type_, exc.param, exc.code)

    @app.exception_handler(_Overloaded)
    async def _overloaded(_: Request, exc: _Overloaded) -> JSONResponse:
        return _error_response(
            429, exc.message, "rate_limit_error", code=exc.code, headers={"Retry-After": str(exc.retry_after_s)}
        )

    def _queue_full() -> _Overloaded:
        return _Overloaded(
            f"the model is busy: {limits.queue_depth} requests are waiting; retry after {retry_after} s",
            "queue_full",
            retry_after,
        )

    def _lagging() -> _Overloaded:
        return _Overloaded(
            f"the server is busy: it runs {loop_lag.lag_s * 1000:.0f} ms behind the requests it has (its limit is "
            f"{limits.max_loop_lag_s * 1000:g} ms); retry after {retry_after} s",
            "server_busy",
            retry_after,
        )

    def _refuse_when_busy() -> JSONResponse | None:
        if student_queue.full:
            exc = _queue_full()
        elif loop_lag.over:
            exc = _lagging()
        else:
            return None
        return _error_response(
            429, exc.message, "rate_limit_error", code=exc.code, headers={"Retry-After": str(exc.retry_after_s)}
        )

    def _target(name: str | None) -> str:
        """``student`` or ``teacher``: who ``model`` names; 404 for a name the server does not serve."""
        if (target := accepted.get(name or "")) is not None:
            return target
        shown = name[:SHOWN_CHARS] + ("…" if len(name) > SHOWN_CHARS else "") if name else ""
        raise _BadRequest(
            f"model: the model {shown!r} does not exist; this server serves {', '.join(map(repr, names))}",
            "model",
            "model_not_found",
            status=404,
        )

    def _check_texts(texts: list[str], params: list[str]) -> None:
        """400 naming the ``params`` entry of a text that is empty or not Unicode."""
        for text, where in zip(texts, params, strict=True):
            if problem := text_problem(text):
                raise _BadRequest(f"{where}: the text {problem}", where, "invalid_text")

    async def _student(inputs: list[str], **params: Any):
        try:
            return await answer_from(student_queue, inputs, limits.deadline_s, True, **params)
        except QueueFull:  # it filled while this request was parsed
            raise _queue_full() from None
        except TimeoutError:
            raise _Overloaded(
                f"the model is busy: it did not start on this request within {limits.deadline_s:g} s; retry after "
                f"{retry_after} s",
                "deadline_exceeded",
                retry_after,
            ) from None

    async def _routed(texts: list[str], target: str = "student") -> tuple[list[Fitted], list[Routed]]:
        """The texts as cut to the context, and their answers (the student's, or the teacher's when escalated).

        ``target`` ``teacher`` (the client named it): every text goes to the teacher, after the student's pass that
        cuts it to the context; a teacher that cannot answer is then a 429 (busy, slow) or 502 (failing), never
        the student's answer under the teacher's name."""
        assert router is not None
        start = time.perf_counter()
        rows = await _student(texts)
        fitted = [f for f, _ in rows]
        inputs = [f.text for f in fitted]
        student_probs = np.array([row for _, row in rows], dtype=np.float64)
        escalate_index, final = router.decide(student_probs)
        if target == "teacher":
            escalate_index = np.arange(len(texts))
        fallback = None
        if escalate_index.size:
            assert teacher_queue is not None
            asked = [inputs[i] for i in escalate_index]
            try:
                final[escalate_index] = np.asarray(
                    await answer_from(teacher_queue, asked, limits.teacher_deadline_s, False), dtype=np.float64
                )
            except QueueFull:
                fallback = "teacher_busy"
            except TimeoutError:
                fallback = "teacher_slow"
            except Exception:  # noqa: BLE001 - a failing teacher costs the escalation, never the answer
                fallback = "teacher_error"
            if fallback is not None and target == "teacher":
                if fallback == "teacher_error":
                    raise _BadRequest(
                        "the teacher failed to answer; retry, or send model `student`", None, fallback, 502
                    )
                raise _Overloaded(
                    f"the teacher is busy ({fallback}); retry after {retry_after} s, or send model `student`",
                    fallback,
                    retry_after,
                )
        answers = router.answers(final, student_probs, escalate_index, fallback)
        metrics.observe_routes([a.route for a in answers], time.perf_counter() - start)
        return fitted, answers

    async def _log(endpoint: str, inputs: list[str], answers: list[Routed]) -> None:
        if traffic is None:
            return
        # redaction and a shard's write are CPU and disk work: off the event loop
        await asyncio.to_thread(
            traffic.record,
            endpoint,
            served.run_id,
            inputs,
            [a.route for a in answers],
            [a.label for a in answers],
            [a.distribution for a in answers],
            [a.confidence for a in answers],
        )

    def _queue_state() -> dict[str, Any]:
        return {
            name: {"load": q.load, "depth": q.depth}
            for name, q in (("student", student_queue), ("teacher", teacher_queue))
            if q is not None
        }

    def _readiness() -> tuple[int, dict[str, Any]]:
        ready = not student_queue.full and not loop_lag.over
        return 200 if ready else 503, {
            "status": "ready" if ready else "busy",
            "model": served.run_id,
            "queues": _queue_state(),
            "loop_lag_ms": round(loop_lag.lag_s * 1000, 1),
        }

    probes: dict[str, Probe] = {
        "/healthz": lambda: (200, {"status": "ok", "model": served.run_id, "kind": served.kind}),
        "/readyz": _readiness,
    }

    answer_probe = probe_answerer(probes, metrics)

    @app.get("/healthz", response_model=Health, responses=errors(CRASH_ERROR))
    async def healthz() -> dict[str, Any]:
        """Liveness for load balancers: the run served and its task. The connection answers it as soon as its bytes
        arrive, before routing and ahead of the requests waiting for the event loop; it never waits on model
        work."""
        return probes["/healthz"]()[1]

    @app.get("/readyz", response_model=Readiness, responses={503: {"model": Readiness, "description": NOT_READY}})
    async def readyz() -> JSONResponse:
        """Readiness: the models are loaded (they are before the server listens), the student's queue has room and
        the event loop is less than `serve.max_loop_lag_s` behind; each queue's load and depth, and the loop's lag.
        Answered by the connection, as `/healthz` is."""
        status, body = _readiness()
        return JSONResponse(body, status_code=status)

    @app.get(
        "/metrics",
        response_class=PlainTextResponse,
        responses={
            200: {"content": {"text/plain": {}}, "description": "Prometheus text exposition format 0.0.4."},
            **text_route_errors(KEY_ERROR),
        },
    )
    async def prometheus() -> PlainTextResponse:
        """Request counts and latencies per route and status, requests in flight, routes taken, the router's
        threshold and the blended cost, in Prometheus' text format."""
        return PlainTextResponse(metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8")

    @app.get("/v1/models", response_model=ModelList, responses=errors(KEY_ERROR))
    async def models() -> dict[str, Any]:
        """Every name `model` may take, as OpenAI's model list: the served run id, the project's name and `student`
        (the student, routed as usual), and `teacher` when the server has one."""
        return model_list(names)

    @app.post(
        "/v1/classify",
        response_model=ClassifyResponse,
        response_model_exclude_none=True,
        responses=errors(
            *MODEL_ROUTE_ERRORS,
            extra={
                400: "This route's codes: `wrong_task` (the run generates text), `empty_input` (an empty list), "
                f"`too_many_inputs` (more texts than the server's limit, {DEFAULT_MAX_INPUTS} by default), "
                "`invalid_text` (a text that is empty, blank or holds a lone surrogate; `param` names it)."
            },
        ),
    )
    async def classify(body: ClassifyRequest) -> dict[str, Any]:
        """Label one text or a list of texts: each answer with its label, every label's probability, who answered
        (the student; the teacher when the student was unsure; or the student again, marked `student_fallback`,
        when the teacher was saturated, slow or failing), the student's confidence, and whether the text was cut
        to the student's context. Classify runs only."""
        target = _target(body.model)
        if router is None:
            raise _BadRequest(
                f"run {served.run_id} is a {served.kind} task; use /v1/chat/completions", None, "wrong_task"
            )
        texts = [body.input] if isinstance(body.input, str) else list(body.input)
        if not texts:
            raise _BadRequest("input: give at least one text", "input", "empty_input")
        if len(texts) > max_inputs:
            raise _BadRequest(
                f"input: at most {max_inputs} texts per request, got {len(texts)}", "input", "too_many_inputs"
            )
        _check_texts(texts, ["input"] if isinstance(body.input, str) else [f"input[{i}]" for i in range(len(texts))])
        fitted, answers = await _routed(texts, target)
        await _log("/v1/classify", [f.text for f in fitted], answers)
        answer = {
            "object": "list",
            "model": served.run_id,
            "data": [
                {
                    "index": i,
                    "label": a.label,
                    "distribution": dict(zip(served.labels, a.distribution, strict=True)),
                    "route": a.route,
                    "confidence": a.confidence,
                    **({"fallback": a.fallback} if a.fallback else {}),
                    **_truncation(f),
                }
                for i, (a, f) in enumerate(zip(answers, fitted, strict=True))
            ],
        }
        return answer

    @app.post(
        "/v1/chat/completions",
        response_model=ChatResponse,
        response_model_exclude_none=True,
        responses={
            **STREAM_ANSWER,
            **errors(
                *MODEL_ROUTE_ERRORS,
                extra={
                    400: "This route's codes: `unsupported_value` (`n` over 1; `logprobs` on a generate run), "
                    "`invalid_value` (`top_logprobs` without `logprobs`), `no_user_message`, `invalid_text` (the "
                    "last user message is empty, blank or holds a lone surrogate).",
                    429: "With `model` `teacher`: the teacher's queue is full or it was slow (`teacher_busy`, "
                    "`teacher_slow`).",
                },
            ),
        },
    )
    async def chat(body: ChatRequest) -> Any:
        """OpenAI-compatible chat completion on the last user message: a label for a classify run (routed like
        /v1/classify), generated text for a generate run; as server-sent events with `stream`, with the label
        distribution as `logprobs` when asked."""
        target = _target(body.model)
        if body.n is not None and body.n > 1:
            raise _BadRequest(
                f"n: this server returns one choice (its answer is deterministic, so {body.n} would be copies); "
                "send n=1",
                "n",
                "unsupported_value",
            )
        if body.top_logprobs is not None and not body.logprobs:
            raise _BadRequest("top_logprobs: send logprobs=true with it", "top_logprobs", "invalid_value")
        if body.logprobs and router is None:
            raise _BadRequest(
                f"logprobs: run {served.run_id} generates text and does not return token log-probabilities; "
                "send logprobs=false",
                "logprobs",
                "unsupported_value",
            )
        users = [m for m in body.messages if m.role == "user"]
        if not users:
            raise _BadRequest("messages: include at least one user message", "messages", "no_user_message")
        sent = _message_text(users[-1])
        _check_texts([sent], ["messages"])
        extra: dict[str, Any] = {}
        logprobs = None
        if router is not None:
            (fitted,), (answer,) = await _routed([sent], target)
            await _log("/v1/chat/completions", [fitted.text], [answer])
            content, completion_tokens, pieces = answer.label, label_tokens[answer.label], [answer.label]
            extra = {"route": answer.route, "distribution": dict(zip(served.labels, answer.distribution, strict=True))}
            if answer.fallback:
                extra["fallback"] = answer.fallback
            if body.logprobs:
                logprobs = label_logprobs(served.labels, answer.distribution, answer.label, body.top_logprobs or 0)
        else:
            params = {"max_new_tokens": body.max_tokens} if body.max_tokens else {}
            (generated,) = await _student([sent], streamed=bool(body.stream), **params)
            fitted, content, completion_tokens = generated.fitted, generated.text, generated.tokens
            pieces = generated.pieces or []
            metrics.observe_routes(["student"], 0.0)
            if traffic is not None:
                await asyncio.to_thread(
                    traffic.record,
                    "/v1/chat/completions",
                    served.run_id,
                    [fitted.text],
                    ["student"],
                    [content],
                    [None],
                    [None],
                )
            extra = {"route": "student"}
        extra.update(_truncation(fitted))
        completion_id, created = f"chatcmpl-{uuid.uuid4().hex}", int(time.time())
        model = served.run_id if target == "student" else "teacher"
        usage = {
            "prompt_tokens": fitted.tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": fitted.tokens + completion_tokens,
        }
        if body.stream:
            wants_usage = body.stream_options is not None and bool(body.stream_options.include_usage)
            events = stream_events(
                completion_id, created, model, pieces, usage if wants_usage else None, extra, logprobs
            )
            return StreamingResponse(events, media_type="text/event-stream", headers={"Cache-Control": "no-cache"})
        choice = {"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}
        if logprobs is not None:
            choice["logprobs"] = logprobs
        return {
            "id": completion_id,
            "object": "chat.completion",
            "created": created,
            "model": model,
            "choices": [choice],
            "usage": usage,
            "distil": extra,
        }

    guard = GuardMiddleware(
        app, api_key, max_body_bytes or limits.max_body_bytes, metrics, limits.body_timeout_s, limits, _refuse_when_busy
    )
    guard.answer_probe = answer_probe
    return guard  # type: ignore[return-value]


def probe_answerer(probes: dict[str, Probe], metrics: ServerMetrics) -> Callable[[str], tuple[int, bytes] | None]:
    """A probe's status and body for the connection to send itself (:mod:`distil.serve.connections`), counted as a
    request; None for a path that is not a probe."""

    def answer_probe(path: str) -> tuple[int, bytes] | None:
        if path not in probes:
            return None
        start = time.perf_counter()
        status, body = probes[path]()
        metrics.observe_request(path, status, time.perf_counter() - start)
        return status, json.dumps(body, separators=(",", ":")).encode()

    return answer_probe


def _truncation(fitted: Fitted) -> dict[str, Any]:
    """What a response says of the cut: ``truncated``, and when it is true the characters dropped."""
    if not fitted.truncated:
        return {"truncated": False}
    return {"truncated": True, "dropped_characters": fitted.dropped_characters, "kept_tokens": fitted.tokens}


def make_server(
    app: Any,
    host: str = "127.0.0.1",
    port: int = 8000,
    graceful_timeout_s: float = 30.0,
    limits: ServeSpec | None = None,
):
    """A uvicorn.Server for ``app``; ``server.run()`` blocks, ``server.should_exit = True`` stops it gracefully.

    ``limits`` (default: the ones ``create_app`` was given): keep-alive, the head deadline and size, and the
    connection cap."""
    import uvicorn

    from distil.serve.connections import protocol_with_head_deadline

    limits = limits or getattr(app, "limits", None) or ServeSpec()
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        log_level="warning",
        timeout_graceful_shutdown=graceful_timeout_s,
        timeout_keep_alive=limits.keep_alive_s,
        limit_concurrency=limits.max_connections,
        h11_max_incomplete_event_size=limits.max_header_bytes,
        http=protocol_with_head_deadline(limits.header_timeout_s, getattr(app, "answer_probe", None)),
        lifespan="on",
        access_log=False,
    )
    return uvicorn.Server(config)

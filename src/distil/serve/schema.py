"""The bodies the server answers with, and the errors each route can give: what ``docs/api.md`` is generated from.

The routes declare these as their ``response_model``, so FastAPI both documents them and serialises every answer
through them: the documentation cannot say one thing while the server sends another. The request bodies live
next to the routes in :mod:`distil.serve.server`.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field

# --- answers -----------------------------------------------------------------------------------------------


class Health(BaseModel):
    status: Literal["ok"] = Field(description="Always ok while the server answers.")
    model: str = Field(description="The run id served.")
    kind: Literal["classify", "generate"] = Field(description="The task of the served run.")


class QueueState(BaseModel):
    load: int = Field(description="Requests waiting for or running on the model now.")
    depth: int | None = Field(description="The most it takes (serve.queue_depth / serve.teacher_queue_depth).")


class Readiness(BaseModel):
    status: Literal["ready", "busy"] = Field(
        description="ready: the student's queue has room and the event loop keeps up; busy: the queue is full or the "
        "loop runs more than serve.max_loop_lag_s behind."
    )
    model: str = Field(description="The run id served.")
    queues: dict[str, QueueState] = Field(description="`student`, and `teacher` when the server escalates.")
    loop_lag_ms: float = Field(description="How far behind the event loop ran at its last tick, in milliseconds.")


NOT_READY = (
    "The student's queue is full or the event loop is behind: requests would get 429 now (the body says the same, "
    "status busy)."
)


class ModelEntry(BaseModel):
    id: str = Field(
        description="A name to send as `model`: the run id served, the project's name, `student`, or `teacher`."
    )
    object: Literal["model"]
    created: int = Field(description="Unix time of the request.")
    owned_by: Literal["distil"]


class ModelList(BaseModel):
    object: Literal["list"]
    data: list[ModelEntry] = Field(
        description="The run id, the project's name and `student` (all three the student, routed to the teacher when "
        "unsure), and `teacher` (the teacher alone) when the server has a teacher."
    )


Fallback = Literal["teacher_busy", "teacher_slow", "teacher_error"]


class LabelAnswer(BaseModel):
    index: int = Field(description="Position of the text in the request's `input`.")
    label: str = Field(description="The answer: one of the task's labels.")
    distribution: dict[str, float] = Field(description="Probability of every label (sums to 1).")
    route: Literal["student", "teacher", "student_fallback"] = Field(
        description="Who answered: the student, or the teacher when the student's confidence was under the "
        "calibrated threshold; student_fallback: under the threshold, but the teacher was saturated, slow or "
        "failing, so the student answered."
    )
    confidence: float = Field(description="The student's highest label probability, which the route was decided on.")
    fallback: Fallback | None = Field(None, description="Why a student_fallback answer is not the teacher's.")
    truncated: bool = Field(description="The text was longer than the student's context and lost its start.")
    dropped_characters: int | None = Field(None, description="When truncated: characters cut from the start.")
    kept_tokens: int | None = Field(None, description="When truncated: the student's tokens kept.")


class ClassifyResponse(BaseModel):
    object: Literal["list"]
    model: str = Field(description="The run id that answered.")
    data: list[LabelAnswer] = Field(description="One answer per input text, in order.")


class AssistantMessage(BaseModel):
    role: Literal["assistant"]
    content: str = Field(description="The answer: a label for a classify run, generated text for a generate run.")


class TopLogprob(BaseModel):
    token: str = Field(description="A label (a label is one token here, spelled as the label).")
    logprob: float = Field(description="Its natural log-probability; -9999 for probability 0.")
    bytes: list[int] = Field(description="The label's UTF-8 bytes.")


class TokenLogprob(TopLogprob):
    top_logprobs: list[TopLogprob] = Field(description="The `top_logprobs` most likely labels, most likely first.")


class ChoiceLogprobs(BaseModel):
    content: list[TokenLogprob] = Field(
        description="One entry, the answer: the distribution of the model that answered (the student's; the "
        "teacher's when it answered)."
    )


class ChatChoice(BaseModel):
    index: int
    message: AssistantMessage
    finish_reason: Literal["stop"]
    logprobs: ChoiceLogprobs | None = Field(None, description="With `logprobs: true` (classify runs).")


class Usage(BaseModel):
    prompt_tokens: int = Field(
        description="The student's tokens in the last user message as read (after any cut); its words when the "
        "server has no tokenizer for it."
    )
    completion_tokens: int = Field(
        description="The student's tokens in the answer (no special tokens), whoever answered; words without a "
        "tokenizer."
    )
    total_tokens: int


class DistilAnswer(BaseModel):
    route: Literal["student", "teacher", "student_fallback"] = Field(description="Who answered (as in /v1/classify).")
    distribution: dict[str, float] | None = Field(
        None, description="Classify runs: the probability of every label. Absent for generate runs."
    )
    fallback: Fallback | None = Field(None, description="Why a student_fallback answer is not the teacher's.")
    truncated: bool = Field(description="The message was longer than the student's context and lost its start.")
    dropped_characters: int | None = Field(None, description="When truncated: characters cut from the start.")
    kept_tokens: int | None = Field(None, description="When truncated: the student's tokens kept.")


class ChatResponse(BaseModel):
    id: str = Field(description="`chatcmpl-` and a random hex id.")
    object: Literal["chat.completion"]
    created: int = Field(description="Unix time of the answer.")
    model: str = Field(description="The run id when the student was asked, `teacher` when the teacher was.")
    choices: list[ChatChoice] = Field(description="One choice.")
    usage: Usage
    distil: DistilAnswer = Field(
        description="What an OpenAI client ignores: the route and, for labels, the distribution."
    )


# --- errors ------------------------------------------------------------------------------------------------


class ErrorDetail(BaseModel):
    message: str = Field(description="What was wrong, naming the field where there is one.")
    type: str = Field(
        description="invalid_request_error, invalid_api_key, not_found_error, rate_limit_error or server_error."
    )
    param: str | None = Field(None, description="The request field at fault, dotted (e.g. `messages.0.role`).")
    code: str | None = Field(None, description="A machine-readable reason, e.g. `json_invalid`, `too_many_inputs`.")


class ErrorBody(BaseModel):
    """Every error, whatever its status, has this OpenAI-style body."""

    error: ErrorDetail


def _error(description: str) -> dict[str, Any]:
    return {"model": ErrorBody, "description": description}


# Errors the guard in front of every route gives before a body is read (the key) or parsed (the size).
KEY_ERROR = {401: _error("The server has an API key and the request did not send it (`invalid_api_key`).")}
SIZE_ERROR = {413: _error("The body is larger than the server's limit (`request_too_large`).")}
CRASH_ERROR = {500: _error("An unexpected failure (`server_error`); bad input never gives a 5xx.")}
SLOW_BODY_ERROR = {408: _error("The body did not arrive within serve.body_timeout_s (`request_timeout`).")}
MODEL_ERROR = {404: _error("`model` is not a name `/v1/models` lists (`model_not_found`), as OpenAI's API answers.")}
TEACHER_ERROR = {502: _error("With `model` `teacher`: the teacher failed to answer (`teacher_error`).")}
STREAM_ANSWER = {
    200: {
        "content": {"text/event-stream": {"schema": {"type": "string"}}},
        "description": "success; with `stream: true`, server-sent events, `data: <chat.completion.chunk>` (OpenAI's "
        "chunk: the role, then the label or one chunk per generated token, then `finish_reason` `stop` with "
        "`distil` and, with `stream_options.include_usage`, `usage`), then `data: [DONE]`.",
    }
}
BUSY_ERROR = {
    429: _error(
        "The student's queue is full (`queue_full`) or the event loop runs more than serve.max_loop_lag_s behind "
        "(`server_busy`), both answered before the body is parsed; or the student did not start on the request "
        "within serve.deadline_s (`deadline_exceeded`); wait the `Retry-After` seconds and retry."
    )
}
BODY_ERROR = {
    400: _error(
        "Malformed JSON (`json_invalid`), a field that breaks the schema (`code` is the check that failed, e.g. "
        "`missing`, `string_type`, `extra_forbidden`; `param` names the field), or a value the route refuses "
        "(the codes listed with the route)."
    )
}

# What either model route (/v1/classify, /v1/chat/completions) can answer besides its own 400 codes.
MODEL_ROUTE_ERRORS = (
    BODY_ERROR,
    KEY_ERROR,
    SLOW_BODY_ERROR,
    SIZE_ERROR,
    MODEL_ERROR,
    BUSY_ERROR,
    TEACHER_ERROR,
    CRASH_ERROR,
)


def errors(*groups: dict[int, dict[str, Any]], extra: dict[int, str] | None = None) -> dict[int, dict[str, Any]]:
    """A route's ``responses``: the groups it can give, and its own reasons for a status (added to that status)."""
    out: dict[int, dict[str, Any]] = {}
    for group in groups:
        out.update(group)
    for status, reasons in (extra or {}).items():
        base = out.get(status, _error(""))
        out[status] = {**base, "description": f"{base['description']} {reasons}".strip()}
    return out


def text_route_errors(*groups: dict[int, dict[str, Any]]) -> dict[int, dict[str, Any]]:
    """:func:`errors` for a route that answers ``text/plain``: FastAPI would document its errors under the route's
    media type, but every error is JSON, so each names the ErrorBody schema (registered by the JSON routes)."""
    json_body = {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}}
    return {status: {"description": r["description"], "content": json_body} for status, r in errors(*groups).items()}

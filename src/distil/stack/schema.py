"""The bodies the stack answers with and the errors its routes can give: what the stack's part of ``docs/api.md`` is
generated from.

A specialist's answer is `distil serve`'s (:mod:`distil.serve.schema`) with the stack's fields beside it: who
answered (``specialist``), how it was picked (``routed_by``), whether the generalist answered (``escalated``) and,
routed by the router model, its confidence. The stack's routes pass its specialists' answers on, so they declare
these models for the documentation only; a test checks what the stack sends against them over real HTTP.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field

from distil.serve.schema import (
    BODY_ERROR,
    BUSY_ERROR,
    CRASH_ERROR,
    KEY_ERROR,
    SIZE_ERROR,
    SLOW_BODY_ERROR,
    ChatResponse,
    ClassifyResponse,
    DistilAnswer,
    ErrorBody,
    LabelAnswer,
    QueueState,
    errors,
)

MODEL_HELP = (
    "Who answers: the stack's name, `distil` or none: the specialist `task` names, else the one the router model "
    "picks; a specialist's name: that specialist (below its threshold, the generalist); `generalist`: the generalist "
    "alone, on the task `task` (or the router) picks; `router`: the router model itself (its label is a specialist's "
    "name)."
)
TASK_HELP = "The specialist to answer (a name `/v1/models` lists); without it the stack's router picks one."

# --- answers -----------------------------------------------------------------------------------------------


class StackFields(BaseModel):
    specialist: str | None = Field(
        None, description="The specialist that answered, or whose task the generalist answered. Absent from `router`."
    )
    routed_by: Literal["model", "task", "router"] | None = Field(
        None, description="What picked the specialist: the request's `model`, its `task`, or the router model."
    )
    escalated: bool | None = Field(
        None,
        description="Whether the generalist answered (route `teacher`): the specialist was unsure, or `model` was "
        "`generalist`. false for `student_fallback`: the generalist failed, so the specialist's own answer stands.",
    )
    router_confidence: float | None = Field(
        None, description="Routed by the router model: its probability for the specialist it picked."
    )


class StackLabelAnswer(StackFields, LabelAnswer):
    """A specialist's answer to one text, as `distil serve` gives it, with the stack's fields."""


class StackClassifyResponse(ClassifyResponse):
    model: str = Field(
        description="The `model` the request sent (the stack's name when it sent none); `router` for the router "
        "model's own labels."
    )
    data: list[StackLabelAnswer] = Field(
        description="One answer per input text, in order (texts the router sends to different specialists are put "
        "back in order)."
    )


class StackDistilAnswer(StackFields, DistilAnswer):
    """A chat completion's `distil`: `distil serve`'s, with the stack's fields."""


class StackChatResponse(ChatResponse):
    model: str = Field(description="The specialist that answered; `generalist` when the request asked it.")
    distil: StackDistilAnswer = Field(
        description="What an OpenAI client ignores: the route, the distribution, and the specialist that answered."
    )


class StackModelEntry(BaseModel):
    id: str = Field(
        description="A name to send as `model`: the stack's name, a specialist's name, `generalist`, or `router`."
    )
    object: Literal["model"]
    created: int = Field(description="Unix time of the request.")
    owned_by: Literal["distil"]


class StackModelList(BaseModel):
    object: Literal["list"]
    data: list[StackModelEntry] = Field(
        description="The stack's name, each specialist, `generalist`, and `router` when the stack routes by one."
    )


class StackHealth(BaseModel):
    status: Literal["ok"] = Field(description="Always ok while the server answers.")
    model: str = Field(description="The stack's name.")
    kind: Literal["classify"] = Field(description="A stack serves classify specialists.")


class StackReadiness(BaseModel):
    status: Literal["ready", "busy"] = Field(
        description="ready: every specialist's queue has room and the event loop keeps up; busy: a queue is full or "
        "the loop runs more than serve.max_loop_lag_s behind."
    )
    model: str = Field(description="The stack's name.")
    queues: dict[str, QueueState] = Field(description="Each specialist's student queue, by the specialist's name.")
    loop_lag_ms: float = Field(description="How far behind the event loop ran at its last tick, in milliseconds.")


STACK_NOT_READY = (
    "A specialist's queue is full, or the event loop runs more than serve.max_loop_lag_s behind: requests would get "
    "429 now (the body says the same, busy)."
)

# --- errors ------------------------------------------------------------------------------------------------


def _error(description: str) -> dict[str, Any]:
    return {"model": ErrorBody, "description": description}


STACK_MODEL_ERROR = {404: _error("`model` is not a name `/v1/models` lists (`model_not_found`).")}
GENERALIST_ERROR = {
    502: _error(
        "With `model` `generalist`: the generalist failed to answer (`teacher_error`); send the specialist's name as "
        "`model` for its own answer. A request that only escalated gets the specialist's answer instead, marked "
        "`student_fallback`."
    )
}
STACK_ROUTE_ERRORS = (
    BODY_ERROR,
    KEY_ERROR,
    SLOW_BODY_ERROR,
    SIZE_ERROR,
    STACK_MODEL_ERROR,
    BUSY_ERROR,
    GENERALIST_ERROR,
    CRASH_ERROR,
)
STACK_400 = (
    "The stack's own codes: `missing_task` (no `task`, and the stack routes by it), `unknown_task` (`task` names no "
    "specialist), `conflict` (`task` and `model` name different specialists); the specialist's refusals are "
    "`distil serve`'s (above)."
)
GENERALIST_BUSY = (
    "With `model` `generalist`: the generalist's queue is full or it was slow (`teacher_busy`, `teacher_slow`)."
)


def stack_route_errors(extra_400: str = "") -> dict[int, dict[str, Any]]:
    """What a model route of the stack (/v1/classify, /v1/chat/completions) can answer besides success."""
    return errors(*STACK_ROUTE_ERRORS, extra={400: f"{STACK_400} {extra_400}".strip(), 429: GENERALIST_BUSY})

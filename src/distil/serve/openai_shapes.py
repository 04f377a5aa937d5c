"""The shapes the official OpenAI SDK reads from a chat completion, built from what a distil model answers.

* ``label_logprobs``: a classify student's whole label distribution as ``choices[].logprobs`` — one entry for the
  answer (the chosen label), its ``top_logprobs`` the k most likely labels. The student scores each label by its
  first token, so a label is one "token" here, spelled as the label.
* ``stream_events``: ``stream=True`` as server-sent events, ``data: <chunk>`` per piece (one piece for a label,
  one per generated token for text), then a final chunk with the finish reason (and usage when asked), then
  ``data: [DONE]``, as the SDK's stream reader expects.
* ``model_names``: the names ``model`` may take — the run id, the project's name and the ``student`` /
  ``teacher`` aliases — and what each refers to.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Iterable, Sequence
from typing import Any

ALIASES = ("student", "teacher")


def _logprob_entry(token: str, probability: float) -> dict[str, Any]:
    logprob = math.log(probability) if probability > 0 else -9999.0  # the SDK wants a number; -inf is not JSON
    return {"token": token, "logprob": logprob, "bytes": list(token.encode("utf-8"))}


def label_logprobs(labels: Sequence[str], distribution: Sequence[float], chosen: str, top_k: int) -> dict[str, Any]:
    """``choices[].logprobs`` for a classify answer: the chosen label with its log-probability and the ``top_k``
    most likely labels (at most all of them), most likely first."""
    ranked = sorted(zip(labels, distribution, strict=True), key=lambda pair: -pair[1])[: max(0, top_k)]
    by_label = dict(zip(labels, distribution, strict=True))
    entry = _logprob_entry(chosen, float(by_label.get(chosen, 0.0)))
    entry["top_logprobs"] = [_logprob_entry(label, float(p)) for label, p in ranked]
    return {"content": [entry], "refusal": None}


def model_names(run_id: str, project_name: str, has_teacher: bool) -> dict[str, str]:
    """Every name ``model`` may take -> ``student`` or ``teacher``: the run id and the project name name the
    student (the served run), as does the ``student`` alias; ``teacher`` only when the server has one."""
    names = {run_id: "student", project_name: "student", "student": "student"}
    if has_teacher:
        names["teacher"] = "teacher"
    return names


def model_list(names: Iterable[str]) -> dict[str, Any]:
    """OpenAI's model list of ``names`` (each a name ``model`` may take)."""
    created = int(time.time())
    return {
        "object": "list",
        "data": [{"id": name, "object": "model", "created": created, "owned_by": "distil"} for name in names],
    }


def _chunk(completion_id: str, created: int, model: str, delta: dict[str, Any], finish: str | None) -> dict[str, Any]:
    return {
        "id": completion_id,
        "object": "chat.completion.chunk",
        "created": created,
        "model": model,
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}],
    }


def stream_events(
    completion_id: str,
    created: int,
    model: str,
    pieces: Iterable[str],
    usage: dict[str, int] | None = None,
    extra: dict[str, Any] | None = None,
    logprobs: dict[str, Any] | None = None,
) -> Iterable[str]:
    """The server-sent events of one streamed answer: a first chunk with the role, one chunk per piece of text,
    a last chunk with ``finish_reason`` ``stop`` (and ``usage`` when given, as ``stream_options.include_usage``
    asks), then ``[DONE]``. ``extra`` (distil's route and distribution) rides on the last chunk; ``logprobs`` (a
    label's, from :func:`label_logprobs`) on the first piece, which for a label is the only one."""

    def event(body: dict[str, Any]) -> str:
        return f"data: {json.dumps(body, separators=(',', ':'))}\n\n"

    yield event(_chunk(completion_id, created, model, {"role": "assistant", "content": ""}, None))
    for i, piece in enumerate(pieces):
        chunk = _chunk(completion_id, created, model, {"content": piece}, None)
        if i == 0 and logprobs is not None:
            chunk["choices"][0]["logprobs"] = logprobs
        yield event(chunk)
    last = _chunk(completion_id, created, model, {}, "stop")
    if usage is not None:
        last["usage"] = usage
    if extra:
        last["distil"] = extra
    yield event(last)
    yield "data: [DONE]\n\n"


def token_pieces(tokenizer: Any, text: str) -> list[str]:
    """``text`` cut where the model's tokenizer cuts it, each piece decoded on its own (so the pieces join back to
    the text a whole decode gives): the chunks of a streamed generation."""
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    pieces, previous = [], ""
    for end in range(1, len(ids) + 1):
        decoded = tokenizer.decode(ids[:end], skip_special_tokens=True)
        if decoded.endswith("\ufffd"):  # a character split across tokens: wait for its last byte
            continue
        pieces.append(decoded[len(previous) :])
        previous = decoded
    return [p for p in pieces if p]


def token_count(tokenizer: Any, text: str) -> int:
    """Tokens of ``text`` as the model's tokenizer counts them (no special tokens added): ``usage`` figures."""
    return len(tokenizer(text, add_special_tokens=False)["input_ids"])

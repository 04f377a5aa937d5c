"""The chat-completion pieces distil builds parse with the official OpenAI SDK's own types."""

from __future__ import annotations

import json
import math

import pytest
from openai.types.chat import ChatCompletion, ChatCompletionChunk
from transformers import AutoTokenizer

from distil.serve.openai_shapes import label_logprobs, model_names, stream_events, token_count, token_pieces
from tests.conftest import TINY_TOKENIZER

LABELS = ["billing", "technical", "account"]


def test_the_label_distribution_is_returned_as_logprobs_the_sdk_reads():
    logprobs = label_logprobs(LABELS, [0.2, 0.7, 0.1], "technical", top_k=2)
    completion = ChatCompletion.model_validate(
        {
            "id": "c",
            "object": "chat.completion",
            "created": 0,
            "model": "r1",
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": "technical"},
                    "finish_reason": "stop",
                    "logprobs": logprobs,
                }
            ],
        }
    )
    (entry,) = completion.choices[0].logprobs.content
    assert entry.token == "technical" and entry.logprob == pytest.approx(math.log(0.7))
    assert [t.token for t in entry.top_logprobs] == ["technical", "billing"]
    everything = label_logprobs(LABELS, [0.2, 0.7, 0.1], "billing", 9)["content"][0]
    assert everything["token"] == "billing" and len(everything["top_logprobs"]) == 3
    assert sum(math.exp(t["logprob"]) for t in everything["top_logprobs"]) == pytest.approx(1.0)


def test_a_stream_is_chunks_the_sdk_reads_then_done():
    events = list(
        stream_events(
            "c", 0, "r1", ["tech", "nical"], usage={"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}
        )
    )
    assert events[-1] == "data: [DONE]\n\n" and all(e.startswith("data: ") and e.endswith("\n\n") for e in events)
    chunks = [ChatCompletionChunk.model_validate(json.loads(e[6:])) for e in events[:-1]]
    assert chunks[0].choices[0].delta.role == "assistant"
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == "technical"
    assert chunks[-1].choices[0].finish_reason == "stop" and chunks[-1].usage.total_tokens == 5


def test_streamed_pieces_follow_the_tokenizer_and_join_back():
    tokenizer = AutoTokenizer.from_pretrained(str(TINY_TOKENIZER))
    text = "my card was charged twice — ünïcode"
    pieces = token_pieces(tokenizer, text)
    assert "".join(pieces) == tokenizer.decode(tokenizer(text)["input_ids"], skip_special_tokens=True)
    assert len(pieces) > 3 and token_count(tokenizer, text) >= len(pieces)
    assert token_count(tokenizer, "ünïcode") > 1  # one word, several tokens: usage counts tokens, not words


def test_model_names_cover_the_run_the_project_and_the_aliases():
    assert model_names("r1", "triage", has_teacher=True) == {
        "r1": "student",
        "triage": "student",
        "student": "student",
        "teacher": "teacher",
    }
    assert "teacher" not in model_names("r1", "triage", has_teacher=False)

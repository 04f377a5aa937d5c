"""`distil serve` driven by the official OpenAI SDK over real HTTP: plain calls, streams, label logprobs, refused
``n``, the model names `/v1/models` lists, and usage counted with the student's tokenizer."""

from __future__ import annotations

import json
import math

import openai
import pytest
import torch
from transformers import AutoTokenizer

from distil.serve.runs import ServedModel, load_served
from distil.serve.server import create_app
from distil.spec.io import load_project
from tests.serve.conftest import LABELS, running_server

KEY = "sk-test-sdk"
TEXT = "I was charged twice this month"


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    torch.set_num_threads(1)


@pytest.fixture
def classify_server(classify_project):
    """(SDK client, served model, student tokenizer): the tiny classify student, every answer the student's."""
    project = load_project(classify_project)
    served = load_served(project, "r1", threshold=0.0)
    tokenizer = AutoTokenizer.from_pretrained(str(project.runs_dir / "r1" / "student"))
    with running_server(create_app(served, api_key=KEY)) as (url, _):
        client = openai.OpenAI(base_url=f"{url}/v1", api_key=KEY, max_retries=0, timeout=60)
        yield client, served, tokenizer


def _ask(client, **kwargs):
    return client.chat.completions.create(messages=[{"role": "user", "content": TEXT}], **{"model": "r1", **kwargs})


def test_a_plain_call_answers_a_label_with_usage_in_the_students_tokens(classify_server):
    client, served, tokenizer = classify_server
    completion = _ask(client)
    (choice,) = completion.choices
    assert choice.message.content in LABELS and choice.finish_reason == "stop" and choice.logprobs is None
    assert completion.model == "r1"
    prompt = len(tokenizer(TEXT, add_special_tokens=False)["input_ids"])
    answer = len(tokenizer(choice.message.content, add_special_tokens=False)["input_ids"])
    assert answer != len(choice.message.content.split()) or prompt != len(TEXT.split())  # tokens, not words
    assert (completion.usage.prompt_tokens, completion.usage.completion_tokens) == (prompt, answer)
    assert completion.usage.total_tokens == prompt + answer


def test_logprobs_are_the_label_distribution(classify_server):
    client, _, _ = classify_server
    completion = _ask(client, logprobs=True, top_logprobs=2)
    distribution = completion.model_extra["distil"]["distribution"]
    (entry,) = completion.choices[0].logprobs.content
    assert entry.token == completion.choices[0].message.content
    assert entry.logprob == pytest.approx(math.log(distribution[entry.token]))
    ranked = sorted(distribution, key=lambda label: -distribution[label])
    assert [t.token for t in entry.top_logprobs] == ranked[:2]
    assert [t.logprob for t in entry.top_logprobs] == pytest.approx([math.log(distribution[x]) for x in ranked[:2]])
    every = _ask(client, logprobs=True, top_logprobs=20).choices[0].logprobs.content[0].top_logprobs
    assert sorted(t.token for t in every) == sorted(LABELS)
    assert sum(math.exp(t.logprob) for t in every) == pytest.approx(1.0, abs=1e-4)


def test_a_stream_is_one_label_chunk_then_done(classify_server):
    client, _, tokenizer = classify_server
    plain = _ask(client)
    chunks = list(_ask(client, stream=True, stream_options={"include_usage": True}, logprobs=True, top_logprobs=3))
    pieces = [c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content]
    assert pieces == [plain.choices[0].message.content]  # one chunk for a label
    assert chunks[-1].choices[0].finish_reason == "stop"
    assert chunks[-1].usage.model_dump() == {**plain.usage.model_dump(), **chunks[-1].usage.model_dump()}
    assert chunks[-1].usage.completion_tokens == plain.usage.completion_tokens
    (entry,) = next(c for c in chunks if c.choices[0].logprobs).choices[0].logprobs.content
    assert entry.token == pieces[0] and len(entry.top_logprobs) == 3
    assert all(c.usage is None for c in chunks[:-1])
    # the raw stream ends with the [DONE] sentinel the SDK's reader stops on
    with client.chat.completions.with_streaming_response.create(
        model="student", messages=[{"role": "user", "content": TEXT}], stream=True
    ) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        lines = [line for line in response.iter_lines() if line]
    assert lines[-1] == "data: [DONE]" and all(line.startswith("data: ") for line in lines)
    assert json.loads(lines[-2][6:])["distil"]["route"] == "student"


def test_n_over_one_is_refused_naming_n(classify_server):
    client, _, _ = classify_server
    with pytest.raises(openai.BadRequestError) as refused:
        _ask(client, n=2)
    assert refused.value.body["param"] == "n" and refused.value.status_code == 400
    assert len(_ask(client, n=1).choices) == 1


def test_every_listed_name_is_accepted_and_others_are_not_found(classify_server):
    client, served, _ = classify_server
    names = [m.id for m in client.models.list()]
    assert names == ["r1", "support-ticket-triage", "student", "teacher"]
    for name in names:
        completion = _ask(client, model=name)
        assert completion.choices[0].message.content in LABELS
        route = completion.model_extra["distil"]["route"]
        assert (route, completion.model) == (("teacher", "teacher") if name == "teacher" else ("student", "r1"))
    with pytest.raises(openai.NotFoundError) as unknown:
        _ask(client, model="gpt-4o")
    assert unknown.value.body["code"] == "model_not_found"


class ScriptedWriter:
    """A generate student that always writes ``ANSWER`` (a tiny random model writes nothing but special tokens, which
    decode to an empty text); the server's tokenizer, fitter and queues around it are the real ones."""

    ANSWER = "The printer is on fire — call the ünïcode desk."

    def generate(self, inputs: list[str], max_new_tokens: int | None = None) -> list[str]:
        return [self.ANSWER for _ in inputs]


def test_a_generated_stream_is_the_tokenizers_pieces(tmp_path):
    from distil.serve.context import student_fitter
    from tests.conftest import build_tiny_causal_lm

    folder = build_tiny_causal_lm(tmp_path / "student", layers=2, hidden=32)
    (folder / "distil_task.json").write_text(
        json.dumps({"kind": "generate", "prompt_template": "Summarise: {input}\n", "max_length": 64})
    )
    tokenizer = AutoTokenizer.from_pretrained(str(folder))
    expected = ScriptedWriter.ANSWER
    served = ServedModel(
        "g1", "generate", [], ScriptedWriter(), None, 0.0, fit=student_fitter(folder), project_name="notes"
    )
    with running_server(create_app(served)) as (url, _):
        client = openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0, timeout=60)
        assert [m.id for m in client.models.list()] == ["g1", "notes", "student"]  # no teacher, no alias for one
        ask = {"model": "notes", "messages": [{"role": "user", "content": "the printer is on fire"}], "max_tokens": 6}
        plain = client.chat.completions.create(**ask)
        assert plain.choices[0].message.content == expected
        tokens = tokenizer(expected, add_special_tokens=False)["input_ids"]
        assert plain.usage.completion_tokens == len(tokens) != len(expected.split())
        chunks = list(client.chat.completions.create(**ask, stream=True, stream_options={"include_usage": True}))
        pieces = [c.choices[0].delta.content for c in chunks if c.choices[0].delta.content]
        assert "".join(pieces) == expected and len(pieces) > len(expected.split())  # tokens, not words
        assert chunks[-1].usage.completion_tokens == plain.usage.completion_tokens
        with pytest.raises(openai.BadRequestError) as refused:
            client.chat.completions.create(**ask, logprobs=True)
        assert refused.value.body["param"] == "logprobs"
        with pytest.raises(openai.NotFoundError):
            client.chat.completions.create(**{**ask, "model": "teacher"})

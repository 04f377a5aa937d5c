"""Generated hostile input (hypothesis generates and shrinks the cases) against the spec loader, the gold
reader and the HTTP API. Each may refuse — a DistilError of one line, or a 4xx with an OpenAI-style error
body — but never fail with a traceback or a 5xx, and never accept what would give silently wrong output:
every number of an accepted spec is finite, its names print as themselves, its template holds {input},
its splits hold out a test share; an accepted gold set holds only the task's labels; a served answer is
one of the labels, for every text sent, and an empty or non-Unicode text is refused."""

from __future__ import annotations

import copy
import json
import math
import unicodedata
from typing import Any

import httpx
import pytest
import torch
import yaml
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from distil.data.sources import read_gold_inputs
from distil.errors import DataError, SpecError
from distil.spec.io import spec_from_data
from tests.conftest import EXAMPLES

TRIAGE = yaml.safe_load((EXAMPLES / "triage" / "distil.yaml").read_text())
LABELS = ["billing", "technical", "account"]
FAST = settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# any character, lone surrogates and controls included (hypothesis leaves out surrogates unless told)
any_char = st.characters(exclude_categories=())
hostile_text = st.one_of(
    st.text(any_char, max_size=12),
    st.sampled_from(["", " ", "\t\n", "\x1b[31m", "a\u202eb", "../..", "{input}", "{label}", "N/A", "\ud800 x"]),
)
SPECIAL_NUMBERS = [math.nan, math.inf, -math.inf, -1, 2**32, 2**70, 1e308, 0]
hostile_number = st.one_of(
    st.sampled_from(SPECIAL_NUMBERS),
    st.floats(allow_nan=True, allow_infinity=True),
    st.integers(min_value=-(2**80), max_value=2**80),
)
hostile_value = st.one_of(
    hostile_text,
    hostile_number,
    st.none(),
    st.booleans(),
    st.lists(hostile_text | hostile_number, max_size=3),
    st.dictionaries(st.sampled_from(["train", "validation", "test", "x"]), hostile_number, max_size=4),
)

# the fields whose hostile values once went through, and neighbours of them
NUMBER_FIELDS = [
    "data.seed",
    "data.filters.max_entropy",
    "train.seed",
    "gate.fidelity_min",
    "cost.build_cost",
    "cost.teacher_per_1m_requests",
    "router.threshold",
    "serve.deadline_s",
]
NAME_FIELDS = ["name", "task.labels.0.name", "data.slices.0.name", "cost.currency", "router.specialists.0"]
OTHER_FIELDS = [
    "task.labels.1.words",
    "task.few_shot.template",
    "task.content_free_inputs",
    "task.calibrate",
    "data.split",
    "data.split.test",
    "data.split.train",
    "router.specialists",
    "serve.queue_depth",
    "serve.max_connections",
]
edits = st.lists(
    st.one_of(
        st.tuples(st.sampled_from(NUMBER_FIELDS), hostile_number),
        st.tuples(st.sampled_from(NAME_FIELDS), hostile_text),
        st.tuples(st.sampled_from(NUMBER_FIELDS + NAME_FIELDS + OTHER_FIELDS), hostile_value),
    ),
    min_size=1,
    max_size=3,
)


def _set(data: dict, path: str, value: object) -> None:
    """Set ``path`` (dots; digits index lists) in ``data``, making the dicts on the way; a path through a value
    that is neither a dict nor a list, or that names a key of a list (an earlier edit replaced it), is left alone."""
    *parents, last = path.split(".")
    node: Any = data
    for key in [*parents, last]:
        if key is last:
            break
        if isinstance(node, list):
            if not key.isdigit() or int(key) >= len(node):
                return
            node = node[int(key)]
        elif isinstance(node, dict):
            if not isinstance(node.get(key), (dict, list)):
                node[key] = {}
            node = node[key]
        else:
            return
    if isinstance(node, list) and last.isdigit() and int(last) < len(node):
        node[int(last)] = value
    elif isinstance(node, dict):
        node[last] = value


def _floats(value: Any) -> list[float]:
    if isinstance(value, float):
        return [value]
    if isinstance(value, dict):
        return [f for v in value.values() for f in _floats(v)]
    if isinstance(value, list):
        return [f for v in value for f in _floats(v)]
    return []


def _prints_as_itself(name: str) -> bool:
    return bool(name.strip()) and all(unicodedata.category(c) not in ("Cc", "Cs", "Zl", "Zp") for c in name)


@FAST
@given(changes=edits)
@example(changes=[("data.split", []), ("data.split.test", None)])  # a name into a list an earlier edit wrote
def test_a_hostile_spec_is_refused_in_one_line_or_accepted_only_when_sound(changes):
    data = copy.deepcopy(TRIAGE)
    data.setdefault("router", {})["specialists"] = ["r1"]  # so router.specialists.0 names a run
    for path, value in changes:
        _set(data, path, value)
    try:
        spec = spec_from_data(data)
    except SpecError as exc:
        assert exc.message.strip() and "\n" not in exc.message.strip() and "Traceback" not in exc.message
        return
    # accepted: nothing in it may make the output silently wrong
    assert all(math.isfinite(f) for f in _floats(spec.model_dump())), spec.model_dump()
    names = [
        spec.name,
        spec.cost.currency,
        *(lab.name for lab in spec.task.labels),
        *(s.name for s in spec.data.slices),
    ]
    assert all(_prints_as_itself(n) for n in names), names
    assert all(w.strip() for lab in spec.task.labels for w in lab.verbalizers)
    if spec.task.few_shot is not None:
        assert spec.task.few_shot.template.count("{input}") == 1
    split = spec.data.split
    assert split.get("test", 0) > 0 and math.isclose(sum(split.values()), 1.0, abs_tol=1e-6), split
    assert not spec.task.calibrate or spec.task.content_free_inputs
    assert 0 <= spec.train.seed < 2**32 and 0 <= spec.data.seed < 2**32
    assert all(".." not in r and "/" not in r for r in spec.router.specialists)


# --- the gold reader ---------------------------------------------------------------------------------

gold_rows = st.dictionaries(
    st.sampled_from(["input", "label", "tags", "x"]),
    hostile_text | hostile_number | st.sampled_from(LABELS) | st.lists(hostile_text, max_size=2),
    max_size=4,
)
gold_lines = st.one_of(
    gold_rows.map(lambda r: json.dumps(r).encode()),  # ensure_ascii: a lone surrogate is written as an escape
    st.builds(lambda t, lab: json.dumps({"input": t, "label": lab}).encode(), hostile_text, st.sampled_from(LABELS)),
    st.binary(max_size=40),
    st.just(b""),
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(lines=st.lists(gold_lines, max_size=5), suffix=st.sampled_from([".jsonl", ".csv"]))
def test_a_hostile_gold_file_is_a_data_error_or_holds_only_the_tasks_labels(tmp_path_factory, lines, suffix):
    path = tmp_path_factory.mktemp("gold") / f"gold{suffix}"
    body = b"\n".join(lines)
    path.write_bytes(b"input,label\n" + body if suffix == ".csv" else body)
    spec = spec_from_data(copy.deepcopy(TRIAGE))
    try:
        items = read_gold_inputs(path, spec)
    except DataError as exc:
        assert exc.message.startswith(str(path)) and "\n" not in exc.message.strip()
        return
    assert items and all(item.label in LABELS for item in items)
    assert all(isinstance(item.input, str) and item.input.strip() for item in items)


# --- the HTTP API ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def served_url(tmp_path_factory, tiny_teacher_dir):
    """The tiny student with its teacher (threshold 0.5: some answers escalate), cut to its context."""
    from distil.serve.runs import load_served
    from distil.serve.server import create_app
    from distil.spec.io import load_project
    from tests.serve.conftest import make_classify_project, running_server

    torch.set_num_threads(1)
    project = load_project(make_classify_project(tmp_path_factory.mktemp("fuzz-serve"), tiny_teacher_dir))
    served = load_served(project, "r1", threshold=0.5)
    assert served.teacher is not None and served.fit is not None
    with running_server(create_app(served, max_body_bytes=64 * 1024)) as (url, _):
        with httpx.Client(base_url=url, timeout=60) as client:
            yield client


texts = st.one_of(hostile_text, st.text(max_size=40), st.just("word " * 3000))
text_inputs = st.one_of(texts, st.lists(texts, max_size=4))
classify_bodies = st.fixed_dictionaries(
    {"input": text_inputs | hostile_value},
    optional={"model": st.one_of(st.sampled_from(["r1", "distil", "gpt-4o"]), hostile_text, hostile_number)},
)
parts = st.one_of(
    st.builds(lambda t: {"type": "text", "text": t}, texts | hostile_number),
    st.dictionaries(st.sampled_from(["type", "text", "image_url"]), hostile_value, max_size=3),
)
chat_bodies = st.fixed_dictionaries(
    {
        "messages": st.lists(
            st.fixed_dictionaries(
                {
                    "role": st.sampled_from(["user", "system", "assistant"]) | hostile_text,
                    "content": texts | st.lists(parts, max_size=2) | hostile_value,
                }
            ),
            max_size=3,
        )
    },
    optional={"max_tokens": hostile_number, "stream": st.booleans() | hostile_value, "model": hostile_text},
)


WELL_NAMED = ("r1", "distil", None, "")


def _servable(text: object) -> bool:
    """A text the server must answer: a non-blank string that is valid Unicode."""
    if not isinstance(text, str) or not text.strip():
        return False
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(endpoint=st.sampled_from(["/v1/classify", "/v1/chat/completions"]), data=st.data())
def test_the_api_answers_hostile_bodies_with_a_4xx_or_a_sound_answer(served_url, endpoint, data):
    body = data.draw(classify_bodies if endpoint == "/v1/classify" else chat_bodies)
    r = served_url.post(endpoint, content=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    assert r.status_code < 500, (r.status_code, r.text[:300])
    if r.status_code >= 400:
        assert set(r.json()["error"]) == {"message", "type", "param", "code"} and r.json()["error"]["message"]
        if endpoint == "/v1/classify":  # a well-formed request of sound texts is never refused
            sent = body["input"] if isinstance(body["input"], list) else [body["input"]]
            well_formed = 1 <= len(sent) and all(_servable(t) for t in sent) and body.get("model", "r1") in WELL_NAMED
            assert not well_formed, (r.status_code, r.text[:300])
        return
    assert r.status_code == 200
    if endpoint == "/v1/classify":
        sent = [body["input"]] if isinstance(body["input"], str) else body["input"]
        assert all(_servable(t) for t in sent), "an empty or non-Unicode text was answered"
        items = r.json()["data"]
        assert len(items) == len(sent)
        for item in items:
            assert item["label"] in LABELS and item["route"] in ("student", "teacher", "student_fallback")
            assert math.isclose(sum(item["distribution"].values()), 1.0, abs_tol=1e-4)
            assert isinstance(item["truncated"], bool)
    elif body.get("stream") is True:  # server-sent events: the label in one chunk, then [DONE]
        events = [line[6:] for line in r.text.splitlines() if line.startswith("data: ")]
        assert events[-1] == "[DONE]"
        assert "".join(json.loads(e)["choices"][0]["delta"].get("content") or "" for e in events[:-1]) in LABELS
        users = [m for m in body["messages"] if m["role"] == "user"]
        assert users, "answered a chat with no user message"
    else:
        assert r.json()["choices"][0]["message"]["content"] in LABELS
        users = [m for m in body["messages"] if m["role"] == "user"]
        assert users, "answered a chat with no user message"

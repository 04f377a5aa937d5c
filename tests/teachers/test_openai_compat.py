"""The OpenAI-compatible teacher over real HTTP against servers started on 127.0.0.1."""

from __future__ import annotations

import numpy as np
import pytest

from distil.errors import TeacherError
from distil.spec.io import load_project
from distil.teachers.openai_compat import OpenAICompatTeacher, proxy_for, retry_delay
from distil.teachers.registry import build_teacher
from tests.data.helpers import make_project
from tests.teachers.openai_server import RunningServer, ServerState

TICKETS = [
    "My invoice has a wrong charge",
    "The app shows an error and then a crash",
    "I forgot my password and cannot login",
    "hello there",
]


def _project(tmp_path, base_url, model, **teacher):
    spec_path = make_project(tmp_path / "p", f"openai:{base_url}#{model}")
    import yaml

    data = yaml.safe_load(spec_path.read_text())
    data["teachers"][0].update(teacher)
    spec_path.write_text(yaml.safe_dump(data))
    return load_project(spec_path)


def test_label_distribution_from_top_logprobs(tmp_path):
    with RunningServer(ServerState()) as server:
        project = _project(tmp_path, server.base_url, "keyword", top_logprobs=5)
        teacher = build_teacher(project)
        probs = teacher.label_distribution(TICKETS)
        body = server.state.bodies[-1]
    assert body["logprobs"] is True and body["top_logprobs"] == 5 and body["max_tokens"] == 1
    assert "Ticket: I was charged twice" in body["messages"][0]["content"]  # few-shot prompt from the seeds
    assert list(probs[:3].argmax(axis=1)) == [0, 1, 2]
    assert np.allclose(probs.sum(axis=1), 1.0)
    assert 0.5 < probs[0].max() < 1.0  # soft, not one-hot
    assert teacher.logprobs_seen is True and teacher.capabilities.topk == 5
    assert teacher.fingerprint.startswith(f"api:{server.base_url}#keyword@")
    assert project.ledger.rows("teachers")[0]["fingerprint"] == teacher.fingerprint


def test_text_only_server_gives_one_hot_labels(tmp_path):
    with RunningServer(ServerState(logprobs=False)) as server:
        project = _project(tmp_path, server.base_url, "keyword")
        teacher = build_teacher(project)
        probs = teacher.label_distribution(TICKETS[:3])
    assert teacher.logprobs_seen is False
    assert (probs == np.eye(3)).all()


def test_real_tiny_model_generation_with_and_without_logprobs(tmp_path, tiny_teacher_dir):
    from distil.teachers.loading import load_causal_lm

    model, tokenizer, _ = load_causal_lm(f"hf:{tiny_teacher_dir}")
    for logprobs in (True, False):
        with RunningServer(ServerState(model=model, tokenizer=tokenizer, logprobs=logprobs)) as server:
            project = _project(tmp_path / str(logprobs), server.base_url, "tiny", top_logprobs=3)
            teacher = build_teacher(project)
            out = teacher.generate_detailed(["hello", "world"], max_new_tokens=4, topk=3)
        assert len(out) == 2 and all(isinstance(o["text"], str) for o in out)
        if logprobs:
            assert len(out[0]["topk_tokens"]) == 4 and len(out[0]["topk_tokens"][0]) == 3
            assert len(out[0]["topk_logprobs"][0]) == 3 and out[0]["topk_logprobs"][0][0] <= 0
            assert "".join(row[0] for row in out[0]["topk_tokens"]).strip() == out[0]["text"]  # written tokens first
            assert 0 < out[0]["confidence"] <= 1
        else:
            assert "topk_tokens" not in out[0]


def test_retries_429_honouring_retry_after_and_sends_the_key(tmp_path, monkeypatch):
    monkeypatch.setenv("TEST_TEACHER_KEY", "sk-secret-123")
    with RunningServer(ServerState(fail_first=3, retry_after="0.05")) as server:
        project = _project(tmp_path, server.base_url, "keyword", api_key_env="TEST_TEACHER_KEY", max_concurrency=2)
        teacher = build_teacher(project)
        probs = teacher.label_distribution(TICKETS[:2])
        assert server.state.requests >= 5  # 3 refused, then the answers (and calibration)
        assert all(h.get("authorization") == "Bearer sk-secret-123" for h in server.state.headers)
    assert probs.shape == (2, 3)
    ledger_text = project.ledger_path.read_bytes()
    assert b"sk-secret-123" not in ledger_text and "sk-secret" not in teacher.fingerprint


def test_gives_up_after_retries_with_a_clear_error(tmp_path):
    with RunningServer(ServerState(fail_first=100, fail_status=503, retry_after="0")) as server:
        project = _project(tmp_path, server.base_url, "keyword")
        teacher = OpenAICompatTeacher(project.spec.teachers[0], project.spec.task, max_retries=2)
        with pytest.raises(TeacherError, match="failed after 3 attempts.*HTTP 503"):
            teacher.generate(["hi"])
        assert server.state.requests == 3


def test_per_request_timeout_is_retried(tmp_path):
    with RunningServer(ServerState(delay_s=0.5)) as server:
        project = _project(tmp_path, server.base_url, "keyword", timeout_s=0.1)
        teacher = OpenAICompatTeacher(project.spec.teachers[0], project.spec.task, max_retries=1)
        with pytest.raises(TeacherError, match="timed out after 0.1 s"):
            teacher.generate(["hi"])
        assert server.state.requests == 2  # asked once more after the first timeout


def test_missing_api_key_env_is_named(tmp_path, monkeypatch):
    monkeypatch.delenv("NOPE_KEY", raising=False)
    project = _project(tmp_path, "http://127.0.0.1:9/v1", "keyword", api_key_env="NOPE_KEY")
    with pytest.raises(TeacherError, match="NOPE_KEY"):
        build_teacher(project)


def test_retry_delay_backs_off_with_jitter_and_honours_retry_after():
    assert retry_delay(0, "2") == 2.0
    delays = [retry_delay(a, None) for a in range(5)]
    assert all(0.5 * 2**a / 2 <= d <= 0.5 * 2**a for a, d in enumerate(delays))


def test_proxy_from_the_environment_unless_no_proxy_exempts_the_host(monkeypatch):
    for name in ("http_proxy", "https_proxy", "no_proxy", "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY"):
        monkeypatch.delenv(name, raising=False)
    assert proxy_for("https://api.example.com/v1/chat/completions") is None
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.internal:3128")
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    assert proxy_for("https://api.example.com/v1/chat/completions") == "http://proxy.internal:3128"
    assert proxy_for("http://api.example.com/v1/chat/completions") is None  # only HTTPS has one
    assert proxy_for("https://127.0.0.1:8000/v1/chat/completions") is None


def test_requests_go_through_the_proxy_the_environment_names(tmp_path, monkeypatch):
    from tests.reliability.fault_server import FaultServer

    # the fault server answers a proxied (absolute-form) request too, so it stands in for the proxy here
    with FaultServer() as proxy:
        monkeypatch.setenv("HTTP_PROXY", f"http://user:pw@127.0.0.1:{proxy.port}")
        monkeypatch.delenv("NO_PROXY", raising=False)
        monkeypatch.delenv("no_proxy", raising=False)
        project = _project(tmp_path, "http://teacher.invalid/v1", "keyword")
        teacher = OpenAICompatTeacher(project.spec.teachers[0], project.spec.task, max_retries=0)
        assert teacher.generate(["My invoice has a wrong charge"]) == ["billing"]
        assert proxy.stats.total_requests == 1

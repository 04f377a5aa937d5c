"""An API teacher with ``batch: true`` over real HTTP: the files and batches endpoints of a server started on
127.0.0.1 (tests/teachers/batch_server.py), a restart while the batch runs, failed lines, the batch price."""

from __future__ import annotations

import json

import numpy as np
import pytest
import yaml

from distil.data.generate import generate_dataset
from distil.errors import SpecError, TeacherError
from distil.spec.io import load_project
from distil.teachers.registry import build_teacher
from tests.data.helpers import SEEDS, make_project
from tests.teachers.batch_server import BatchState, RunningBatchServer
from tests.teachers.openai_server import RunningServer, ServerState

PRICE_PER_1M = 600.0  # the triage example's teacher_per_1m_requests


def batch_project(tmp_path, base_url: str, batch: bool = True, model: str = "keyword", **teacher):
    path = make_project(tmp_path, f"openai:{base_url}#{model}")
    spec = yaml.safe_load(path.read_text())
    spec["task"]["calibrate"] = False  # one call per seed: the batches below are the labelling ones
    spec["teachers"][0].update(
        {
            "batch": batch,
            "batch_discount": 0.5,
            "batch_poll_s": 0.01,
            "batch_wait_s": 5.0,
            "top_logprobs": 5,
            "api_key_env": "BATCH_KEY",
        },
        **teacher,
    )
    spec["cost"]["teacher_per_1m_requests"] = PRICE_PER_1M
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return load_project(path)


@pytest.fixture(autouse=True)
def api_key(monkeypatch):
    monkeypatch.setenv("BATCH_KEY", "sk-test")


def test_a_restarted_generate_polls_the_batch_it_submitted_instead_of_paying_again(tmp_path):
    state = BatchState(hold=True)
    with RunningBatchServer(state) as server:
        project = batch_project(tmp_path / "p", server.base_url, batch_wait_s=0.2)
        with pytest.raises(TeacherError, match=r"batch batch_\d+ is still in_progress \(0 of 12"):
            generate_dataset(project, show_progress=False)
        submitted = project.ledger.events("teacher.batch_submitted")
        assert len(submitted) == 1 and len(state.batches) == 1 and len(state.uploads) == 1
        assert submitted[0].payload["batch_id"] in state.batches and submitted[0].payload["requests"] == len(SEEDS)
        upload = state.uploads[0]
        assert upload["purpose"] == "batch" and len(upload["lines"]) == len(SEEDS)
        assert state.authorization == ["Bearer sk-test"]
        assert not (project.data_dir / "raw").exists() or not list((project.data_dir / "raw").glob("*.parquet"))

        state.hold = False  # the provider finishes while no distil process is running
        restarted = load_project(project.spec_path)
        result = generate_dataset(restarted, show_progress=False)
        assert len(state.batches) == 1 and len(state.uploads) == 1  # polled and downloaded, not sent again
        assert result.counts == {"seed": len(SEEDS)}
        assert len(restarted.ledger.events("teacher.batch_submitted")) == 1
        batch_probs = np.array([r.label_probs for r in result.records])
        assert np.allclose(batch_probs.sum(axis=1), 1.0) and (batch_probs.max(axis=1) > 0.5).any()
        assert all(r.cost == pytest.approx(PRICE_PER_1M / 1e6 * 0.5) for r in result.records)

        again = generate_dataset(load_project(project.spec_path), show_progress=False)
        assert len(state.uploads) == 1 and again.shards == result.shards  # the call cache answers now
    assert restarted.ledger.verify().ok

    with RunningServer(ServerState()) as live:  # the same requests sent one by one give the same labels
        live_project = batch_project(tmp_path / "live", live.base_url, batch=False)
        live_records = generate_dataset(live_project, show_progress=False)
    assert np.allclose([r.label_probs for r in live_records.records], batch_probs)
    assert all(r.cost == pytest.approx(PRICE_PER_1M / 1e6) for r in live_records.records)


def test_failed_lines_go_into_a_new_batch_and_the_answered_ones_are_kept(tmp_path):
    texts = [text for text, _ in SEEDS]
    state = BatchState(fail_prompts=("declined",))
    with RunningBatchServer(state) as server:
        project = batch_project(tmp_path / "p", server.base_url)
        teacher = build_teacher(project)
        with pytest.raises(TeacherError, match=r"1 of 12 requests got no answer from batch .*overloaded"):
            teacher.label_distribution(texts)
        state.fail_prompts = ()
        probs = build_teacher(load_project(project.spec_path)).label_distribution(texts)
    assert [len(u["lines"]) for u in state.uploads] == [12, 1]  # only the failed request was sent again
    assert "declined" in state.uploads[1]["lines"][0]
    assert probs.shape == (12, 3) and np.allclose(probs.sum(axis=1), 1.0)
    assert len(project.ledger.events("teacher.batch_submitted")) == 2


def test_a_batch_the_ledger_does_not_know_is_sent_again_and_a_local_teacher_cannot_batch(tmp_path, tiny_teacher_dir):
    state = BatchState()
    with RunningBatchServer(state) as server:
        first = build_teacher(batch_project(tmp_path / "a", server.base_url))
        first.label_distribution(["My invoice has a wrong charge"])
        other = build_teacher(batch_project(tmp_path / "b", server.base_url))  # another project: another ledger
        other.label_distribution(["My invoice has a wrong charge"])
    assert len(state.batches) == 2
    path = make_project(tmp_path / "local", f"hf:{tiny_teacher_dir}")
    spec = yaml.safe_load(path.read_text())
    spec["teachers"][0]["batch"] = True
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    with pytest.raises(SpecError, match="batch: true needs an openai: source"):
        load_project(path)


def test_generated_text_and_top_logprobs_come_back_from_a_batch_as_from_live_calls(tmp_path, tiny_teacher_dir):
    from distil.teachers.loading import load_causal_lm

    model, tokenizer, _ = load_causal_lm(f"hf:{tiny_teacher_dir}")
    state = BatchState(chat=ServerState(model=model, tokenizer=tokenizer))
    prompts = ["hello", "a refund for my invoice"]
    with RunningBatchServer(state) as server:
        batched = build_teacher(batch_project(tmp_path / "b", server.base_url, model="tiny", top_logprobs=3))
        out = batched.generate_detailed(prompts, max_new_tokens=4, topk=3)
    with RunningServer(ServerState(model=model, tokenizer=tokenizer)) as live:
        expected = build_teacher(batch_project(tmp_path / "l", live.base_url, False, "tiny", top_logprobs=3))
        assert out == expected.generate_detailed(prompts, max_new_tokens=4, topk=3)
    assert len(state.uploads) == 1 and len(out[0]["topk_tokens"]) == 4 and len(out[0]["topk_tokens"][0]) == 3
    body = json.loads(state.uploads[0]["lines"][0])["body"]
    assert body["max_tokens"] == 4 and body["top_logprobs"] == 3 and body["logprobs"] is True

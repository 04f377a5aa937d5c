"""`distil generate` against a teacher server that injects every kind of transient fault, and one that
fails for good: every item is labelled exactly once, nothing is duplicated or lost, the ledger agrees."""

from __future__ import annotations

from collections import Counter

import pytest

from distil.data.generate import call_cache, generate_dataset
from distil.errors import TeacherError
from distil.spec.io import load_project
from distil.teachers.registry import build_teacher
from tests.reliability.fault_server import FaultConfig, FaultServer
from tests.reliability.helpers import dataset_counts, fault_project, record_labels, run_cli, tickets

RATES = {
    "429": 0.06,
    "500": 0.05,
    "503": 0.05,
    "reset": 0.04,
    "timeout": 0.02,
    "truncated": 0.04,
    "malformed": 0.04,
    "no_logprobs": 0.05,
}


def run_faulty_generate(root, n: int = 500, rates: dict[str, float] | None = None, seed: int = 7):
    """Generate ``n`` items through a fault server; returns (project, result, server stats, fault config)."""
    config = FaultConfig(
        rates=RATES if rates is None else rates, seed=seed, max_faults_per_prompt=3, timeout_sleep_s=2.5
    )
    with FaultServer(config) as server:
        project = load_project(fault_project(root, server.source(), n, max_concurrency=32, timeout_s=1.5))
        teacher = build_teacher(project, max_retries=6, backoff_s=0.01)
        result = generate_dataset(project, teacher=teacher, show_progress=False, batch_size=100)
    return project, result, server.stats, teacher


def test_500_items_through_injected_faults_are_each_labelled_exactly_once(tmp_path):
    project, result, stats, teacher = run_faulty_generate(tmp_path / "p")
    items = tickets(500)
    # every kind of fault was really injected
    for kind in RATES:
        assert stats.faults[kind] > 0, kind
    retried = sum(1 for count in stats.requests.values() if count > 1)
    assert retried > 50
    # each item's prompt got exactly one well-formed answer, and no prompt was answered twice
    prompts = {teacher.classify_prompt(text): label for text, label in items}
    assert all(stats.answered[p] == 1 for p in prompts)
    assert all(count == 1 for count in stats.answered.values())
    # one record per item, with the label the keyword model gives, none duplicated
    labels = record_labels(project.root)
    assert len(labels) == 500
    by_input = {r.input: r.label for r in result.records}
    assert by_input == {text: label for text, label in items}
    # the ledger's dataset row reconciles with the shard and the cache
    assert dataset_counts(project.root) == [{"seed": 500}]
    assert len(call_cache(project)) == 500
    assert project.ledger.verify().ok


def test_a_rerun_after_faults_calls_the_teacher_for_nothing(tmp_path):
    config = FaultConfig(rates=RATES, seed=3)
    with FaultServer(config) as server:
        project = load_project(fault_project(tmp_path / "p", server.source(), 60, max_concurrency=32, timeout_s=0.4))
        generate_dataset(
            project, teacher=build_teacher(project, max_retries=6, backoff_s=0.01), show_progress=False, batch_size=100
        )
        first, before = record_labels(project.root), Counter(server.stats.requests)
        assert sum(server.stats.faults.values()) > 0
        generate_dataset(
            project, teacher=build_teacher(project, max_retries=6, backoff_s=0.01), show_progress=False, batch_size=100
        )
        # only the content-free calibration prompt is asked again (it is not a labelled item)
        asked_again = server.stats.requests - before
        assert all("Ticket: N/A" in prompt for prompt in asked_again), list(asked_again)[:3]
    assert record_labels(project.root) == first
    assert len(dataset_counts(project.root)) == 2  # one ledger row per generate, the same shard


def test_a_401_stops_at_once_and_keeps_finished_work(tmp_path):
    items = tickets(100)
    # the first 40 answers (two batches of 20) succeed, then the key is refused
    config = FaultConfig(permanent_status=401, permanent_after=40)
    with FaultServer(config) as server:
        project = load_project(
            fault_project(tmp_path / "p", server.source(), 100, max_concurrency=4, timeout_s=2, top_logprobs=5)
        )
        # calibration off, so the 40 answers are the items of the first two batches
        teacher = build_teacher(project, max_retries=6, backoff_s=0.01)
        teacher.task = teacher.task.model_copy(update={"calibrate": False})
        with pytest.raises(TeacherError, match="HTTP 401"):
            generate_dataset(project, teacher=teacher, show_progress=False, batch_size=20)
        # no retries of a 401, and no batch after the failing one was sent
        assert server.stats.total_requests <= 60
        assert all(count == 1 for count in server.stats.requests.values())
        assert len(call_cache(project)) == 40
        # once the key works again, only the remaining 60 items are asked for
        config.permanent_status = None
        generate_dataset(project, teacher=teacher, show_progress=False, batch_size=20)
    prompts = [teacher.classify_prompt(text) for text, _ in items]
    assert all(server.stats.answered[p] == 1 for p in prompts[:40])
    assert all(server.stats.answered[p] >= 1 for p in prompts)
    # at most the other requests in flight when the 401 came (max_concurrency - 1) may reach the server
    # after the key works again, answered to a client that had already gone: those are asked once more
    assert 100 <= sum(server.stats.answered[p] for p in prompts) <= 100 + 3
    assert len(record_labels(project.root)) == 100


def test_unknown_model_is_a_one_line_cli_error_and_writes_no_shard(tmp_path):
    with FaultServer(FaultConfig()) as server:
        spec = fault_project(tmp_path / "p", server.source("no-such-model"), 30, timeout_s=2)
        done = run_cli("generate", "--spec", str(spec), timeout=120)
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    error_lines = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(error_lines) == 1 and "HTTP 404" in error_lines[0] and "does not exist" in error_lines[0]
    assert not list((tmp_path / "p" / ".distil" / "data").rglob("*.parquet"))


def test_generate_keeps_the_api_teachers_concurrency_in_flight(tmp_path):
    """The default batch of 16 does not cap an API teacher that may keep 40 requests in flight."""
    with FaultServer(FaultConfig(delay_s=0.2)) as server:
        project = load_project(fault_project(tmp_path / "p", server.source(), 80, max_concurrency=40))
        generate_dataset(project, teacher=build_teacher(project), show_progress=False)
        assert 16 < server.stats.max_in_flight <= 40
    assert len(record_labels(project.root)) == 80

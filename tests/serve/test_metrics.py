"""`/metrics` through prometheus_client: each server's own registry, read back with the library's own parser."""

from __future__ import annotations

import pytest
from prometheus_client.parser import text_string_to_metric_families

from distil.serve.metrics import LATENCY_BUCKETS_S, ServerMetrics


def _samples(metrics: ServerMetrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(metrics.render())
        for s in family.samples
    }


def test_counts_latency_routes_and_gauges_read_back_by_the_prometheus_parser():
    metrics = ServerMetrics("r1", student_per_1m=40.0, teacher_per_1m=600.0, threshold=0.7)
    before = _samples(metrics)
    assert before[("distil_routed_total", (("route", "student"),))] == 0  # both routes shown from the start
    assert before[("distil_routed_total", (("route", "teacher"),))] == 0
    for seconds in (0.002, 0.03, 0.03):
        metrics.observe_request("/v1/classify", 200, seconds)
    metrics.observe_request("/v1/classify", 400, 0.0005)
    metrics.observe_routes(["student", "teacher", "student", "student"], 0.25)
    metrics.in_flight = 2
    got = _samples(metrics)
    classify = (("endpoint", "/v1/classify"),)
    assert got[("distil_requests_total", (("endpoint", "/v1/classify"), ("status", "200")))] == 3
    assert got[("distil_requests_total", (("endpoint", "/v1/classify"), ("status", "400")))] == 1
    assert got[("distil_request_latency_seconds_count", classify)] == 4
    assert got[("distil_request_latency_seconds_sum", classify)] == pytest.approx(0.0625)
    buckets = {le: got[("distil_request_latency_seconds_bucket", (("endpoint", "/v1/classify"), ("le", le)))]
               for le in ("0.001", "0.0025", "0.025", "0.05", "+Inf")}  # fmt: skip
    assert buckets == {"0.001": 1, "0.0025": 2, "0.025": 2, "0.05": 4, "+Inf": 4}
    assert len([k for k in got if k[0] == "distil_request_latency_seconds_bucket"]) == len(LATENCY_BUCKETS_S) + 1
    assert got[("distil_routed_total", (("route", "student"),))] == 3
    assert got[("distil_escalations_total", ())] == 1
    assert got[("distil_router_seconds_total", ())] == pytest.approx(0.25)
    assert got[("distil_escalated_share", ())] == pytest.approx(0.25)
    assert got[("distil_blended_cost_per_1m_requests", ())] == pytest.approx(40 + 0.25 * 600)
    assert got[("distil_requests_in_flight", ())] == 2
    assert got[("distil_router_threshold", (("model", "r1"),))] == 0.7


def test_two_servers_in_one_process_keep_their_own_counts():
    first, second = ServerMetrics("a"), ServerMetrics("b")
    first.observe_request("/healthz", 200, 0.001)
    assert _samples(first)[("distil_requests_total", (("endpoint", "/healthz"), ("status", "200")))] == 1
    assert not any(name == "distil_requests_total" for name, _ in _samples(second))
    assert ("distil_router_threshold", (("model", "b"),)) not in _samples(second)  # generate task: no threshold

"""Server counters and the Prometheus text exposition format (version 0.0.4), written by hand.

Kept dependency-free: a counter per (endpoint, status), one latency histogram per endpoint, routed
answers per route, and the router's own time, all behind one lock.
"""

from __future__ import annotations

import threading
from collections import defaultdict

LATENCY_BUCKETS_S = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


def _labels(**pairs: str) -> str:
    body = ",".join(f'{k}="{_escape(v)}"' for k, v in pairs.items())
    return "{" + body + "}" if body else ""


def _escape(value: str) -> str:
    return str(value).replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


class ServerMetrics:
    """What `/metrics` shows. ``student_per_1m``/``teacher_per_1m`` price the blended cost gauge."""

    def __init__(
        self, model: str, student_per_1m: float = 0.0, teacher_per_1m: float = 0.0, threshold: float | None = None
    ):
        self.model = model
        self.student_per_1m = student_per_1m
        self.teacher_per_1m = teacher_per_1m
        self.threshold = threshold
        self._lock = threading.Lock()
        self.requests: dict[tuple[str, int], int] = defaultdict(int)
        self.bucket_counts: dict[str, list[int]] = defaultdict(lambda: [0] * len(LATENCY_BUCKETS_S))
        self.latency_sum: dict[str, float] = defaultdict(float)
        self.latency_count: dict[str, int] = defaultdict(int)
        self.routed: dict[str, int] = defaultdict(int)
        self.router_seconds = 0.0
        self.in_flight = 0

    def observe_request(self, endpoint: str, status: int, seconds: float) -> None:
        with self._lock:
            self.requests[(endpoint, status)] += 1
            counts = self.bucket_counts[endpoint]
            for i, edge in enumerate(LATENCY_BUCKETS_S):
                if seconds <= edge:
                    counts[i] += 1
            self.latency_sum[endpoint] += seconds
            self.latency_count[endpoint] += 1

    def observe_routes(self, routes: list[str], router_seconds: float) -> None:
        with self._lock:
            for route in routes:
                self.routed[route] += 1
            self.router_seconds += router_seconds

    @property
    def escalated_share(self) -> float:
        total = sum(self.routed.values())
        return self.routed.get("teacher", 0) / total if total else 0.0

    @property
    def blended_cost_per_1m(self) -> float:
        return self.student_per_1m + self.escalated_share * self.teacher_per_1m

    def render(self) -> str:
        """The Prometheus text format."""
        with self._lock:
            lines = [
                "# HELP distil_requests_total HTTP requests served, by endpoint and status code.",
                "# TYPE distil_requests_total counter",
            ]
            for (endpoint, status), n in sorted(self.requests.items()):
                lines.append(f"distil_requests_total{_labels(endpoint=endpoint, status=str(status))} {n}")
            lines += [
                "# HELP distil_request_latency_seconds Time from request received to response sent.",
                "# TYPE distil_request_latency_seconds histogram",
            ]
            for endpoint in sorted(self.bucket_counts):
                for edge, n in zip(LATENCY_BUCKETS_S, self.bucket_counts[endpoint], strict=True):
                    lines.append(
                        f"distil_request_latency_seconds_bucket{_labels(endpoint=endpoint, le=repr(edge))} {n}"
                    )
                count = self.latency_count[endpoint]
                lines.append(f"distil_request_latency_seconds_bucket{_labels(endpoint=endpoint, le='+Inf')} {count}")
                lines.append(
                    f"distil_request_latency_seconds_sum{_labels(endpoint=endpoint)} {self.latency_sum[endpoint]!r}"
                )
                lines.append(f"distil_request_latency_seconds_count{_labels(endpoint=endpoint)} {count}")
            lines += [
                "# HELP distil_routed_total Answers given, by the model that gave them (student or teacher).",
                "# TYPE distil_routed_total counter",
            ]
            for route in ("student", "teacher"):
                lines.append(f"distil_routed_total{_labels(route=route)} {self.routed.get(route, 0)}")
            total = sum(self.routed.values())
            share = self.routed.get("teacher", 0) / total if total else 0.0
            blended = self.student_per_1m + share * self.teacher_per_1m
            lines += [
                "# HELP distil_escalations_total Inputs the router sent to the teacher.",
                "# TYPE distil_escalations_total counter",
                f"distil_escalations_total {self.routed.get('teacher', 0)}",
                "# HELP distil_escalated_share Share of inputs answered by the teacher since start.",
                "# TYPE distil_escalated_share gauge",
                f"distil_escalated_share {share!r}",
                "# HELP distil_blended_cost_per_1m_requests Student cost plus the escalated share of the teacher's, "
                "per 1M requests.",
                "# TYPE distil_blended_cost_per_1m_requests gauge",
                f"distil_blended_cost_per_1m_requests {blended!r}",
                "# HELP distil_router_seconds_total Time spent deciding routes (excluding model calls).",
                "# TYPE distil_router_seconds_total counter",
                f"distil_router_seconds_total {self.router_seconds!r}",
                "# HELP distil_requests_in_flight Requests being processed now.",
                "# TYPE distil_requests_in_flight gauge",
                f"distil_requests_in_flight {self.in_flight}",
            ]
            if self.threshold is not None:
                lines += [
                    "# HELP distil_router_threshold Student confidence at or above which the student answers.",
                    "# TYPE distil_router_threshold gauge",
                    f"distil_router_threshold{_labels(model=self.model)} {self.threshold!r}",
                ]
        return "\n".join(lines) + "\n"

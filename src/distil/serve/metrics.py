"""What `/metrics` shows, through ``prometheus_client``: requests per (endpoint, status), a latency histogram per
endpoint, answers per route, the router's own time, requests in flight, and the escalated share and blended cost.

Each app has its own ``CollectorRegistry`` (not the library's global one), so several apps in one process, and
the tests, never share or clash on a metric.
"""

from __future__ import annotations

import threading
from collections import defaultdict

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

LATENCY_BUCKETS_S = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
ROUTES = ("student", "teacher")


class ServerMetrics:
    """The server's metrics in a registry of their own. ``student_per_1m``/``teacher_per_1m`` price the blended cost
    gauge; ``in_flight`` is a plain attribute the request guard moves, read when `/metrics` is scraped."""

    def __init__(
        self, model: str, student_per_1m: float = 0.0, teacher_per_1m: float = 0.0, threshold: float | None = None
    ):
        self.model = model
        self.student_per_1m = student_per_1m
        self.teacher_per_1m = teacher_per_1m
        self.threshold = threshold
        self.in_flight = 0
        self._lock = threading.Lock()  # the routed counts behind the share and cost gauges move together
        self._routed: dict[str, int] = defaultdict(int)
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "distil_requests",
            "HTTP requests served, by endpoint and status code.",
            ["endpoint", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "distil_request_latency_seconds",
            "Time from request received to response sent.",
            ["endpoint"],
            buckets=LATENCY_BUCKETS_S,
            registry=self.registry,
        )
        self.routed = Counter(
            "distil_routed",
            "Answers given, by the model that gave them (student or teacher).",
            ["route"],
            registry=self.registry,
        )
        for route in ROUTES:
            self.routed.labels(route=route)  # both routes are shown from the start, at zero
        self.escalations = Counter(
            "distil_escalations", "Inputs the router sent to the teacher.", registry=self.registry
        )
        self.router_seconds = Counter(
            "distil_router_seconds", "Time spent deciding routes (excluding model calls).", registry=self.registry
        )
        Gauge(
            "distil_escalated_share", "Share of inputs answered by the teacher since start.", registry=self.registry
        ).set_function(lambda: self.escalated_share)
        Gauge(
            "distil_blended_cost_per_1m_requests",
            "Student cost plus the escalated share of the teacher's, per 1M requests.",
            registry=self.registry,
        ).set_function(lambda: self.blended_cost_per_1m)
        Gauge("distil_requests_in_flight", "Requests being processed now.", registry=self.registry).set_function(
            lambda: self.in_flight
        )
        if threshold is not None:
            Gauge(
                "distil_router_threshold",
                "Student confidence at or above which the student answers.",
                ["model"],
                registry=self.registry,
            ).labels(model=model).set(threshold)

    def observe_request(self, endpoint: str, status: int, seconds: float) -> None:
        self.requests.labels(endpoint=endpoint, status=str(status)).inc()
        self.latency.labels(endpoint=endpoint).observe(seconds)

    def observe_routes(self, routes: list[str], router_seconds: float) -> None:
        with self._lock:
            for route in routes:
                self._routed[route] += 1
                self.routed.labels(route=route).inc()
                if route == "teacher":
                    self.escalations.inc()
        self.router_seconds.inc(router_seconds)

    @property
    def escalated_share(self) -> float:
        with self._lock:
            total = sum(self._routed.values())
            return self._routed.get("teacher", 0) / total if total else 0.0

    @property
    def blended_cost_per_1m(self) -> float:
        return self.student_per_1m + self.escalated_share * self.teacher_per_1m

    def render(self) -> str:
        """The Prometheus text exposition format (0.0.4) of this server's registry."""
        return generate_latest(self.registry).decode("utf-8")

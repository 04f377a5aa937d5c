"""The stack's own `/metrics`, per specialist: requests, escalations to the generalist, answers per route and a
latency histogram, with a ``specialist`` label. The whole server's request counts, latencies and requests in flight
are :class:`distil.serve.metrics.ServerMetrics`'s, rendered beside these; the names here do not clash with its."""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from distil.serve.metrics import LATENCY_BUCKETS_S

ROUTES = ("student", "teacher", "student_fallback")


class SpecialistMetrics:
    """Counters and a histogram per specialist in a registry of their own (every specialist shown from the start,
    at zero)."""

    def __init__(self, thresholds: dict[str, float]):
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "distil_specialist_requests",
            "Requests forwarded to a specialist, by what picked it: model, task or router.",
            ["specialist", "routed_by"],
            registry=self.registry,
        )
        self.answers = Counter(
            "distil_specialist_answers",
            "Answers given for a specialist, by who gave them: student (the specialist), teacher (the generalist), "
            "student_fallback (the generalist was busy, slow or failing).",
            ["specialist", "route"],
            registry=self.registry,
        )
        self.escalations = Counter(
            "distil_specialist_escalations",
            "Inputs a specialist was unsure of and sent to the generalist.",
            ["specialist"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "distil_specialist_latency_seconds",
            "Time from the specialist being asked to its answer (routing excluded).",
            ["specialist"],
            buckets=LATENCY_BUCKETS_S,
            registry=self.registry,
        )
        threshold = Gauge(
            "distil_specialist_threshold",
            "Confidence at or above which the specialist answers, else the generalist does.",
            ["specialist"],
            registry=self.registry,
        )
        for name, value in thresholds.items():
            threshold.labels(specialist=name).set(value)
            self.escalations.labels(specialist=name)
            self.latency.labels(specialist=name)
            for route in ROUTES:
                self.answers.labels(specialist=name, route=route)

    def observe(
        self, specialist: str, routed_by: str, routes: Iterable[str], seconds: float, escalated: bool = True
    ) -> None:
        """One request forwarded to ``specialist`` (picked by ``routed_by``), answered along ``routes``;
        ``escalated`` False: the client asked the generalist itself, so its answers are no escalations."""
        self.requests.labels(specialist=specialist, routed_by=routed_by).inc()
        self.latency.labels(specialist=specialist).observe(seconds)
        for route in routes:
            self.answers.labels(specialist=specialist, route=route).inc()
            if escalated and route != "student":  # a fallback was escalated too; the generalist could not take it
                self.escalations.labels(specialist=specialist).inc()

    def render(self) -> str:
        return generate_latest(self.registry).decode("utf-8")

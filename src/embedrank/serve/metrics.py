"""Prometheus metrics of one server (its own registry, so tests can run several in a process)."""

from __future__ import annotations

__all__ = ["Metrics"]

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
_COUNT_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 4096, 16384, 65536)


class Metrics:
    """Queue depth, batch sizes (requests, items, tokens), per-stage latencies, requests and
    rejections, exposed in Prometheus' text format."""

    def __init__(self) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self.registry = CollectorRegistry()
        r = self.registry
        self.queue_depth = Gauge("embedrank_queue_depth", "Jobs waiting for a model worker", ["model"], registry=r)
        self.batch_requests = Histogram("embedrank_batch_requests", "Requests merged into one model call",
                                        ["model"], buckets=_COUNT_BUCKETS, registry=r)
        self.batch_items = Histogram("embedrank_batch_items", "Texts (or pairs) in one model call", ["model"],
                                     buckets=_COUNT_BUCKETS, registry=r)
        self.batch_tokens = Histogram("embedrank_batch_tokens", "Estimated tokens in one model call", ["model"],
                                      buckets=_COUNT_BUCKETS, registry=r)
        self.stage_seconds = Histogram("embedrank_stage_seconds", "Seconds per stage: queue wait, inference",
                                       ["model", "stage"], buckets=_LATENCY_BUCKETS, registry=r)
        self.request_seconds = Histogram("embedrank_request_seconds", "Seconds per request, by endpoint",
                                         ["endpoint"], buckets=_LATENCY_BUCKETS, registry=r)
        self.requests = Counter("embedrank_requests", "Requests answered, by endpoint and status",
                                ["endpoint", "status"], registry=r)
        self.rejections = Counter("embedrank_rejected_requests", "Requests refused, by reason", ["reason"],
                                  registry=r)

    def observer(self, model: str):
        """The callback a Batcher reports each model call to."""

        def observe(n_jobs: int, n_items: int, tokens: int, seconds: float, queue_wait: float) -> None:
            self.batch_requests.labels(model).observe(n_jobs)
            self.batch_items.labels(model).observe(n_items)
            self.batch_tokens.labels(model).observe(tokens)
            self.stage_seconds.labels(model, "inference").observe(seconds)
            self.stage_seconds.labels(model, "queue").observe(queue_wait)

        return observe

    def watch_queues(self, batchers) -> None:
        for batcher in batchers:
            self.queue_depth.labels(batcher.name).set_function(lambda b=batcher: b.depth)

    def request(self, endpoint: str, status: int, seconds: float) -> None:
        self.requests.labels(endpoint, str(status)).inc()
        self.request_seconds.labels(endpoint).observe(seconds)

    def rejected(self, reason: str) -> None:
        self.rejections.labels(reason).inc()

    def exposition(self) -> tuple[bytes, str]:
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        return generate_latest(self.registry), CONTENT_TYPE_LATEST

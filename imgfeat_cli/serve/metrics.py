"""Prometheus metrics: requests, latency, batch sizes, queue depth, index sizes.

With several workers each process writes its own samples into a shared folder (prometheus_client's
multiprocess mode, switched on by the starting process before the workers start), and
``/metrics`` of any worker reports the sum over all of them.
"""
from __future__ import annotations

import os
from typing import Optional, Tuple

from prometheus_client import (CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram,
                               generate_latest)

#: prometheus_client's own switch for multiprocess mode (set by serve.server for its workers).
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"

LATENCY_BUCKETS = (0.005, 0.01, 0.02, 0.035, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)


class Metrics:
    """The server's instruments, in a registry of their own."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.multiprocess = bool(os.environ.get(MULTIPROC_ENV))
        reg = None if self.multiprocess else self.registry
        self.requests = Counter("imgfeat_requests_total", "HTTP requests answered", ["route", "status"],
                                registry=reg)
        self.latency = Histogram("imgfeat_request_seconds", "time to answer a request", ["route"],
                                 buckets=LATENCY_BUCKETS, registry=reg)
        self.batch = Histogram("imgfeat_batch_size", "images per forward pass", buckets=BATCH_BUCKETS, registry=reg)
        self.queue = Gauge("imgfeat_queue_images", "images admitted and not answered yet", registry=reg,
                           multiprocess_mode="livesum")
        self.index_items = Gauge("imgfeat_index_items", "vectors in each index", ["index"], registry=reg,
                                 multiprocess_mode="max")
        self.index_generation = Gauge("imgfeat_index_generation", "changes made to each index through the server",
                                      ["index"], registry=reg, multiprocess_mode="max")

    def observe(self, route: str, status: int, seconds: float) -> None:
        self.requests.labels(route, str(status)).inc()
        self.latency.labels(route).observe(seconds)

    def render(self) -> Tuple[bytes, str]:
        """The text exposition (over every worker in multiprocess mode) and its content type."""
        registry: Optional[CollectorRegistry] = self.registry
        if self.multiprocess:
            from prometheus_client import multiprocess

            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry)
        return generate_latest(registry), CONTENT_TYPE_LATEST

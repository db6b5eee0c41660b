"""Prometheus metrics of the API: requests, latency, rows scored, errors, the served version.

Each app has its own registry (tests build many apps in one process). With several uvicorn
workers, `keel api` sets `PROMETHEUS_MULTIPROC_DIR` and `/metrics` adds up every worker's
values from there, so a scrape reports the whole server whichever worker answers it.
"""

from __future__ import annotations

import os
from pathlib import Path

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client import multiprocess as prometheus_multiprocess

__all__ = ["CONTENT_TYPE_LATEST", "ApiMetrics"]

_LATENCY_BUCKETS = (
    0.0005,
    0.001,
    0.002,
    0.003,
    0.005,
    0.0075,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    10.0,
)


def _multiprocess_dir() -> str | None:
    path = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    return path if path and Path(path).is_dir() else None


class ApiMetrics:
    """The API's metrics, registered in a registry of their own."""

    def __init__(self) -> None:
        """Create and register every metric."""
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter(
            "keel_api_requests",
            "HTTP requests by route, method and status code.",
            ["route", "method", "status"],
            registry=r,
        )
        self.latency = Histogram(
            "keel_api_request_duration_seconds",
            "Time from request to response, by route.",
            ["route"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.rows_scored = Counter(
            "keel_api_rows_scored", "Records scored, by model version.", ["version"], registry=r
        )
        self.errors = Counter(
            "keel_api_errors",
            "Refused or failed requests and background failures, by kind.",
            ["kind"],
            registry=r,
        )
        self.model_version = Gauge(
            "keel_api_model_version",
            "The champion version this process serves (0: none loaded).",
            ["model"],
            registry=r,
            multiprocess_mode="liveall",
        )
        self.swaps = Counter(
            "keel_api_model_swaps",
            "Times a new champion was loaded and put in service.",
            registry=r,
        )
        self.logged = Counter(
            "keel_api_predictions_logged",
            "Served predictions written to the prediction store.",
            registry=r,
        )
        self.dropped = Counter(
            "keel_api_predictions_dropped",
            "Served predictions not written to the prediction store (queue full or write failed).",
            registry=r,
        )

    def render(self) -> bytes:
        """The Prometheus text exposition of every metric (all workers when multiprocess)."""
        path = _multiprocess_dir()
        if path is None:
            return generate_latest(self.registry)
        merged = CollectorRegistry()
        prometheus_multiprocess.MultiProcessCollector(merged, path=path)  # type: ignore[no-untyped-call]
        return generate_latest(merged)

    @staticmethod
    def process_exited(pid: int) -> None:
        """Forget a finished worker's live gauges (multiprocess mode only)."""
        if _multiprocess_dir() is not None:
            prometheus_multiprocess.mark_process_dead(pid)  # type: ignore[no-untyped-call]

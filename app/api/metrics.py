"""GET /metrics via prometheus-flask-exporter, with our own metrics only (no defaults).

A scrape returns the per-process HTTP metrics (multiprocess mode under gunicorn), the
shared domain metrics recorded in Redis (`app.metrics.SharedCollector`) and the live
gauges (`app.metrics.LiveCollector`), fed here from the process's queue and the ledger.
"""

from __future__ import annotations

import time
from collections.abc import Iterable

from flask import Flask
from prometheus_client import REGISTRY, CollectorRegistry, multiprocess
from prometheus_client.core import Metric
from prometheus_flask_exporter import PrometheusMetrics, choose_encoder

from app import migrator
from app.jobs import ledger
from app.metrics import LiveCollector, SharedCollector
from app.resources import Resources


class _Delegate:
    """Expose another registry's samples inside a fresh one (single-process mode)."""

    def __init__(self, registry: CollectorRegistry):
        self.registry = registry

    def collect(self) -> Iterable[Metric]:
        return self.registry.collect()


def _live(resources: Resources) -> LiveCollector:
    def from_database() -> tuple[list[tuple[str, str, int]], float, int]:
        with resources.pool.connection(timeout=resources.settings.health_timeout) as conn:
            active, oldest = ledger.active_counts(conn)
            return active, oldest, migrator.applied_count(conn)

    return LiveCollector(
        queue_depth=resources.queue.depth,
        workers=lambda: resources.queue.live_workers(time.time()),
        from_database=from_database,
    )


def install(app: Flask, resources: Resources) -> None:
    """Serve GET /metrics for `app`."""
    shared, live = SharedCollector(), _live(resources)
    multiproc_dir = resources.settings.prometheus_multiproc_dir

    class Exporter(PrometheusMetrics):
        def generate_metrics(self, accept_header: str | None = None, names: object = None) -> tuple[str, str]:
            registry = CollectorRegistry()
            if multiproc_dir:
                multiprocess.MultiProcessCollector(registry, path=multiproc_dir)
            else:
                registry.register(_Delegate(REGISTRY))
            registry.register(shared)
            registry.register(live)
            encode, content_type = choose_encoder(accept_header)
            return encode(registry).decode("utf-8"), content_type

    app.extensions["prometheus"] = Exporter(app, export_defaults=False, registry=CollectorRegistry())

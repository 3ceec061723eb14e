"""Every Prometheus metric the store exposes, by the names the platform uses (docs/contracts.md, "Metrics Prometheus scrapes").

Two kinds:

- HTTP metrics of the API processes (`http_requests_total`, `http_request_duration_seconds`)
  are ordinary prometheus_client metrics, in multiprocess mode under gunicorn.
- Domain metrics (jobs, drift, sinks, pulse) are recorded by whichever process
  does the work, usually the worker in another container. They are kept in Redis hashes
  (`Shared*` below) and turned into samples by `SharedCollector` when Prometheus scrapes
  the API's `/metrics` (`app/api/metrics.py` adds the live queue and ledger gauges).
  Recording is fail-open: a Redis hiccup never fails a job.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterator
from typing import Any

import redis
from prometheus_client import Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric

from app import logs

PREFIX = "store:metrics:"

# -- per-process HTTP metrics -----------------------------------------------------------
HTTP_REQUESTS = Counter("http_requests_total", "HTTP requests served", ["method", "endpoint"])
HTTP_DURATION = Histogram(
    "http_request_duration_seconds",
    "HTTP request latency",
    ["method", "endpoint"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)

# -- shared (Redis-backed) domain metrics -------------------------------------------------
_redis: redis.Redis | None = None
_shared: list[_Shared] = []


def bind(client: redis.Redis | None) -> None:
    """Record shared metrics through this Redis client (the process's, see app/resources.py)."""
    global _redis
    _redis = client


class _Shared:
    kind = ""

    def __init__(self, name: str, doc: str, labels: tuple[str, ...] = ()):
        self.name, self.doc, self.labels = name, doc, labels
        self.key = PREFIX + name
        _shared.append(self)

    def _field(self, labels: dict[str, object]) -> str:
        if set(labels) != set(self.labels):
            raise ValueError(f"{self.name} takes labels {self.labels}, got {sorted(labels)}")
        return json.dumps([str(labels[name]) for name in self.labels])

    def _write(self, fn: Callable[[Any], object]) -> None:
        if _redis is None:
            return
        try:
            pipe = _redis.pipeline(transaction=False)
            fn(pipe)
            pipe.execute()
        except redis.exceptions.RedisError as exc:
            logs.get("metrics").debug("metric not recorded", metric=self.name, error=str(exc))


class SharedCounter(_Shared):
    kind = "counter"

    def inc(self, amount: float = 1.0, **labels: object) -> None:
        field = self._field(labels)
        self._write(lambda p: p.hincrbyfloat(self.key, field, amount))


class SharedGauge(_Shared):
    kind = "gauge"

    def set(self, value: float, **labels: object) -> None:
        field = self._field(labels)
        self._write(lambda p: p.hset(self.key, field, value))


class SharedHistogram(_Shared):
    kind = "histogram"

    def __init__(self, name: str, doc: str, labels: tuple[str, ...], buckets: tuple[float, ...]):
        super().__init__(name, doc, labels)
        self.buckets = tuple(sorted(buckets)) + (math.inf,)

    def observe(self, value: float, **labels: object) -> None:
        field = self._field(labels)

        def write(p: Any) -> None:
            for bound in self.buckets:
                if value <= bound:
                    p.hincrby(self.key, f"{field}|{bound}", 1)
            p.hincrbyfloat(self.key, f"{field}|sum", value)

        self._write(write)


JOBS_FINISHED = SharedCounter("store_jobs_total", "Jobs finished, by kind and final status", ("kind", "status"))
JOB_DURATION = SharedHistogram(
    "store_job_duration_seconds",
    "Wall time of finished jobs",
    ("kind",),
    (0.1, 0.5, 1, 5, 15, 60, 300, 900, 3600),
)
SCHEMA_DRIFT = SharedCounter("schema_drift_total", "Drift detections", ("repo", "track", "schema"))
SCHEMA_DRIFT_LAST = SharedGauge(
    "schema_drift_last_detected_timestamp", "Unix time of the last drift detected", ("repo", "track", "schema")
)
REGISTRY_UP = SharedGauge("store_registry_up", "1 if the registry answered the last drift check", ("track",))
DRIFT_LAST_CHECK = SharedGauge("store_drift_last_check_timestamp", "Unix time of the last drift check", ("track",))
SINK_WRITES = SharedCounter(
    "sink_writes_total",
    "Rows handled by sinks: success, unchanged, rejected (bad rows), error (refused by the database), "
    "cancelled (a batch stopped by a cancel, timeout or shutdown)",
    ("sink", "outcome"),
)
SINK_LATENCY = SharedHistogram(
    "sink_write_latency",
    "Seconds per sink write batch",
    ("sink",),
    (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
BACKFILL_RETRIES = SharedCounter(
    "store_backfill_batch_retries_total",
    "Backfill batches written again after losing a deadlock or serialization conflict",
    ("reason",),
)
ROLLUP_BUCKET_FAILURES = SharedCounter(
    "store_rollup_bucket_failures_total",
    "Rollup buckets a refresh could not compute (skipped and reported; the rest refreshed)",
    ("aggregate",),
)
PULSE_PUBLISH = SharedCounter("pulse_publish_total", "Pulse events published", ("stream", "track", "outcome"))
PULSE_LATENCY = SharedHistogram(
    "pulse_publish_latency_ms",
    "Pulse publish latency in milliseconds",
    ("stream", "track"),
    (0.5, 1, 2.5, 5, 10, 25, 50, 100, 250, 1000),
)


class SharedCollector:
    """The shared metrics as samples at scrape time (a few Redis reads), plus `store_up`."""

    def collect(self) -> Iterator[Metric]:
        yield GaugeMetricFamily("store_up", "1 while the store's API answers", value=1)
        if _redis is None:
            return
        try:
            pipe = _redis.pipeline(transaction=False)
            for metric in _shared:
                pipe.hgetall(metric.key)
            raw = pipe.execute()
        except redis.exceptions.RedisError:
            return
        for metric, values in zip(_shared, raw, strict=True):
            yield _family(metric, {k.decode(): v.decode() for k, v in values.items()})


class LiveCollector:
    """Samples read when Prometheus scrapes, from the callables the API passes in (see
    app/api/metrics.py): the RQ queue's depth and workers; from the database, the ledger's
    active jobs ([(kind, status, count)]), the seconds the oldest queued job has waited and
    the migrations applied (yoyo's log: by any path, surviving restarts). A dependency
    that does not answer leaves its samples out of the scrape."""

    def __init__(
        self,
        queue_depth: Callable[[], int],
        workers: Callable[[], int],
        from_database: Callable[[], tuple[list[tuple[str, str, int]], float, int]],
    ):
        self.queue_depth, self.workers, self.from_database = queue_depth, workers, from_database

    def collect(self) -> Iterator[Metric]:
        depth = GaugeMetricFamily("store_queue_depth", "Jobs waiting in the RQ queue")
        workers = GaugeMetricFamily("store_workers", "Job workers alive (heard from within 20 s)")
        try:
            depth.add_metric([], self.queue_depth())
            workers.add_metric([], self.workers())
            yield depth
            yield workers
        except redis.exceptions.RedisError:
            pass
        active = GaugeMetricFamily("store_jobs_active", "Jobs queued or running, by kind", labels=("kind", "status"))
        applied = CounterMetricFamily(
            "migrations_applied", "Migrations applied to this database by any path (yoyo's apply log)"
        )
        oldest = GaugeMetricFamily("store_oldest_queued_job_age_seconds", "Age of the oldest queued job")
        try:
            rows, age, migrations = self.from_database()
            applied.add_metric([], migrations)
        except Exception:  # noqa: BLE001 - a scrape must not fail because the database is down
            return
        for job, status, count in rows:
            active.add_metric([job, status], count)
        oldest.add_metric([], age)
        yield active
        yield oldest
        yield applied


def _family(metric: _Shared, values: dict[str, str]) -> Metric:
    if isinstance(metric, SharedHistogram):
        histogram = HistogramMetricFamily(metric.name, metric.doc, labels=metric.labels)
        series: dict[str, dict] = {}
        for field, value in values.items():
            labels, _, part = field.rpartition("|")
            series.setdefault(labels, {})[part] = float(value)
        for labels, parts in series.items():
            buckets = [(_le(b), parts.get(str(b), 0.0)) for b in metric.buckets]
            histogram.add_metric(json.loads(labels), buckets, parts.get("sum", 0.0))
        return histogram
    if isinstance(metric, SharedGauge):
        gauge = GaugeMetricFamily(metric.name, metric.doc, labels=metric.labels)
        for field, value in values.items():
            gauge.add_metric(json.loads(field), float(value))
        return gauge
    counter = CounterMetricFamily(metric.name.removesuffix("_total"), metric.doc, labels=metric.labels)
    if not metric.labels:
        counter.add_metric([], float(values.get("[]", 0)))
    for field, value in values.items():
        if metric.labels:
            counter.add_metric(json.loads(field), float(value))
    return counter


def _le(bound: float) -> str:
    return "+Inf" if bound == math.inf else str(bound)


STANDARD_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "CONNECT", "TRACE"})
UNMATCHED = "unmatched"


def observe_request(method: str, endpoint: str, seconds: float) -> None:
    """Count a request. Labels stay bounded whatever clients send: `method` is a standard
    method or `other`, `endpoint` a route template or `unmatched`."""
    method = method if method in STANDARD_METHODS else "other"
    HTTP_REQUESTS.labels(method=method, endpoint=endpoint).inc()
    HTTP_DURATION.labels(method=method, endpoint=endpoint).observe(seconds)

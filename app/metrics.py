"""Every Prometheus metric the store exposes, by the names the platform uses (docs/contracts.md, "Metrics Prometheus scrapes").

Two kinds:

- HTTP metrics of the API processes (`http_requests_total`, `http_request_duration_seconds`)
  are ordinary prometheus_client metrics, in multiprocess mode under gunicorn.
- Domain metrics (jobs, drift, sinks, pulse) are recorded by whichever process
  does the work, usually the worker in another container. They are kept in Redis hashes
  (`Shared*` below) and turned into samples by `StoreCollector` when Prometheus scrapes
  the API's `/metrics`. Recording is fail-open: a Redis hiccup never fails a job.
"""

from __future__ import annotations

import json
import math

import redis
from prometheus_client import Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily

from app import logs
from app.config import Settings

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


def bind(settings: Settings) -> None:
    """Point shared metrics at Redis (once per process)."""
    global _redis
    from app import queue

    _redis = queue.client(settings)


class _Shared:
    kind = ""

    def __init__(self, name: str, doc: str, labels: tuple[str, ...] = ()):
        self.name, self.doc, self.labels = name, doc, labels
        self.key = PREFIX + name
        _shared.append(self)

    def _field(self, labels: dict) -> str:
        if set(labels) != set(self.labels):
            raise ValueError(f"{self.name} takes labels {self.labels}, got {sorted(labels)}")
        return json.dumps([str(labels[name]) for name in self.labels])

    def _write(self, fn) -> None:
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

    def inc(self, amount: float = 1.0, **labels) -> None:
        field = self._field(labels)
        self._write(lambda p: p.hincrbyfloat(self.key, field, amount))


class SharedGauge(_Shared):
    kind = "gauge"

    def set(self, value: float, **labels) -> None:
        field = self._field(labels)
        self._write(lambda p: p.hset(self.key, field, value))


class SharedHistogram(_Shared):
    kind = "histogram"

    def __init__(self, name: str, doc: str, labels: tuple[str, ...], buckets: tuple[float, ...]):
        super().__init__(name, doc, labels)
        self.buckets = tuple(sorted(buckets)) + (math.inf,)

    def observe(self, value: float, **labels) -> None:
        field = self._field(labels)

        def write(p):
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
PULSE_PUBLISH = SharedCounter("pulse_publish_total", "Pulse events published", ("stream", "track", "outcome"))
PULSE_LATENCY = SharedHistogram(
    "pulse_publish_latency_ms",
    "Pulse publish latency in milliseconds",
    ("stream", "track"),
    (0.5, 1, 2.5, 5, 10, 25, 50, 100, 250, 1000),
)


class StoreCollector:
    """Builds the shared and live samples at scrape time: a few Redis reads, one SQL query."""

    def __init__(self, settings: Settings):
        self.settings = settings

    def collect(self):
        yield GaugeMetricFamily("store_up", "1 while the store's API answers", value=1)
        yield from self._shared()
        yield from self._live()

    def _shared(self):
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
            values = {k.decode(): v.decode() for k, v in values.items()}
            if metric.kind == "counter":
                family = CounterMetricFamily(metric.name.removesuffix("_total"), metric.doc, labels=metric.labels)
                if not metric.labels:
                    family.add_metric([], float(values.get("[]", 0)))
                for field, value in values.items():
                    if metric.labels:
                        family.add_metric(json.loads(field), float(value))
            elif metric.kind == "gauge":
                family = GaugeMetricFamily(metric.name, metric.doc, labels=metric.labels)
                for field, value in values.items():
                    family.add_metric(json.loads(field), float(value))
            else:
                family = HistogramMetricFamily(metric.name, metric.doc, labels=metric.labels)
                series: dict[str, dict] = {}
                for field, value in values.items():
                    labels, _, part = field.rpartition("|")
                    series.setdefault(labels, {})[part] = float(value)
                for labels, parts in series.items():
                    buckets = [(_le(b), parts.get(str(b), 0.0)) for b in metric.buckets]
                    family.add_metric(json.loads(labels), buckets, parts.get("sum", 0.0))
            yield family

    def _live(self):
        from app import db, queue

        depth = GaugeMetricFamily("store_queue_depth", "Jobs waiting in the RQ queue")
        workers = GaugeMetricFamily("store_workers", "RQ workers registered and alive")
        try:
            from rq import Worker

            depth.add_metric([], queue.depth(self.settings))
            workers.add_metric([], Worker.count(connection=queue.client(self.settings)))
            yield depth
            yield workers
        except redis.exceptions.RedisError:
            pass
        active = GaugeMetricFamily("store_jobs_active", "Jobs queued or running, by kind", labels=("kind", "status"))
        # Read from the database (yoyo's log), not counted in memory: it includes migrations
        # applied by the start-up command and by any process, and survives restarts.
        applied = CounterMetricFamily(
            "migrations_applied", "Migrations applied to this database by any path (yoyo's apply log)"
        )
        oldest = GaugeMetricFamily("store_oldest_queued_job_age_seconds", "Age of the oldest queued job")
        try:
            with db.connection(self.settings, timeout=self.settings.health_timeout) as conn:
                applied.add_metric([], _migrations_applied(conn))
                rows = []
                if conn.execute("SELECT to_regclass('store_jobs') IS NOT NULL").fetchone()[0]:
                    rows = conn.execute(
                        """SELECT job, status, count(*), EXTRACT(EPOCH FROM now() - min(requested_at))
                           FROM store_jobs WHERE status IN ('queued', 'running') GROUP BY job, status"""
                    ).fetchall()
        except Exception:  # noqa: BLE001 - a scrape must not fail because the database is down
            return
        age = 0.0
        for job, status, count, seconds in rows:
            active.add_metric([job, status], count)
            if status == "queued":
                age = max(age, float(seconds or 0))
        oldest.add_metric([], age)
        yield active
        yield oldest
        yield applied


def _migrations_applied(conn) -> int:
    """Apply operations in yoyo's log (0 before the first migration)."""
    if not conn.execute("SELECT to_regclass('_yoyo_log') IS NOT NULL").fetchone()[0]:
        return 0
    return conn.execute("SELECT count(*) FROM _yoyo_log WHERE operation = 'apply'").fetchone()[0]


def _le(bound: float) -> str:
    return "+Inf" if bound == math.inf else str(bound)


def observe_request(method: str, endpoint: str, seconds: float) -> None:
    HTTP_REQUESTS.labels(method=method, endpoint=endpoint).inc()
    HTTP_DURATION.labels(method=method, endpoint=endpoint).observe(seconds)

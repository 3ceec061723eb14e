"""market-data-store: the control plane of the market-data platform's database.

`create_app()` builds the Flask API (served by gunicorn, see gunicorn.conf.py). Admin
requests become jobs in the Postgres ledger and are run by `python -m worker`.
"""

from __future__ import annotations

import os
import re
import time
import uuid

import structlog
from flask import Flask, g, request

from app.config import ConfigError, Settings, load_settings

_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:\-]{1,128}$")


def create_app(settings: Settings | None = None) -> Flask:
    from app import errors, logs, metrics
    from app.api import blueprints

    if settings is None:
        try:
            settings = load_settings()
        except ConfigError as exc:
            logs.fatal(str(exc))
    logs.configure(settings.log_level, settings.secrets(), settings.log_format)
    log = logs.get("api")
    if settings.using_default_token:
        log.warning("ADMIN_TOKEN is the default 'iamalive'; set a secret token before exposing the store")

    app = Flask(__name__)
    app.config.update(SETTINGS=settings, MAX_CONTENT_LENGTH=settings.max_body_bytes, JSON_SORT_KEYS=False)
    app.json.sort_keys = False
    errors.register(app)
    for blueprint in blueprints():
        app.register_blueprint(blueprint)
    metrics.bind(settings)
    _install_metrics(app, settings)
    _install_request_context(app)

    from app.jobs.reaper import Sweeper

    if os.environ.get("STORE_DISABLE_SWEEPER") != "1":
        Sweeper(settings).start()
    return app


def _install_metrics(app: Flask, settings: Settings) -> None:
    """GET /metrics via prometheus-flask-exporter, with our own metrics only (no defaults):
    the per-process HTTP metrics (multiprocess mode under gunicorn) plus StoreCollector."""
    from prometheus_client import REGISTRY, CollectorRegistry, multiprocess
    from prometheus_flask_exporter import PrometheusMetrics

    from app.metrics import StoreCollector

    collector = StoreCollector(settings)

    class Exporter(PrometheusMetrics):
        def generate_metrics(self, accept_header=None, names=None):
            from prometheus_flask_exporter import choose_encoder

            if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
                registry = CollectorRegistry()
                multiprocess.MultiProcessCollector(registry)
            else:
                registry = CollectorRegistry()
                registry.register(_Delegate(REGISTRY))
            registry.register(collector)
            encode, content_type = choose_encoder(accept_header)
            return encode(registry).decode("utf-8"), content_type

    app.extensions["prometheus"] = Exporter(app, export_defaults=False, registry=CollectorRegistry())


class _Delegate:
    """Expose another registry's samples inside a fresh one (single-process mode)."""

    def __init__(self, registry):
        self.registry = registry

    def collect(self):
        return self.registry.collect()


_PROBES = ("/health", "/healthz", "/readyz", "/metrics")
_POLLS = ("/jobs", "/openapi.json")


def _log_request(log, response, elapsed: float) -> None:
    """One line per request. Probes (/health, /readyz, /metrics) and polls that succeed
    (GET /jobs...) are DEBUG, so a client polling a job does not flood INFO; any other
    request is INFO, and an error answer carries its error text (5xx as a warning)."""
    fields = {
        "method": request.method,
        "path": request.path,
        "status": response.status_code,
        "duration_ms": round(elapsed * 1000, 2),
    }
    if request.path in _PROBES:
        log.debug("request", **fields)
    elif response.status_code >= 400:
        body = response.get_json(silent=True) if response.is_json and not response.is_streamed else None
        if isinstance(body, dict) and isinstance(body.get("error"), str):
            fields["error"] = body["error"][:300]
        (log.warning if response.status_code >= 500 else log.info)("request", **fields)
    elif request.method in ("GET", "HEAD") and request.path.startswith(_POLLS):
        log.debug("request", **fields)
    else:
        log.info("request", **fields)


def _install_request_context(app: Flask) -> None:
    from app import logs, metrics

    log = logs.get("api")

    @app.before_request
    def _begin():
        g.started = time.perf_counter()
        incoming = request.headers.get("X-Request-ID", "")
        g.request_id = incoming if _REQUEST_ID.match(incoming) else uuid.uuid4().hex
        structlog.contextvars.clear_contextvars()
        structlog.contextvars.bind_contextvars(request_id=g.request_id)

    @app.after_request
    def _end(response):
        elapsed = time.perf_counter() - g.get("started", time.perf_counter())
        endpoint = request.url_rule.rule if request.url_rule else "<unmatched>"
        metrics.observe_request(request.method, endpoint, elapsed)
        response.headers["X-Request-ID"] = g.get("request_id", "")
        _log_request(log, response, elapsed)
        return response

    @app.teardown_request
    def _clear(_exc):
        structlog.contextvars.clear_contextvars()

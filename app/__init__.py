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
    logs.configure(settings.log_level, settings.secrets())
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
    from prometheus_client import REGISTRY
    from prometheus_flask_exporter import PrometheusMetrics
    from prometheus_flask_exporter.multiprocess import GunicornInternalPrometheusMetrics

    from app.metrics import StoreCollector

    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        exporter = GunicornInternalPrometheusMetrics(app, export_defaults=False)
        exporter.registry.register(StoreCollector(settings))
    else:  # single process (tests, flask run): the default registry, collector added once
        exporter = PrometheusMetrics(app, export_defaults=False, registry=REGISTRY)
        if not getattr(REGISTRY, "_store_collector", False):
            REGISTRY.register(StoreCollector(settings))
            REGISTRY._store_collector = True
    app.extensions["prometheus"] = exporter


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
        if request.path not in ("/health", "/healthz", "/readyz", "/metrics"):
            log.info("request", method=request.method, path=request.path, status=response.status_code,
                     duration_ms=round(elapsed * 1000, 2))
        return response

    @app.teardown_request
    def _clear(_exc):
        structlog.contextvars.clear_contextvars()

"""market-data-store: the control plane of the market-data platform's database.

`create_app()` builds the Flask API (served by gunicorn, see gunicorn.conf.py). Admin
requests become jobs in the Postgres ledger and are run by `python -m worker`.
"""

from __future__ import annotations

import re
import time
import uuid
from typing import TYPE_CHECKING, Any

import structlog
from flask import Flask, Response, g, request

from app.config import ConfigError, Settings, load_settings

if TYPE_CHECKING:  # imported lazily below: gunicorn.conf.py imports this package before
    from app.resources import Resources  # PROMETHEUS_MULTIPROC_DIR is set for prometheus_client

_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:\-]{1,128}$")
EXTENSION = "market-data-store"  # app.extensions[EXTENSION]: the process's Resources


def create_app(settings: Settings | None = None) -> Flask:
    """The API. Nothing is started here: gunicorn's `post_worker_init` calls
    `resources_of(app).start()` (the reaper sweeper), `worker_exit` closes them."""
    from app import logs
    from app.api import blueprints, errors, metrics
    from app.jobs.reaper import Sweeper
    from app.resources import Resources

    if settings is None:
        try:
            settings = load_settings()
        except ConfigError as exc:
            logs.fatal(str(exc))
    logs.configure(settings.log_level, settings.secrets(), settings.log_format)
    log = logs.get("api")
    if settings.using_default_token:
        log.warning("ADMIN_TOKEN is the default 'iamalive'; set a secret token before exposing the store")

    res = Resources(settings)
    res.background.append(Sweeper(res))
    app = Flask(__name__)
    app.config.update(MAX_CONTENT_LENGTH=settings.max_body_bytes, JSON_SORT_KEYS=False)
    app.json.sort_keys = False  # type: ignore[attr-defined]  # the default provider has it
    app.extensions[EXTENSION] = res
    errors.register(app)
    for blueprint in blueprints():
        app.register_blueprint(blueprint)
    metrics.install(app, res)
    _install_request_context(app)
    return app


def resources_of(app: Flask) -> Resources:
    """The process-wide resources `create_app` made for `app`."""
    return app.extensions[EXTENSION]


_PROBES = ("/health", "/healthz", "/readyz", "/metrics")
_POLLS = ("/jobs", "/openapi.json")


def _log_request(log: Any, response: Response, elapsed: float) -> None:
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
    def _begin() -> None:
        g.started = time.perf_counter()
        incoming = request.headers.get("X-Request-ID", "")
        g.request_id = incoming if _REQUEST_ID.match(incoming) else uuid.uuid4().hex
        structlog.contextvars.clear_contextvars()
        structlog.contextvars.bind_contextvars(request_id=g.request_id)

    @app.after_request
    def _end(response: Response) -> Response:
        elapsed = time.perf_counter() - g.get("started", time.perf_counter())
        endpoint = request.url_rule.rule if request.url_rule else metrics.UNMATCHED
        metrics.observe_request(request.method, endpoint, elapsed)
        response.headers["X-Request-ID"] = g.get("request_id", "")
        _log_request(log, response, elapsed)
        return response

    @app.teardown_request
    def _clear(_exc: BaseException | None) -> None:
        structlog.contextvars.clear_contextvars()

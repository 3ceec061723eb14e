"""Every failure the API reports is JSON `{"error": "..."}` with a 4xx/5xx code.

`register` maps our errors (`app.errors`), Werkzeug's HTTP errors, an unreachable
database or Redis (503 with Retry-After) and anything unexpected (500, logged).
"""

from __future__ import annotations

import psycopg
import redis
from flask import Flask, Response, jsonify
from werkzeug.exceptions import HTTPException

from app import logs
from app.db import DatabaseUnavailable
from app.errors import ApiError, first_line

RETRY_AFTER = {"Retry-After": "5"}


def error_response(message: str, status: int, headers: dict | None = None, **extra: object) -> Response:
    body: dict = {"error": message}
    body.update(extra)
    resp = jsonify(body)
    resp.status_code = status
    for key, value in (headers or {}).items():
        resp.headers[key] = value
    return resp


def register(app: Flask) -> None:
    """Install JSON handlers for our errors, Werkzeug's HTTP errors and anything else."""

    @app.errorhandler(ApiError)
    def _api_error(exc: ApiError) -> Response:
        return error_response(exc.message, exc.status, exc.headers, **exc.extra)

    @app.errorhandler(DatabaseUnavailable)
    def _database_unavailable(exc: DatabaseUnavailable) -> Response:
        return error_response("database unavailable, try again later", 503, RETRY_AFTER)

    @app.errorhandler(HTTPException)
    def _http_error(exc: HTTPException) -> Response:
        messages = {
            404: "not found: no such endpoint",
            405: "method not allowed for this endpoint",
            413: f"request body too large (limit {app.config.get('MAX_CONTENT_LENGTH')} bytes)",
            431: "request headers too large",
        }
        code = exc.code or 500
        message = messages.get(code, exc.description or exc.name)
        headers = {}
        valid_methods = getattr(exc, "valid_methods", None)
        if code == 405 and valid_methods:
            headers["Allow"] = ", ".join(valid_methods)
        return error_response(message, code, headers)

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception) -> Response:
        if isinstance(exc, (psycopg.OperationalError, psycopg.errors.QueryCanceled)):
            logs.get("api").warning("database unavailable", error=first_line(exc))
            return error_response("database unavailable, try again later", 503, RETRY_AFTER)
        if isinstance(exc, redis.exceptions.RedisError):
            logs.get("api").warning("redis unavailable", error=str(exc))
            return error_response("queue unavailable, try again later", 503, RETRY_AFTER)
        logs.get("api").exception("unhandled error")
        return error_response("internal error", 500)

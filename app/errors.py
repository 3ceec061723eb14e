"""API errors: every failure the API reports is JSON `{"error": "..."}` with a 4xx/5xx code."""

from __future__ import annotations

from flask import Flask, jsonify
from werkzeug.exceptions import HTTPException

from app import logs


class ApiError(Exception):
    """An error with an HTTP status and a message the client can act on."""

    status = 400

    def __init__(self, message: str, status: int | None = None, headers: dict | None = None, **extra):
        super().__init__(message)
        self.message = message
        if status is not None:
            self.status = status
        self.headers = headers or {}
        self.extra = extra


class BadRequest(ApiError):
    status = 400


class Unauthorized(ApiError):
    status = 401


class NotFound(ApiError):
    status = 404


class Conflict(ApiError):
    status = 409


class TooManyRequests(ApiError):
    """The job queue is full; try again after Retry-After seconds."""

    status = 429

    def __init__(self, message: str, retry_after: int = 30, **extra):
        super().__init__(message, headers={"Retry-After": str(retry_after)}, **extra)


class Unavailable(ApiError):
    """A dependency (database, queue) cannot be reached; try again later."""

    status = 503

    def __init__(self, message: str, **extra):
        super().__init__(message, headers={"Retry-After": "5"}, **extra)


def error_response(message: str, status: int, headers: dict | None = None, **extra):
    body = {"error": message}
    body.update(extra)
    resp = jsonify(body)
    resp.status_code = status
    for key, value in (headers or {}).items():
        resp.headers[key] = value
    return resp


def register(app: Flask) -> None:
    """Install JSON handlers for our errors, Werkzeug's HTTP errors and anything else."""

    @app.errorhandler(ApiError)
    def _api_error(exc: ApiError):
        return error_response(exc.message, exc.status, exc.headers, **exc.extra)

    @app.errorhandler(HTTPException)
    def _http_error(exc: HTTPException):
        messages = {
            404: "not found: no such endpoint",
            405: "method not allowed for this endpoint",
            413: f"request body too large (limit {app.config.get('MAX_CONTENT_LENGTH')} bytes)",
            431: "request headers too large",
        }
        message = messages.get(exc.code, exc.description or exc.name)
        headers = {}
        if exc.code == 405 and getattr(exc, "valid_methods", None):
            headers["Allow"] = ", ".join(exc.valid_methods)
        return error_response(message, exc.code or 500, headers)

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception):
        import psycopg
        import redis

        if isinstance(exc, (psycopg.OperationalError, psycopg.errors.QueryCanceled)):
            logs.get("api").warning("database unavailable", error=str(exc).splitlines()[0] if str(exc) else "")
            return error_response("database unavailable, try again later", 503, {"Retry-After": "5"})
        if isinstance(exc, redis.exceptions.RedisError):
            logs.get("api").warning("redis unavailable", error=str(exc))
            return error_response("queue unavailable, try again later", 503, {"Retry-After": "5"})
        logs.get("api").exception("unhandled error")
        return error_response("internal error", 500)

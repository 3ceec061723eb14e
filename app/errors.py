"""Errors a caller can act on, each with the HTTP status it is answered with.

Raised by the routes and by the job kinds' `parse` (validation of a trigger body);
`app/api/errors.py` turns them into JSON `{"error": "..."}` responses. No Flask here.
"""

from __future__ import annotations


class ApiError(Exception):
    """An error with an HTTP status and a message the client can act on."""

    status = 400

    def __init__(self, message: str, status: int | None = None, headers: dict | None = None, **extra: object):
        super().__init__(message)
        self.message = message
        if status is not None:
            self.status = status
        self.headers: dict = headers or {}
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

    def __init__(self, message: str, retry_after: int = 30, **extra: object):
        super().__init__(message, None, {"Retry-After": str(retry_after)}, **extra)


def first_line(exc: BaseException, limit: int = 500) -> str:
    """An exception for a message or a log line: the first line of its text (at most
    `limit` characters), or its type's name when it has no text."""
    text = str(exc).strip()
    return text.splitlines()[0][:limit] if text else type(exc).__name__

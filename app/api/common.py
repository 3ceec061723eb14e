"""Helpers shared by the blueprints: the JSON body, and the trigger answer."""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import psycopg
from flask import current_app, g, jsonify, request
from flask.typing import ResponseReturnValue

from app import resources_of
from app.config import Settings
from app.errors import ApiError, BadRequest
from app.jobs import service
from app.jobs.base import JobKind
from app.resources import Resources

_KEY = re.compile(r"^[\x21-\x7e]{1,200}$")


def resources() -> Resources:
    """The process-wide resources of the app handling this request."""
    return resources_of(current_app)


def settings() -> Settings:
    return resources().settings


@contextmanager
def connection() -> Iterator[psycopg.Connection]:
    """A pooled autocommit connection (DatabaseUnavailable -> 503 when none can be had)."""
    with resources().pool.connection() as conn:
        yield conn


def _read_body() -> bytes:
    """The raw body, at most MAX_CONTENT_LENGTH bytes, chunked bodies included (413 past it)."""
    if "body" in g:
        return g.body
    limit = current_app.config["MAX_CONTENT_LENGTH"]
    parts, size = [], 0
    while size <= limit:
        chunk = request.stream.read(min(64 * 1024, limit + 1 - size))
        if not chunk:
            break
        parts.append(chunk)
        size += len(chunk)
    if size > limit:
        raise ApiError(f"request body too large (limit {limit} bytes)", 413)
    g.body = b"".join(parts)
    return g.body


def json_body() -> dict:
    """The request's JSON object ({} when the body is empty). 400 for anything else."""
    raw = _read_body()
    if not raw.strip():
        return {}
    try:
        body = json.loads(raw)
    except (ValueError, RecursionError) as exc:
        message = "nested too deeply" if isinstance(exc, RecursionError) else str(exc)
        raise BadRequest(f"malformed JSON body: {message}") from None
    if not isinstance(body, dict):
        raise BadRequest("the JSON body must be an object")
    return body


def trigger(
    kind: JobKind,
    body: dict | None = None,
    params: dict | None = None,
    create: Callable[[psycopg.Connection], tuple[str, bool, list[str]]] | None = None,
) -> ResponseReturnValue:
    """Validate, record and enqueue a job; answer 202 with its run id. `params` already
    parsed and `create` (see service.submit) serve runs that are more than one row."""
    if params is None:
        params = kind.parse(json_body() if body is None else body, settings())
    key = request.headers.get("Idempotency-Key")
    if key is not None and not _KEY.match(key):
        raise BadRequest("Idempotency-Key must be 1-200 printable ASCII characters")
    with connection() as conn:
        sub = service.submit(
            resources(), conn, kind, params, request_id=g.get("request_id"), idempotency_key=key, create=create
        )
    body = {"status": "accepted", "run_id": sub.run_id, "job": kind.name, "new": sub.created}
    return jsonify(body), 202, {"Location": f"/jobs/{sub.run_id}"}

"""Admin authentication: `Authorization: Bearer <ADMIN_TOKEN>` on every admin and job route."""

from __future__ import annotations

import hmac
from collections.abc import Callable
from functools import wraps
from typing import Any

from flask import current_app, request
from flask.typing import ResponseReturnValue

from app import resources_of
from app.errors import Unauthorized


def check_admin() -> None:
    header = request.headers.get("Authorization", "")
    if not header:
        raise Unauthorized("missing bearer token", headers={"WWW-Authenticate": 'Bearer realm="market-data-store"'})
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthorized(
            "Authorization must be 'Bearer <token>'",
            headers={"WWW-Authenticate": 'Bearer realm="market-data-store", error="invalid_request"'},
        )
    expected = resources_of(current_app).settings.admin_token.encode()
    if not hmac.compare_digest(token.strip().encode("utf-8", "surrogateescape"), expected):
        raise Unauthorized(
            "invalid token",
            headers={"WWW-Authenticate": 'Bearer realm="market-data-store", error="invalid_token"'},
        )


def admin_required(view: Callable[..., ResponseReturnValue]) -> Callable[..., ResponseReturnValue]:
    @wraps(view)
    def wrapper(*args: Any, **kwargs: Any) -> ResponseReturnValue:
        check_admin()
        return view(*args, **kwargs)

    return wrapper

"""Checks on JSON request bodies shared by the job kinds and the routes (400/404 naming the field)."""

from __future__ import annotations

from collections.abc import Iterable

from app.errors import BadRequest, NotFound


def only(body: dict, allowed: Iterable[str]) -> None:
    """400 if the body has fields other than `allowed`."""
    allowed = list(allowed)
    unknown = sorted(set(body) - set(allowed))
    if unknown:
        raise BadRequest(f"unknown field(s): {', '.join(unknown)}; allowed: {', '.join(allowed)}")


def flag(body: dict, name: str, default: bool | None = False) -> bool | None:
    """An optional boolean field; null is accepted only where the default is None."""
    if name not in body:
        return default
    value = body[name]
    if value is None and default is None:
        return None
    if not isinstance(value, bool):
        raise BadRequest(f"{name} must be true or false")
    return value


def one_of(value: object, known: Iterable[str], field: str, what: str) -> str | None:
    """An optional name that must be in `known`: 400 if not a name at all, 404 if unknown."""
    if value is None:
        return None
    known = list(known)
    if not isinstance(value, str) or not value:
        raise BadRequest(f"{field} must be the name of {what}")
    if value not in known:
        raise NotFound(f"{field} {value[:80]!r} is not {what}; known: {', '.join(known)}")
    return value

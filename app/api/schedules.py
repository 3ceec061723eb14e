"""Schedules as data: GET /schedules, PUT /schedules/<name>, POST /schedules/<name>/run (admin)."""

from __future__ import annotations

import re

import psycopg
from flask import Blueprint, g, jsonify
from flask.typing import ResponseReturnValue

from app import validation
from app.api.common import connection, json_body, resources, settings
from app.auth import admin_required
from app.errors import BadRequest, NotFound
from app.jobs import KINDS, schedules, service

bp = Blueprint("schedules", __name__)
SCHEDULE_NAME = re.compile(r"[a-z][a-z0-9_.]{0,62}")


def _prepared(conn: psycopg.Connection) -> None:
    schedules.ensure(conn, settings())


def _unknown(name: str, conn: psycopg.Connection) -> NotFound:
    known = ", ".join(s["name"] for s in schedules.list_all(conn))
    return NotFound(f"no schedule {name[:80]!r}; known: {known}")


def _plausible(name: str, conn: psycopg.Connection) -> None:
    """404 before any query for a name no schedule can have (NUL bytes, odd characters, too long)."""
    if not SCHEDULE_NAME.fullmatch(name):
        raise _unknown(name, conn)


@bp.get("/schedules")
@admin_required
def list_schedules() -> ResponseReturnValue:
    with connection() as conn:
        _prepared(conn)
        return jsonify({"schedules": schedules.list_all(conn)})


@bp.put("/schedules/<name>")
@admin_required
def put_schedule(name: str) -> ResponseReturnValue:
    body = json_body()
    validation.only(body, ["every", "paused"])
    if not body:
        raise BadRequest('nothing to change: give every and/or paused, e.g. {"every": "1 day", "paused": true}')
    for field in ("every", "paused"):
        if field in body and body[field] is None:
            raise BadRequest(f"{field} must not be null; leave it out to keep the current value")
    every = None
    if "every" in body:
        try:
            every = schedules.parse_every(body["every"])
        except ValueError as exc:
            raise BadRequest(str(exc)) from None
    paused = validation.flag(body, "paused", default=None)
    with connection() as conn:
        _plausible(name, conn)  # before _prepared: a name no schedule can have writes nothing
        _prepared(conn)
        doc = schedules.update(conn, name, every, paused)
        if doc is None:
            raise _unknown(name, conn)
    return jsonify(doc)


@bp.post("/schedules/<name>/run")
@admin_required
def run_schedule(name: str) -> ResponseReturnValue:
    """Run a schedule's job now (paused or not); its period restarts from now."""
    body = json_body()
    if body:
        raise BadRequest(
            f"unknown field(s): {', '.join(sorted(body))}; this trigger takes no body: "
            "the schedule's own parameters are used"
        )
    with connection() as conn:
        _plausible(name, conn)  # before _prepared: a name no schedule can have writes nothing
        _prepared(conn)
        schedule = schedules.get(conn, name)
        if schedule is None:
            raise _unknown(name, conn)
        kind = KINDS[schedule["job"]]
        sub = service.submit(resources(), conn, kind, schedule["params"], request_id=g.get("request_id"))
        if sub.created:
            schedules.record_run(conn, name, sub.run_id, reset_clock=True)
    body = {"status": "accepted", "run_id": sub.run_id, "job": kind.name, "new": sub.created, "schedule": name}
    return jsonify(body), 202, {"Location": f"/jobs/{sub.run_id}"}

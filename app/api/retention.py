"""Retention policies and the retention trigger (admin)."""

from __future__ import annotations

from datetime import timedelta

from flask import Blueprint, jsonify
from flask.typing import ResponseReturnValue

from app import validation
from app.api.common import connection, json_body, trigger
from app.auth import admin_required
from app.errors import BadRequest
from app.intervals import IntervalError, format_interval, parse_interval
from app.jobs import retention as retention_job
from app.timeseries import catalog, retention

bp = Blueprint("retention", __name__)


@bp.get("/retention/policies")
@admin_required
def list_policies() -> ResponseReturnValue:
    with connection() as conn:
        return jsonify({"policies": retention.policies(conn)})


@bp.put("/retention/policies/<table>")
@admin_required
def put_policy(table: str) -> ResponseReturnValue:
    validation.one_of(table, catalog.TABLES, "table", "a time-series table")
    body = json_body()
    validation.only(body, ["retain", "enabled"])
    if "retain" not in body or body["retain"] is None:
        raise BadRequest('retain is required, e.g. {"retain": "30 days"}')
    try:
        retain = parse_interval(body["retain"])
    except IntervalError as exc:
        raise BadRequest(f"retain: {exc}") from None
    if retain < catalog.MIN_RETAIN:
        raise BadRequest(f"retain must be at least {format_interval(catalog.MIN_RETAIN)}, got {body['retain']!r}")
    enabled = validation.flag(body, "enabled", default=None)
    with connection() as conn:
        return jsonify(retention.set_policy(conn, table, timedelta(seconds=int(retain.total_seconds())), enabled))


@bp.post("/retention/apply")
@admin_required
def apply_retention() -> ResponseReturnValue:
    return trigger(retention_job.KIND)

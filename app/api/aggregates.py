"""Continuous aggregates: their state, and the refresh trigger (admin)."""

from __future__ import annotations

from datetime import datetime, timedelta

from flask import Blueprint, jsonify
from flask.typing import ResponseReturnValue

from app.api.common import connection, trigger
from app.auth import admin_required
from app.intervals import format_interval
from app.jobs import aggregates as aggregates_job
from app.timeseries import rollups

bp = Blueprint("aggregates", __name__)


def _json(value: object) -> object:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, timedelta):
        return format_interval(value)
    return value


@bp.get("/aggregates")
@admin_required
def list_aggregates() -> ResponseReturnValue:
    with connection() as conn:
        docs = rollups.describe(conn)
    return jsonify({"aggregates": [{k: _json(v) for k, v in d.items()} for d in docs]})


@bp.post("/refresh/aggregate")
@admin_required
def refresh_aggregate() -> ResponseReturnValue:
    return trigger(aggregates_job.KIND)

"""The layout of the time-series tables: partitions or chunks, sizes, ranges (admin)."""

from __future__ import annotations

from flask import Blueprint, jsonify, request
from flask.typing import ResponseReturnValue

from app import validation
from app.api.common import connection
from app.auth import admin_required
from app.errors import BadRequest, NotFound
from app.jobs.aggregates import parse_time
from app.timeseries import catalog, layout

bp = Blueprint("tables", __name__)
MAX_LIMIT = 1000


@bp.get("/tables")
@admin_required
def list_tables() -> ResponseReturnValue:
    with connection() as conn:
        return jsonify({"tables": layout.tables(conn)})


@bp.get("/tables/<table>/partitions")
@admin_required
def list_partitions(table: str) -> ResponseReturnValue:
    validation.one_of(table, catalog.TABLES, "table", "a time-series table")
    unknown = sorted(set(request.args) - {"limit", "before"})
    if unknown:
        raise BadRequest(f"unknown query parameter(s): {', '.join(unknown)[:200]}; allowed: limit, before")
    raw = request.args.get("limit", "100")
    if not (raw.isascii() and raw.isdigit()) or not 1 <= int(raw) <= MAX_LIMIT:
        raise BadRequest(f"limit must be an integer from 1 to {MAX_LIMIT}")
    before = parse_time("before", request.args["before"]) if "before" in request.args else None
    with connection() as conn:
        try:
            return jsonify(layout.table_partitions(conn, table, int(raw), before))
        except ValueError:
            raise NotFound(f"{table} is not set up in this database (run the migrations)") from None

"""Schema version (public) and the migrate trigger (admin)."""

from __future__ import annotations

from flask import Blueprint, jsonify
from flask.typing import ResponseReturnValue

from app import migrator
from app.api.common import connection, trigger
from app.auth import admin_required
from app.jobs import migrate

bp = Blueprint("schema", __name__)


@bp.get("/schema/version")
def schema_version() -> ResponseReturnValue:
    with connection() as conn:
        return jsonify(migrator.status(conn))


@bp.post("/migrate")
@admin_required
def trigger_migrate() -> ResponseReturnValue:
    return trigger(migrate.KIND)

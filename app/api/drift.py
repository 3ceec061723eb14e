"""Schema drift: POST /drift/check (admin, enqueues the job) and GET /drift (admin)."""

from __future__ import annotations

from flask import Blueprint, jsonify, request
from flask.typing import ResponseReturnValue

from app.api.common import connection, settings, trigger
from app.auth import admin_required
from app.drift import pins, state
from app.errors import BadRequest
from app.jobs import drift
from app.times import iso

bp = Blueprint("drift", __name__)


@bp.post("/drift/check")
@admin_required
def trigger_check() -> ResponseReturnValue:
    return trigger(drift.KIND)


@bp.get("/drift")
@admin_required
def drift_status() -> ResponseReturnValue:
    """The last check of the track (default REGISTRY_TRACK); pins as `unknown` before any check."""
    track = request.args.get("track", settings().registry_track)
    if track not in ("v1", "v2"):
        raise BadRequest(f"track must be v1 or v2, got {track[:20]!r}")
    with connection() as conn:
        head, rows = state.latest(conn, track)
        last_seen = state.last_drift(conn, track) if head is None else {}
    if head is None:
        rows = [
            {
                "schema": p.schema,
                "status": "unknown",
                "drift_type": None,
                "local_sha256": p.sha256,
                "registry_sha256": None,
                "local_version": p.version,
                "registry_version": None,
                "error": "no drift check has run yet",
                "last_drift_at": last_seen.get(p.schema),
            }
            for p in pins.for_track(track)
        ]
    schemas = [{**row, "last_drift_at": iso(row["last_drift_at"])} for row in rows]
    return jsonify(
        {
            "track": track,
            "checked_at": iso(head["checked_at"]) if head else None,
            "run_id": head["run_id"] if head else None,
            "registry_reachable": head["registry_reachable"] if head else None,
            "error": head["error"] if head else None,
            "schemas": schemas,
        }
    )

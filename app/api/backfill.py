"""Backfill: the catalogue of backfill jobs and their trigger (admin)."""

from __future__ import annotations

from flask import Blueprint, jsonify
from flask.typing import ResponseReturnValue

from app.api.common import trigger
from app.auth import admin_required
from app.errors import NotFound
from app.jobs import backfill

bp = Blueprint("backfill", __name__)


@bp.get("/backfill")
@admin_required
def list_backfill_jobs() -> ResponseReturnValue:
    return jsonify({"jobs": backfill.catalogue()})


@bp.post("/backfill/<job>")
@admin_required
def trigger_backfill(job: str) -> ResponseReturnValue:
    entry = backfill.CATALOGUE.get(job)
    if entry is None:
        known = sorted(backfill.CATALOGUE)
        raise NotFound(f"no backfill job {job[:80]!r}; known: {', '.join(known)}", known=known)
    return trigger(entry[0])

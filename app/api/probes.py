"""Liveness and readiness probes (no auth)."""

from __future__ import annotations

from flask import Blueprint, jsonify
from flask.typing import ResponseReturnValue

from app import health
from app.api.common import resources

bp = Blueprint("probes", __name__)


@bp.get("/health")
@bp.get("/healthz")
def liveness() -> ResponseReturnValue:
    """200 whenever the process answers; the body says how its dependencies are."""
    return jsonify(health.document(resources()))


@bp.get("/readyz")
def readiness() -> ResponseReturnValue:
    doc = health.document(resources())
    return jsonify(doc), 200 if health.ready(doc) else 503

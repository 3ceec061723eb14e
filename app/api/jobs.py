"""Job polling and cancellation: GET /jobs, GET /jobs/<run_id>, POST /jobs/<run_id>/cancel."""

from __future__ import annotations

import uuid

from flask import Blueprint, jsonify, request

from app import db, queue
from app.api.common import settings
from app.auth import admin_required
from app.errors import BadRequest, Conflict, NotFound
from app.jobs import fanout, ledger

bp = Blueprint("jobs", __name__)
MAX_LIMIT = 200


def _run_id(value: str) -> str:
    try:
        return str(uuid.UUID(value))
    except ValueError:
        raise NotFound(f"no job with run_id {value[:80]!r} (run ids are UUIDs)") from None


def _get(conn, run_id: str) -> dict:
    row = ledger.get(conn, run_id)
    if row is None:
        raise NotFound(f"no job with run_id {run_id}")
    return row


@bp.get("/jobs/<run_id>")
@admin_required
def get_job(run_id: str):
    run_id = _run_id(run_id)
    with db.connection(settings()) as conn:
        ledger.bootstrap(conn, settings().database_url)
        return jsonify(fanout.decorate(conn, ledger.document(_get(conn, run_id))))


@bp.get("/jobs")
@admin_required
def list_jobs():
    from app.jobs import KINDS

    job = request.args.get("job") or None
    status = request.args.get("status") or None
    if job is not None and job not in KINDS:
        raise BadRequest(f"unknown job {job[:80]!r}; known: {', '.join(sorted(KINDS))}")
    if status is not None and status not in ledger.STATUSES:
        raise BadRequest(f"unknown status {status[:80]!r}; known: {', '.join(ledger.STATUSES)}")
    raw_limit = request.args.get("limit", "50")
    # isascii: str.isdigit() is also true for digits int() rejects, such as "²"
    if not (raw_limit.isascii() and raw_limit.isdigit()) or not 1 <= int(raw_limit) <= MAX_LIMIT:
        raise BadRequest(f"limit must be an integer from 1 to {MAX_LIMIT}")
    parent = request.args.get("parent") or None
    if parent is not None:
        try:
            parent = str(uuid.UUID(parent))
        except ValueError:
            raise BadRequest(f"parent must be a run id (a UUID), got {parent[:80]!r}") from None
    with db.connection(settings()) as conn:
        ledger.bootstrap(conn, settings().database_url)
        rows = ledger.list_jobs(conn, job, status, int(raw_limit), parent=parent)
    return jsonify({"jobs": [ledger.document(r) for r in rows], "limit": int(raw_limit)})


@bp.post("/jobs/<run_id>/cancel")
@admin_required
def cancel_job(run_id: str):
    run_id = _run_id(run_id)
    with db.connection(settings()) as conn:
        ledger.bootstrap(conn, settings().database_url)
        before = ledger.request_cancel(conn, run_id)
        if before is None:
            raise NotFound(f"no job with run_id {run_id}")
        if before not in ledger.ACTIVE:
            raise Conflict(f"job already finished with status {before!r}", status_now=before)
        if before == "queued":
            try:
                queue.remove(settings(), run_id)
            except Exception:  # noqa: BLE001 - the runner skips non-queued jobs anyway
                pass
        doc = ledger.document(_get(conn, run_id))
        if fanout.is_parent(doc["params"]):  # cancelling a parent cancels its children
            fanout.cancel_children(settings(), conn, run_id)
            doc = fanout.decorate(conn, ledger.document(_get(conn, run_id)))
    return jsonify(doc), 202 if before == "running" else 200

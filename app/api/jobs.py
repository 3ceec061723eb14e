"""Jobs: GET /jobs (filters, paging), GET /jobs/<run_id>, POST /jobs/<run_id>/cancel and
POST /jobs/<run_id>/retry."""

from __future__ import annotations

import base64
import binascii
import uuid
from datetime import UTC, datetime

import psycopg
from flask import Blueprint, g, jsonify, request
from flask.typing import ResponseReturnValue

from app.api.common import connection, resources
from app.auth import admin_required
from app.errors import BadRequest, Conflict, NotFound
from app.jobs import KINDS, fanout, ledger, service

bp = Blueprint("jobs", __name__)
MAX_LIMIT = 200
LIST_PARAMS = ("job", "status", "since", "until", "trigger", "limit", "cursor", "parent")
TRIGGERS = ("api", "schedule")


def _run_id(value: str) -> str:
    try:
        return str(uuid.UUID(value))
    except ValueError:
        raise NotFound(f"no job with run_id {value[:80]!r} (run ids are UUIDs)") from None


def _get(conn: psycopg.Connection, run_id: str) -> dict:
    row = ledger.get(conn, run_id)
    if row is None:
        raise NotFound(f"no job with run_id {run_id}")
    return row


@bp.get("/jobs/<run_id>")
@admin_required
def get_job(run_id: str) -> ResponseReturnValue:
    run_id = _run_id(run_id)
    with connection() as conn:
        return jsonify(fanout.decorate(conn, service.documents(resources().queue, conn, [_get(conn, run_id)])[0]))


def _kinds(value: str) -> tuple[str, ...]:
    """`job`: an exact kind, or a prefix of kinds (`backfill.`)."""
    if value in KINDS:
        return (value,)
    matching = tuple(sorted(k for k in KINDS if k.startswith(value)))
    if not matching:
        raise BadRequest(
            f"unknown job {value[:80]!r}: neither a job kind nor a prefix of one; known: {', '.join(sorted(KINDS))}"
        )
    return matching


def _statuses(value: str) -> tuple[str, ...]:
    out = []
    for part in value.split(","):
        status = part.strip()
        if status not in ledger.STATUSES:
            raise BadRequest(f"unknown status {status[:80]!r}; known: {', '.join(ledger.STATUSES)} (comma-separated)")
        if status not in out:
            out.append(status)
    return tuple(out)


def _time(name: str, value: str) -> datetime:
    """ISO 8601; without an offset it is UTC."""
    try:
        if len(value) > 64:
            raise ValueError
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise BadRequest(f"{name} must be an ISO 8601 time such as 2026-01-31T09:30:00Z, got {value[:80]!r}") from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    if not 1970 <= parsed.astimezone(UTC).year <= 9998:
        raise BadRequest(f"{name} must be between the years 1970 and 9998")
    return parsed


def _parent(value: str) -> str:
    """`parent`: a parent run's id; its child runs (a backfill of many files)."""
    try:
        return str(uuid.UUID(value))
    except ValueError:
        raise BadRequest(f"parent must be a run id (a UUID), got {value[:80]!r}") from None


def _limit(value: str) -> int:
    # isascii: str.isdigit() is also true for digits int() rejects, such as "²"
    if not (value.isascii() and value.isdigit()) or not 1 <= int(value) <= MAX_LIMIT:
        raise BadRequest(f"limit must be an integer from 1 to {MAX_LIMIT}")
    return int(value)


def encode_cursor(row: dict) -> str:
    raw = f"{row['requested_at'].isoformat()}|{row['run_id']}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _cursor(value: str) -> tuple[datetime, str]:
    try:
        if len(value) > 200:
            raise ValueError
        raw = base64.urlsafe_b64decode(value + "=" * (-len(value) % 4)).decode()
        at, run_id = raw.split("|")
        parsed = datetime.fromisoformat(at)
        if parsed.tzinfo is None:
            raise ValueError
        return parsed, str(uuid.UUID(run_id))
    except (ValueError, UnicodeDecodeError, binascii.Error):
        raise BadRequest("cursor is not one this API issued: pass next_cursor from the previous page") from None


def _filter() -> tuple[ledger.JobFilter, int]:
    unknown = sorted(set(request.args) - set(LIST_PARAMS))
    if unknown:
        names = ", ".join(u[:40] for u in unknown[:5])
        raise BadRequest(f"unknown query parameter(s): {names}; allowed: {', '.join(LIST_PARAMS)}")
    for name in request.args:
        if len(request.args.getlist(name)) > 1:
            raise BadRequest(f"query parameter {name} given more than once (status takes a comma-separated list)")
    args = {k: v for k, v in request.args.items() if v != ""}
    if "trigger" in args and args["trigger"] not in TRIGGERS:
        raise BadRequest(f"trigger must be one of {', '.join(TRIGGERS)}, got {args['trigger'][:40]!r}")
    where = ledger.JobFilter(
        kinds=_kinds(args["job"]) if "job" in args else None,
        statuses=_statuses(args["status"]) if "status" in args else None,
        since=_time("since", args["since"]) if "since" in args else None,
        until=_time("until", args["until"]) if "until" in args else None,
        trigger=args.get("trigger"),
        after=_cursor(args["cursor"]) if "cursor" in args else None,
        parent=_parent(args["parent"]) if "parent" in args else None,
    )
    if where.since and where.until and where.since >= where.until:
        raise BadRequest("since must be before until")
    return where, _limit(request.args.get("limit", "50"))  # an empty limit is a 400, not the default


@bp.get("/jobs")
@admin_required
def list_jobs() -> ResponseReturnValue:
    where, limit = _filter()
    with connection() as conn:
        rows, total = ledger.list_jobs(conn, where, limit + 1)
        page = rows[:limit]
        docs = service.documents(resources().queue, conn, page)
    next_cursor = encode_cursor(page[-1]) if len(rows) > limit else None
    return jsonify({"jobs": docs, "next_cursor": next_cursor, "total": total})


@bp.post("/jobs/<run_id>/cancel")
@admin_required
def cancel_job(run_id: str) -> ResponseReturnValue:
    run_id = _run_id(run_id)
    with connection() as conn:
        before = ledger.request_cancel(conn, run_id)
        if before is None:
            raise NotFound(f"no job with run_id {run_id}")
        if before not in ledger.ACTIVE:
            raise Conflict(f"job already finished with status {before!r}", status_now=before)
        if before == ledger.JobStatus.QUEUED:
            try:
                resources().queue.remove(run_id)
            except Exception:  # noqa: BLE001 - the runner skips non-queued jobs anyway
                pass
        doc = ledger.document(_get(conn, run_id))
        if fanout.is_parent(doc["params"]):  # cancelling a parent cancels its children
            fanout.cancel_children(resources().queue, conn, run_id)
            doc = fanout.decorate(conn, ledger.document(_get(conn, run_id)))
    return jsonify(doc), 202 if before == ledger.JobStatus.RUNNING else 200


@bp.post("/jobs/<run_id>/retry")
@admin_required
def retry_job(run_id: str) -> ResponseReturnValue:
    run_id = _run_id(run_id)
    with connection() as conn:
        sub = service.retry(resources(), conn, run_id, request_id=g.get("request_id"))
        job = _get(conn, sub.run_id)["job"]
    body = {"status": "accepted", "run_id": sub.run_id, "job": job, "new": sub.created, "retry_of": run_id}
    return jsonify(body), 202, {"Location": f"/jobs/{sub.run_id}"}

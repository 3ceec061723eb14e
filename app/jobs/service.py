"""Submitting jobs: the one path from a trigger (API or scheduler) to ledger + queue.

`submit` records the job in Postgres first (with idempotency and single-flight), then
enqueues its run id on RQ. If Redis is down the job stays `queued` in the ledger and
the reaper enqueues it once Redis answers again.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass

import psycopg
import redis

from app import logs
from app.config import Settings
from app.errors import Conflict, NotFound, TooManyRequests
from app.jobs import fanout, ledger
from app.jobs.base import JobKind
from app.jobs.ledger import JobStatus
from app.queue import JobQueue
from app.resources import Resources


@dataclass(frozen=True)
class Submitted:
    run_id: str
    created: bool  # False: an existing run answered (single flight or idempotency)


def request_hash(kind: str, params: dict) -> str:
    canonical = json.dumps({"job": kind, "params": params}, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def timeout_for(settings: Settings, kind: JobKind) -> float:
    """JOB_TIMEOUT_<KIND>_SECONDS (dots as underscores: JOB_TIMEOUT_BACKFILL_BARS_OHLCV_SECONDS),
    else the kind's own limit, else JOB_TIMEOUT_SECONDS."""
    override = dict(settings.kind_timeouts).get(kind.name.replace(".", "_"))
    if override is not None:
        return override
    return kind.timeout_s if kind.timeout_s is not None else settings.job_timeout


def submit(
    resources: Resources,
    conn: psycopg.Connection,
    kind: JobKind,
    params: dict,
    *,
    request_id: str | None = None,
    idempotency_key: str | None = None,
    trigger: str = "api",
    retry_of: str | None = None,
    create: Callable[[psycopg.Connection], tuple[str, bool, list[str]]] | None = None,
) -> Submitted:
    """Record and enqueue a job. `conn` must be an autocommit connection. `retry_of`: the
    run this one repeats (POST /jobs/<run_id>/retry).

    `create(conn) -> (run_id, created, run ids to enqueue)` replaces the single ledger row
    (a parent run with its children: app/jobs/fanout.py); it runs in the same transaction
    as the idempotency record."""
    settings = resources.settings
    digest = request_hash(kind.name, params)
    while True:
        with conn.transaction() as tx:
            if idempotency_key:
                prior = conn.execute(
                    "SELECT request_hash, run_id::text FROM store_idempotency WHERE key = %s", (idempotency_key,)
                ).fetchone()
                if prior:
                    if prior[0] != digest:
                        raise Conflict(
                            "Idempotency-Key was already used with a different request",
                            run_id=prior[1],
                        )
                    return Submitted(prior[1], False)
            _check_queue_room(settings, conn, kind, params)
            if create is not None:
                run_id, created, to_enqueue = create(conn)
            else:
                run_id, created = ledger.create(
                    conn,
                    kind.name,
                    params,
                    request_id=request_id,
                    single_flight_key=kind.single_flight(params),
                    timeout_s=timeout_for(settings, kind),
                    trigger=trigger,
                    retry_of=retry_of,
                )
                to_enqueue = [run_id]
            if idempotency_key:
                stored = conn.execute(
                    """INSERT INTO store_idempotency (key, request_hash, run_id) VALUES (%s, %s, %s)
                       ON CONFLICT (key) DO NOTHING RETURNING 1""",
                    (idempotency_key, digest, run_id),
                ).fetchone()
                if not stored:  # a concurrent request with the same key won: read its answer
                    tx.force_rollback = True
                    continue
        break
    if created:
        for queued in to_enqueue:
            enqueue(resources.queue, conn, queued, timeout_for(settings, kind))
    return Submitted(run_id, created)


def _check_queue_room(settings: Settings, conn: psycopg.Connection, kind: JobKind, params: dict) -> None:
    """429 when JOB_QUEUE_MAX jobs are queued, unless the trigger joins a run already there
    (single flight adds nothing)."""
    if ledger.queued_count(conn) < settings.job_queue_max:
        return
    key = kind.single_flight(params)
    if key is not None and ledger.active_run(conn, key) is not None:
        return
    raise TooManyRequests(
        f"the job queue is full ({settings.job_queue_max} jobs queued, JOB_QUEUE_MAX); try again later",
        retry_after=30,
    )


def enqueue(queue: JobQueue, conn: psycopg.Connection, run_id: str, timeout_s: float) -> bool:
    """Hand a recorded job to RQ. False (job left queued for the reaper) if Redis is down."""
    try:
        queue.enqueue(run_id, timeout_s)
    except redis.exceptions.RedisError as exc:
        logs.get("jobs").warning("enqueue failed; the reaper will retry", run_id=run_id, error=str(exc))
        return False
    ledger.mark_enqueued(conn, run_id)
    return True


RETRYABLE = (JobStatus.FAILED, JobStatus.CANCELLED)
MAX_WAITING_FOR = 20  # run ids listed in `waiting_for`


def retry(resources: Resources, conn: psycopg.Connection, run_id: str, *, request_id: str | None = None) -> Submitted:
    """Run a failed or cancelled job again with its parameters, as a new run recording
    `retry_of`. Single flight applies: an active run of the same target answers instead."""
    from app.jobs import KINDS

    row = ledger.get(conn, run_id)
    if row is None:
        raise NotFound(f"no job with run_id {run_id}")
    if row["status"] not in RETRYABLE:
        raise Conflict(
            f"only failed or cancelled jobs can be retried; this one is {row['status']!r}", status_now=row["status"]
        )
    kind = KINDS.get(row["job"])
    if kind is None:
        raise Conflict(f"job kind {row['job']!r} no longer exists in this version of the store")
    if fanout.is_parent(row["params"]):  # a backfill of many files: a new parent, the same files
        parent, files = fanout.retry_params(conn, row)
        timeout_s = timeout_for(resources.settings, kind)

        def create(c: psycopg.Connection) -> tuple[str, bool, list[str]]:
            return fanout.create(
                c,
                kind.name,
                parent,
                files,
                kind.single_flight,
                request_id=request_id,
                timeout_s=timeout_s,
                retry_of=run_id,
            )

        return submit(resources, conn, kind, parent, request_id=request_id, retry_of=run_id, create=create)
    return submit(resources, conn, kind, row["params"], request_id=request_id, retry_of=run_id)


def documents(queue: JobQueue, conn: psycopg.Connection, rows: list[dict]) -> list[dict]:
    """Job documents, with `queue_position` and `waiting_for` filled in for queued jobs:
    the position (1 = next to be taken) and the run ids ahead of it (running ones first),
    or "no worker alive" when no worker is registered to take it."""
    docs = [ledger.document(r) for r in rows]
    if not any(d["status"] == JobStatus.QUEUED for d in docs):
        return docs
    running, queued = ledger.queue_order(conn)
    try:
        workers = queue.workers_alive()
    except redis.exceptions.RedisError:
        workers = None
    for doc in docs:
        if doc["status"] != JobStatus.QUEUED:
            continue
        position = queued.index(doc["run_id"]) if doc["run_id"] in queued else len(queued)
        doc["queue_position"] = position + 1
        if workers == 0:
            doc["waiting_for"] = "no worker alive"
        elif workers is None:
            doc["waiting_for"] = "the queue (Redis) is unreachable"
        else:
            doc["waiting_for"] = (running + queued[:position])[:MAX_WAITING_FOR]
    return docs

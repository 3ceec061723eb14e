"""Parent runs: one trigger, one child run per file, run in parallel by every worker.

A backfill of a glob or a `sources` list is recorded as

- one **parent** row in the ledger, `running` from the start, never enqueued (no worker
  holds it, so it has no heartbeat and the reaper never takes it for lost); its params
  hold the files and the shared parameters;
- one **child** row per file, an ordinary queued job of the same kind whose params carry
  `parent` (the parent's run id) and `group` (the parent's single-flight key). Each child
  has the single-flight key of its file, so a file is never loaded twice at once.

The parent ends when its last child ends (`settle`): `success` when every child
succeeded, `cancelled` when it was cancelled, else `failed` naming the failed files.
`settle` runs after each child finishes (runner), after the reaper fails a lost child,
after a cancel, and in every reaper sweep for any parent whose children all ended, so no
path leaves a parent running. While it runs, `decorate` adds the children's counts and
summed progress to the parent's document. Triggering the same parent again makes a new
parent with the same group: children whose file that group already loaded skip it
(app/backfill/bars.py), unfinished ones resume from their checkpoints.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Callable

import psycopg
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from app.errors import Conflict
from app.jobs import ledger
from app.queue import JobQueue

MAX_NAMED = 20  # failed files named in the parent's error and result
_SUMMED = ("rows_read", "rows_written", "rows_unchanged", "rows_rejected", "bytes_read", "bytes_total")


def group_key(kind: str, parent_params: dict) -> str:
    digest = hashlib.sha256(json.dumps(parent_params, sort_keys=True).encode()).hexdigest()[:32]
    return f"{kind}:files:{digest}"


def is_parent(params: dict | None) -> bool:
    return isinstance(params, dict) and isinstance(params.get("sources"), list)


def create(
    conn: psycopg.Connection,
    kind: str,
    parent: dict,
    children: list[dict],
    child_key: Callable[[dict], str | None],
    *,
    request_id: str | None,
    timeout_s: float,
    retry_of: str | None = None,
) -> tuple[str, bool, list[str]]:
    """Insert the parent (running) and its children (queued) in the caller's transaction.

    Returns (parent run id, created, child run ids to enqueue). An active parent with the
    same files and parameters answers instead (single flight); a file already being
    loaded by a run outside this parent is a 409 naming it.
    """
    group = group_key(kind, parent)
    row = conn.execute(
        """INSERT INTO store_jobs (run_id, job, params, request_id, single_flight_key, timeout_s, trigger,
                                   status, started_at, retry_of)
           VALUES (%s, %s, %s, %s, %s, %s, 'api', 'running', now(), %s)
           ON CONFLICT (single_flight_key) WHERE status IN ('queued', 'running') DO NOTHING
           RETURNING run_id::text""",
        (uuid.uuid4(), kind, Jsonb({**parent, "group": group}), request_id, group, timeout_s, retry_of),
    ).fetchone()
    if row is None:
        active = conn.execute(
            "SELECT run_id::text FROM store_jobs WHERE single_flight_key = %s AND status IN ('queued', 'running')",
            (group,),
        ).fetchone()
        if active:
            return active[0], False, []
        raise Conflict("the same parent run finished just now; trigger again")
    parent_id = row[0]
    ids = []
    for child in children:
        params = {**child, "parent": parent_id, "group": group}
        run_id, created = ledger.create(
            conn, kind, params, request_id=request_id, single_flight_key=child_key(params), timeout_s=timeout_s
        )
        if not created:
            raise Conflict(
                f"{child['source']} is being loaded by run {run_id} right now; wait for it or cancel it", run_id=run_id
            )
        ids.append(run_id)
    return parent_id, True, ids


def retry_params(conn: psycopg.Connection, row: dict) -> tuple[dict, list[dict]]:
    """(parent params, child params) to run a finished parent's files again (POST
    /jobs/<parent>/retry): the same group, so files it already loaded are skipped."""
    parent = {k: v for k, v in row["params"].items() if k != "group"}
    files: dict[str, dict] = {}
    for (params,) in conn.execute(
        "SELECT params FROM store_jobs WHERE params->>'parent' = %s ORDER BY requested_at", (row["run_id"],)
    ).fetchall():
        files.setdefault(params["source"], {k: v for k, v in params.items() if k not in ("parent", "group")})
    return parent, [files[s] for s in parent["sources"] if s in files]


def children(conn: psycopg.Connection, parent_id: str, limit: int | None = None) -> list[dict]:
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(
            """SELECT run_id::text AS run_id, status, params->>'source' AS source, progress, result, error,
                      worker, started_at, finished_at
               FROM store_jobs WHERE params->>'parent' = %s ORDER BY params->>'source'
               LIMIT %s""",
            (parent_id, limit),
        ).fetchall()


def summary(kids: list[dict]) -> dict:
    """Counts by status and the summed progress of the children."""
    by_status: dict[str, int] = {}
    sums: dict[str, float] = dict.fromkeys(_SUMMED, 0)
    rate = 0.0
    total_known = True
    skipped = 0
    for kid in kids:
        by_status[kid["status"]] = by_status.get(kid["status"], 0) + 1
        doc = (kid["result"] if kid["status"] == "success" and kid["result"] else None) or kid["progress"] or {}
        if (kid["result"] or {}).get("skipped"):
            skipped += 1
        for name in _SUMMED:
            value = doc.get(name)
            if isinstance(value, (int, float)):
                sums[name] += value
            elif name == "bytes_total":
                total_known = False
        if kid["status"] == "running" and isinstance((kid["progress"] or {}).get("rows_per_s"), (int, float)):
            rate += kid["progress"]["rows_per_s"]
    out: dict = {"files": len(kids), "by_status": by_status, "skipped": skipped, **sums, "rows_per_s": round(rate, 1)}
    ended = sum(n for s, n in by_status.items() if s not in ledger.ACTIVE)
    out["files_done"] = ended
    if total_known and sums["bytes_total"]:
        out["percent"] = round(100.0 * min(1.0, sums["bytes_read"] / sums["bytes_total"]), 1)
    else:
        out["percent"] = round(100.0 * ended / len(kids), 1) if kids else None
    if not total_known:
        out["bytes_total"] = None
    rows_left_ratio = (100.0 - out["percent"]) / out["percent"] if out["percent"] else None
    out["eta_s"] = (
        round(rows_left_ratio * sums["rows_read"] / rate, 1) if rows_left_ratio is not None and rate > 0 else None
    )
    return out


def decorate(conn: psycopg.Connection, doc: dict) -> dict:
    """A job document: a parent gets `children` (counts, summed progress); a child names its parent."""
    params = doc.get("params") or {}
    if params.get("parent"):
        doc["parent"] = params["parent"]
    if is_parent(params):
        kids = children(conn, doc["run_id"])
        doc["children"] = summary(kids)
        if doc["status"] in ledger.ACTIVE:
            doc["progress"] = {"phase": "loading files", **doc["children"]}
    return doc


def settle(conn: psycopg.Connection, parent_id: str) -> str | None:
    """End the parent if every child ended; its final status (None while children run)."""
    with conn.transaction():
        row = conn.execute(
            "SELECT status, cancel_requested_at IS NOT NULL FROM store_jobs WHERE run_id = %s FOR UPDATE",
            (parent_id,),
        ).fetchone()
        if row is None or row[0] != "running":
            return None
        kids = children(conn, parent_id)
        if any(k["status"] in ledger.ACTIVE for k in kids):
            return None
        result = summary(kids)
        failed = [k for k in kids if k["status"] != "success"]
        result["failed"] = [
            {"source": k["source"], "run_id": k["run_id"], "status": k["status"], "error": k["error"]}
            for k in failed[:MAX_NAMED]
        ]
        error = None
        if not failed:
            status = "success"
        elif row[1]:
            status, error = "cancelled", f"cancelled on request; {len(failed)} of {len(kids)} files did not finish"
        else:
            status = "failed"
            named = "; ".join(f"{k['source']}: {k['error'] or k['status']}" for k in failed[:MAX_NAMED])
            more = f"; and {len(failed) - MAX_NAMED} more" if len(failed) > MAX_NAMED else ""
            error = f"{len(failed)} of {len(kids)} files failed: {named}{more}"[:4000]
        conn.execute(
            """UPDATE store_jobs SET status = %s, result = %s, error = %s, progress = %s, finished_at = now()
               WHERE run_id = %s AND status = 'running'""",
            (status, Jsonb(result), error, Jsonb({"phase": "done", **result}), parent_id),
        )
        return status


def cancel_children(jobs_queue: JobQueue, conn: psycopg.Connection, parent_id: str) -> int:
    """Cancel every active child (queued ones never run; running ones are stopped)."""
    ids = [
        r[0]
        for r in conn.execute(
            "SELECT run_id::text FROM store_jobs WHERE params->>'parent' = %s AND status IN ('queued', 'running')",
            (parent_id,),
        ).fetchall()
    ]
    for run_id in ids:
        if ledger.request_cancel(conn, run_id) == "queued":
            try:
                jobs_queue.remove(run_id)
            except Exception:  # noqa: BLE001 - the runner skips non-queued jobs anyway
                pass
    settle(conn, parent_id)
    return len(ids)


def settle_all(conn: psycopg.Connection) -> int:
    """Every running parent whose children all ended (a missed settle, a lost worker)."""
    rows = conn.execute(
        """SELECT p.run_id::text FROM store_jobs p
           WHERE p.status = 'running' AND p.heartbeat_at IS NULL AND jsonb_typeof(p.params->'sources') = 'array'
             AND NOT EXISTS (SELECT 1 FROM store_jobs c WHERE c.params->>'parent' = p.run_id::text
                             AND c.status IN ('queued', 'running'))
           LIMIT 100"""
    ).fetchall()
    return sum(1 for (run_id,) in rows if settle(conn, run_id))

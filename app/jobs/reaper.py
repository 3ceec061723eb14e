"""Keeps the ledger honest when processes or Redis die.

- A running job whose heartbeat stopped (worker SIGKILLed, out of memory, machine gone)
  is marked `failed` with an error saying the worker was lost.
- A queued job whose RQ entry vanished (Redis restarted empty, enqueue failed) is
  enqueued again from the ledger.

`sweep` is cheap and idempotent; it runs in every API process (`Sweeper`) and in the
worker's scheduler, so it works even when no worker is alive.
"""

from __future__ import annotations

import threading

import psycopg
import redis

from app import logs
from app.jobs import fanout, ledger, service
from app.resources import Resources


def sweep(resources: Resources, conn: psycopg.Connection) -> dict:
    settings = resources.settings
    log = logs.get("reaper")
    lost = ledger.fail_lost(conn, settings.lost_after)
    for job in lost:
        log.warning("worker lost; job failed", run_id=job["run_id"], job=job["job"], worker=job["worker"])
    fanout.settle_all(conn)  # parents whose last child just ended (or was lost)
    requeued = 0
    try:
        for job in ledger.queued_before(conn, settings.requeue_after):
            if not resources.queue.exists(job["run_id"]):
                if service.enqueue(resources.queue, conn, job["run_id"], job["timeout_s"]):
                    requeued += 1
                    log.warning("queued job was missing from Redis; enqueued again", run_id=job["run_id"])
    except redis.exceptions.RedisError as exc:
        log.info("redis unavailable; re-enqueue deferred", error=str(exc))
    return {"lost": len(lost), "requeued": requeued}


class Sweeper(threading.Thread):
    """The API process's background sweep, every few seconds.

    Its first step is the ledger's bootstrap (once per process; retried each round
    until the database answers), so the API never touches a ledger that is not there."""

    def __init__(self, resources: Resources, every: float = 5.0):
        super().__init__(name="reaper", daemon=True)
        self.resources, self.every = resources, every
        self.stopped = threading.Event()
        self.bootstrapped = threading.Event()

    def stop(self) -> None:
        self.stopped.set()

    def start(self) -> None:
        self.round()  # the ledger exists before the process serves its first request
        super().start()

    def round(self) -> None:
        try:
            with self.resources.pool.connection(timeout=2) as conn:
                if not self.bootstrapped.is_set():
                    ledger.bootstrap(conn)
                    self.bootstrapped.set()
                sweep(self.resources, conn)
        except Exception as exc:  # noqa: BLE001 - keep sweeping whatever happens
            logs.get("reaper").debug("sweep skipped", error=str(exc))

    def run(self) -> None:
        while not self.stopped.wait(self.every):
            self.round()

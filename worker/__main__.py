"""Entry point: `python -m worker`.

Runs an RQ SimpleWorker (jobs run in this process, so a SIGKILL takes the job down
with it and the reaper reports it) plus the scheduler thread.

- SIGTERM (docker stop, compose): warm shutdown. The current job finishes, no new job is
  taken, the worker deregisters from RQ and exits 0.
- SIGINT (Ctrl-C in `make run`): stop now. The current job is cancelled at once (recorded
  `cancelled`; a backfill resumes from its checkpoint when triggered again), then the
  worker deregisters and exits 0. A second SIGINT changes nothing: the stop is under way.
"""

from __future__ import annotations

import signal
import socket
import sys
import time
import uuid

import psycopg
import redis
from rq import SimpleWorker

from app import config, db, logs, metrics, queue
from app.jobs import ledger, runner
from worker.scheduler import Scheduler


def _wait_for_database(settings: config.Settings, log) -> None:
    """The database may start after us (compose): wait, then make sure the ledger exists."""
    delay = 0.5
    while True:
        try:
            with db.connect(settings, application_name="store-worker", autocommit=True) as conn:
                ledger.bootstrap(conn, settings.database_url)
            return
        except psycopg.OperationalError as exc:
            log.warning("database not reachable yet; retrying", error=str(exc).splitlines()[0], retry_in_s=delay)
            time.sleep(delay)
            delay = min(delay * 2, 10)


def _wait_for_redis(settings: config.Settings, log) -> None:
    delay = 0.5
    while True:
        try:
            queue.client(settings, blocking=True).ping()
            return
        except redis.exceptions.RedisError as exc:
            log.warning("redis not reachable yet; retrying", error=str(exc), retry_in_s=delay)
            time.sleep(delay)
            delay = min(delay * 2, 10)


def _exit_while_starting(signum, _frame) -> None:
    """SIGTERM/SIGINT before the work loop started: nothing is running, exit cleanly."""
    raise SystemExit(0)


class StoreWorker(SimpleWorker):
    """RQ's SimpleWorker with the store's signal semantics (see the module docstring)."""

    def _install_signal_handlers(self) -> None:
        signal.signal(signal.SIGTERM, self.request_stop)
        signal.signal(signal.SIGINT, self._interrupt)

    def _interrupt(self, signum, frame) -> None:
        log = logs.get("worker")
        if getattr(self, "_interrupted", False):
            log.info("already stopping (the running job is being cancelled)")
            return
        self._interrupted = True
        cancelled = runner.interrupt(
            "cancelled: the worker was interrupted (Ctrl-C); trigger the job again to rerun it"
        )
        log.info("interrupted: stopping now", job_cancelled=cancelled)
        try:
            self.request_stop(signum, frame)  # idle: raises StopRequested; busy: stop after this job
        finally:  # request_stop made the next signal a cold stop, which could skip deregistering
            signal.signal(signal.SIGINT, self._interrupt)
            signal.signal(signal.SIGTERM, self._interrupt)


def main() -> int:
    signal.signal(signal.SIGTERM, _exit_while_starting)
    signal.signal(signal.SIGINT, _exit_while_starting)
    try:
        settings = config.load_settings()
    except config.ConfigError as exc:
        logs.fatal(str(exc))
    logs.configure(settings.log_level, settings.secrets(), settings.log_format)
    log = logs.get("worker")
    runner.use_settings(settings)
    metrics.bind(settings)
    _wait_for_database(settings, log)
    _wait_for_redis(settings, log)

    scheduler = Scheduler(settings)
    scheduler.start()
    name = f"store-{socket.gethostname()}-{uuid.uuid4().hex[:8]}"
    worker = StoreWorker(
        [queue.queue(settings)],
        connection=queue.client(settings, blocking=True),
        name=name,
        log_job_description=False,
    )
    log.info("worker started", name=name, queue=settings.queue_name)
    try:
        worker.work(logging_level=settings.log_level, with_scheduler=False)
    finally:
        scheduler.stop()
        log.info("worker stopped", name=name)
    return 0


if __name__ == "__main__":
    sys.exit(main())

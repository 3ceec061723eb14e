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
import uuid
from types import FrameType
from typing import Any

import psycopg
import redis
from rq import SimpleWorker

from app import config, db, logs, retry
from app.errors import first_line
from app.jobs import KINDS, ledger
from app.jobs.runner import Runner, job_class
from app.resources import Resources
from worker.scheduler import Scheduler


def _wait_for_database(settings: config.Settings, log: Any) -> None:
    """The database may start after us (compose): wait, then make sure the ledger exists
    (the process's one ledger bootstrap)."""

    def bootstrap() -> None:
        with db.connect(settings, application_name="store-worker", autocommit=True) as conn:
            ledger.bootstrap(conn)

    def before_pause(_attempt: int, exc: BaseException, pause: float) -> None:
        log.warning("database not reachable yet; retrying", error=first_line(exc), retry_in_s=round(pause, 2))

    retry.call(bootstrap, on=psycopg.OperationalError, first_pause=0.5, max_pause=10, before_pause=before_pause)


def _wait_for_redis(resources: Resources, log: Any) -> None:
    def before_pause(_attempt: int, exc: BaseException, pause: float) -> None:
        log.warning("redis not reachable yet; retrying", error=str(exc), retry_in_s=round(pause, 2))

    retry.call(
        resources.queue.client(blocking=True).ping,
        on=redis.exceptions.RedisError,
        first_pause=0.5,
        max_pause=10,
        before_pause=before_pause,
    )


def _exit_while_starting(signum: int, _frame: FrameType | None) -> None:
    """SIGTERM/SIGINT before the work loop started: nothing is running, exit cleanly."""
    raise SystemExit(0)


class StoreWorker(SimpleWorker):
    """RQ's SimpleWorker with the store's signal semantics (see the module docstring); its
    jobs run on `runner` (through the job class `job_class(runner)`)."""

    def __init__(self, runner: Runner, *args: Any, **kwargs: Any):
        kwargs["job_class"] = job_class(runner)
        super().__init__(*args, **kwargs)
        self.runner = runner

    def _install_signal_handlers(self) -> None:
        signal.signal(signal.SIGTERM, self.request_stop)
        signal.signal(signal.SIGINT, self._interrupt)

    def _interrupt(self, signum: int, frame: FrameType | None) -> None:
        log = logs.get("worker")
        if getattr(self, "_interrupted", False):
            log.info("already stopping (the running job is being cancelled)")
            return
        self._interrupted = True
        cancelled = self.runner.interrupt(
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
    resources = Resources(settings)
    _wait_for_database(settings, log)
    _wait_for_redis(resources, log)

    runner = Runner(resources, KINDS)
    resources.background.append(Scheduler(resources, KINDS))
    resources.start()
    name = f"store-{socket.gethostname()}-{uuid.uuid4().hex[:8]}"
    worker = StoreWorker(
        runner,
        [resources.queue.rq(blocking=True)],
        connection=resources.queue.client(blocking=True),
        name=name,
        log_job_description=False,
    )
    log.info("worker started", name=name, queue=settings.queue_name)
    try:
        # RQ sets its logger to this level: at INFO its own lines (a job id without run_id,
        # "warm shut down requested") would repeat ours; they show from DEBUG on.
        rq_level = "WARNING" if settings.log_level == "INFO" else settings.log_level
        worker.work(logging_level=rq_level, with_scheduler=False)
    finally:
        resources.close()
        runner.close()
        log.info("worker stopped", name=name)
    return 0


if __name__ == "__main__":
    sys.exit(main())

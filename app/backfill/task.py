"""What a backfill is given by whoever runs it, and the error it raises.

The backfill code knows nothing of the job framework: the backfill job kinds
(app/jobs/backfill.py) build a `Task` from their job context (plain callables and
values) and turn `BackfillError` into the job's error.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any

import psycopg


class BackfillError(Exception):
    """An expected failure of a backfill; the message says what is wrong and what to do."""


@dataclass(frozen=True)
class Task:
    run_id: str  # recorded in checkpoints and job_runs
    # An autocommit session for the load; a cancel or timeout may end it at any moment.
    connect: Callable[[], AbstractContextManager[psycopg.Connection]]
    # An autocommit session a cancel or timeout does not end (to close the job_runs row).
    connect_aside: Callable[[], psycopg.Connection]
    check: Callable[[], None]  # raises when the run must stop; called between steps
    progress: Callable[..., None]  # progress(**fields) for whoever watches the run
    # How a run that ends with this exception is recorded: ("cancelled" | "failed", message).
    outcome: Callable[[BaseException], tuple[str, str]]
    stopping: Callable[[], bool]  # a cancel, timeout or shutdown is stopping the run
    log: Any
    heartbeat_s: float = 5.0  # job_runs heartbeat while the source is slow

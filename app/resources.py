"""The process-wide resources of one process, owned by one object.

`create_app` (API) and the worker's `main` each create one `Resources` from the settings
they read at start, and pass it down. It owns the connection pool, the Redis clients and
the background threads (the API's reaper sweeper, the worker's scheduler). Nothing is
opened or started at import time: the pool opens on first use, and `start()` starts the
background threads (gunicorn calls it in `post_worker_init`, after the fork).
"""

from __future__ import annotations

import threading
from typing import Protocol

from app import db, metrics
from app.config import Settings
from app.queue import JobQueue


class Background(Protocol):
    """A background worker thread of the process (started and stopped with it)."""

    def start(self) -> None: ...

    def stop(self) -> None: ...

    def join(self, timeout: float | None = None) -> None: ...


class Resources:
    def __init__(self, settings: Settings):
        self.settings = settings
        self.pool = db.Pool(settings)
        self.queue = JobQueue(settings)
        self.background: list[Background] = []
        self._started = False
        self._lock = threading.Lock()
        # Shared domain metrics are written to Redis through this process's client.
        metrics.bind(self.queue.client())

    def start(self) -> None:
        """Start the background threads (once)."""
        with self._lock:
            if self._started:
                return
            self._started = True
            for thread in self.background:
                thread.start()

    def close(self) -> None:
        """Stop the background threads, close the pool and the Redis clients."""
        for thread in self.background:
            thread.stop()
        for thread in self.background:
            if self._started:
                thread.join(timeout=5)
        self.pool.close()
        self.queue.close()

"""Fresh databases on the machine's Postgres (TEST_PG_ADMIN_URL), and settings for them."""

from __future__ import annotations

import os
import queue
import threading
import uuid
import warnings
from urllib.parse import urlsplit, urlunsplit

import psycopg

from tests.support.common import TOKEN

ADMIN_URL = os.environ.get("TEST_PG_ADMIN_URL", "postgresql://postgres@127.0.0.1:5432/postgres")


def database_url_for(name: str) -> str:
    parts = urlsplit(ADMIN_URL)
    return urlunsplit(parts._replace(path=f"/{name}"))


def drop_database(name: str) -> None:
    with psycopg.connect(ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


class BackgroundDropper:
    """Drops the tests' databases on a thread of its own.

    DROP DATABASE makes the server checkpoint, which takes seconds on a busy machine; a
    test's teardown hands the name over and the next test starts meanwhile. At most
    `backlog` names wait (then a teardown waits for room), and `close` drops the rest.
    """

    def __init__(self, backlog: int = 4):
        self.names: queue.Queue[str | None] = queue.Queue(maxsize=backlog)
        self.errors: list[str] = []
        self.thread = threading.Thread(target=self._run, name="database-dropper", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while (name := self.names.get()) is not None:
            try:
                drop_database(name)
            except Exception as exc:  # noqa: BLE001 - reported at close, the suite goes on
                self.errors.append(f"{name}: {exc}")

    def drop(self, name: str) -> None:
        self.names.put(name)

    def close(self, timeout: float = 600) -> None:
        self.names.put(None)
        self.thread.join(timeout)
        if self.thread.is_alive() or self.errors:
            warnings.warn(f"test databases left behind: {self.errors or 'the dropper did not finish'}", stacklevel=1)


def create_database(template: str | None = None) -> tuple[str, str]:
    """A new database with a random name (cloned from `template` if given): (name, url)."""
    name = f"mds_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(ADMIN_URL, autocommit=True) as conn:
        if template:
            conn.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template}"')
        else:
            conn.execute(f'CREATE DATABASE "{name}"')
    return name, database_url_for(name)


def make_settings(database_url: str, redis_url: str, **overrides):
    """The store's Settings as a process would read them, from these values only (no .env)."""
    from app.config import load_settings

    env = {"DATABASE_URL": database_url, "REDIS_URL": redis_url, "ADMIN_TOKEN": TOKEN}
    env.update({k: str(v) for k, v in overrides.items()})
    return load_settings(env, dotenv=False)

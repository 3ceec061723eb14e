"""Fresh databases on the machine's Postgres (TEST_PG_ADMIN_URL), and settings for them."""

from __future__ import annotations

import os
import uuid
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

"""Migrations over HTTP: dry run, applying, schema version, stale yoyo locks, yoyo CLI."""

from __future__ import annotations

import subprocess
import sys

import psycopg
import pytest

from app import migrator
from tests.support.common import ROOT


def test_first_migrate_on_an_empty_database_is_pollable_and_applies_everything(service, database_url):
    assert service.get("/schema/version").json() == {
        "version": "uninitialized",
        "applied": 0,
        "pending": list(migrator.disk_ids()),
    }
    doc = service.migrate()
    assert doc["result"]["applied"] == list(migrator.disk_ids())
    version = service.get("/schema/version").json()
    assert version == {"version": migrator.disk_ids()[-1], "applied": len(migrator.disk_ids()), "pending": []}
    with psycopg.connect(database_url) as conn:
        assert conn.execute("SELECT to_regclass('job_runs_summary') IS NOT NULL").fetchone()[0]


def test_dry_run_lists_pending_and_applies_nothing(service):
    doc = service.run_job("/migrate", {"dry_run": True})
    assert doc["result"] == {"dry_run": True, "pending": list(migrator.disk_ids()), "applied": []}
    assert service.get("/schema/version").json()["version"] == "uninitialized"


def test_rerun_applies_nothing_and_metrics_count_applied_migrations(service):
    service.migrate()
    assert service.migrate()["result"]["applied"] == []
    metrics = service.get("/metrics").text
    expected = f"migrations_applied_total {float(len(migrator.disk_ids()))}"
    assert expected in metrics, [line for line in metrics.splitlines() if "migrations" in line]


def test_a_stale_yoyo_lock_left_by_a_killed_migrator_is_cleared(service, database_url):
    service.run_job("/migrate", {"dry_run": True})  # yoyo creates its tables
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("INSERT INTO yoyo_lock (locked, ctime, pid) VALUES (1, now(), 999999)")
    doc = service.migrate()
    assert doc["result"]["applied"]
    with psycopg.connect(database_url) as conn:
        assert conn.execute("SELECT count(*) FROM yoyo_lock").fetchone()[0] == 0


def test_ddl_runs_with_lock_and_statement_timeouts(database_url, redis_url):
    from tests.support.db import make_settings

    settings = make_settings(database_url, redis_url, DB_LOCK_TIMEOUT_MS=1234, DB_STATEMENT_TIMEOUT_MS=56789)
    url = migrator.yoyo_url(settings, "store-job:test")
    with psycopg.connect(url.replace("postgresql+psycopg", "postgresql")) as conn:
        assert conn.execute("SHOW lock_timeout").fetchone()[0] == "1234ms"
        assert conn.execute("SHOW statement_timeout").fetchone()[0] == "56789ms"
        assert conn.execute("SELECT current_setting('application_name')").fetchone()[0] == "store-job:test"


@pytest.mark.slow  # starts processes
def test_the_yoyo_command_line_reads_the_same_directory(migrated_database_url):
    yoyo = [sys.executable, "-c", "import sys; from yoyo.scripts.main import main; sys.exit(main())"]
    url = migrated_database_url.replace("postgresql://", "postgresql+psycopg://")
    result = subprocess.run(
        [*yoyo, "list", "--batch", "--database", url, "migrations"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    for migration_id in migrator.disk_ids():
        assert migration_id in result.stdout
    assert "U " not in result.stdout  # nothing unapplied

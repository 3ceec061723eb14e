"""Logs for people and for machines: LOG_FORMAT, no colour codes inside JSON, polls and
probes at DEBUG, error text on 4xx lines, RQ's job lines never contradict the ledger, and
every job line (the heartbeat thread's included) carries run_id."""

from __future__ import annotations

import json
import logging

import psycopg
import pytest

from app import logs
from app.migrator import MIGRATE_LOCK_KEY
from tests.support.common import wait_for
from tests.support.service import json_lines


@pytest.fixture
def restore_logging():
    yield
    logs.configure("INFO")


def test_json_lines_carry_no_colour_codes_and_rq_job_outcomes_are_dropped(capsys, restore_logging):
    logs.configure("DEBUG", fmt="json")
    rq = logging.getLogger("rq.worker")
    rq.info("Worker %s: %s: %s (%s)", "w1", "\x1b[32mstore\x1b[39;49;00m", "\x1b[34mJob OK\x1b[39;49;00m", "id-1")
    rq.debug("Worker %s: result: %r", "w1", "\x1b[33m'{}'\x1b[39;49;00m")
    rq.warning("Worker %s: cold shut down \x1b[31mnow\x1b[0m", "w1")
    logs.get("test").info("plain \x1b[1mbold\x1b[0m", field="\x1b[32mgreen\x1b[0m")
    lines = json_lines(capsys.readouterr().out)
    assert [line["event"] for line in lines] == ["Worker w1: cold shut down now", "plain bold"]
    assert lines[1]["field"] == "green"
    assert all("\x1b" not in json.dumps(line) for line in lines)


def test_console_format_is_one_readable_line_per_event(capsys, restore_logging):
    logs.configure("INFO", secrets=["s3cr3t-value"], fmt="console")
    logs.get("test").info("job finished", run_id="r-1", status="cancelled", token="s3cr3t-value")
    out = capsys.readouterr().out
    assert "job finished" in out and "run_id=r-1" in out and "status=cancelled" in out
    assert "s3cr3t-value" not in out and not out.lstrip().startswith("{")


@pytest.mark.slow
def test_request_and_job_lines(migrated_database_url, service_factory):
    svc = service_factory(migrated_database_url, env={"LOG_LEVEL": "DEBUG", "LOG_FORMAT": "json"})
    run_id = svc.trigger("/migrate", {"dry_run": True})
    for _ in range(3):
        svc.get(f"/jobs/{run_id}")
    svc.wait_job(run_id)
    assert svc.get("/jobs", params={"status": "done"}).status_code == 400
    svc.get("/health")

    with psycopg.connect(migrated_database_url, autocommit=True) as holder:
        holder.execute("SELECT pg_advisory_lock(%s)", (MIGRATE_LOCK_KEY,))  # the migration waits for it
        held = svc.trigger("/migrate")
        svc.wait_job(held, 20, statuses=("running",))
        assert svc.post(f"/jobs/{held}/cancel").status_code == 202
        assert svc.wait_job(held, 30)["status"] == "cancelled"

    api = json_lines(svc.logs("api.log"))
    requests_ = [line for line in api if line.get("event") == "request"]
    polls = [line for line in requests_ if line["path"] == f"/jobs/{run_id}"]
    assert len(polls) >= 3 and {line["level"] for line in polls} == {"debug"}
    assert {line["level"] for line in requests_ if line["path"] == "/health"} == {"debug"}
    (bad,) = [line for line in requests_ if line["status"] == 400]
    assert bad["level"] == "info" and "unknown status 'done'" in bad["error"]
    triggers = [line for line in requests_ if line["method"] == "POST" and line["path"] == "/migrate"]
    assert triggers and {line["level"] for line in triggers} == {"info"}

    def worker_lines():
        lines = json_lines(svc.logs("worker-0.log"))
        return lines if any(l.get("event") == "job finished" and l.get("run_id") == held for l in lines) else None

    lines = wait_for(worker_lines, 10, message="the cancelled job's last line")
    assert not [l for l in lines if "Job OK" in l.get("event", "")], "rq logged a job as OK"
    stopping = [l for l in lines if l.get("event") == "stopping job"]
    assert stopping and all(l.get("run_id") == held for l in stopping)
    for event in ("job started", "job finished"):
        mine = [l for l in lines if l.get("event") == event]
        assert mine and all(l.get("run_id") for l in mine), event
    finished = next(l for l in lines if l.get("event") == "job finished" and l["run_id"] == held)
    assert finished["status"] == "cancelled"

"""Schedules as data, through the real service: list, pause (no run past next_run_at),
resume, change the period, run now; the environment only gives the initial values."""

from __future__ import annotations

from datetime import datetime

import pytest

from tests.support.common import wait_for

pytestmark = pytest.mark.slow
FIELDS = {"name", "job", "params", "every", "paused", "last_run_id", "last_status", "last_started_at", "next_run_at"}


def scheduled_runs(svc, job: str) -> list[dict]:
    return svc.get("/jobs", params={"job": job, "trigger": "schedule", "limit": 200}).json()["jobs"]


def schedule(svc, name: str) -> dict:
    return {s["name"]: s for s in svc.get("/schedules").json()["schedules"]}[name]


def test_pause_resume_change_and_run_now(database_url, service_factory):
    # the service fixture turns every schedule off; refresh starts on, every 10 s
    svc = service_factory(database_url, env={"REFRESH_SCHEDULE": "10s"})
    svc.migrate()

    listed = {s["name"]: s for s in svc.get("/schedules").json()["schedules"]}
    assert set(listed) == {"retention", "refresh_aggregate", "drift_check", "housekeeping"}
    assert all(set(s) == FIELDS for s in listed.values())
    assert (listed["refresh_aggregate"]["every"], listed["refresh_aggregate"]["paused"]) == ("10 seconds", False)
    assert (
        listed["retention"]["paused"] is True and listed["retention"]["next_run_at"] is None
    )  # RETENTION_SCHEDULE=off
    assert listed["retention"]["every"] == "1 day"  # the built-in period, for when it is resumed
    assert listed["retention"]["params"] == {"table": None, "dry_run": False}

    wait_for(lambda: scheduled_runs(svc, "refresh_aggregate"), 40, 0.5, message="a scheduled refresh")
    refresh = wait_for(
        lambda: (s := schedule(svc, "refresh_aggregate"))["last_status"] == "success" and s,
        30,
        0.5,
        message="the refresh schedule to show its last run",
    )
    assert refresh["last_run_id"] in {j["run_id"] for j in scheduled_runs(svc, "refresh_aggregate")}
    assert refresh["last_started_at"]

    # pause (just after a run, so well before the next is due): nothing runs past next_run_at
    paused = svc.put("/schedules/refresh_aggregate", json={"paused": True})
    assert paused.status_code == 200 and paused.json()["paused"] is True and paused.json()["next_run_at"] is None
    due_at = datetime.fromisoformat(refresh["next_run_at"])
    runs_when_paused = {j["run_id"] for j in scheduled_runs(svc, "refresh_aggregate")}
    # a witness: retention, resumed at 10 s, runs twice; its second run comes after refresh was due
    assert svc.put("/schedules/retention", json={"every": "10s", "paused": False}).json()["every"] == "10 seconds"
    wait_for(
        lambda: [j for j in scheduled_runs(svc, "retention") if datetime.fromisoformat(j["requested_at"]) > due_at],
        60,
        0.5,
        message="the scheduler to tick past the paused schedule's due time",
    )
    assert {j["run_id"] for j in scheduled_runs(svc, "refresh_aggregate")} == runs_when_paused

    # resume: it runs again
    resumed = svc.put("/schedules/refresh_aggregate", json={"paused": False})
    assert resumed.status_code == 200 and resumed.json()["next_run_at"] is not None
    wait_for(
        lambda: {j["run_id"] for j in scheduled_runs(svc, "refresh_aggregate")} - runs_when_paused,
        40,
        0.5,
        message="a scheduled refresh after resuming",
    )

    # run now: a paused schedule too; recorded as the schedule's last run; single flight
    svc.put("/schedules/retention", json={"paused": True, "every": "1 day"})
    resp = svc.post("/schedules/retention/run")
    assert resp.status_code == 202, resp.text
    body = resp.json()
    assert body["job"] == "retention" and body["schedule"] == "retention" and body["run_id"]
    assert resp.headers["Location"] == f"/jobs/{body['run_id']}"
    assert svc.wait_job(body["run_id"])["status"] == "success"
    now = schedule(svc, "retention")
    assert now["last_run_id"] == body["run_id"] and now["paused"] is True and now["every"] == "1 day"

    # bad input
    for name, payload, status, needle in (
        (
            "nope",
            {"paused": True},
            404,
            "no schedule 'nope'; known: drift_check, housekeeping, refresh_aggregate, retention",
        ),
        ("retention", {"every": "1s"}, 400, "at least 10 seconds"),
        ("retention", {"every": "sometimes"}, 400, "every: not an interval"),
        ("retention", {"paused": "yes"}, 400, "paused must be true or false"),
        ("retention", {"cron": "* * * * *"}, 400, "unknown field(s): cron"),
        ("retention", {}, 400, "nothing to change"),
        ("retention", {"paused": None}, 400, "paused must not be null"),
    ):
        resp = svc.put(f"/schedules/{name}", json=payload)
        assert resp.status_code == status and needle in resp.json()["error"], (payload, resp.text)
    assert svc.post("/schedules/nope/run").status_code == 404
    assert svc.post("/schedules/retention/run", json={"table": "bars"}).status_code == 400

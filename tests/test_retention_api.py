"""Retention through the real service: policies, the apply job, bad input, the schedule."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import psycopg
import requests

from app.timeseries import catalog, partitions
from tests.support.bars import bar_series, insert_bars
from tests.support.common import wait_for

UTC = UTC


def test_policies_list_every_time_series_table_with_documented_defaults(migrated_service):
    resp = migrated_service.get("/retention/policies")
    assert resp.status_code == 200
    policies = {p["table"]: p for p in resp.json()["policies"]}
    assert set(policies) == set(catalog.TABLES)
    assert policies["bars_ohlcv"]["retain"] == "1825 days" and policies["bars_ohlcv"]["enabled"] is True
    assert policies["news"]["time_column"] == "published_at" and policies["news"]["chunk_interval"] == "30 days"
    assert policies["fundamentals"]["chunk_interval"] == "90 days"
    assert all(p["backend"] == "postgres" and p["last_applied_at"] is None for p in policies.values())


def test_routes_need_the_admin_token(migrated_service):
    url = migrated_service.url
    assert requests.get(url + "/retention/policies", timeout=5).status_code == 401
    assert requests.put(url + "/retention/policies/bars", json={"retain": "1d"}, timeout=5).status_code == 401
    assert requests.post(url + "/retention/apply", timeout=5).status_code == 401


def test_put_replaces_a_policy(migrated_service):
    resp = migrated_service.put("/retention/policies/signals", {"retain": "12h", "enabled": False})
    assert resp.status_code == 200
    assert resp.json()["retain"] == "12 hours" and resp.json()["enabled"] is False
    resp = migrated_service.put("/retention/policies/signals", {"retain": "PT1H"})
    assert resp.json() | {} and resp.json()["retain"] == "1 hour" and resp.json()["enabled"] is False
    listed = {p["table"]: p for p in migrated_service.get("/retention/policies").json()["policies"]}
    assert listed["signals"]["retain_seconds"] == 3600


BAD_PUTS = [
    ({"retain": "junk"}, "retain"),
    ({"retain": "-5 days"}, "retain"),
    ({"retain": "0 days"}, "retain"),
    ({"retain": "59 minutes"}, "retain"),
    ({"retain": ""}, "retain"),
    ({"retain": 30}, "retain"),
    ({}, "retain"),
    ({"retain": None}, "retain"),
    ({"retain": "30 days", "enabled": "yes"}, "enabled"),
    ({"retain": "30 days", "keep": 1}, "keep"),
]


def test_put_rejects_bad_values_with_400_naming_the_field(migrated_service):
    for body, field in BAD_PUTS:
        resp = migrated_service.put("/retention/policies/bars", body)
        assert resp.status_code == 400, (body, resp.text)
        assert field in resp.json()["error"], body
    for raw in ("[1]", "{oops", '"30 days"'):
        resp = migrated_service.session.put(migrated_service.url + "/retention/policies/bars", data=raw, timeout=5)
        assert resp.status_code == 400 and resp.json()["error"]
    policy = {p["table"]: p for p in migrated_service.get("/retention/policies").json()["policies"]}["bars"]
    assert policy["retain"] == "1825 days"  # nothing was changed by the bad requests


def test_put_and_apply_reject_unknown_tables_with_404(migrated_service):
    for table in ("nope", "store_jobs", "job_runs", "bars_ohlcv_1h"):
        resp = migrated_service.put(f"/retention/policies/{table}", {"retain": "30 days"})
        assert resp.status_code == 404 and "not a time-series table" in resp.json()["error"]
        resp = migrated_service.post("/retention/apply", {"table": table})
        assert resp.status_code == 404, resp.text
    for body in ({"dry_run": "yes"}, {"table": 5}, {"tables": "bars"}):
        resp = migrated_service.post("/retention/apply", body)
        assert resp.status_code == 400 and resp.json()["error"]
    resp = migrated_service.session.post(migrated_service.url + "/retention/apply", data="{oops", timeout=5)
    assert resp.status_code == 400


def test_apply_job_removes_old_rows_and_a_dry_run_only_reports(migrated_service, migrated_database_url):
    database_url = migrated_database_url
    now = datetime.now(UTC).replace(microsecond=0)
    with psycopg.connect(database_url, autocommit=True) as c:
        partitions.ensure_range(c, "bars_ohlcv", now - timedelta(days=61), now)
        rows = bar_series("AAPL", now - timedelta(days=60), now, timedelta(hours=2))
        insert_bars(c, rows)
    assert migrated_service.put("/retention/policies/bars_ohlcv", {"retain": "30 days"}).status_code == 200
    dry = migrated_service.run_job("/retention/apply", {"table": "bars_ohlcv", "dry_run": True})
    report = dry["result"]["tables"]["bars_ohlcv"]
    assert set(dry["result"]["tables"]) == {"bars_ohlcv"} and report["dry_run"] is True
    with psycopg.connect(database_url, autocommit=True) as c:
        assert c.execute("SELECT count(*) FROM bars_ohlcv").fetchone()[0] == len(rows)
    real = migrated_service.run_job("/retention/apply", {"table": "bars_ohlcv"})
    result = real["result"]["tables"]["bars_ohlcv"]
    cutoff = datetime.fromisoformat(result["cutoff"])
    # The job reckons its cutoff from the database's clock (now() - 30 days), so the two runs'
    # cutoffs are seconds apart: each is checked against its own, whatever the date.
    dry_cutoff = datetime.fromisoformat(report["cutoff"])
    assert dry_cutoff <= cutoff
    assert report["rows_removed"] == sum(1 for r in rows if r[3] < dry_cutoff)
    assert result["rows_removed"] == sum(1 for r in rows if r[3] < cutoff)
    # 61 days of partitions, 30 kept: at least four whole weeks end before either cutoff
    assert result["dropped"] >= 4 and set(report["dropped_names"]) <= set(result["dropped_names"])
    with psycopg.connect(database_url, autocommit=True) as c:
        assert c.execute("SELECT min(ts) >= %s FROM bars_ohlcv", (cutoff,)).fetchone()[0]
    policy = {p["table"]: p for p in migrated_service.get("/retention/policies").json()["policies"]}["bars_ohlcv"]
    assert policy["watermark"] == result["cutoff"] and policy["last_applied_at"]
    everything = migrated_service.run_job("/retention/apply", {})
    assert set(everything["result"]["tables"]) == set(catalog.TABLES)
    assert everything["params"] == {"table": None, "dry_run": False}


def test_retention_and_refresh_run_by_themselves_on_their_schedules(database_url, service_factory):
    svc = service_factory(database_url, env={"RETENTION_SCHEDULE": "10s", "REFRESH_SCHEDULE": "10s"})
    svc.migrate()

    def scheduled(kind):
        jobs = svc.get("/jobs", params={"job": kind, "status": "success"}).json()["jobs"]
        return [j for j in jobs if j["trigger"] == "schedule"]

    retention_runs = wait_for(lambda: scheduled("retention"), 40, message="a scheduled retention run")
    refresh_runs = wait_for(lambda: scheduled("refresh_aggregate"), 40, message="a scheduled refresh")
    assert set(retention_runs[0]["result"]["tables"]) == set(catalog.TABLES)
    assert retention_runs[0]["params"] == {"table": None, "dry_run": False}
    assert set(refresh_runs[0]["result"]["aggregates"]) == set(catalog.ROLLUPS)

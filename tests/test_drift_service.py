"""Drift through the real service: gunicorn API + worker, a stand-in registry over HTTP,
events read back from the real Redis stream, metrics from the API's /metrics, /health."""

from __future__ import annotations

import json
from datetime import datetime

import pytest
import redis
import requests
from prometheus_client.parser import text_string_to_metric_families

from app.drift.canonical import sha256
from tests.support.common import wait_for
from tests.support.registry_standin import RegistryStandin

LOCAL = {"telemetry.FeedbackEvent", "telemetry.HealthComponent", "telemetry.HealthStatus"}
REPO = "market-data-store"


@pytest.fixture
def standin():
    server = RegistryStandin().start()
    yield server
    server.stop()


def samples(svc) -> dict[tuple[str, frozenset], float]:
    """Every sample on the API's /metrics as {(name, labels): value}."""
    text = requests.get(svc.url + "/metrics", timeout=10).text
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, frozenset(s.labels.items()))] = s.value
    return out


def sample(svc, name: str, **labels) -> float | None:
    return samples(svc).get((name, frozenset(labels.items())))


def stream(r: redis.Redis, key: str) -> list[dict]:
    entries = r.xrange(key)
    for _id, fields in entries:
        assert list(fields) == [b"data"], fields  # one field per entry, named data
    return [json.loads(fields[b"data"]) for _id, fields in entries]


def registry_component(svc, state: str | None = None) -> tuple[dict | None, dict]:
    """The `registry` component of /health (waiting, through the probe's short cache, for `state`)."""

    def read():
        doc = svc.get("/health").json()
        return next((c for c in doc["components"] if c["name"] == "registry"), None), doc

    if state is None:
        return read()
    return wait_for(
        lambda: (got := read())[0] and got[0]["state"] == state and got, 10, message=f"registry component {state}"
    )


def by_schema(doc: dict) -> dict[str, dict]:
    return {s["schema"]: s for s in doc["schemas"]}


def test_drift_check_end_to_end(database_url, service_factory, redis_url, standin):
    svc = service_factory(database_url, env={"REGISTRY_URL": standin.url, "EVENT_BUS_BACKEND": "redis"})
    r = redis.Redis.from_url(redis_url)
    unmigrated = svc.get("/drift")  # the drift tables do not exist yet
    assert unmigrated.status_code == 200 and unmigrated.json()["checked_at"] is None
    migrate_run = svc.migrate()["run_id"]

    # before any check: the pins, all unknown; no registry component yet
    before = svc.get("/drift").json()
    assert before["checked_at"] is None and set(by_schema(before)) == LOCAL
    assert {s["status"] for s in before["schemas"]} == {"unknown"}
    assert all(len(s["local_sha256"]) == 64 and s["registry_sha256"] is None for s in before["schemas"])
    assert registry_component(svc)[0] is None

    # admin only; no parameters
    assert requests.post(svc.url + "/drift/check", timeout=5).status_code == 401
    assert requests.get(svc.url + "/drift", timeout=5).status_code == 401
    bad = svc.post("/drift/check", json={"track": "v2"})
    assert bad.status_code == 400 and "track" in bad.json()["error"]
    assert svc.get("/drift?track=v9").status_code == 400

    # synced
    job = svc.run_job("/drift/check")
    assert job["job"] == "drift_check" and job["result"]["counts"]["synced"] == 3
    doc = svc.get("/drift").json()
    assert doc["track"] == "v1" and doc["checked_at"] and doc["run_id"] == job["run_id"]
    for s in doc["schemas"]:
        assert s["status"] == "synced" and s["drift_type"] is None and s["last_drift_at"] is None
        assert s["registry_sha256"] == s["local_sha256"] and s["registry_version"] == s["local_version"] == "1.1.2"
    component, health = registry_component(svc, "healthy")
    assert health["state"] == "healthy"
    assert component["details"]["reachable"] == "true" and component["details"]["synced"] == "3"
    assert sample(svc, "store_registry_up", track="v1") == 1.0
    assert not [k for k in samples(svc) if k[0] == "schema_drift_total"]

    # job-end events for migrate and the check, on mdp:store.jobs
    jobs = wait_for(lambda: (e := stream(r, "mdp:store.jobs")) and len(e) >= 2 and e, 30, message="2 job events")
    assert [(e["payload"]["run_id"], e["payload"]["job"], e["payload"]["status"]) for e in jobs] == [
        (migrate_run, "migrate", "success"),
        (job["run_id"], "drift_check", "success"),
    ]
    for e in jobs:
        assert e["meta"]["schema_id"] == "store.JobEvent" and e["key"] == e["payload"]["run_id"]
        assert e["meta"]["hash"] == sha256(e["payload"]) and e["payload"]["duration_s"] >= 0
    assert r.xlen("mdp:telemetry.schema_drift") == 0

    # drift of each kind
    standin.set("telemetry.HealthStatus", "content")
    standin.set("telemetry.FeedbackEvent", "version")
    standin.set("telemetry.HealthComponent", "missing")
    drift_job = svc.run_job("/drift/check")
    doc = svc.get("/drift").json()
    found = by_schema(doc)
    assert (found["telemetry.HealthStatus"]["status"], found["telemetry.HealthStatus"]["drift_type"]) == (
        "drift",
        "content_mismatch",
    )
    assert (found["telemetry.FeedbackEvent"]["status"], found["telemetry.FeedbackEvent"]["drift_type"]) == (
        "drift",
        "version_mismatch",
    )
    assert found["telemetry.FeedbackEvent"]["registry_version"] == "1.2.0"
    assert found["telemetry.HealthComponent"]["status"] == "missing_in_registry"
    assert found["telemetry.HealthComponent"]["registry_sha256"] is None
    drift_at = doc["checked_at"]
    assert all(s["last_drift_at"] == drift_at for s in doc["schemas"])

    events = stream(r, "mdp:telemetry.schema_drift")
    assert len(events) == 3
    for e in events:
        p = e["payload"]
        assert e["meta"]["schema_id"] == "telemetry.SchemaDriftEvent" and e["meta"]["track"] == "v1"
        assert e["meta"]["hash"] == sha256(p) and e["key"] == p["schema_name"]
        row = found[p["schema_name"]]
        assert p["schema"] == p["schema_name"] and p["service"] == p["repo"] == REPO and p["track"] == "v1"
        assert p["drift_type"] == row["drift_type"] and p["enforcement_mode"] in ("warn", "strict")
        assert p["local_sha"] == p["local_sha256"] == row["local_sha256"]
        # the platform's model wants strings: "" for what the registry does not have
        assert p["registry_sha"] == p["registry_sha256"] == (row["registry_sha256"] or "")
        assert (p["local_version"], p["registry_version"]) == (row["local_version"], row["registry_version"] or "")
        assert isinstance(p["detected_at"], float)
    assert {e["payload"]["drift_type"] for e in events} == {
        "content_mismatch",
        "version_mismatch",
        "missing_in_registry",
    }

    metrics = samples(svc)
    for schema in LOCAL:
        labels = frozenset({"repo": REPO, "track": "v1", "schema": schema}.items())
        assert metrics[("schema_drift_total", labels)] == 1.0
        assert metrics[("schema_drift_last_detected_timestamp", labels)] == pytest.approx(
            events[0]["payload"]["detected_at"]
        )
    assert (
        metrics[
            (
                "pulse_publish_total",
                frozenset({"stream": "telemetry.schema_drift", "track": "v1", "outcome": "success"}.items()),
            )
        ]
        == 3.0
    )
    assert (
        metrics[
            ("pulse_publish_latency_ms_count", frozenset({"stream": "telemetry.schema_drift", "track": "v1"}.items()))
        ]
        == 3.0
    )
    assert wait_for(
        lambda: registry_component(svc)[0]["details"]["drift"] == "2", 10, message="drift count in /health"
    )  # drift is alerted on, not a health failure

    # back in sync: statuses follow, the last drift is remembered, no new events
    standin.set_all("synced")
    svc.run_job("/drift/check")
    doc = svc.get("/drift").json()
    assert {s["status"] for s in doc["schemas"]} == {"synced"}
    assert datetime.fromisoformat(doc["checked_at"]) > datetime.fromisoformat(drift_at)
    assert all(s["last_drift_at"] == drift_at for s in doc["schemas"])
    assert r.xlen("mdp:telemetry.schema_drift") == 3

    # unreachable: the job fails saying why; states unknown, never stale; /health degraded but alive and ready
    standin.stop()
    down_job = svc.wait_job(svc.trigger("/drift/check"))
    assert down_job["status"] == "failed", down_job
    assert "could not be reached" in down_job["error"] and "recorded as unknown" in down_job["error"]
    doc = svc.get("/drift").json()
    assert doc["registry_reachable"] is False and "connection failed" in doc["error"]
    for s in doc["schemas"]:
        assert s["status"] == "unknown" and s["registry_sha256"] is None and s["registry_version"] is None
    component, health = registry_component(svc, "degraded")
    assert component["details"]["reachable"] == "false"
    assert health["state"] == "degraded"
    assert svc.get("/healthz").status_code == 200 and svc.get("/readyz").status_code == 200
    assert sample(svc, "store_registry_up", track="v1") == 0.0
    assert r.xlen("mdp:telemetry.schema_drift") == 3
    wait_for(
        lambda: (
            sample(svc, "store_jobs_total", kind="drift_check", status="success") == 3.0
            and sample(svc, "store_jobs_total", kind="drift_check", status="failed") == 1.0
        ),
        30,
        message="4 drift checks counted (the last one failed)",
    )
    wait_for(lambda: r.xlen("mdp:store.jobs") == 5, 30, message="5 job events (migrate + 4 checks)")
    assert drift_job["run_id"] in {e["payload"]["run_id"] for e in stream(r, "mdp:store.jobs")}


def test_scheduled_check_with_pulse_disabled(database_url, service_factory, redis_url, standin):
    """The schedule runs the check by itself; PULSE_ENABLED=false publishes nothing at all."""
    standin.set("telemetry.HealthStatus", "content")
    svc = service_factory(
        database_url,
        env={
            "REGISTRY_URL": standin.url,
            "EVENT_BUS_BACKEND": "redis",
            "PULSE_ENABLED": "false",
            "DRIFT_CHECK_SCHEDULE": "10s",
        },
    )
    svc.migrate()

    doc = wait_for(
        lambda: (d := svc.get("/drift").json())["checked_at"] and d, 40, 0.5, message="a scheduled drift check"
    )
    assert by_schema(doc)["telemetry.HealthStatus"]["status"] == "drift"
    runs = svc.get("/jobs?job=drift_check").json()["jobs"]
    assert runs and runs[-1]["trigger"] == "schedule"
    labels = frozenset({"repo": REPO, "track": "v1", "schema": "telemetry.HealthStatus"}.items())
    assert wait_for(lambda: samples(svc).get(("schema_drift_total", labels)), 30, message="drift counted") >= 1.0

    r = redis.Redis.from_url(redis_url)
    assert r.keys("mdp:*") == []
    assert not [k for k in samples(svc) if k[0] == "pulse_publish_total"]

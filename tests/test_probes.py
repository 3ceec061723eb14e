"""Probes and the health document (CONTRACTS.md §1), against real processes."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import requests

from tests.support.common import free_port, wait_for

SCHEMA = json.loads((Path(__file__).parent / "data" / "telemetry.HealthStatus.json").read_text())


def components(doc: dict) -> dict:
    return {c["name"]: c for c in doc["components"]}


def test_health_document_follows_the_platform_contract(migrated_service):
    for path in ("/health", "/healthz", "/readyz"):
        resp = requests.get(migrated_service.url + path, timeout=5)
        assert resp.status_code == 200
        doc = resp.json()
        jsonschema.validate(doc, SCHEMA)
        assert doc["service"] == "market-data-store" and doc["version"] == "0.5.0"
        assert {"database", "redis", "prometheus", "schema"} <= set(components(doc))
        assert doc["state"] == "healthy", doc


def test_pending_migrations_degrade_health_until_migrate(service):
    doc = requests.get(service.url + "/health", timeout=5).json()
    schema = components(doc)["schema"]
    assert schema["state"] == "degraded" and schema["details"]["version"] == "uninitialized"
    assert doc["state"] == "degraded"
    # the database and Redis answer, so the service is ready even before migrating
    assert requests.get(service.url + "/readyz", timeout=5).status_code == 200
    service.migrate()
    wait_for(
        lambda: requests.get(service.url + "/health", timeout=5).json()["state"] == "healthy",
        30,
        message="health to turn healthy after migrate",
    )


def test_redis_down_keeps_liveness_but_fails_readiness(database_url, service_factory):
    svc = service_factory(database_url, env={"REDIS_URL": f"redis://127.0.0.1:{free_port()}/0"}, workers=0)
    health = requests.get(svc.url + "/health", timeout=5)
    assert health.status_code == 200
    redis_component = components(health.json())["redis"]
    assert redis_component["state"] != "healthy" and redis_component["details"]["reachable"] == "false"
    jsonschema.validate(health.json(), SCHEMA)
    ready = requests.get(svc.url + "/readyz", timeout=5)
    assert ready.status_code == 503
    assert ready.json()["state"] == "degraded"


def test_database_down_keeps_liveness_and_triggers_answer_503(redis_url, service_factory):
    url = f"postgresql://postgres@127.0.0.1:{free_port()}/nowhere"
    svc = service_factory(url, workers=0)
    health = requests.get(svc.url + "/health", timeout=5)
    assert health.status_code == 200
    assert components(health.json())["database"]["state"] == "degraded"
    jsonschema.validate(health.json(), SCHEMA)
    assert requests.get(svc.url + "/readyz", timeout=5).status_code == 503
    resp = svc.post("/migrate")
    assert resp.status_code == 503
    assert "database" in resp.json()["error"]
    assert svc.get("/schema/version").status_code == 503

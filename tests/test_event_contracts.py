"""Every event kind the store publishes decodes with a strict model of the platform's contract.

The models below are JSON Schemas written from the platform's event contract (envelope,
`telemetry.SchemaDriftEvent`) and the store's own `store.JobEvent`: required fields, exact
types (a SHA or version is a string, never null), enums. Events are read back from a
real Redis stream exactly as a consumer receives them (the `data` field of the XADD).
"""

from __future__ import annotations

import json

import pytest
import redis
from jsonschema import Draft202012Validator

from app import pulse
from app.drift.check import Result
from tests.support.db import make_settings

DB = "postgresql://nobody@127.0.0.1:1/none"  # never used: publishing needs no database
SHA = {"type": "string", "pattern": "^([0-9a-f]{64})?$"}  # "" when the registry lacks the schema

ENVELOPE = {
    "type": "object",
    "required": ["ts", "key", "meta", "payload"],
    "additionalProperties": False,
    "properties": {
        "ts": {"type": "number"},
        "key": {"type": ["string", "null"]},
        "meta": {
            "type": "object",
            "required": ["schema_id", "track", "headers", "hash"],
            "properties": {
                "schema_id": {"type": "string"},
                "track": {"enum": ["v1", "v2"]},
                "headers": {"type": "object", "additionalProperties": {"type": "string"}},
                "hash": {"type": ["string", "null"]},
            },
        },
        "payload": {"type": "object"},
    },
}
SCHEMA_DRIFT_EVENT = {  # telemetry.SchemaDriftEvent; extra (older consumers') fields allowed
    "type": "object",
    "required": ["service", "schema_name", "track", "local_sha", "registry_sha", "drift_type", "detected_at"],
    "properties": {
        "service": {"type": "string", "minLength": 1},
        "schema_name": {"type": "string", "minLength": 1},
        "track": {"enum": ["v1", "v2"]},
        "local_sha": SHA,
        "registry_sha": SHA,
        "drift_type": {"enum": ["version_mismatch", "content_mismatch", "missing_in_registry"]},
        "detected_at": {"type": "number"},
        "enforcement_mode": {"enum": ["warn", "strict"]},
        # the names older consumers read: strings as well
        "repo": {"type": "string"},
        "schema": {"type": "string"},
        "local_sha256": SHA,
        "registry_sha256": SHA,
        "local_version": {"type": "string"},
        "registry_version": {"type": "string"},
    },
}
JOB_EVENT = {  # store.JobEvent
    "type": "object",
    "required": ["service", "run_id", "job", "status", "duration_s", "error", "finished_at"],
    "additionalProperties": False,
    "properties": {
        "service": {"type": "string"},
        "run_id": {"type": "string"},
        "job": {"type": "string"},
        "status": {"enum": ["success", "failed", "cancelled"]},
        "duration_s": {"type": "number", "minimum": 0},
        "error": {"type": ["string", "null"]},
        "finished_at": {"type": "number"},
    },
}
MODELS = {pulse.DRIFT_SCHEMA: SCHEMA_DRIFT_EVENT, pulse.JOBS_SCHEMA: JOB_EVENT}


def decode(raw: bytes) -> dict:
    """A consumer's strict decode: the envelope, then the payload by its schema id."""
    envelope = json.loads(raw)
    Draft202012Validator(ENVELOPE).validate(envelope)
    model = MODELS[envelope["meta"]["schema_id"]]  # an unknown schema id is a failure too
    Draft202012Validator(model).validate(envelope["payload"])
    return envelope


def drift_result(status: str, drift_type: str) -> Result:
    missing = drift_type == "missing_in_registry"
    return Result(
        schema=f"telemetry.{drift_type}",
        status=status,
        drift_type=drift_type,
        local_sha256="a" * 64,
        registry_sha256=None if missing else "b" * 64,
        local_version="1.1.2",
        registry_version=None if missing else "1.2.0",
    )


@pytest.fixture
def settings(redis_url):
    return make_settings(DB, redis_url, EVENT_BUS_BACKEND="redis")


def test_each_published_event_kind_decodes_with_the_strict_models(settings, redis_url):
    for drift_type in ("version_mismatch", "content_mismatch", "missing_in_registry"):
        assert pulse.publish_drift(settings, drift_result("drift", drift_type), track="v1", detected_at=1.7e9)
    for status, error in (("success", None), ("failed", "boom"), ("cancelled", "cancelled on request")):
        assert pulse.publish_job_end(settings, run_id="r", job="migrate", status=status, duration_s=1, error=error)

    r = redis.Redis.from_url(redis_url)
    drift = [decode(fields[b"data"]) for _, fields in r.xrange("mdp:telemetry.schema_drift")]
    jobs = [decode(fields[b"data"]) for _, fields in r.xrange("mdp:store.jobs")]
    assert len(drift) == 3 and len(jobs) == 3
    missing = next(e["payload"] for e in drift if e["payload"]["drift_type"] == "missing_in_registry")
    assert missing["registry_sha"] == missing["registry_sha256"] == missing["registry_version"] == ""


def test_the_strict_model_rejects_a_null_sha():
    """The model is strict enough to catch what the platform's model rejected before."""
    from jsonschema import ValidationError

    payload = {
        "service": "market-data-store",
        "schema_name": "telemetry.X",
        "track": "v1",
        "local_sha": "a" * 64,
        "registry_sha": None,
        "drift_type": "missing_in_registry",
        "detected_at": 1.0,
    }
    with pytest.raises(ValidationError, match="None is not of type 'string'"):
        Draft202012Validator(SCHEMA_DRIFT_EVENT).validate(payload)

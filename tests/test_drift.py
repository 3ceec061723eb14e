"""Drift in-process: hashing, pins, the registry client and the checker against a real
HTTP stand-in, persistence in a real Postgres, and the `registry` health component."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import uuid

import psycopg
import pytest

from app.drift import canonical, pins, state
from app.drift.check import check
from app.drift.registry import Registry, RegistryBadResponse, RegistryUnavailable, RegistryUnreachable
from tests.support.common import ROOT
from tests.support.db import make_settings
from tests.support.registry_standin import RegistryStandin

REQUIRED = {"telemetry.HealthStatus", "telemetry.HealthComponent", "telemetry.FeedbackEvent"}
SPEC_DIR = ROOT.parent / "shared" / "spec" / "registry" / "v1"


@pytest.fixture
def standin():
    server = RegistryStandin().start()
    yield server
    server.stop()


def fast_registry(url: str) -> Registry:
    """Short backoff between retries; timeouts generous (they are not under test here: a
    busy machine must not turn a slow answer into a failure)."""
    return Registry(url, connect_timeout=5.0, read_timeout=10.0, retries=2, backoff=0.05)


def run_job(settings, run_id: str | None = None) -> dict:
    """The drift_check job, in this process, with a real JobContext."""
    from app import logs
    from app.jobs import drift
    from app.jobs.base import JobContext

    ctx = JobContext(
        run_id=run_id or str(uuid.uuid4()),
        kind="drift_check",
        settings=settings,
        log=logs.get("test"),
        deadline=time.monotonic() + 60,
    )
    return drift.KIND.run(ctx, drift.KIND.parse({}, settings))


# -- hashing and pins ------------------------------------------------------------------------
def test_canonical_hash_ignores_key_order_and_whitespace_only():
    a = {"b": [1, {"y": 2, "x": "é"}], "a": None}
    b = json.loads('{ "a" : null,\n "b": [1, {"x": "é", "y": 2}] }')
    assert canonical.sha256(a) == canonical.sha256(b)
    assert canonical.canonical(a) == '{"a":null,"b":[1,{"x":"é","y":2}]}'.encode()
    assert canonical.sha256(a) != canonical.sha256({"b": [{"y": 2, "x": "é"}, 1], "a": None})  # list order
    assert canonical.sha256({"v": 1}) != canonical.sha256({"v": "1"})  # type


def test_pins_cover_the_required_schemas_and_match_their_copies():
    pinned = {p.schema: p for p in pins.for_track("v1")}
    assert REQUIRED <= set(pinned)
    for pin in pinned.values():
        content = json.loads(pins.copy_path(pin).read_text())
        assert content["$schema_id"] == pin.schema
        assert canonical.sha256(content) == pin.sha256, pin.schema
        assert content["$core_version"] == pin.version
        assert pin.name == pin.schema + ".schema"


@pytest.mark.slow  # starts processes
@pytest.mark.skipif(not SPEC_DIR.is_dir(), reason=f"{SPEC_DIR} not present")
def test_pins_match_the_platform_schemas():
    out = subprocess.run(
        [sys.executable, "-m", "app.drift.pin", "--check", "--from-dir", str(SPEC_DIR)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert "pins match" in out.stdout


@pytest.mark.slow  # starts processes
def test_repin_from_the_registry_after_an_upgrade(standin, tmp_path):
    contracts = tmp_path / "contracts"
    contracts.mkdir()
    (contracts / "pins.json").write_text((pins.CONTRACTS_DIR / "pins.json").read_text())

    def pin(*args):
        return subprocess.run(
            [
                sys.executable,
                "-m",
                "app.drift.pin",
                "--from-registry",
                standin.url,
                "--contracts",
                str(contracts),
                *args,
            ],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
        )

    same = pin("--check")
    assert same.returncode == 0 and "pins match" in same.stdout, same.stdout + same.stderr

    standin.set("telemetry.FeedbackEvent", "version")
    differ = pin("--check")
    assert differ.returncode == 1
    assert "telemetry.FeedbackEvent: 1.1.2" in differ.stdout and "-> 1.2.0" in differ.stdout
    assert json.loads((contracts / "pins.json").read_text()) == json.loads(
        (pins.CONTRACTS_DIR / "pins.json").read_text()
    )

    wrote = pin()
    assert wrote.returncode == 0, wrote.stdout + wrote.stderr
    repinned = {p.schema: p for p in pins.for_track("v1", contracts)}
    assert set(repinned) == {p.schema for p in pins.for_track("v1")}
    assert repinned["telemetry.FeedbackEvent"].version == "1.2.0"
    assert "added_in_registry" in (contracts / "v1" / "telemetry.FeedbackEvent.json").read_text()
    result = check(fast_registry(standin.url), "v1", list(repinned.values()))
    assert result.counts()["synced"] == 3, result.results


def test_pin_loading_rejects_a_broken_file(tmp_path):
    (tmp_path / "pins.json").write_text('{"pins": [{"schema": "x", "track": "v1", "sha256": "abc"}]}')
    with pytest.raises(pins.PinError, match="pins\\[0\\]"):
        pins.load(tmp_path)
    with pytest.raises(pins.PinError, match="not found"):
        pins.load(tmp_path / "nowhere")


# -- the registry client -------------------------------------------------------------------
def test_client_reads_the_registry_api(standin):
    registry = fast_registry(standin.url)
    assert registry.health() is True
    index = registry.index()
    assert index["tracks"]["v1"]["count"] == 3
    doc = registry.schema("v1", "telemetry.HealthStatus.schema")
    assert doc["$schema_id"] == "telemetry.HealthStatus" and doc["core_version"] == "1.1.2"
    assert registry.schema("v1", "telemetry.Nope.schema") is None
    assert [v["core_version"] for v in registry.versions("v1", "telemetry.HealthStatus.schema")] == ["1.1.2"]


def test_client_retries_transient_failures_with_a_bound(standin):
    registry = fast_registry(standin.url)
    path = "/schemas/v1/telemetry.HealthStatus.schema"
    standin.fail_next(2)
    assert registry.schema("v1", "telemetry.HealthStatus.schema") is not None
    assert standin.hits[path] == 3  # two 503s, then the answer

    standin.set("telemetry.HealthStatus", "error")
    with pytest.raises(RegistryUnavailable, match="3 attempts: HTTP 503") as info:
        registry.schema("v1", "telemetry.HealthStatus.schema")
    assert not isinstance(info.value, RegistryUnreachable)  # it answered, with errors
    assert standin.hits[path] == 6

    standin.set("telemetry.HealthStatus", "missing")
    assert registry.schema("v1", "telemetry.HealthStatus.schema") is None
    assert standin.hits[path] == 7  # a 404 is an answer: no retry


def test_client_reports_unusable_answers(standin):
    standin.set("telemetry.HealthStatus", "garbage")
    with pytest.raises(RegistryBadResponse, match="not JSON"):
        fast_registry(standin.url).schema("v1", "telemetry.HealthStatus.schema")


def test_client_fails_fast_when_nothing_listens(standin):
    standin.stop()
    registry = fast_registry(standin.url)
    with pytest.raises(RegistryUnreachable, match="connection failed"):
        registry.schema("v1", "telemetry.HealthStatus.schema")
    assert registry.health() is False


def test_client_errors_never_show_credentials(standin):
    standin.stop()
    url = standin.url.replace("http://", "http://user:s3cret-pass@")
    with pytest.raises(RegistryUnreachable) as info:
        fast_registry(url).index()
    assert "s3cret-pass" not in str(info.value) and "127.0.0.1" in str(info.value)


# -- the checker -----------------------------------------------------------------------------
def test_check_classifies_each_schema(standin):
    pinned = pins.for_track("v1")
    registry = fast_registry(standin.url)
    synced = check(registry, "v1", pinned)
    assert synced.registry_reachable and synced.counts()["synced"] == 3
    # the registry's own sha256 is over another serialisation: we never compare against it
    doc = registry.schema("v1", "telemetry.HealthStatus.schema")
    assert doc["sha256"] != next(p.sha256 for p in pinned if p.schema == "telemetry.HealthStatus")

    standin.set("telemetry.HealthStatus", "content")
    standin.set("telemetry.FeedbackEvent", "version")
    standin.set("telemetry.HealthComponent", "missing")
    found = {r.schema: r for r in check(registry, "v1", pinned).results}
    hs, fe, hc = found["telemetry.HealthStatus"], found["telemetry.FeedbackEvent"], found["telemetry.HealthComponent"]
    assert (hs.status, hs.drift_type, hs.registry_version) == ("drift", "content_mismatch", "1.1.2")
    assert hs.registry_sha256 == canonical.sha256(standin.served("telemetry.HealthStatus")) != hs.local_sha256
    assert (fe.status, fe.drift_type, fe.local_version, fe.registry_version) == (
        "drift",
        "version_mismatch",
        "1.1.2",
        "1.2.0",
    )
    assert (hc.status, hc.drift_type, hc.registry_sha256) == ("missing_in_registry", "missing_in_registry", None)


def test_unreachable_registry_gives_unknown_never_stale_answers(standin):
    pinned = pins.for_track("v1")
    registry = fast_registry(standin.url)
    assert check(registry, "v1", pinned).counts()["synced"] == 3
    standin.stop()
    down = check(registry, "v1", pinned)
    assert not down.registry_reachable and "connection failed" in down.error
    assert [r.status for r in down.results] == ["unknown"] * 3
    assert all(r.registry_sha256 is None and r.registry_version is None and r.drift_type is None for r in down.results)


def test_a_registry_that_does_not_answer_costs_one_retry_cycle(standin):
    standin.set("telemetry.FeedbackEvent", "hang")  # the first pin fetched
    registry = Registry(standin.url, read_timeout=0.2, retries=1, backoff=0.05)
    result = check(registry, "v1", pins.for_track("v1"))
    assert not result.registry_reachable and "timed out" in result.error
    assert [r.status for r in result.results] == ["unknown"] * 3
    assert standin.hits["/schemas/v1/telemetry.FeedbackEvent.schema"] == 2  # tried twice, then gave up
    assert standin.hits["/schemas/v1/telemetry.HealthStatus.schema"] == 0  # not asked: cut off


def test_one_failing_schema_is_unknown_and_the_rest_still_checked(standin):
    standin.set("telemetry.FeedbackEvent", "error")
    standin.set("telemetry.HealthStatus", "content")
    result = {r.schema: r for r in check(fast_registry(standin.url), "v1", pins.for_track("v1")).results}
    assert result["telemetry.FeedbackEvent"].status == "unknown"
    assert result["telemetry.HealthComponent"].status == "synced"
    assert result["telemetry.HealthStatus"].status == "drift"


# -- the job, persistence and the health component ----------------------------------------------
def test_drift_job_persists_and_keeps_last_drift(standin, migrated_database_url, redis_url):
    from app.pulse import BUS

    BUS.clear()
    settings = make_settings(migrated_database_url, redis_url, REGISTRY_URL=standin.url, EVENT_BUS_BACKEND="inmem")
    with psycopg.connect(migrated_database_url, autocommit=True) as conn:
        assert state.latest(conn, "v1") == (None, [])
        assert state.health_component(conn) is None  # no check has run yet

        first = run_job(settings)
        assert first["counts"] == {"synced": 3, "drift": 0, "missing_in_registry": 0, "unknown": 0}
        assert state.health_component(conn)["state"] == "healthy"

        standin.set("telemetry.HealthStatus", "content")
        run_id = str(uuid.uuid4())
        second = run_job(settings, run_id)
        assert second["events_published"] == 1
        head, rows = state.latest(conn, "v1")
        assert head["run_id"] == run_id
        drifted = next(r for r in rows if r["schema"] == "telemetry.HealthStatus")
        assert drifted["status"] == "drift" and drifted["last_drift_at"] == head["checked_at"]

        events = BUS.events("telemetry.schema_drift")
        assert [e["payload"]["schema_name"] for e in events] == ["telemetry.HealthStatus"]
        assert events[0]["payload"]["drift_type"] == "content_mismatch"

        standin.set("telemetry.HealthStatus", "synced")
        run_job(settings)
        standin.stop()
        from app.jobs.base import JobError

        with pytest.raises(JobError, match=r"could not be reached.*3 of 3 schema\(s\) recorded as unknown"):
            run_job(settings)  # the check's purpose was not achieved: the job fails, saying why
        head, rows = state.latest(conn, "v1")
        assert head["registry_reachable"] is False
        kept = next(r for r in rows if r["schema"] == "telemetry.HealthStatus")
        assert kept["status"] == "unknown" and kept["registry_sha256"] is None
        assert kept["last_drift_at"] == drifted["last_drift_at"]  # history survives synced and unknown

        component = state.health_component(conn)
        assert component["state"] == "degraded"
        assert component["details"]["reachable"] == "false" and component["details"]["unknown"] == "3"
        assert component["details"]["error"].startswith("the last drift check failed")  # no registry URL
        assert all(isinstance(v, str) for v in component["details"].values())
        assert len(BUS.events("telemetry.schema_drift")) == 1  # no event from synced or unknown
        assert conn.execute("SELECT count(*) FROM store_drift_checks").fetchone()[0] == 4


def test_drift_checks_disabled_with_registry_url_off(migrated_database_url, redis_url):
    """REGISTRY_URL=off: the job fails at once saying so (nothing recorded), and the
    registry health component reports the check as disabled without degrading /health."""
    from app import health
    from app.jobs.base import JobError
    from app.resources import Resources

    settings = make_settings(migrated_database_url, redis_url, REGISTRY_URL="off")
    assert settings.drift_enabled is False and make_settings(migrated_database_url, redis_url).drift_enabled
    with pytest.raises(JobError, match=r"drift checks are disabled \(REGISTRY_URL=off\)"):
        run_job(settings)
    with psycopg.connect(migrated_database_url, autocommit=True) as conn:
        assert state.latest(conn, "v1") == (None, [])
    health._cache.clear()
    resources = Resources(settings)
    doc = health.document(resources)
    resources.close()
    registry = next(c for c in doc["components"] if c["name"] == "registry")
    assert registry["state"] == "healthy" and registry["details"]["check"] == "disabled"
    assert "REGISTRY_URL=off" in registry["details"]["reason"]
    health._cache.clear()


def test_health_component_before_migrate_and_on_a_broken_table(database_url):
    with psycopg.connect(database_url, autocommit=True) as conn:
        assert state.health_component(conn) is None  # the table does not exist yet
        conn.execute("CREATE TABLE store_drift_checks (id int)")  # not our shape
        component = state.health_component(conn)
        assert component["name"] == "registry" and component["state"] == "degraded"
        assert "unreadable" in component["details"]["error"]
        assert conn.execute("SELECT 1").fetchone() == (1,)  # the connection is still usable


def test_drift_job_without_pins_for_the_track_fails_clearly(standin, migrated_database_url, redis_url):
    from app.jobs.base import JobError

    settings = make_settings(migrated_database_url, redis_url, REGISTRY_URL=standin.url, REGISTRY_TRACK="v2")
    with pytest.raises(JobError, match="no schemas are pinned for track v2"):
        run_job(settings)

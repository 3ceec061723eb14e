"""Alert rules and the Grafana dashboard: promtool validates and unit-tests the rules,
every alert has a firing unit test, and every expression names metrics the store exposes.

promtool comes from Debian's `prometheus` package. Without it these tests skip locally
and fail under CI (env CI set), so CI cannot pass silently without running them.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess

import pytest
import yaml

from tests.support.common import ROOT

ALERTS = ROOT / "docs" / "alerts"
RULE_FILES = sorted(ALERTS.glob("*.yml"))
TEST_FILES = sorted((ALERTS / "tests").glob("*.test.yml"))
DASHBOARD = ROOT / "docs" / "grafana" / "market-data-store.json"
# names of the store's metrics start with one of these (PromQL functions and labels do not)
STORE_METRIC = re.compile(r"\b((?:store|schema_drift|pulse|http|sink|migrations)_[a-z0-9_]*)\b(?!\s*\()")


def promtool() -> str:
    """promtool's path; fails under CI (a FAILED test, not an error) and skips elsewhere."""
    path = shutil.which("promtool")
    if path is None:
        message = "promtool not found: install Debian's `prometheus` package (apt-get install -y prometheus)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return path


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=120)


def alerts() -> dict[str, dict]:
    out = {}
    for path in RULE_FILES:
        for group in yaml.safe_load(path.read_text())["groups"]:
            for rule in group["rules"]:
                out[rule["alert"]] = rule
    return out


def dashboard_exprs() -> list[str]:
    doc = json.loads(DASHBOARD.read_text())
    return [t["expr"] for p in doc["panels"] for t in p.get("targets", [])]


def exposed_metrics() -> set[str]:
    """Every sample name the store can expose, read from app/metrics.py."""
    from app import metrics

    names = set()
    source = (ROOT / "app" / "metrics.py").read_text()
    declared = re.findall(r'(?:Counter|Histogram|MetricFamily)\(\s*"([a-z0-9_]+)"', source)
    declared += [m.name for m in metrics._shared]
    for name in declared:
        base = name.removesuffix("_total")
        names |= {name, base + "_total", name + "_bucket", name + "_count", name + "_sum"}
    return names


@pytest.mark.slow  # starts processes
def test_rules_are_valid():
    assert RULE_FILES and TEST_FILES
    out = run(promtool(), "check", "rules", *map(str, RULE_FILES))
    assert out.returncode == 0, out.stdout + out.stderr


@pytest.mark.slow  # starts processes
def test_rule_unit_tests_pass():
    out = run(promtool(), "test", "rules", *map(str, TEST_FILES))
    assert out.returncode == 0, out.stdout + out.stderr
    assert out.stdout.count("SUCCESS") == len(TEST_FILES)


def test_every_alert_has_a_firing_unit_test():
    fired = set()
    for path in TEST_FILES:
        for case in yaml.safe_load(path.read_text())["tests"]:
            for check in case.get("alert_rule_test", []):
                if check.get("exp_alerts"):
                    fired.add(check["alertname"])
    assert set(alerts()) - fired == set()


def test_alerts_cover_what_the_issue_asks():
    exprs = {name: rule["expr"] for name, rule in alerts().items()}
    needed = [
        "schema_drift_last_detected_timestamp",
        "schema_drift_total",
        "store_drift_last_check_timestamp",
        'store_jobs_total{kind="drift_check", status="failed"}',
        "store_registry_up",
        'status="failed"',
        "store_workers",
        "store_queue_depth",
        "store_oldest_queued_job_age_seconds",
    ]
    for needle in needed:
        assert any(needle in e for e in exprs.values()), needle
    for name, rule in alerts().items():
        assert rule["labels"]["severity"] in ("warning", "critical"), name
        assert rule["annotations"]["summary"], name


def test_expressions_name_only_metrics_the_store_exposes():
    known = exposed_metrics()
    assert {"schema_drift_total", "store_registry_up", "store_workers", "pulse_publish_latency_ms_bucket"} <= known
    exprs = [r["expr"] for r in alerts().values()] + dashboard_exprs()
    used = {name for e in exprs for name in STORE_METRIC.findall(e)}
    assert used - known == set()
    assert len(used) >= 12


def test_dashboard_is_importable(tmp_path):
    doc = json.loads(DASHBOARD.read_text())
    assert doc["uid"] and doc["title"] and doc["panels"]
    ids = [p["id"] for p in doc["panels"]]
    assert len(ids) == len(set(ids))
    for panel in doc["panels"]:
        if panel["type"] != "row":
            assert panel["datasource"]["uid"] == "${DS_PROMETHEUS}", panel["title"]
            assert panel["targets"], panel["title"]
    # promtool validates every panel query as a recording rule
    rules = [
        {"record": f"dashboard:expr_{i}", "expr": e.replace("$__rate_interval", "5m")}
        for i, e in enumerate(dashboard_exprs())
    ]
    path = tmp_path / "dashboard_rules.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    out = run(promtool(), "check", "rules", str(path))
    assert out.returncode == 0, out.stdout + out.stderr


def test_runbook_links_point_at_runbook_sections():
    for name, rule in alerts().items():
        url = rule["annotations"].get("runbook_url")
        if url is None:
            continue
        path, _, anchor = url.partition("#")
        text = (ROOT / path).read_text()
        headings = {
            re.sub(r"[^a-z0-9 -]", "", h.strip().lower()).replace(" ", "-")
            for h in re.findall(r"^#+ (.+)$", text, re.M)
        }
        assert anchor in headings, (name, anchor)

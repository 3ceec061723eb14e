"""The README stays true: its API table lists every route (with whether it needs the token)
and its configuration table every setting the store reads."""

from __future__ import annotations

import re

import pytest

from tests.support.common import ROOT
from tests.support.db import make_settings

README = (ROOT / "README.md").read_text()


def section(title: str) -> str:
    return README.split(f"\n## {title}\n", 1)[1].split("\n## ", 1)[0]


@pytest.fixture
def app(database_url, redis_url, monkeypatch):
    monkeypatch.setenv("STORE_DISABLE_SWEEPER", "1")
    from app import create_app

    return create_app(make_settings(database_url, redis_url))


def test_the_api_table_lists_every_route_and_its_token(app):
    rows = {}
    for path_cell, method, token in re.findall(r"^\| (`/[^|]+) \| ([A-Z]+) \| (yes|no) \|", section("API"), re.M):
        for path in re.findall(r"`([^`]+)`", path_cell):
            rows[(path, method)] = token
    for rule in app.url_map.iter_rules():
        if rule.endpoint == "static":
            continue
        path = re.sub(r"<(?:[a-z]+:)?([a-zA-Z_]+)>", r"<\1>", rule.rule)
        for method in rule.methods - {"HEAD", "OPTIONS"}:
            assert (path, method) in rows, f"{method} {path} missing from the README's API table"
            protected = _protected(app, path, method)
            assert rows[(path, method)] == ("yes" if protected else "no"), f"{method} {path}: token column"


def _protected(app, path: str, method: str) -> bool:
    """True when the route answers 401 without a token."""
    url = path.replace("<run_id>", "00000000-0000-0000-0000-000000000000").replace("<table>", "bars")
    url = url.replace("<job>", "bars_ohlcv").replace("<name>", "retention")
    return app.test_client().open(url, method=method, json={} if method in ("POST", "PUT") else None).status_code == 401


def test_the_configuration_table_names_every_setting():
    documented = set(re.findall(r"`([A-Z][A-Z0-9_]+)`", section("Configuration")))
    read = set(re.findall(r'"([A-Z][A-Z0-9_]+)" in env', (ROOT / "app" / "config.py").read_text()))
    read |= {"DATABASE_URL", "LOG_FORMAT"}
    read |= set(
        re.findall(r'os\.environ(?:\.get|\.setdefault)\(\s*"([A-Z_]+)"', (ROOT / "gunicorn.conf.py").read_text())
    )
    assert read - documented == set(), f"settings missing from the README: {sorted(read - documented)}"

"""Admin authentication on every admin and job route."""

from __future__ import annotations

import requests

from tests.support.common import TOKEN

ADMIN_ROUTES = [
    ("POST", "/migrate"),
    ("GET", "/jobs"),
    ("GET", "/jobs/00000000-0000-0000-0000-000000000000"),
    ("POST", "/jobs/00000000-0000-0000-0000-000000000000/cancel"),
]


def test_missing_token_is_401_with_a_bearer_challenge(service):
    for method, path in ADMIN_ROUTES:
        resp = requests.request(method, service.url + path, timeout=5)
        assert resp.status_code == 401, (method, path)
        assert resp.headers["WWW-Authenticate"].startswith("Bearer")
        assert "token" in resp.json()["error"]


def test_wrong_token_is_401_invalid_token(service):
    for method, path in ADMIN_ROUTES:
        resp = requests.request(
            method, service.url + path, headers={"Authorization": "Bearer nope-nope-nope"}, timeout=5
        )
        assert resp.status_code == 401
        assert 'error="invalid_token"' in resp.headers["WWW-Authenticate"]
        assert resp.json() == {"error": "invalid token"}


def test_public_routes_need_no_token(migrated_service):
    for path in ("/health", "/healthz", "/readyz", "/metrics", "/schema/version"):
        assert requests.get(migrated_service.url + path, timeout=5).status_code == 200, path


def test_the_token_is_never_logged_or_stored(migrated_service):
    doc = migrated_service.run_job("/migrate", {"dry_run": True})
    requests.get(migrated_service.url + "/jobs", headers={"Authorization": "Bearer wrong-token-xyz"}, timeout=5)
    assert TOKEN not in migrated_service.all_logs()
    assert TOKEN not in str(migrated_service.get(f"/jobs/{doc['run_id']}").json())

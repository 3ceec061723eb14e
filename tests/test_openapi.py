"""The OpenAPI document (GET /openapi.json) matches the API that is actually served."""

from __future__ import annotations

import json
import re

import pytest

from tests.support.common import TOKEN
from tests.support.db import make_settings

IGNORED_METHODS = {"HEAD", "OPTIONS"}
HTTP_METHODS = {"get", "put", "post", "delete", "patch", "head", "options", "trace"}


@pytest.fixture
def app(database_url, redis_url, monkeypatch):
    monkeypatch.setenv("STORE_DISABLE_SWEEPER", "1")
    from app import create_app

    return create_app(make_settings(database_url, redis_url))


@pytest.fixture
def document(app):
    resp = app.test_client().get("/openapi.json")  # no auth
    assert resp.status_code == 200
    assert resp.content_type.startswith("application/json")
    return resp.get_json()


def _routes(app) -> set[tuple[str, str]]:
    out = set()
    for rule in app.url_map.iter_rules():
        if rule.endpoint == "static":
            continue
        path = re.sub(r"<(?:[a-z]+:)?([a-zA-Z_]+)>", r"{\1}", rule.rule)
        out.update((path, m.lower()) for m in rule.methods - IGNORED_METHODS)
    return out


def _operations(document) -> set[tuple[str, str]]:
    return {(path, method) for path, item in document["paths"].items() for method in item if method in HTTP_METHODS}


def test_document_paths_and_methods_equal_the_route_map(app, document):
    served, documented = _routes(app), _operations(document)
    assert served - documented == set(), "routes missing from app/api/openapi.yaml"
    assert documented - served == set(), "documented operations the API does not serve"


def test_document_is_openapi_3_and_every_reference_resolves(document):
    import schemathesis

    assert document["openapi"].startswith("3.")
    from app.config import VERSION

    assert document["info"]["version"] == VERSION
    schema = schemathesis.openapi.from_dict(document)
    operations = [op.ok() for op in schema.get_all_operations()]
    assert len(operations) == len(_operations(document))
    refs = set(re.findall(r'"\$ref": "([^"]+)"', json.dumps(document)))
    for ref in refs:
        node = document
        for part in ref.lstrip("#/").split("/"):
            node = node[part]  # KeyError: a dangling $ref


def test_job_kinds_and_statuses_are_the_ledgers(document):
    from app.jobs import KINDS, ledger

    schemas = document["components"]["schemas"]
    assert sorted(schemas["JobKind"]["enum"]) == sorted(KINDS)
    assert schemas["JobStatus"]["enum"] == list(ledger.STATUSES)


def test_documented_security_is_what_the_api_enforces(app, document):
    """Operations with `security` answer 401 without a token; the others never ask for one."""
    client = app.test_client()
    for path, method in sorted(_operations(document)):
        op = document["paths"][path][method]
        url = path.replace("{run_id}", "00000000-0000-0000-0000-000000000000")
        resp = client.open(url, method=method.upper(), json={} if method == "post" else None)
        if op.get("security"):
            assert resp.status_code == 401, (method, path, resp.status_code)
            assert resp.headers["WWW-Authenticate"].startswith("Bearer")
            authed = client.open(url, method=method.upper(), headers={"Authorization": f"Bearer {TOKEN}"})
            assert authed.status_code != 401, (method, path)
        else:
            assert resp.status_code != 401, (method, path, resp.status_code)


def test_documented_names_are_the_catalogs(document):
    from app.timeseries import catalog

    schemas = document["components"]["schemas"]
    assert sorted(schemas["TableName"]["enum"]) == sorted(catalog.TABLES)
    assert sorted(schemas["AggregateName"]["enum"]) == sorted(catalog.AGGREGATE_NAMES)

"""Hostile and broken input against the live service (gunicorn + worker): always a 4xx
JSON error, never a 5xx, never authenticated by accident, never a change in the database.

Operations come from the served OpenAPI document, so a new route is covered as soon as
it is documented (tests/test_openapi.py keeps the document equal to the route map).
"""

from __future__ import annotations

import base64
import http.client
import json
import shutil
from urllib.parse import quote

import psycopg
import pytest
import requests
from psycopg import sql

from tests.support.common import TOKEN
from tests.support.db import create_database, drop_database
from tests.support.service import Service

NIL_UUID = "00000000-0000-0000-0000-000000000000"
pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]  # one gunicorn + worker for the module


# -- the service and the document ------------------------------------------------------------
@pytest.fixture(scope="module")
def svc(redis_server):
    if redis_server.proc is None or redis_server.proc.poll() is not None:
        redis_server.start()
    name, url = create_database()
    service = Service(url, redis_server.url).start()
    service.database_url = url
    service.migrate()
    # The schedule rows are created on first use (the scheduler's next tick or any
    # /schedules request, which the injection sweep makes): create them now, so the
    # sweep's before/after snapshots compare the steady state.
    assert service.get("/schedules").status_code == 200
    yield service
    service.stop()
    shutil.rmtree(service.logdir, ignore_errors=True)
    drop_database(name)


@pytest.fixture(scope="module")
def doc(svc):
    return requests.get(svc.url + "/openapi.json", timeout=5).json()


def _resolve(doc: dict, node: dict) -> dict:
    while "$ref" in node:
        target = doc
        for part in node["$ref"].lstrip("#/").split("/"):
            target = target[part]
        node = target
    return node


def _params(doc: dict, op: dict, where: str) -> list[dict]:
    return [p for p in (_resolve(doc, p) for p in op.get("parameters", [])) if p["in"] == where]


def _sample(doc: dict, schema: dict):
    schema = _resolve(doc, schema)
    if "enum" in schema:
        return schema["enum"][0]
    if "example" in schema:
        return schema["example"]
    if schema.get("format") == "uuid":
        return NIL_UUID
    return {"boolean": False, "integer": 1, "object": {}}.get(schema.get("type"), "x")


def _operations(doc: dict, admin: bool | None = None):
    """(METHOD, path template, operation) for every documented operation."""
    for path, item in doc["paths"].items():
        for method, op in item.items():
            if admin is None or bool(op.get("security")) == admin:
                yield method.upper(), path, op


def _url_path(doc: dict, path: str, op: dict, override: dict | None = None) -> str:
    for p in _params(doc, op, "path"):
        value = (override or {}).get(p["name"], _sample(doc, p["schema"]))
        path = path.replace("{" + p["name"] + "}", value)
    return path


def _json_schema(doc: dict, op: dict) -> dict | None:
    """The schema of the operation's JSON body (None: it takes none, or not JSON: an upload)."""
    content = op.get("requestBody", {}).get("content", {})
    return _resolve(doc, content["application/json"]["schema"]) if "application/json" in content else None


def _valid_body(doc: dict, op: dict) -> dict | None:
    """A body with every required field set to a valid sample (None: no JSON body)."""
    schema = _json_schema(doc, op)
    if schema is None:
        return None
    return {name: _sample(doc, schema["properties"][name]) for name in schema.get("required", [])}


def _body_ops(doc: dict):
    return [(m, p, op) for m, p, op in _operations(doc, admin=True) if _json_schema(doc, op) is not None]


def _assert_json_error(resp, *codes: int) -> dict:
    assert resp.status_code in codes, (resp.request.method, resp.url, resp.status_code, resp.text[:300])
    assert resp.headers["Content-Type"].startswith("application/json"), resp.text[:300]
    body = resp.json()
    assert isinstance(body["error"], str) and body["error"]
    return body


def _raw(svc, method: str, target: str, headers: dict | None = None, body: bytes | None = None):
    """Send exactly these bytes (no client-side normalisation of the path or headers)."""
    conn = http.client.HTTPConnection("127.0.0.1", svc.port, timeout=10)
    try:
        conn.putrequest(method, target, skip_accept_encoding=True)
        for key, value in (headers or {}).items():
            conn.putheader(key, value)
        if body is not None:
            conn.putheader("Content-Length", str(len(body)))
        conn.endheaders(body)
        resp = conn.getresponse()
        return resp.status, dict(resp.getheaders()), resp.read()
    finally:
        conn.close()


def _snapshot(database_url: str) -> dict:
    """Every table and view of the store's schema, and every table's rows (the DB is small)."""
    out = {}
    with psycopg.connect(database_url, autocommit=True) as conn:
        out["relations"] = conn.execute(
            """SELECT c.relname, c.relkind FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
               WHERE n.nspname = current_schema() AND c.relkind IN ('r', 'v', 'm', 'p') ORDER BY 1"""
        ).fetchall()
        for name, kind in out["relations"]:
            if kind in ("r", "p"):
                out[name] = sorted(map(repr, conn.execute(sql.SQL("SELECT * FROM {}").format(sql.Identifier(name)))))
    return out


# -- tokens --------------------------------------------------------------------------------------
def _every_admin_request(svc, doc, **kw):
    for method, path, op in _operations(doc, admin=True):
        body = _valid_body(doc, op)
        url = svc.url + _url_path(doc, path, op)
        yield method, path, requests.request(method, url, json=body, timeout=10, **kw)


def test_missing_token_is_401_with_a_bearer_challenge_on_every_admin_route(svc, doc):
    for method, path, resp in _every_admin_request(svc, doc):
        _assert_json_error(resp, 401)
        assert resp.headers["WWW-Authenticate"].startswith("Bearer"), (method, path)


MALFORMED = [
    "Bearer",
    "Bearer ",
    f"Token {TOKEN}",
    TOKEN,
    f"Bearer {TOKEN} {TOKEN}",
    f"Bearer {TOKEN}x",
    f"Bearer {TOKEN[:-1]}",
    f"Bearer:{TOKEN}",
    f"Bearer {TOKEN.upper()}",
    "Bearer null",
    "Bearer undefined",
    f"Bearer {quote(TOKEN + chr(10))}",
]


@pytest.mark.parametrize("value", MALFORMED, ids=range(len(MALFORMED)))
def test_malformed_authorization_is_401(svc, doc, value):
    for _method, _path, resp in _every_admin_request(svc, doc, headers={"Authorization": value}):
        _assert_json_error(resp, 401)
        assert resp.headers["WWW-Authenticate"].startswith("Bearer")


@pytest.mark.parametrize(
    "value",
    [
        f"Bearer {TOKEN}é".encode("latin-1"),
        f"Bearer {TOKEN}é".encode(),
        "Bearer токен-администратора".encode(),
        "Bearer 🔑🔑🔑🔑🔑🔑🔑🔑".encode(),
        b"Bearer \xff\xfe\xfd\xfc\xfb\xfa\xf9\xf8",
    ],
    ids=["latin1", "utf8-suffix", "cyrillic", "emoji", "invalid-utf8"],
)
def test_non_ascii_tokens_are_401(svc, doc, value):
    for method, path, op in _operations(doc, admin=True):
        status, headers, body = _raw(svc, method, _url_path(doc, path, op), {"Authorization": value})
        assert status == 401, (method, path, status, body[:200])
        assert json.loads(body)["error"]


def test_control_characters_in_the_token_are_rejected(svc):
    for value in (f"Bearer {TOKEN}\x00", f"Bearer \x7f{TOKEN}", f"Bearer {TOKEN}\x1b[2J"):
        status, headers, body = _raw(svc, "GET", "/jobs", {"Authorization": value.encode()})
        assert status in (400, 401), (value, status, body[:200])
        assert headers["Content-Type"].startswith("application/json")
        assert json.loads(body)["error"]


def test_long_tokens_never_authenticate(svc):
    # 7 kB fits gunicorn's header limit: the API compares and refuses it.
    resp = requests.get(svc.url + "/jobs", headers={"Authorization": "Bearer " + "a" * 7 * 1024}, timeout=10)
    _assert_json_error(resp, 401)
    # 10 kB (and the real token padded to 10 kB) is refused by gunicorn itself, as JSON too.
    for token in ("a" * 10 * 1024, TOKEN + "a" * 10 * 1024, TOKEN + " " * 10 * 1024):
        resp = requests.get(svc.url + "/jobs", headers={"Authorization": "Bearer " + token}, timeout=10)
        _assert_json_error(resp, 400, 401, 431)


@pytest.mark.parametrize(
    "name", ["token", "access_token", "admin_token", "ADMIN_TOKEN", "auth", "bearer", "Authorization", "api_key"]
)
def test_token_in_the_query_string_does_not_authenticate(svc, doc, name):
    for method, path, op in _operations(doc, admin=True):
        target = _url_path(doc, path, op) + f"?{name}={quote(TOKEN)}&{name}={quote('Bearer ' + TOKEN)}"
        resp = requests.request(method, svc.url + target, json=_valid_body(doc, op), timeout=10)
        _assert_json_error(resp, 401)


@pytest.mark.parametrize(
    "credentials",
    [f"{TOKEN}:", f":{TOKEN}", f"admin:{TOKEN}", f"{TOKEN}:{TOKEN}", TOKEN],
    ids=["user", "password", "admin-password", "both", "no-colon"],
)
def test_basic_auth_does_not_authenticate(svc, doc, credentials):
    value = "Basic " + base64.b64encode(credentials.encode()).decode()
    for _method, _path, resp in _every_admin_request(svc, doc, headers={"Authorization": value}):
        _assert_json_error(resp, 401)
        assert resp.headers["WWW-Authenticate"].startswith("Bearer")


def test_the_real_token_works_so_the_cases_above_mean_something(svc):
    assert svc.get("/jobs").status_code == 200


# -- sizes and shapes ----------------------------------------------------------------------------
def test_nine_kilobyte_headers_are_431_json(svc):
    for path, headers in (("/health", {}), ("/jobs", {"Authorization": f"Bearer {TOKEN}"})):
        for name in ("X-Padding", "Idempotency-Key", "X-Request-ID", "Cookie"):
            resp = requests.get(svc.url + path, headers={**headers, name: "p" * 9 * 1024}, timeout=10)
            _assert_json_error(resp, 431)
    too_many = {f"X-Header-{i}": "x" for i in range(150)}
    _assert_json_error(requests.get(svc.url + "/health", headers=too_many, timeout=10), 431)
    # the service is unharmed
    assert requests.get(svc.url + "/health", timeout=10).status_code == 200


def _chunks(total: int, size: int = 64 * 1024):
    sent = 0
    while sent < total:
        yield b" " * min(size, total - sent)
        sent += size
    yield b"{}"


def test_chunked_bodies_over_one_mebibyte_are_413_on_every_body_route(svc, doc):
    before = _snapshot(svc.database_url)
    for method, path, op in _body_ops(doc):
        resp = svc.session.request(
            method,
            svc.url + _url_path(doc, path, op),
            data=_chunks(1024 * 1024 + 1),
            headers={"Content-Type": "application/json"},
            timeout=30,
        )
        body = _assert_json_error(resp, 413)
        assert "too large" in body["error"]
    assert _snapshot(svc.database_url) == before


def test_json_nested_ten_thousand_levels_is_400_on_every_body_route(svc, doc):
    before = _snapshot(svc.database_url)
    for nested in ('{"a":' * 10_000 + "1" + "}" * 10_000, "[" * 10_000 + "]" * 10_000):
        for method, path, op in _body_ops(doc):
            resp = svc.session.request(
                method,
                svc.url + _url_path(doc, path, op),
                data=nested,
                headers={"Content-Type": "application/json"},
                timeout=30,
            )
            _assert_json_error(resp, 400)
    assert _snapshot(svc.database_url) == before


@pytest.mark.parametrize(
    "body",
    [
        '{"dry_run": tru',
        "{'dry_run': true}",
        "[]",
        '"x"',
        "1",
        "null",
        '{"a":1}{',
        "\xff\xfe",
        '{"dry_run": NaN}',
        '{"dry_run": true, "dry_run": 1}',
    ],
    ids=range(10),
)
def test_malformed_json_is_400_on_every_body_route(svc, doc, body):
    for method, path, op in _body_ops(doc):
        resp = svc.session.request(
            method,
            svc.url + _url_path(doc, path, op),
            data=body.encode("utf-8", "surrogatepass"),
            headers={"Content-Type": "application/json"},
            timeout=10,
        )
        _assert_json_error(resp, 400)


def test_unknown_fields_are_400_naming_the_field(svc, doc):
    before = _snapshot(svc.database_url)
    for method, path, op in _body_ops(doc):
        body = {**_valid_body(doc, op), "no_such_field": 1}
        resp = svc.session.request(method, svc.url + _url_path(doc, path, op), json=body, timeout=10)
        error = _assert_json_error(resp, 400)["error"]
        assert "no_such_field" in error, (method, path, error)
    assert _snapshot(svc.database_url) == before


def test_odd_values_in_documented_fields_are_4xx_not_5xx(svc, doc):
    cases = [
        ("GET", "/jobs?limit=%C2%B2", None),
        ("GET", "/jobs?limit=%D9%A3", None),
        ("GET", "/jobs?limit=-1", None),
        ("GET", "/jobs?limit=1e3", None),
        ("GET", "/jobs?limit=201", None),
        ("GET", "/jobs?limit=", None),
        ("GET", "/jobs?job=%00", None),
        ("GET", "/jobs?status=%FF", None),
        ("GET", "/drift?track=v3", None),
        ("PUT", "/retention/policies/bars", {"retain": "999999999 weeks"}),
        ("PUT", "/retention/policies/bars", {"retain": "P999999999W"}),
        ("PUT", "/retention/policies/bars", {"retain": 30}),
        ("PUT", "/retention/policies/bars", {"retain": "30 days", "enabled": "yes"}),
        ("PUT", "/retention/policies/bars", {"retain": "1 s"}),
        ("POST", "/refresh/aggregate", {"start": "0001-01-01T00:00:00+01:00"}),
        ("POST", "/refresh/aggregate", {"start": "2020-01-01T00:00:00Z", "end": "9999-12-31T23:59:59-23:59"}),
        ("POST", "/refresh/aggregate", {"start": "2020-02-30T00:00:00Z"}),
        ("POST", "/refresh/aggregate", {"start": 1700000000}),
        ("POST", "/migrate", {"dry_run": "true"}),
        ("POST", "/migrate", {"dry_run": None}),
        ("POST", "/retention/apply", {"table": ["bars"]}),
        ("POST", "/retention/apply", {"dry_run": 1}),
    ]
    documented = {(m, p) for m, p, _ in _operations(doc)}
    before = _snapshot(svc.database_url)
    for method, target, body in cases:
        template = next((p for m, p in documented if m == method and _matches(p, target.split("?")[0])), None)
        if template is None:
            continue  # a route this build does not serve
        resp = svc.session.request(method, svc.url + target, json=body, timeout=10)
        _assert_json_error(resp, 400, 404)
    assert _snapshot(svc.database_url) == before


def _matches(template: str, path: str) -> bool:
    a, b = template.strip("/").split("/"), path.strip("/").split("/")
    return len(a) == len(b) and all(x == y or x.startswith("{") for x, y in zip(a, b, strict=True))


# -- injection -------------------------------------------------------------------------------------
INJECTIONS = [
    "'; DROP TABLE store_jobs; --",
    "bars; DELETE FROM store_retention_policies",
    "bars' OR '1'='1",
    '"bars"; TRUNCATE store_jobs CASCADE; --',
    "bars UNION SELECT * FROM pg_shadow",
    "../../../../etc/passwd",
    "..\\..\\..\\windows\\win.ini",
    "bars/../fundamentals",
    "bars\x00",
    "$(touch /tmp/mds-pwned)",
    "{{7*7}}",
    "%s%s%s%n",
    "x" * 5000,
]


def _path_targets(doc: dict):
    """Every (method, raw request target, body) with a hostile value in one path parameter."""
    for method, path, op in _operations(doc, admin=True):
        for param in _params(doc, op, "path"):
            for payload in INJECTIONS:
                for encoded in (quote(payload, safe=""), quote(payload, safe="/\\'\";$(){}*% ")):
                    target = _url_path(doc, path, op, {param["name"]: encoded.replace(" ", "%20")})
                    yield method, target, _valid_body(doc, op)


def test_injection_in_every_path_parameter_is_4xx_and_changes_nothing(svc, doc):
    before = _snapshot(svc.database_url)
    auth = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}
    seen = 0
    for method, target, body in _path_targets(doc):
        status, headers, raw = _raw(svc, method, target, auth, json.dumps(body).encode() if body is not None else None)
        assert 400 <= status < 500, (method, target, status, raw[:200])
        assert headers["Content-Type"].startswith("application/json"), (target, raw[:200])
        assert json.loads(raw)["error"]
        seen += 1
    assert seen >= len(INJECTIONS) * 2 * 3  # run_id (get, cancel) and table at least
    assert _snapshot(svc.database_url) == before


def _name_fields(doc: dict):
    """(method, path, op, where, name) for every string query parameter and body field."""
    for method, path, op in _operations(doc, admin=True):
        for p in _params(doc, op, "query"):
            schema = _resolve(doc, p["schema"])
            alternatives = [_resolve(doc, a) for a in schema.get("anyOf", [schema])]
            if any(a.get("type") == "string" or "enum" in a for a in alternatives):
                yield method, path, op, "query", p["name"]
        schema = _json_schema(doc, op)
        if schema is not None:
            for name, prop in schema.get("properties", {}).items():
                if _resolve(doc, prop).get("type") == "string":
                    yield method, path, op, "body", name


def test_injection_in_every_name_field_is_4xx_and_changes_nothing(svc, doc):
    before = _snapshot(svc.database_url)
    fields = list(_name_fields(doc))
    assert {("query", "job"), ("query", "status"), ("body", "table"), ("body", "name")} <= {
        (w, n) for *_, w, n in fields
    }
    for method, path, op, where, name in fields:
        for payload in INJECTIONS:
            url = svc.url + _url_path(doc, path, op)
            body = _valid_body(doc, op)
            if where == "query":
                resp = svc.session.request(method, url, params={name: payload}, json=body, timeout=10)
            else:
                resp = svc.session.request(method, url, json={**(body or {}), name: payload}, timeout=10)
            _assert_json_error(resp, 400, 404, 414)  # 414: the 5 kB value in a query string
    assert _snapshot(svc.database_url) == before


def test_injection_in_headers_is_inert(svc):
    before = _snapshot(svc.database_url)
    hostile_id = "x'; DROP TABLE store_jobs; --"
    resp = svc.get("/jobs?limit=1", headers={"X-Request-ID": hostile_id})
    assert resp.status_code == 200 and resp.headers["X-Request-ID"] != hostile_id
    assert _snapshot(svc.database_url) == before
    # A hostile Idempotency-Key with spaces is refused; without spaces it is just a key.
    _assert_json_error(svc.post("/migrate", {"dry_run": True}, headers={"Idempotency-Key": hostile_id}), 400)
    key = "';DROP/**/TABLE/**/store_jobs;--"
    first = svc.post("/migrate", {"dry_run": True}, headers={"Idempotency-Key": key})
    again = svc.post("/migrate", {"dry_run": True}, headers={"Idempotency-Key": key})
    assert first.status_code == again.status_code == 202 and first.json()["run_id"] == again.json()["run_id"]
    svc.wait_job(first.json()["run_id"])
    after = _snapshot(svc.database_url)
    assert after["relations"] == before["relations"]
    assert len(after["store_jobs"]) == len(before["store_jobs"]) + 1

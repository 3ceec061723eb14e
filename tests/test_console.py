"""The console's files (GET /ui/): served publicly with a strict CSP, nothing else reachable,
and written so that API values can only ever become text. The browser tests
(tests/test_console_browser.py) drive the page itself."""

from __future__ import annotations

import re

import pytest

from tests.support.common import ROOT
from tests.support.db import create_database, drop_database, make_settings

UI = ROOT / "app" / "ui"


@pytest.fixture(scope="module")
def client(redis_server):
    """One app for the module: serving files touches neither the database nor Redis."""
    from app import create_app

    mp = pytest.MonkeyPatch()
    mp.setenv("STORE_DISABLE_SWEEPER", "1")
    name, url = create_database()
    try:
        yield create_app(make_settings(url, redis_server.url)).test_client()
    finally:
        mp.undo()
        drop_database(name)


@pytest.mark.parametrize(
    ("path", "mimetype"),
    [("/ui/", "text/html"), ("/ui/console.js", "text/javascript"), ("/ui/console.css", "text/css")],
)
def test_files_are_public_with_a_strict_policy(client, path, mimetype):
    resp = client.get(path)  # no token: the page holds no data
    assert resp.status_code == 200 and resp.mimetype == mimetype
    csp = resp.headers["Content-Security-Policy"]
    assert "script-src 'self';" in csp and "style-src 'self';" in csp and "default-src 'none'" in csp
    assert "unsafe-inline" not in csp and "unsafe-eval" not in csp and "http" not in csp
    assert "frame-ancestors 'none'" in csp and "form-action 'none'" in csp
    assert resp.headers["X-Content-Type-Options"] == "nosniff"
    assert resp.headers["Referrer-Policy"] == "no-referrer"
    assert "Set-Cookie" not in resp.headers


@pytest.mark.parametrize(
    "path",
    [
        "/ui/nope.js",
        "/ui/..%2Fapi%2Fui.py",
        "/ui/%2E%2E",
        "/ui/..%5C..%5Cconfig.py",
        "/ui/index.html%00.js",
        "/ui/ui.py",
        "/ui/.hidden",
        "/ui/" + "a" * 5000 + ".js",
    ],
)
def test_nothing_but_the_console_files_is_served(client, path):
    resp = client.get(path)
    assert resp.status_code == 404, (path, resp.status_code)
    assert resp.is_json and resp.get_json()["error"]


def test_ui_without_the_slash_redirects_to_the_page(client):
    resp = client.get("/ui")
    assert resp.status_code in (301, 308) and resp.headers["Location"].endswith("/ui/")


def test_the_page_has_no_inline_script_style_or_handlers():
    html = (UI / "index.html").read_text()
    for tag in re.findall(r"<script\b[^>]*>(.*?)</script>", html, re.S):
        assert tag.strip() == "", "inline script"
    assert "<style" not in html and not re.search(r"\sstyle=", html)
    assert not re.search(r"\son[a-z]+=", html), "inline event handler"
    assert sorted(re.findall(r'(?:src|href)="([^"#]+)"', html)) == ["console.css", "console.js", "data:,"]
    assert "http://" not in html and "https://" not in html  # no CDN, nothing from elsewhere


def test_the_script_inserts_text_only_and_keeps_the_token_out_of_cookies_and_urls():
    js = (UI / "console.js").read_text()
    for sink in (
        "innerHTML",
        "outerHTML",
        "insertAdjacentHTML",
        "document.write",
        "eval(",
        "new Function",
        'setAttribute("on',
    ):
        assert sink not in js, sink
    assert "document.cookie" not in js and "localStorage" not in js
    assert "sessionStorage" in js and '"Bearer "' in js
    assert not re.search(r"[?&](token|access_token)=", js)
    css = (UI / "console.css").read_text()
    assert "@import" not in css and "url(" not in css


def test_the_documented_files_are_the_console_files(client):
    doc = client.get("/openapi.json").get_json()
    (param,) = doc["paths"]["/ui/{name}"]["get"]["parameters"]
    assert sorted(param["schema"]["enum"]) == sorted(p.name for p in UI.iterdir() if p.is_file())
    for name in param["schema"]["enum"]:
        assert client.get(f"/ui/{name}").status_code == 200

"""GET /ui/ (no auth): the operator console, static files from `app/ui/`.

The files hold no data and no secret. The page asks the operator for the admin token,
keeps it in `sessionStorage` and sends it as `Authorization: Bearer` with every call to
the JSON API; nothing is ever authorised by a cookie, so there is no cookie CSRF. The
Content-Security-Policy allows only this origin's own script and style files (no inline
script or style, no other host), and the page inserts every API value as text.
"""

from __future__ import annotations

from pathlib import Path

from flask import Blueprint, Response, send_from_directory

from app.errors import NotFound

UI_DIR = Path(__file__).resolve().parent.parent / "ui"
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
    "form-action 'none'; frame-ancestors 'none'; base-uri 'none'"
)
HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cache-Control": "no-cache",
}

# Explicit types: the system's mime table differs between hosts and the image (.js especially).
TYPES = {".html": "text/html", ".js": "text/javascript", ".css": "text/css"}

bp = Blueprint("ui", __name__)


def _file(name: str) -> Response:
    mimetype = TYPES.get(Path(name).suffix)
    if mimetype is None:
        raise NotFound(f"the console has no file {name[:80]!r}")
    resp = send_from_directory(UI_DIR, name, mimetype=mimetype, max_age=0)  # 404 (JSON) outside app/ui/
    resp.headers.update(HEADERS)
    return resp


@bp.get("/ui/")
def index() -> Response:
    return _file("index.html")


@bp.get("/ui/<name>")
def asset(name: str) -> Response:
    return _file(name)

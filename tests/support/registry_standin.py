"""A stand-in for the platform's schema registry: a real HTTP server on 127.0.0.1.

Serves the registry API (docs/contracts.md, "Schema registry") from schema files (default: the pinned copies
in contracts/v1, i.e. what the registry held when the store pinned). Per schema it can
be switched to:

- `synced`: the file as it is;
- `content`: same `$core_version`, one description changed (content_mismatch);
- `version`: `$core_version` bumped and a property added (version_mismatch);
- `missing`: 404;
- `error`: 503 on every request for it;
- `garbage`: 200 with a body that is not JSON;
- `hang`: answers only after `hang_s` seconds (read timeouts).

`stop()` closes the listening socket (connection refused: unreachable); `start()` binds
the same port again. `fail_next(n)` answers 503 to the next n requests (retries).
Like the real registry, its `sha256` is not over canonical JSON (indented, keys in
reverse order), and the content is served with its keys in reverse order.
"""

from __future__ import annotations

import copy
import hashlib
import json
import socket
import threading
import time
from collections import Counter
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

from tests.support.common import ROOT

DEFAULT_DIR = ROOT / "contracts" / "v1"
MODES = ("synced", "content", "version", "missing", "error", "garbage", "hang")


def _reversed(value):
    """The same JSON value with every object's keys in reverse order."""
    if isinstance(value, dict):
        return {k: _reversed(value[k]) for k in reversed(list(value))}
    if isinstance(value, list):
        return [_reversed(v) for v in value]
    return value


def bumped(version: str) -> str:
    major, minor, *_ = (version.split(".") + ["0", "0"])[:3]
    return f"{major}.{int(minor) + 1}.0"


class _Server(ThreadingHTTPServer):
    """Remembers open connections, so stop() also cuts keep-alive clients off."""

    daemon_threads = True

    def __init__(self, *args):
        self.open: set[socket.socket] = set()
        super().__init__(*args)

    def process_request(self, request, client_address):
        self.open.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request):
        self.open.discard(request)
        super().shutdown_request(request)

    def cut_all(self) -> None:
        for sock in list(self.open):
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


class RegistryStandin:
    def __init__(self, source_dir: Path = DEFAULT_DIR, track: str = "v1"):
        self.track = track
        self.schemas: dict[str, dict] = {}
        for path in sorted(Path(source_dir).glob("*.json")):
            content = json.loads(path.read_text())
            self.schemas[content["$schema_id"]] = content
        self.modes: dict[str, str] = {}
        self.hang_s = 2.0
        self.hits: Counter = Counter()
        self._fail_next = 0
        self._lock = threading.Lock()
        self.port = 0
        self.server: ThreadingHTTPServer | None = None
        self.thread: threading.Thread | None = None

    # -- control ---------------------------------------------------------------------------
    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> RegistryStandin:
        handler = type("Handler", (_Handler,), {"standin": self})
        self.server = _Server(("127.0.0.1", self.port), handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, name="registry-standin", daemon=True)
        self.thread.start()
        return self

    def stop(self) -> None:
        """Stop listening: requests get 'connection refused' until start()."""
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server.cut_all()
            self.thread.join(5)
            self.server = None

    def set(self, schema_id: str, mode: str) -> None:
        assert schema_id in self.schemas, schema_id
        assert mode in MODES, mode
        with self._lock:
            self.modes[schema_id] = mode

    def set_all(self, mode: str) -> None:
        for schema_id in self.schemas:
            self.set(schema_id, mode)

    def fail_next(self, n: int) -> None:
        with self._lock:
            self._fail_next = n

    # -- what it serves ----------------------------------------------------------------------
    def mode(self, schema_id: str) -> str:
        return self.modes.get(schema_id, "synced")

    def served(self, schema_id: str) -> dict | None:
        """The content the registry currently has for `schema_id` (None when missing)."""
        mode = self.mode(schema_id)
        if mode == "missing":
            return None
        content = copy.deepcopy(self.schemas[schema_id])
        if mode == "content":
            content["description"] = content.get("description", "") + "\n(edited in the registry)"
        elif mode == "version":
            content["$core_version"] = bumped(content["$core_version"])
            content.setdefault("properties", {})["added_in_registry"] = {"type": "string", "title": "Added"}
        return content

    def document(self, schema_id: str, content: dict) -> dict:
        return {
            "name": schema_id + ".schema",
            "track": self.track,
            "core_version": content.get("$core_version"),
            "sha256": hashlib.sha256(json.dumps(_reversed(content), indent=2).encode()).hexdigest(),
            "$schema_id": schema_id,
            "content": _reversed(content),
            "deprecated": False,
            "deprecation_note": None,
        }

    def index(self) -> dict:
        entries = []
        for schema_id in self.schemas:
            content = self.served(schema_id)
            if content is None:
                continue
            doc = self.document(schema_id, content)
            entries.append(
                {
                    "name": doc["name"],
                    "$schema_id": schema_id,
                    "sha256": doc["sha256"],
                    "latest_core_version": doc["core_version"],
                    "deprecated": False,
                }
            )
        return {
            "tracks": {self.track: {"count": len(entries), "schemas": entries}},
            "generated_at": datetime.now(UTC).isoformat(),
        }


class _Handler(BaseHTTPRequestHandler):
    standin: RegistryStandin
    protocol_version = "HTTP/1.1"

    def log_message(self, *args) -> None:  # quiet
        pass

    def _send(self, status: int, body) -> None:
        self._send_raw(status, json.dumps(body).encode())

    def _send_raw(self, status: int, data: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:  # http.server's naming
        s = self.standin
        parts = urlsplit(self.path)
        path = unquote(parts.path)
        with s._lock:
            s.hits[path] += 1
            if s._fail_next > 0:
                s._fail_next -= 1
                return self._send(503, {"detail": "registry overloaded"})
        if path == "/health":
            return self._send(200, {"status": "ok"})
        if path == "/index":
            return self._send(200, s.index())
        segments = path.strip("/").split("/")
        if len(segments) in (3, 4) and segments[0] == "schemas" and segments[1] == s.track:
            name = segments[2]
            schema_id = name.removesuffix(".schema")
            if not name.endswith(".schema") or schema_id not in s.schemas:
                return self._send(404, {"detail": f"schema {name} not found"})
            if s.mode(schema_id) == "error":
                return self._send(503, {"detail": "backend error"})
            if s.mode(schema_id) == "hang":
                time.sleep(s.hang_s)
            if s.mode(schema_id) == "garbage":
                return self._send_raw(200, b"<html>proxy error</html>")
            content = s.served(schema_id)
            if content is None:
                return self._send(404, {"detail": f"schema {name} not found"})
            original = s.schemas[schema_id]
            if len(segments) == 4 and segments[3] == "versions":
                versions = [original] if content == original else [original, content]
                return self._send(
                    200,
                    [
                        {
                            "core_version": v["$core_version"],
                            "sha256": s.document(schema_id, v)["sha256"],
                            "created_at": "2025-01-01T00:00:00Z",
                            "deprecated": False,
                        }
                        for v in versions
                    ],
                )
            if len(segments) == 4:
                return self._send(404, {"detail": "not found"})
            wanted = parse_qs(parts.query).get("version", [None])[0]
            if wanted is not None:
                match = [v for v in (content, original) if v["$core_version"] == wanted]
                if not match:
                    return self._send(404, {"detail": f"no version {wanted}"})
                content = match[0]
            return self._send(200, s.document(schema_id, content))
        return self._send(404, {"detail": "not found"})

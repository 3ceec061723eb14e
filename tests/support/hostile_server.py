"""A hostile HTTP server on 127.0.0.1 for the backfill's URL sources (a real socket server).

Paths:

- `/files/<name>`: bytes registered with `serve(name, data)` (Content-Length, Last-Modified);
- `/stream/<name>`: the same without Content-Length (close-delimited);
- `/slow-headers`: the status line and headers one byte every `pause` seconds, forever;
- `/trickle`: headers promising 10 MB, then one byte every `pause` seconds;
- `/redirect/<n>/<name>`: n redirects, then `/files/<name>`;
- `/to?<url>`: one redirect to any URL;
- `/secret.csv`: a 200 with an internal-looking secret as its only content;
- `/endless.csv`: a header line, then one line with no newline that never ends.

Every connection it accepted is counted in `connections`; handlers end when the client
goes away (a write fails) or when the server is closed.
"""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote

SECRET = "internal-secret-3f9a7c1e-do-not-leak"


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: HostileServer.Server

    def log_message(self, *args) -> None:
        pass

    def _raw(self, data: bytes) -> bool:
        try:
            self.wfile.write(data)
            self.wfile.flush()
            return True
        except OSError:
            return False

    def _pace(self) -> bool:
        """Wait one `pause` (the simulated server's pace); False once the server closes."""
        return not self.server.closing.wait(self.server.pause)

    def do_GET(self) -> None:
        self.server.paths.append(self.path)
        path = self.path
        if path.startswith("/files/") or path.startswith("/stream/"):
            name = path.split("/", 2)[2]
            data = self.server.files.get(name)
            if data is None:
                self.send_error(404)
                return
            self.send_response(200)
            if path.startswith("/files/"):
                self.send_header("Content-Length", str(len(data)))
                self.send_header("Last-Modified", "Mon, 01 Jan 2024 00:00:00 GMT")
            else:
                self.send_header("Connection", "close")
                self.close_connection = True
            self.end_headers()
            for i in range(0, len(data), 1 << 20):
                if not self._raw(data[i : i + (1 << 20)]):
                    return
            return
        if path == "/slow-headers":
            for byte in b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\nX-Padding: " + b"a" * 10_000:
                if not self._raw(bytes([byte])) or not self._pace():
                    return
            return
        if path == "/trickle":
            self.send_response(200)
            self.send_header("Content-Length", str(10_000_000))
            self.end_headers()
            while self._raw(b"x") and self._pace():
                pass
            return
        if path.startswith("/redirect/"):
            _, _, n, name = path.split("/", 3)
            target = f"/redirect/{int(n) - 1}/{name}" if int(n) > 1 else f"/files/{name}"
            self._redirect(target)
            return
        if path.startswith("/to?"):
            self._redirect(unquote(path[4:]))
            return
        if path == "/endless.csv":
            self.send_response(200)
            self.send_header("Connection", "close")
            self.end_headers()
            self.close_connection = True
            if not self._raw(b"provider,symbol,interval,ts,open,high,low,close,volume\n"):
                return
            piece = b"x" * 65536
            while not self.server.closing.is_set() and self._raw(piece):
                pass
            return
        if path == "/secret.csv":
            body = f'{{"token": "{SECRET}"}}\n{SECRET},{SECRET}\n'.encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self._raw(body)
            return
        self.send_error(404)

    def _redirect(self, location: str) -> None:
        self.send_response(302)
        self.send_header("Location", location)
        self.send_header("Content-Length", "0")
        self.end_headers()


class HostileServer:
    class Server(ThreadingHTTPServer):
        daemon_threads = True
        pause = 1.0
        files: dict[str, bytes]
        paths: list[str]
        closing: threading.Event

    def __init__(self, pause: float = 1.0):
        self.httpd = self.Server(("127.0.0.1", 0), _Handler)
        self.httpd.pause = pause
        self.httpd.files = {}
        self.httpd.paths = []
        self.httpd.closing = threading.Event()
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def port(self) -> int:
        return self.httpd.server_address[1]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def paths(self) -> list[str]:
        return self.httpd.paths

    def serve(self, name: str, data: bytes) -> str:
        self.httpd.files[name] = data
        return f"{self.url}/files/{name}"

    def __enter__(self) -> HostileServer:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.closing.set()
        self.httpd.shutdown()
        self.httpd.server_close()


def closed_port() -> int:
    """A port on 127.0.0.1 nothing listens on (bound, then released)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]

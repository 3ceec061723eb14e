"""A real HTTP server on 127.0.0.1 serving a directory: the stand-in for a vendor's file server."""

from __future__ import annotations

import threading
import time
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path


class _Handler(SimpleHTTPRequestHandler):
    """Static files, plus two ways of serving them:

    - `/stream/<name>`: without Content-Length (close-delimited);
    - `/slow/<name>`: a slow provider, the file in `SLOW_PIECES` pieces `SLOW_PAUSE`
      seconds apart (with Content-Length and Last-Modified, so a load of it can resume).
    """

    SLOW_PIECES = 40
    SLOW_PAUSE = 0.15

    def log_message(self, *args) -> None:  # keep test output clean
        pass

    def do_GET(self) -> None:
        if self.path.startswith("/slow/"):
            self._slow(Path(self.directory) / self.path[len("/slow/") :])
            return
        if self.path.startswith("/stream/"):
            path = Path(self.directory) / self.path[len("/stream/") :]
            if not path.is_file():
                self.send_error(404)
                return
            self.protocol_version = "HTTP/1.0"
            self.send_response(200)
            self.send_header("Content-Type", "application/octet-stream")
            self.end_headers()
            with open(path, "rb") as f:
                while chunk := f.read(65536):
                    self.wfile.write(chunk)
            return
        super().do_GET()

    def _slow(self, path: Path) -> None:
        if not path.is_file():
            self.send_error(404)
            return
        data = path.read_bytes()
        self.send_response(200)
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Last-Modified", self.date_time_string(int(path.stat().st_mtime)))
        self.end_headers()
        piece = -(-len(data) // self.SLOW_PIECES)
        try:
            for i in range(0, len(data), piece):
                self.wfile.write(data[i : i + piece])
                self.wfile.flush()
                time.sleep(self.SLOW_PAUSE)  # the simulated provider's pace, not test synchronisation
        except (BrokenPipeError, ConnectionResetError):
            pass


class FileServer:
    """Serves `directory` over HTTP on 127.0.0.1 from a thread."""

    def __init__(self, directory: Path):
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), partial(_Handler, directory=str(directory)))
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def __enter__(self) -> FileServer:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

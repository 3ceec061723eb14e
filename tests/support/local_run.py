"""`scripts/run-local.sh` in a pseudo-terminal, as a person runs `make run`, and what it leaves behind.

- `LocalRun`: the script as the session leader of a pty (its own process group), its output
  drained into a buffer; `ctrl_c()` sends SIGINT to the whole group, as a terminal does.
- `Vendor`: a slow vendor (a real HTTP server on 127.0.0.1 that trickles a file, resumable).
- `leftovers`: processes of a run and ports still listening after it stopped.
"""

from __future__ import annotations

import os
import pty
import signal
import threading
import time
from functools import partial
from http.server import ThreadingHTTPServer
from pathlib import Path

import requests

from tests.support.common import ROOT, TOKEN, wait_for
from tests.support.file_server import _Handler


class Trickle(_Handler):
    """The slow vendor: the file in 300 pieces, PAUSE seconds apart (resumable: it sends
    Content-Length and Last-Modified)."""

    SLOW_PIECES = 300
    SLOW_PAUSE = 0.1


class Vendor:
    def __init__(self, directory: Path):
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), partial(Trickle, directory=str(directory)))
        self.httpd.daemon_threads = True
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/slow"

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


class LocalRun:
    """One `scripts/run-local.sh` in a pseudo-terminal."""

    def __init__(self, state: Path, env: dict[str, str]):
        self.state, self.env = state, env
        self.port = int(env["PORT"])
        self.url = f"http://127.0.0.1:{self.port}"
        self.output = bytearray()
        self.pid, self.fd = pty.fork()
        if self.pid == 0:  # the child: session leader of the pty, like a shell's foreground job
            os.chdir(ROOT)
            os.execvpe("bash", ["bash", "scripts/run-local.sh"], env)
        self.reader = threading.Thread(target=self._drain, daemon=True)
        self.reader.start()
        self.status: int | None = None
        self.session = requests.Session()
        self.session.headers["Authorization"] = f"Bearer {TOKEN}"

    def _drain(self) -> None:  # keep the terminal's buffer empty, or the processes block on writes
        while True:
            try:
                chunk = os.read(self.fd, 65536)
            except OSError:
                return
            if not chunk:
                return
            self.output += chunk

    def text(self) -> str:
        return self.output.decode(errors="replace")

    def wait_ready(self) -> None:
        wait_for(lambda: "run-local: ready" in self.text() or self.exited(), 180, 0.2, message="the local run to start")
        assert not self.exited(), self.text()[-5000:]

    def exited(self) -> bool:
        if self.status is None:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                self.status = status
        return self.status is not None

    def ctrl_c(self, times: int = 1) -> float:
        """SIGINT to the process group (what the terminal does); seconds until the script exited."""
        started = time.monotonic()
        for i in range(times):
            if i:  # the second one lands while the script is stopping, as an impatient user's does
                wait_for(lambda: "run-local: stopping" in self.text() or self.exited(), 10, 0.02, message="stopping")
            os.killpg(self.pid, signal.SIGINT)
        wait_for(self.exited, 30, 0.05, message="the script to exit\n" + self.text()[-5000:])
        return time.monotonic() - started

    def get(self, path: str, **kw):
        return self.session.get(self.url + path, timeout=10, **kw)

    def post(self, path: str, json=None):
        return self.session.post(self.url + path, json=json, timeout=10)

    def kill(self) -> None:
        if not self.exited():
            os.killpg(self.pid, signal.SIGKILL)
            os.waitpid(self.pid, 0)


def listening(port: int) -> list[str]:
    """Local addresses listening on `port` (IPv4, from /proc/net/tcp)."""
    out = []
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        local, state = line.split()[1], line.split()[3]
        address, hex_port = local.split(":")
        if int(hex_port, 16) == port and state == "0A":
            out.append(".".join(str(int(address[i : i + 2], 16)) for i in (6, 4, 2, 0)))
    return out


def leftovers(state: Path, ports: list[int]) -> list[str]:
    """Processes still running from this run (their command line names the state directory or
    one of its ports), and ports still listening."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if str(state) in cmdline or any(f"port={p}" in cmdline or f"--port {p}" in cmdline for p in ports):
            found.append(f"{proc.name}: {cmdline[:200]}")
    found += [f"port {p} listening" for p in ports if listening(p)]
    return found

"""HTTP(S) downloads for backfill sources: only to allowed targets, and always stoppable.

- **Where**: every hop (the URL and each redirect, at most `MAX_REDIRECTS`) is resolved
  once; every address is checked against `BACKFILL_URL_ALLOW` (app/netpolicy.py) and the
  connection goes to a checked address (no second lookup a rebinding DNS could answer
  differently). Credentials in URLs are refused.
- **How long**: the socket connects without blocking (polled), the response headers must
  arrive within the rate window, the whole download must end within the deadline, and
  the body must average the minimum rate over each window of time spent waiting on the
  network (time the reader spends waiting for the database does not count).
- **Stopping**: a `Watchdog` thread watches the job's stop flag, the deadline and the
  rate; when one trips it shuts the socket down, which ends a read blocked in any
  thread at once. The reason is kept and becomes the error.
- **What errors say**: the URL's host and port, the HTTP status code, or a fixed phrase;
  never the response's content (not even the reason phrase), and the same words for a
  refused connection, a closed port and a silent one.
"""

from __future__ import annotations

import errno
import http.client
import ipaddress
import select
import socket
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import SplitResult, urljoin, urlsplit

from app.netpolicy import AllowList, IPAddress

MAX_REDIRECTS = 3
CONNECT_TIMEOUT = 10.0
POLL = 0.2
_REDIRECTS = (301, 302, 303, 307, 308)


class FetchError(Exception):
    """The download cannot go on; the message is safe to show (no response content)."""


@dataclass(frozen=True)
class Limits:
    allow: AllowList
    deadline: float  # seconds, whole download
    min_rate: int  # bytes/s over each window of network wait
    window: float  # seconds


class Watchdog(threading.Thread):
    """Trips on stop/deadline/slow transfer and shuts the current socket down."""

    def __init__(self, limits: Limits, stopped: Callable[[], bool]):
        super().__init__(name="backfill-fetch-watchdog", daemon=True)
        self.limits = limits
        self.stopped = stopped
        self.reason: str | None = None
        self.started_at = time.monotonic()
        self._lock = threading.Lock()
        self._sock: socket.socket | None = None
        self._done = threading.Event()
        # rate accounting: network wait time and bytes in the current window
        self._win_time = 0.0
        self._win_bytes = 0
        self._waiting_since: float | None = None
        self.headers_by: float | None = None  # monotonic time the headers must have arrived by

    # -- the fetching side -------------------------------------------------------------------
    def attach(self, sock: socket.socket | None) -> None:
        with self._lock:
            self._sock = sock
            if self.reason is not None and sock is not None:
                _shutdown(sock)

    def check(self) -> None:
        if self.reason is not None:
            raise FetchError(self.reason)
        if self.stopped():
            self.trip("the job was stopped")
            raise FetchError(self.reason or "stopped")

    def begin_wait(self) -> None:
        with self._lock:
            self._waiting_since = time.monotonic()

    def end_wait(self, nbytes: int) -> None:
        with self._lock:
            if self._waiting_since is not None:
                self._win_time += time.monotonic() - self._waiting_since
            self._waiting_since = None
            self._win_bytes += nbytes
            self._roll()

    def _roll(self) -> None:
        """Close the window once it holds `window` seconds of waiting (lock held)."""
        lim = self.limits
        if self._win_time >= lim.window:
            if self._win_bytes < lim.min_rate * self._win_time:
                self._trip_locked(
                    f"the server sent {self._win_bytes} bytes in {self._win_time:.0f} s, slower than "
                    f"BACKFILL_MIN_RATE_BYTES ({lim.min_rate} bytes/s)"
                )
            self._win_time, self._win_bytes = 0.0, 0

    # -- the watching side ---------------------------------------------------------------------
    def trip(self, reason: str) -> None:
        with self._lock:
            self._trip_locked(reason)

    def _trip_locked(self, reason: str) -> None:
        if self.reason is None:
            self.reason = reason
        if self._sock is not None:
            _shutdown(self._sock)

    def close(self) -> None:
        self._done.set()
        if self.is_alive():
            self.join(timeout=5)

    def run(self) -> None:
        lim = self.limits
        while not self._done.wait(POLL):
            now = time.monotonic()
            if self.stopped():
                self.trip("the job was stopped")
            elif now - self.started_at > lim.deadline:
                self.trip(f"the download took longer than BACKFILL_DOWNLOAD_DEADLINE_SECONDS ({lim.deadline:g} s)")
            elif self.headers_by is not None and now > self.headers_by:
                self.trip(f"no complete response headers within {lim.window:g} s")
            else:
                with self._lock:
                    if self._waiting_since is not None:
                        # a read in progress counts as it goes (a server that stalls mid-read)
                        pending = now - self._waiting_since
                        if self._win_time + pending >= lim.window:
                            self._win_time += pending
                            self._waiting_since = now
                            self._roll()


def _shutdown(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass


@dataclass
class Response:
    """An open response: `read(n)` returns what has arrived (b'' at the end)."""

    url: str
    status: int
    headers: http.client.HTTPMessage
    _resp: http.client.HTTPResponse
    _conn: http.client.HTTPConnection
    _dog: Watchdog

    def read(self, n: int) -> bytes:
        dog = self._dog
        dog.check()
        dog.begin_wait()
        got = b""
        try:
            got = self._resp.read1(n)
        except (OSError, http.client.HTTPException, ValueError) as exc:
            dog.check()  # a shutdown by the watchdog: report its reason
            raise FetchError(f"the download from {where(self.url)} broke off ({_kind(exc)})") from None
        finally:
            dog.end_wait(len(got))
        if not got:
            dog.check()  # a shutdown reads as the end of the body
            if self._resp.length:  # Content-Length announced more than arrived
                raise FetchError(f"the download from {where(self.url)} ended early")
        return got

    def close(self) -> None:
        try:
            self._conn.close()
        except OSError:
            pass


def where(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.hostname}:{_port(parts)}"


def _port(parts: SplitResult) -> int:
    return parts.port or (443 if parts.scheme == "https" else 80)


def _kind(exc: BaseException) -> str:
    if isinstance(exc, http.client.IncompleteRead):
        return "incomplete body"
    if isinstance(exc, (http.client.HTTPException, ValueError)):
        return "malformed HTTP"
    if isinstance(exc, ssl.SSLError):
        return "TLS error"
    return "connection lost"


def check_url(url: str) -> None:
    """Scheme, host, no credentials; FetchError otherwise (no network)."""
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises on a bad port
    except ValueError:
        raise FetchError("not a valid URL") from None
    if parts.scheme not in ("http", "https"):
        raise FetchError(f"scheme {parts.scheme!r} is not supported; use http(s)")
    if not parts.hostname:
        raise FetchError("the URL has no host")
    if parts.username is not None or parts.password is not None or "@" in parts.netloc:
        raise FetchError("credentials in the URL are not accepted (they would be stored with the job)")


def _resolve(host: str, port: int, watchdog: Watchdog) -> list[IPAddress]:
    watchdog.check()
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP)
    except (OSError, UnicodeError):
        raise FetchError(f"cannot resolve host {host!r}") from None
    out: list = []
    for info in infos:
        try:
            address = ipaddress.ip_address(str(info[4][0]).split("%", 1)[0])
        except ValueError:
            continue
        if address not in out:
            out.append(address)
    return out


def _connect(addresses: list[IPAddress], port: int, dog: Watchdog, target: str) -> socket.socket:
    """A connected socket to the first address that answers; polled, so a stop ends it."""
    for address in addresses:
        family = socket.AF_INET6 if address.version == 6 else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setblocking(False)
        dog.attach(sock)
        try:
            code = sock.connect_ex((str(address), port))
            limit = time.monotonic() + CONNECT_TIMEOUT
            while code in (errno.EINPROGRESS, errno.EALREADY, errno.EWOULDBLOCK):
                dog.check()
                if time.monotonic() > limit:
                    break
                _, writable, _ = select.select([], [sock], [], POLL)
                if writable:
                    code = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            if code == 0:
                return sock
        except OSError:
            pass
        dog.attach(None)
        sock.close()
        dog.check()
    raise FetchError(f"could not connect to {target}")


class _Connection(http.client.HTTPConnection):
    """http.client over a socket we connected (and checked) ourselves."""

    def __init__(self, host: str, port: int, sock: socket.socket, tls: ssl.SSLContext | None, dog: Watchdog):
        super().__init__(host, port, timeout=dog.limits.window)
        self._given, self._tls, self._dog = sock, tls, dog

    def connect(self) -> None:
        sock = self._given
        sock.setblocking(True)
        sock.settimeout(self.timeout)
        if self._tls is not None:
            sock = self._tls.wrap_socket(sock, server_hostname=self.host)
            self._dog.attach(sock)  # the TLS socket now owns the descriptor
        self.sock = sock


def get(url: str, limits: Limits, dog: Watchdog) -> Response:
    """GET `url` following at most MAX_REDIRECTS allowed redirects; a 200 Response or FetchError."""
    for hop in range(MAX_REDIRECTS + 1):
        check_url(url)
        parts = urlsplit(url)
        host, port = parts.hostname or "", _port(parts)
        target = f"{host}:{port}"
        early = limits.allow.early_refusal(host, port)
        if early:
            raise FetchError(early)
        addresses = _resolve(host, port, dog)
        refusal = limits.allow.refusal(host, port, addresses)
        if refusal:
            raise FetchError(refusal)
        sock = _connect(addresses, port, dog, target)
        tls = ssl.create_default_context() if parts.scheme == "https" else None
        conn = _Connection(host, port, sock, tls, dog)
        dog.headers_by = time.monotonic() + limits.window
        try:
            path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
            conn.request("GET", path, headers={"Accept-Encoding": "identity", "User-Agent": "market-data-store"})
            resp = conn.getresponse()
        except (OSError, http.client.HTTPException, ValueError) as exc:
            conn.close()
            dog.check()
            raise FetchError(f"no valid HTTP response from {target} ({_kind(exc)})") from None
        finally:
            dog.headers_by = None
        if resp.status in _REDIRECTS:
            location = resp.getheader("Location") or ""
            conn.close()
            if hop == MAX_REDIRECTS:
                raise FetchError(f"more than {MAX_REDIRECTS} redirects")
            if not location or len(location) > 2048:
                raise FetchError(f"{target} answered a redirect without a usable Location")
            url = urljoin(url, location.strip())
            continue
        if resp.status != 200:
            conn.close()
            raise FetchError(f"{target} answered HTTP {resp.status}")
        encoding = (resp.getheader("Content-Encoding") or "").strip().lower()
        if encoding not in ("", "identity", "gzip", "x-gzip"):  # gzip is recognised by its bytes
            conn.close()
            raise FetchError(f"{target} sent an unsupported Content-Encoding")
        return Response(url, resp.status, resp.headers, resp, conn, dog)
    raise FetchError(f"more than {MAX_REDIRECTS} redirects")  # pragma: no cover - the loop returns or raises

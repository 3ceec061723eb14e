"""Backfill sources: a file inside BACKFILL_SOURCE_DIR or an http(s) URL, read as a stream.

`parse_source` checks what an operator sent (the API calls it, so a bad source is a
400); `open_source` opens it in the worker as one decompressed byte stream (gzip is
recognised by its magic bytes, whatever the name says) with an identity that tells
whether a later run reads the same version of it. Nothing is ever read whole, and every
read is bounded (`Limits`): bytes of a local file or a download, bytes a gzip stream
expands to and its expansion ratio; the line length is bounded by the reader
(app/backfill/rows.py). Every read checks the job's stop flag, so a cancelled or timed
out job stops reading within one read.

Local files are opened with O_NONBLOCK (a FIFO swapped in after the API's check cannot
block the open) and refused after opening unless `fstat` on the open descriptor says
regular file. URLs go through app/backfill/fetch.py (allow list, deadlines, watchdog).
"""

from __future__ import annotations

import io
import os
import re
import stat
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import urlsplit

from app.backfill import fetch
from app.backfill.task import BackfillError
from app.config import Settings
from app.netpolicy import AllowList

FORMATS = ("ndjson", "csv")
_SUFFIX_FORMAT = {".ndjson": "ndjson", ".jsonl": "ndjson", ".json": "ndjson", ".csv": "csv"}
_COMPRESSED_SUFFIXES = (".gz", ".gzip")
_URL = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]+)://")
READ_CHUNK = 1 << 20
MAX_URL_LENGTH = 2048
RATIO_AFTER = 16 << 20  # the gzip ratio is judged once this much has been decompressed


class SourceError(BackfillError):
    """The source cannot be used; the message says why and names it."""


@dataclass(frozen=True)
class Limits:
    """Bounds on reading one source (settings BACKFILL_*; docs/backfill.md)."""

    max_download_bytes: int = 2 * 1024**3
    max_file_bytes: int = 64 * 1024**3
    max_decompressed_bytes: int = 64 * 1024**3
    max_gzip_ratio: float = 200.0
    allow: AllowList = AllowList()
    download_deadline: float = 3600.0
    min_rate: int = 1024
    rate_window: float = 30.0

    @classmethod
    def from_settings(cls, s: Settings) -> Limits:
        return cls(
            max_download_bytes=s.backfill_max_download_bytes,
            max_file_bytes=s.backfill_max_file_bytes,
            max_decompressed_bytes=s.backfill_max_decompressed_bytes,
            max_gzip_ratio=s.backfill_max_gzip_ratio,
            allow=s.backfill_url_allow,
            download_deadline=s.backfill_download_deadline,
            min_rate=s.backfill_min_rate,
            rate_window=s.backfill_rate_window,
        )

    @property
    def http(self) -> fetch.Limits:
        return fetch.Limits(self.allow, self.download_deadline, self.min_rate, self.rate_window)


@dataclass(frozen=True)
class Source:
    kind: str  # 'file' or 'http'
    location: str  # for files: the path relative to BACKFILL_SOURCE_DIR; for http: the URL

    @property
    def name(self) -> str:
        """The file name part (what the format is guessed from)."""
        path = urlsplit(self.location).path if self.kind == "http" else self.location
        return PurePosixPath(path).name


def parse_source(raw: object, root: str, allow: AllowList | None = None) -> Source:
    """Validate the `source` parameter; SourceError (a 400 in the API) says what is wrong.

    A URL must also pass what can be told of `allow` without resolving its host (the
    worker checks every resolved address of every hop)."""
    if not isinstance(raw, str) or not raw.strip():
        raise SourceError("source must be a non-empty string: a path inside BACKFILL_SOURCE_DIR or an http(s) URL")
    text = raw.strip()
    scheme = _URL.match(text)
    if scheme:
        return Source("http", _check_url(text, scheme.group(1).lower(), allow or AllowList()))
    path = resolve_file(root, text)
    return Source("file", str(path.relative_to(_root(root))))


def _check_url(url: str, scheme: str, allow: AllowList) -> str:
    if scheme not in ("http", "https"):
        raise SourceError(
            f"source: scheme {scheme!r} is not supported; use http(s) or a path inside BACKFILL_SOURCE_DIR"
        )
    if len(url) > MAX_URL_LENGTH:
        raise SourceError(f"source: URL longer than {MAX_URL_LENGTH} characters")
    if any(c.isspace() for c in url):
        raise SourceError("source: the URL contains whitespace")
    try:
        fetch.check_url(url)
    except fetch.FetchError as exc:
        raise SourceError(f"source: {exc}") from None
    parts = urlsplit(url)
    host, port = parts.hostname or "", parts.port or (443 if scheme == "https" else 80)
    refusal = allow.early_refusal(host, port)
    if refusal:
        raise SourceError(f"source: {refusal}")
    return url


def _root(root: str) -> Path:
    try:
        path = Path(root).resolve(strict=True)
    except (OSError, RuntimeError):
        raise SourceError("source: BACKFILL_SOURCE_DIR does not exist on this server") from None
    if not path.is_dir():
        raise SourceError("source: BACKFILL_SOURCE_DIR is not a directory on this server")
    return path


def resolve_file(root: str, location: str) -> Path:
    """The real path of `location` inside `root`, symlinks followed; SourceError otherwise.

    Errors name the path as given (relative to BACKFILL_SOURCE_DIR), never the server's."""
    base = _root(root)
    if "\x00" in location:
        raise SourceError("source: the path contains a NUL character")
    shown = _shown(location, base)
    try:
        target = (base / location).resolve()
    except (OSError, RuntimeError):  # symlink loops
        raise SourceError(f"source: cannot resolve {shown!r} (a symlink loop?)") from None
    if target != base and base not in target.parents:
        raise SourceError(f"source: {shown!r} resolves outside BACKFILL_SOURCE_DIR")
    if not target.exists():
        raise SourceError(f"source: no file {shown!r} in BACKFILL_SOURCE_DIR")
    if not target.is_file():
        raise SourceError(f"source: {shown!r} is not a regular file")
    return target


def _shown(location: str, base: Path) -> str:
    """The path as shown in errors: relative to the source directory, or as given."""
    try:
        return str(Path(location).relative_to(base)) if os.path.isabs(location) else location[:200]
    except ValueError:
        return location[:200]


def detect_format(source: Source, given: object) -> str:
    """The row format: `given` when set, else from the file name (a .gz suffix is ignored)."""
    if given is not None:
        if given not in FORMATS:
            raise SourceError(f"format must be one of {', '.join(FORMATS)}, got {str(given)[:40]!r}")
        return str(given)
    name = source.name.lower()
    for suffix in _COMPRESSED_SUFFIXES:
        name = name.removesuffix(suffix)
    fmt = _SUFFIX_FORMAT.get(PurePosixPath(name).suffix)
    if fmt is None:
        raise SourceError(f"format: cannot tell it from the name {source.name[:80]!r}; pass format ndjson or csv")
    return fmt


# -- reading ----------------------------------------------------------------------------------
Stopped = Callable[[], bool]


class _Counted(io.RawIOBase):
    """A raw reader that counts bytes, stops past a limit and when the job stops;
    seekable over a local file."""

    def __init__(
        self,
        read: Callable[[int], bytes],
        limit: int | None,
        what: str,
        stopped: Stopped,
        limit_name: str,
        fd: int | None = None,
    ):
        self._read = read
        self.limit = limit
        self.what = what
        self.stopped = stopped
        self.limit_name = limit_name
        self.count = 0
        self._fd = fd

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return self._fd is not None

    def seek(self, pos: int, whence: int = io.SEEK_SET) -> int:
        if self._fd is None:
            raise io.UnsupportedOperation("seek")
        self.count = os.lseek(self._fd, pos, whence)
        return self.count

    def tell(self) -> int:
        return self.count

    def readinto(self, buffer: Any) -> int:
        if self.stopped():
            raise SourceError("reading stopped: the job was stopped")
        try:
            data = self._read(len(buffer))
        except fetch.FetchError as exc:
            raise SourceError(str(exc)) from None
        except OSError as exc:
            raise SourceError(f"reading {self.what} failed: {exc.strerror or type(exc).__name__}") from None
        n = len(data)
        self.count += n
        if self.limit is not None and self.count > self.limit:
            raise SourceError(f"{self.what} is larger than {self.limit_name} ({self.limit} bytes)")
        buffer[:n] = data
        return n


class _Inflate(io.RawIOBase):
    """gzip decompression (every member) with bounded output per read, a cap on the total
    decompressed size and on the expansion ratio, and the stop flag checked per read."""

    def __init__(self, source: io.BufferedIOBase, counter: _Counted, limits: Limits):
        self.source, self.counter, self.limits = source, counter, limits
        self.out = 0
        self._d = zlib.decompressobj(31)
        self._leftover = b""  # input after the end of a member (the next member)

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        want = len(buffer)
        while True:
            if self.counter.stopped():
                raise SourceError("reading stopped: the job was stopped")
            d = self._d
            if d.unconsumed_tail:
                data = d.decompress(d.unconsumed_tail, want)
            elif d.eof:
                rest, self._leftover = self._leftover or self.source.read1(READ_CHUNK), b""
                if not rest:
                    return 0
                if not rest.strip(b"\x00"):
                    continue  # zero padding after the last member
                self._d = d = zlib.decompressobj(31)
                data = d.decompress(rest, want)
            else:
                chunk = self.source.read1(READ_CHUNK)
                if not chunk:
                    raise EOFError("the gzip stream ends before its end marker (truncated)")
                data = d.decompress(chunk, want)
            if d.eof:
                self._leftover = d.unused_data
            if data:
                break
        n = len(data)
        buffer[:n] = data
        self.out += n
        lim = self.limits
        if self.out > lim.max_decompressed_bytes:
            raise SourceError(
                f"the source expands to more than BACKFILL_MAX_DECOMPRESSED_BYTES ({lim.max_decompressed_bytes} bytes)"
            )
        if self.out > RATIO_AFTER and self.out > lim.max_gzip_ratio * max(self.counter.count, 1):
            raise SourceError(
                f"the source expands more than BACKFILL_MAX_GZIP_RATIO ({lim.max_gzip_ratio:g}x) of its compressed size"
                " (a decompression bomb?)"
            )
        return n


@dataclass
class Opened:
    """An open source: the decompressed stream and what identifies this version of it."""

    stream: io.BufferedIOBase
    identity: dict
    compressed: bool
    size: int | None  # bytes of the source itself (compressed), when known
    counter: _Counted

    @property
    def bytes_read(self) -> int:
        """Bytes of the source (compressed) read so far."""
        return self.counter.count

    def skip(self, offset: int) -> None:
        """Move `offset` bytes into the decompressed content (resuming a load): a seek in
        a plain local file, else read and drop."""
        if offset <= 0:
            return
        if not self.compressed and self.counter.seekable():
            if offset > (self.size or 0):
                raise SourceError("the source is shorter than its checkpoint; it changed since")
            self.stream.seek(offset)
            return
        left = offset
        while left > 0:
            chunk = self.stream.read(min(left, READ_CHUNK))
            if not chunk:
                raise SourceError("the source is shorter than its checkpoint; it changed since")
            left -= len(chunk)


def _decompressing(counter: _Counted, limits: Limits) -> tuple[io.BufferedIOBase, bool]:
    buffered = io.BufferedReader(counter, READ_CHUNK)
    if buffered.peek(2)[:2] == b"\x1f\x8b":
        return io.BufferedReader(_Inflate(buffered, counter, limits), READ_CHUNK), True
    return buffered, False


def _never() -> bool:
    return False


@contextmanager
def open_source(source: Source, root: str, limits: Limits, stopped: Stopped = _never) -> Iterator[Opened]:
    """Open a source for reading; yields an `Opened`. SourceError for anything unusable.

    `stopped()` true makes every later read (and a download's socket) stop."""
    opener = _open_file(source, root, limits, stopped) if source.kind == "file" else _open_http(source, limits, stopped)
    with opener as opened:
        yield opened


@contextmanager
def _open_file(source: Source, root: str, limits: Limits, stopped: Stopped) -> Iterator[Opened]:
    path = resolve_file(root, source.location)
    shown = repr(source.location)
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_NOCTTY", 0)
    try:
        fd = os.open(path, flags)
    except OSError as exc:
        raise SourceError(f"source: cannot open {shown}: {exc.strerror}") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):  # swapped for a FIFO, device or socket after the check
            raise SourceError(f"source: {shown} is not a regular file")
        proc = Path(f"/proc/self/fd/{fd}")
        if proc.exists() and _root(root) not in Path(os.readlink(proc)).parents:
            raise SourceError(f"source: {shown} resolves outside BACKFILL_SOURCE_DIR")
        if st.st_size > limits.max_file_bytes:
            raise SourceError(
                f"source: {shown} is {st.st_size} bytes, larger than BACKFILL_MAX_FILE_BYTES ({limits.max_file_bytes} bytes)"
            )
        identity = {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "inode": st.st_ino}

        def read(n: int) -> bytes:
            return os.read(fd, n)

        counter = _Counted(read, limits.max_file_bytes, f"source {shown}", stopped, "BACKFILL_MAX_FILE_BYTES", fd=fd)
        stream, compressed = _decompressing(counter, limits)
        yield Opened(stream, identity, compressed, st.st_size, counter)
    finally:
        os.close(fd)


@contextmanager
def _open_http(source: Source, limits: Limits, stopped: Stopped) -> Iterator[Opened]:
    dog = fetch.Watchdog(limits.http, stopped)
    dog.start()
    resp = None
    try:
        try:
            resp = fetch.get(source.location, limits.http, dog)
        except fetch.FetchError as exc:
            raise SourceError(f"could not fetch the source: {exc}") from None
        where = fetch.where(resp.url)
        length = resp.headers.get("Content-Length", "")
        size = int(length) if length.isascii() and length.isdigit() else None
        if size is not None and size > limits.max_download_bytes:
            raise SourceError(
                f"{where}: the source is {size} bytes, larger than BACKFILL_MAX_DOWNLOAD_BYTES "
                f"({limits.max_download_bytes} bytes)"
            )
        counter = _Counted(
            resp.read, limits.max_download_bytes, f"the download from {where}", stopped, "BACKFILL_MAX_DOWNLOAD_BYTES"
        )
        stream, compressed = _decompressing(counter, limits)
        identity = {
            "etag": _short(resp.headers.get("ETag")),
            "last_modified": _short(resp.headers.get("Last-Modified")),
            "content_length": size,
        }
        yield Opened(stream, identity, compressed, size, counter)
    finally:
        dog.trip("closed")
        if resp is not None:
            resp.close()
        dog.close()


def _short(value: str | None) -> str | None:
    """A validator header as kept in the checkpoint (bounded; it is stored, never shown)."""
    return value[:200] if value else None

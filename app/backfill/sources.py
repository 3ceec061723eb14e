"""Backfill sources: a file inside BACKFILL_SOURCE_DIR or an http(s) URL, read as a stream.

`parse_source` checks what an operator sent (the API calls it, so a bad source is a
400); `open_source` opens it in the worker as one decompressed byte stream (gzip is
recognised by its magic bytes, whatever the name says) with an identity that tells
whether a later run reads the same version of it. Nothing is ever read whole.
"""

from __future__ import annotations

import gzip
import io
import os
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import urlsplit

import requests

from app.backfill.task import BackfillError

FORMATS = ("ndjson", "csv")
_SUFFIX_FORMAT = {".ndjson": "ndjson", ".jsonl": "ndjson", ".json": "ndjson", ".csv": "csv"}
_COMPRESSED_SUFFIXES = (".gz", ".gzip")
_URL = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]+)://")
HTTP_TIMEOUT = (10.0, 60.0)  # seconds: connect, and between two reads
READ_CHUNK = 1 << 20
MAX_URL_LENGTH = 2048


class SourceError(BackfillError):
    """The source cannot be used; the message says why and names it."""


@dataclass(frozen=True)
class Source:
    kind: str  # 'file' or 'http'
    location: str  # for files: the path relative to BACKFILL_SOURCE_DIR; for http: the URL

    @property
    def name(self) -> str:
        """The file name part (what the format is guessed from)."""
        path = urlsplit(self.location).path if self.kind == "http" else self.location
        return PurePosixPath(path).name


def parse_source(raw: object, root: str) -> Source:
    """Validate the `source` parameter; SourceError (a 400 in the API) says what is wrong."""
    if not isinstance(raw, str) or not raw.strip():
        raise SourceError("source must be a non-empty string: a path inside BACKFILL_SOURCE_DIR or an http(s) URL")
    text = raw.strip()
    scheme = _URL.match(text)
    if scheme:
        return Source("http", _check_url(text, scheme.group(1).lower()))
    path = resolve_file(root, text)
    return Source("file", str(path.relative_to(_root(root))))


def _check_url(url: str, scheme: str) -> str:
    if scheme not in ("http", "https"):
        raise SourceError(
            f"source: scheme {scheme!r} is not supported; use http(s) or a path inside BACKFILL_SOURCE_DIR"
        )
    if len(url) > MAX_URL_LENGTH:
        raise SourceError(f"source: URL longer than {MAX_URL_LENGTH} characters")
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises on a bad port
    except ValueError as exc:
        raise SourceError(f"source: not a valid URL ({exc})") from None
    if not parts.hostname:
        raise SourceError("source: the URL has no host")
    if parts.username is not None or parts.password is not None:
        raise SourceError("source: credentials in the URL are not accepted (they would be stored with the job)")
    if any(c.isspace() for c in url):
        raise SourceError("source: the URL contains whitespace")
    return url


def _root(root: str) -> Path:
    try:
        path = Path(root).resolve(strict=True)
    except (OSError, RuntimeError):
        raise SourceError(f"source: BACKFILL_SOURCE_DIR ({root}) does not exist on this server") from None
    if not path.is_dir():
        raise SourceError(f"source: BACKFILL_SOURCE_DIR ({root}) is not a directory")
    return path


def resolve_file(root: str, location: str) -> Path:
    """The real path of `location` inside `root`, symlinks followed; SourceError otherwise."""
    base = _root(root)
    if "\x00" in location:
        raise SourceError("source: the path contains a NUL character")
    try:
        target = (base / location).resolve()
    except (OSError, RuntimeError) as exc:  # symlink loops
        raise SourceError(f"source: cannot resolve {location!r}: {exc}") from None
    if target != base and base not in target.parents:
        raise SourceError(f"source: {location!r} resolves outside BACKFILL_SOURCE_DIR")
    if not target.exists():
        raise SourceError(f"source: no file {location!r} in BACKFILL_SOURCE_DIR")
    if not target.is_file():
        raise SourceError(f"source: {location!r} is not a regular file")
    return target


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
class _Counted(io.RawIOBase):
    """A raw reader that counts bytes and stops past a limit; seekable over a local file."""

    def __init__(self, read: Callable[[int], bytes], limit: int | None, what: str, file: io.RawIOBase | None = None):
        self._read = read
        self.limit = limit
        self.what = what
        self.count = 0
        self._file = file

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return self._file is not None

    def seek(self, pos: int, whence: int = io.SEEK_SET) -> int:
        if self._file is None:
            raise io.UnsupportedOperation("seek")
        self.count = self._file.seek(pos, whence)
        return self.count

    def tell(self) -> int:
        return self.count

    def readinto(self, buffer: Any) -> int:
        try:
            data = self._read(len(buffer))
        except (requests.RequestException, OSError) as exc:
            raise SourceError(f"reading {self.what} failed: {exc}") from None
        except Exception as exc:  # noqa: BLE001 - urllib3 protocol/timeout errors
            raise SourceError(f"reading {self.what} failed: {type(exc).__name__}: {exc}") from None
        n = len(data)
        self.count += n
        if self.limit is not None and self.count > self.limit:
            raise SourceError(f"{self.what} is larger than BACKFILL_MAX_DOWNLOAD_BYTES ({self.limit} bytes)")
        buffer[:n] = data
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


def _decompressing(counter: _Counted) -> tuple[io.BufferedIOBase, bool]:
    buffered = io.BufferedReader(counter, READ_CHUNK)
    if buffered.peek(2)[:2] == b"\x1f\x8b":
        # buffered again: line iteration then runs in C instead of GzipFile.readline per line
        return io.BufferedReader(gzip.GzipFile(fileobj=buffered, mode="rb"), READ_CHUNK), True
    return buffered, False


@contextmanager
def open_source(source: Source, root: str, max_download_bytes: int) -> Iterator[Opened]:
    """Open a source for reading; yields an `Opened`. SourceError for anything unusable."""
    opener = _open_file(source, root) if source.kind == "file" else _open_http(source, max_download_bytes)
    with opener as opened:
        yield opened


@contextmanager
def _open_file(source: Source, root: str) -> Iterator[Opened]:
    path = resolve_file(root, source.location)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0))
    except OSError as exc:
        raise SourceError(f"source: cannot open {source.location!r}: {exc.strerror}") from None
    raw = os.fdopen(fd, "rb", buffering=0)
    try:
        proc = Path(f"/proc/self/fd/{fd}")
        if proc.exists() and _root(root) not in Path(os.readlink(proc)).parents:
            raise SourceError(f"source: {source.location!r} resolves outside BACKFILL_SOURCE_DIR")
        st = os.fstat(fd)
        identity = {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "inode": st.st_ino}
        counter = _Counted(raw.read, None, f"source {source.location!r}", file=raw)
        stream, compressed = _decompressing(counter)
        yield Opened(stream, identity, compressed, st.st_size, counter)
    finally:
        raw.close()


@contextmanager
def _open_http(source: Source, max_download_bytes: int) -> Iterator[Opened]:
    url = source.location
    try:
        resp = requests.get(
            url, stream=True, timeout=HTTP_TIMEOUT, headers={"Accept-Encoding": "identity"}, allow_redirects=True
        )
    except requests.RequestException as exc:
        raise SourceError(f"could not fetch {url}: {type(exc).__name__}: {exc}") from None
    try:
        if resp.status_code != 200:
            raise SourceError(f"{url} answered HTTP {resp.status_code} {resp.reason or ''}".rstrip())
        length = resp.headers.get("Content-Length", "")
        size = int(length) if length.isascii() and length.isdigit() else None
        if size is not None and size > max_download_bytes:
            raise SourceError(
                f"{url} is {size} bytes, larger than BACKFILL_MAX_DOWNLOAD_BYTES ({max_download_bytes} bytes)"
            )
        encoding = resp.headers.get("Content-Encoding", "").lower()
        decode = encoding not in ("", "identity", "gzip", "x-gzip")  # gzip is recognised by its bytes

        def read(n: int) -> bytes:  # what has arrived (not a full buffer): rows flow as they come
            return resp.raw.read1(n, decode_content=decode)

        counter = _Counted(read, max_download_bytes, url)
        stream, compressed = _decompressing(counter)
        identity = {
            "etag": resp.headers.get("ETag"),
            "last_modified": resp.headers.get("Last-Modified"),
            "content_length": size,
        }
        yield Opened(stream, identity, compressed, size, counter)
    finally:
        resp.close()

"""Files sent to the store (`PUT /backfill/sources/<name>`), listed and removed.

An upload is streamed to `BACKFILL_SOURCE_DIR/uploads/.partial/<random>.part` (a hidden
directory: never matched by a glob, refused as a source), hashed on the way, and renamed
to `uploads/<name>` only once complete; an interrupted upload leaves nothing loadable
and its partial file is removed. Memory stays at one chunk whatever the size. Names are
plain relative paths (letters, digits, `.`, `_`, `-`; no part starting with a dot), and
every directory on the way must resolve inside BACKFILL_SOURCE_DIR (no symlink out).
"""

from __future__ import annotations

import hashlib
import os
import re
import stat
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from app.backfill.sources import SourceError

UPLOADS = "uploads"
PARTIAL = ".partial"
CHUNK = 1 << 20
MAX_LIST = 1000
_PART = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
MAX_DEPTH = 8


class TooLarge(Exception):
    pass


class Interrupted(Exception):
    """The body ended before its announced length: the client went away."""


def check_name(name: str) -> list[str]:
    parts = name.split("/")
    if not name or len(name) > 512 or len(parts) > MAX_DEPTH or not all(_PART.match(p) for p in parts):
        raise SourceError(
            f"name {name[:80]!r}: use letters, digits, '.', '_' and '-' in up to {MAX_DEPTH} '/'-separated parts, "
            "none starting with '.'"
        )
    return parts


def _base(root: str) -> Path:
    try:
        base = Path(root).resolve(strict=True)
    except (OSError, RuntimeError):
        raise SourceError(f"BACKFILL_SOURCE_DIR ({root}) does not exist on this server") from None
    if not base.is_dir():
        raise SourceError(f"BACKFILL_SOURCE_DIR ({root}) is not a directory")
    return base


def _inside(base: Path, path: Path, name: str) -> Path:
    real = path.resolve()
    if real != base and base not in real.parents:
        raise SourceError(f"name {name[:80]!r} resolves outside BACKFILL_SOURCE_DIR")
    return real


def save(root: str, name: str, read: Callable[[int], bytes], limit: int, expected: int | None = None) -> dict:
    """Stream `read(n)` to uploads/<name>; TooLarge past `limit` bytes, Interrupted when it
    ends short of `expected` (the announced length); in both cases nothing is kept."""
    parts = check_name(name)
    base = _base(root)
    uploads = base / UPLOADS
    partial = uploads / PARTIAL
    partial.mkdir(parents=True, exist_ok=True)
    _inside(base, partial, name)
    directory = _inside(base, uploads.joinpath(*parts[:-1]), name) if len(parts) > 1 else uploads.resolve()
    target = directory / parts[-1]
    if target.is_symlink() or (target.exists() and not target.is_file()):
        raise SourceError(f"name {name[:80]!r} exists and is not a regular file")
    tmp = partial / f"{uuid.uuid4().hex}.part"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o640)
    digest = hashlib.sha256()
    size = 0
    try:
        with os.fdopen(fd, "wb", buffering=0) as out:
            while True:
                chunk = read(CHUNK)
                if not chunk:
                    break
                size += len(chunk)
                if size > limit:
                    raise TooLarge()
                digest.update(chunk)
                out.write(chunk)
            if expected is not None and size != expected:
                raise Interrupted(f"{size} of {expected} bytes arrived")
            os.fsync(out.fileno())
        directory.mkdir(parents=True, exist_ok=True)
        _inside(base, directory, name)
        os.replace(tmp, target)
    finally:
        if tmp.exists():
            tmp.unlink()
    return {"name": name, "source": f"{UPLOADS}/{name}", "bytes": size, "sha256": digest.hexdigest()}


def listing(root: str, prefix: str = "", limit: int = MAX_LIST) -> dict:
    """Files under the source directory whose relative path starts with `prefix`."""
    if len(prefix) > 512 or "\x00" in prefix:
        raise SourceError("prefix: at most 512 characters")
    base = _base(root)
    start_rel = prefix.rsplit("/", 1)[0] if "/" in prefix else ""
    start = base / start_rel if start_rel else base
    if any(p.startswith(".") for p in start_rel.split("/") if p) or not start.is_dir():
        return {"files": [], "truncated": False}
    _inside(base, start, prefix)
    files: list[dict] = []
    stack = [start]
    truncated = False
    while stack and not truncated:
        here = stack.pop()
        try:
            entries = sorted(os.scandir(here), key=lambda e: e.name)
        except OSError:
            continue
        for entry in entries:
            if entry.name.startswith("."):
                continue
            rel = os.path.relpath(entry.path, base)
            if entry.is_dir(follow_symlinks=False):
                if rel.startswith(prefix) or prefix.startswith(rel + "/"):
                    stack.append(Path(entry.path))
                continue
            if not rel.startswith(prefix):
                continue
            try:
                st = os.stat(entry.path)  # a symlink counts only if it leads to a file inside
                _inside(base, Path(entry.path), rel)
            except (OSError, SourceError):
                continue
            if not stat.S_ISREG(st.st_mode):
                continue
            if len(files) >= limit:
                truncated = True
                break
            files.append(
                {"name": rel, "bytes": st.st_size, "modified": datetime.fromtimestamp(st.st_mtime, UTC).isoformat()}
            )
    files.sort(key=lambda f: f["name"])
    return {"files": files, "truncated": truncated}


def delete(root: str, name: str) -> bool:
    """Remove uploads/<name>; False if there is no such file."""
    parts = check_name(name)
    base = _base(root)
    path = (base / UPLOADS).joinpath(*parts)
    if path.is_symlink():
        raise SourceError(f"name {name[:80]!r} is a symlink; only uploaded files can be removed")
    if not path.is_file():
        return False
    _inside(base, path, name)
    path.unlink()
    return True

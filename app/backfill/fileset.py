"""Many sources in one trigger: a glob inside BACKFILL_SOURCE_DIR, or a list of sources.

`expand` turns `source` (when it holds a glob character) or `sources` into the list of
`Source`s, sorted, each checked as strictly as a single source, and bounded: a match of
more than `max_files` files is an error naming the limit (BACKFILL_MAX_FILES), found
while listing, never after reading a huge directory whole. Hidden names (a path part
starting with '.', such as unfinished uploads under `uploads/.partial/`) never match and
are never loadable.
"""

from __future__ import annotations

import glob
import os
from pathlib import Path, PurePosixPath

from app.backfill import sources

GLOB_CHARS = frozenset("*?[")


def resolved_root(root: str) -> str:
    """BACKFILL_SOURCE_DIR as the real path it resolves to (what errors should name)."""
    try:
        return str(Path(root).resolve())
    except (OSError, RuntimeError):
        return root


def where(root: str) -> str:
    """What a source error adds for the operator: never the absolute server path (errors stay
    free of it), but where to read it (GET /backfill, admin only, names the resolved path)."""
    return "GET /backfill shows where BACKFILL_SOURCE_DIR resolves on the server"


def is_glob(text: object) -> bool:
    return isinstance(text, str) and "://" not in text and any(c in GLOB_CHARS for c in text)


def check_visible(location: str) -> None:
    """Hidden path parts are refused: partial uploads live there."""
    if any(part.startswith(".") and part not in (".",) for part in PurePosixPath(location).parts):
        raise sources.SourceError(
            f"source: {location[:200]!r} has a hidden part (a name starting with '.'); those are never loadable"
        )


def expand(
    raw_source: object, raw_sources: object, root: str, max_files: int, allow: sources.AllowList | None = None
) -> list[sources.Source]:
    """The files of a glob or a list; SourceError (a 400) names what is wrong."""
    if raw_sources is not None:
        if not isinstance(raw_sources, list) or not raw_sources:
            raise sources.SourceError("sources must be a non-empty list of paths or URLs")
        if len(raw_sources) > max_files:
            raise sources.SourceError(
                f"sources has {len(raw_sources)} entries, more than BACKFILL_MAX_FILES ({max_files})"
            )
        out = []
        for item in raw_sources:
            if is_glob(item):
                raise sources.SourceError(f"sources: {str(item)[:200]!r} is a glob; give it as source instead")
            src = sources.parse_source(item, root, allow)
            if src.kind == "file":
                check_visible(src.location)
            out.append(src)
        if len({(s.kind, s.location) for s in out}) != len(out):
            raise sources.SourceError("sources: the same source is listed twice")
        return out
    pattern = str(raw_source).strip()
    if pattern.startswith("/") or ".." in PurePosixPath(pattern).parts or "\x00" in pattern:
        raise sources.SourceError(f"source: the glob {pattern[:200]!r} must stay inside BACKFILL_SOURCE_DIR")
    base = resolved_root(root)
    if not os.path.isdir(base):
        raise sources.SourceError(f"source: BACKFILL_SOURCE_DIR ({root}) is not a directory on this server")
    matches: list[str] = []
    for name in glob.iglob(pattern, root_dir=base):  # '*' never matches hidden names
        if not os.path.isfile(os.path.join(base, name)):
            continue
        matches.append(name)
        if len(matches) > max_files:
            raise sources.SourceError(
                f"source: the glob {pattern[:200]!r} matches more than BACKFILL_MAX_FILES ({max_files}) files; "
                "narrow it or raise the limit"
            )
    if not matches:
        raise sources.SourceError(f"source: no file matches the glob {pattern[:200]!r} in BACKFILL_SOURCE_DIR")
    out = []
    for name in sorted(matches):
        check_visible(name)
        out.append(sources.parse_source(name, root))
    return out

"""Re-pin the registry schemas the store depends on: `python -m app.drift.pin`.

    python -m app.drift.pin --from-registry http://registry:8080      # the pinned ids, fetched
    python -m app.drift.pin --from-dir <directory>                   # every *.json there
    python -m app.drift.pin --from-registry URL --schema telemetry.X  # add or refresh one id
    python -m app.drift.pin --check --from-dir DIR                    # exit 1 when pins differ

Writes contracts/pins.json and contracts/<track>/<id>.json. See contracts/README.md.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from app.drift import pins as pinning
from app.drift.registry import Registry, RegistryError

DEFAULT_SCHEMAS = ("telemetry.FeedbackEvent", "telemetry.HealthComponent", "telemetry.HealthStatus")


def from_dir(directory: Path, track: str, wanted: list[str] | None) -> list[tuple[pinning.Pin, dict]]:
    found = []
    for path in sorted(directory.glob("*.json")):
        content = json.loads(path.read_text())
        if content.get("$track", track) != track:
            continue
        pin = pinning.from_content(content, track)
        if not wanted or pin.schema in wanted:
            found.append((pin, content))
    missing = set(wanted or ()) - {p.schema for p, _ in found}
    if missing:
        raise SystemExit(f"not found in {directory}: {', '.join(sorted(missing))}")
    return found


def from_registry(url: str, track: str, wanted: list[str]) -> list[tuple[pinning.Pin, dict]]:
    found = []
    with Registry(url) as registry:
        for schema in wanted:
            try:
                doc = registry.schema(track, pinning.registry_name(schema))
            except RegistryError as exc:
                raise SystemExit(f"{schema}: {exc}") from None
            if doc is None:
                raise SystemExit(f"{schema}: not in the registry (track {track})")
            found.append((pinning.from_content(doc["content"], track, doc.get("core_version"), schema), doc["content"]))
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m app.drift.pin", description=__doc__.split("\n\n")[0])
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--from-registry", metavar="URL", help="fetch from this registry (default: $REGISTRY_URL)")
    source.add_argument("--from-dir", metavar="DIR", type=Path, help="read <id>.json schema files from DIR")
    parser.add_argument("--track", default=os.environ.get("REGISTRY_TRACK", "v1"), choices=("v1", "v2"))
    parser.add_argument("--schema", action="append", metavar="ID", help="pin only these ids (repeatable)")
    parser.add_argument("--contracts", type=Path, default=pinning.CONTRACTS_DIR, help="where pins.json lives")
    parser.add_argument("--check", action="store_true", help="compare only; exit 1 when the pins differ")
    args = parser.parse_args(argv)

    try:
        current = {p.schema: p for p in pinning.for_track(args.track, args.contracts)}
    except pinning.PinError:
        current = {}
    if args.from_dir:
        found = from_dir(args.from_dir, args.track, args.schema)
    else:
        url = args.from_registry or os.environ.get("REGISTRY_URL")
        if not url:
            parser.error("give --from-registry URL, --from-dir DIR, or set REGISTRY_URL")
        wanted = sorted(set(args.schema or current or DEFAULT_SCHEMAS))
        found = from_registry(url, args.track, wanted)

    changed = []
    for pin, _ in found:
        old = current.get(pin.schema)
        if old != pin:
            was = f"{old.version} {old.sha256[:12]}" if old else "unpinned"
            changed.append(f"{pin.schema}: {was} -> {pin.version} {pin.sha256[:12]}")
    for line in changed:
        print(line)
    if args.check:
        print("pins differ" if changed else "pins match")
        return 1 if changed else 0
    path = pinning.write(found, args.contracts)
    print(f"wrote {path} ({len(found)} schema(s) on track {args.track}, {len(changed)} changed)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

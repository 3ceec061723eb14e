"""The registry schemas the store pins: `contracts/pins.json` and a copy of each schema.

A pin is (schema id, registry name, track, registry version, sha256 of the canonical
JSON of the schema content). The copy under `contracts/<track>/<id>.json` is what the
hash was computed from, kept so an operator can diff it against the registry's copy.
Re-pin with `python -m app.drift.pin` (see contracts/README.md).
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass
from pathlib import Path

from app.config import PROJECT_ROOT
from app.drift.canonical import sha256

CONTRACTS_DIR = PROJECT_ROOT / "contracts"
PINS_FILE = "pins.json"
SUFFIX = ".schema"
HASH_NOTE = (
    "sha256 hex of json.dumps(content, sort_keys=True, separators=(',', ':'), "
    "ensure_ascii=False) encoded as UTF-8 (app/drift/canonical.py)"
)
_ID = re.compile(r"^[A-Za-z0-9_.-]{1,200}$")
_SHA = re.compile(r"^[0-9a-f]{64}$")


class PinError(Exception):
    """The pins file is missing or malformed."""


@dataclass(frozen=True)
class Pin:
    schema: str  # the bare id, e.g. telemetry.HealthStatus
    track: str
    version: str | None  # the registry's core_version ($core_version in the content)
    sha256: str

    @property
    def name(self) -> str:
        """The registry's name for it (docs/contracts.md, "The schema registry": names carry a `.schema` suffix there)."""
        return self.schema + SUFFIX


def registry_name(schema_id: str) -> str:
    return schema_id + SUFFIX


def from_content(content: dict, track: str, version: str | None = None, schema: str | None = None) -> Pin:
    """A pin for schema `content` (version and id default to `$core_version`, `$schema_id`)."""
    schema = schema or content.get("$schema_id")
    if not isinstance(schema, str) or not _ID.match(schema):
        raise PinError(f"schema content has no usable $schema_id: {schema!r}")
    version = version if version is not None else content.get("$core_version")
    return Pin(schema=schema, track=track, version=version, sha256=sha256(content))


def load(directory: Path | None = None) -> list[Pin]:
    """Every pin in `<directory>/pins.json` (default: the repository's contracts/)."""
    path = (directory or CONTRACTS_DIR) / PINS_FILE
    try:
        doc = json.loads(path.read_text())
    except FileNotFoundError:
        raise PinError(f"{path} not found; create it with `python -m app.drift.pin`") from None
    except ValueError as exc:
        raise PinError(f"{path} is not valid JSON: {exc}") from None
    raw = doc.get("pins") if isinstance(doc, dict) else None
    if not isinstance(raw, list):
        raise PinError(f"{path}: expected an object with a 'pins' list")
    pins = []
    for i, item in enumerate(raw):
        try:
            pin = Pin(schema=item["schema"], track=item["track"], version=item.get("version"), sha256=item["sha256"])
        except (TypeError, KeyError) as exc:
            raise PinError(f"{path}: pins[{i}] lacks {exc}") from None
        if not _ID.match(str(pin.schema)) or not _SHA.match(str(pin.sha256)) or pin.track not in {"v1", "v2"}:
            raise PinError(f"{path}: pins[{i}] has a bad schema id, track or sha256")
        pins.append(pin)
    return pins


def for_track(track: str, directory: Path | None = None) -> list[Pin]:
    return [p for p in load(directory) if p.track == track]


def copy_path(pin: Pin, directory: Path | None = None) -> Path:
    return (directory or CONTRACTS_DIR) / pin.track / f"{pin.schema}.json"


def write(pins: list[tuple[Pin, dict]], directory: Path | None = None) -> Path:
    """Write pins.json (replacing the pins of the tracks given) and the schema copies."""
    directory = directory or CONTRACTS_DIR
    tracks = {pin.track for pin, _ in pins}
    try:
        kept = [p for p in load(directory) if p.track not in tracks]
    except PinError:
        kept = []
    for pin, content in pins:
        target = copy_path(pin, directory)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(json.dumps(content, indent=2, sort_keys=True, ensure_ascii=False) + "\n")
    every = sorted(kept + [pin for pin, _ in pins], key=lambda p: (p.track, p.schema))
    doc = {"hash": HASH_NOTE, "pins": [{**asdict(p), "name": p.name} for p in every]}
    path = directory / PINS_FILE
    path.write_text(json.dumps(doc, indent=2) + "\n")
    return path

"""Canonical JSON and its sha256: how the store hashes schemas and event payloads.

canonical(x) = json.dumps(x, sort_keys=True, separators=(",", ":"), ensure_ascii=False),
encoded as UTF-8. Key order and whitespace never change the hash; any change of a key,
value, list order or type does. The registry's own `sha256` may use another
serialisation, so drift compares both sides hashed by this function (docs/contracts.md, "The schema registry").
"""

from __future__ import annotations

import hashlib
import json
from typing import Any


def canonical(value: Any) -> bytes:
    """The canonical UTF-8 JSON bytes of `value`."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def sha256(value: Any) -> str:
    """Hex sha256 of the canonical JSON of `value`."""
    return hashlib.sha256(canonical(value)).hexdigest()

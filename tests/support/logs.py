"""Reading the processes' JSON logs."""

from __future__ import annotations

import json


def json_lines(text: str) -> list[dict]:
    """Every non-empty line as a JSON object (a line that is not one fails the test)."""
    out = []
    for line in text.splitlines():
        if line.strip():
            out.append(json.loads(line))  # every line is one JSON object
    return out

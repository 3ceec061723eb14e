"""GET /openapi.json (no auth): the OpenAPI 3 document of the whole API.

The document is written by hand in `openapi.yaml` beside this module, read once per
process. tests/test_openapi.py keeps it equal to the route map.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import yaml
from flask import Blueprint, jsonify
from flask.typing import ResponseReturnValue

from app.config import VERSION

DOCUMENT = Path(__file__).with_name("openapi.yaml")
bp = Blueprint("openapi", __name__)


@lru_cache(maxsize=1)
def document() -> dict:
    doc = yaml.safe_load(DOCUMENT.read_text())
    doc["info"]["version"] = VERSION
    return doc


@bp.get("/openapi.json")
def openapi() -> ResponseReturnValue:
    return jsonify(document())

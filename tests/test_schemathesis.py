"""schemathesis against the live service: every check, positive and negative cases.

Runs the `st` command line on a real gunicorn + worker over a fresh database, with a
fixed example budget and seed, so a run is repeatable and bounded (~30 s here). Any
5xx, any response not matching app/api/openapi.yaml, any invalid input accepted or
valid input refused fails the test with schemathesis' own report.
"""
from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import TOKEN

pytestmark = pytest.mark.timeout(300)
SEED = 20261125
MAX_EXAMPLES = 100


def test_schemathesis_finds_nothing(migrated_service, tmp_path):
    st = shutil.which("st", path=str(Path(sys.executable).parent)) or shutil.which("st")
    assert st, "schemathesis is not installed (requirements-dev.txt)"
    cmd = [
        st, "run", migrated_service.url + "/openapi.json",
        "--header", f"Authorization: Bearer {TOKEN}",
        "--checks", "all",
        "--mode", "all",
        "--max-examples", str(MAX_EXAMPLES),
        "--seed", str(SEED),
        "--request-timeout", "10",
        "--workers", "2",
        "--no-color",
    ]
    proc = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=240)
    report = proc.stdout[-12000:] + proc.stderr[-3000:]
    assert proc.returncode == 0, report
    assert "No issues found" in proc.stdout, report
    assert '"unhandled error"' not in migrated_service.logs(), "the API logged an unhandled error"

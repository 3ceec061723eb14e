"""Globs and `sources` lists at trigger time (app/backfill/fileset.py via parse_bars), no service."""

from __future__ import annotations

import gzip

import pytest

from app.errors import BadRequest
from app.jobs import backfill
from tests.support.db import make_settings


@pytest.fixture
def source_dir(tmp_path):
    path = tmp_path / "src"
    (path / "polygon").mkdir(parents=True)
    header = gzip.compress(b"ticker,volume,open,close,high,low,window_start,transactions\n")
    for day in range(1, 8):
        (path / "polygon" / f"2024-03-{day:02d}.csv.gz").write_bytes(header)
    (path / "polygon" / "2024-04-01.csv.gz").write_bytes(gzip.compress(b"ticker;volume;open\n"))
    (path / "polygon" / ".2024-03-99.csv.gz").write_bytes(b"")  # hidden: never matched
    (path / "uploads" / ".partial").mkdir(parents=True)
    (path / "uploads" / ".partial" / "abc.part").write_bytes(b"")
    return path


@pytest.fixture
def settings(source_dir):
    s = make_settings(
        "postgresql://127.0.0.1/none", "redis://127.0.0.1:1/0", BACKFILL_SOURCE_DIR=source_dir, BACKFILL_MAX_FILES=6
    )
    return s


def test_a_glob_makes_one_child_per_file_in_order_with_the_same_parameters(settings):
    got = backfill.parse_bars(
        {"source": "polygon/2024-03-0[1-6].csv.gz", "preset": "polygon_aggs", "interval": "1m"}, settings
    )
    assert [c["source"] for c in got["files"]] == [f"polygon/2024-03-0{d}.csv.gz" for d in range(1, 7)]
    assert {c["format"] for c in got["files"]} == {"csv"}
    assert all(c["layout"] == got["parent"]["layout"] and c["provider"] == "polygon" for c in got["files"])
    assert got["parent"]["glob"] == "polygon/2024-03-0[1-6].csv.gz" and len(got["parent"]["sources"]) == 6


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"source": "polygon/*.csv.gz"}, "matches more than BACKFILL_MAX_FILES (6) files"),
        ({"sources": [f"polygon/2024-03-0{d}.csv.gz" for d in range(1, 8)]}, "more than BACKFILL_MAX_FILES (6)"),
        (
            {"source": "nothing/*.csv"},
            "no file matches the glob 'nothing/*.csv' in BACKFILL_SOURCE_DIR (GET /backfill shows where",
        ),
        ({"source": "../*.csv"}, "must stay inside BACKFILL_SOURCE_DIR"),
        ({"source": "/etc/*"}, "must stay inside BACKFILL_SOURCE_DIR"),
        ({"sources": []}, "sources must be a non-empty list"),
        ({"sources": ["polygon/2024-03-01.csv.gz"] * 2}, "listed twice"),
        ({"sources": ["polygon/*.csv.gz"]}, "is a glob; give it as source instead"),
        ({"sources": "polygon/2024-03-01.csv.gz"}, "sources must be a non-empty list"),
        ({"source": "uploads/.partial/abc.part", "format": "csv"}, "hidden part"),
        ({"source": "polygon/.2024-03-99.csv.gz"}, "hidden part"),
        (
            {"source": "polygon/2024-0[34]-01.csv.gz", "preset": "polygon_aggs", "interval": "1m"},
            "polygon/2024-04-01.csv.gz: the CSV header lacks column(s) symbol (column 'ticker')",
        ),
    ],
)
def test_fan_out_bounds_and_bad_globs_are_400s_naming_what_is_wrong(settings, body, message):
    with pytest.raises(BadRequest) as err:
        backfill.parse_bars(body, settings)
    assert message in str(err.value)

"""GET /tables and GET /tables/<table>/partitions on both backends: the layout in figures,
newest first, paged; unknown tables 404, bad query values 400, no token 401.

The Flask app runs in-process over a real, migrated database (plain Postgres, or the
TimescaleDB cluster where installed); rows have fixed timestamps."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from urllib.parse import quote

import psycopg
import pytest

from app.timeseries import partitions
from tests.support.bars import bar_series, insert_bars
from tests.support.common import TOKEN
from tests.support.db import make_settings
from tests.support.timescale import requires_timescaledb

AUTH = {"Authorization": f"Bearer {TOKEN}"}
START = datetime(2001, 1, 4, tzinfo=UTC)  # a Thursday: epoch-aligned weeks start on Thursdays


@pytest.fixture(
    params=[
        pytest.param("postgres", id="postgres"),
        pytest.param("timescaledb", id="timescaledb", marks=[pytest.mark.timescaledb, requires_timescaledb]),
    ]
)
def setup(request, redis_url, monkeypatch):
    monkeypatch.setenv("STORE_DISABLE_SWEEPER", "1")
    url = request.getfixturevalue("migrated_database_url" if request.param == "postgres" else "timescale_migrated_url")
    with psycopg.connect(url, autocommit=True) as conn:
        partitions.ensure_range(conn, "bars_ohlcv", START, START + timedelta(days=21))
        insert_bars(conn, bar_series("AAPL", START, START + timedelta(days=21), timedelta(hours=1), interval="1h"))
        conn.execute("ANALYZE bars_ohlcv")
    from app import create_app, resources_of

    app = create_app(make_settings(url, redis_url))
    yield request.param, app.test_client()
    resources_of(app).close()


def test_tables_and_partitions_describe_the_layout_newest_first_in_pages(setup):
    kind, client = setup
    assert client.get("/tables").status_code == 401
    tables = {t["table"]: t for t in client.get("/tables", headers=AUTH).get_json()["tables"]}
    bars = tables["bars_ohlcv"]
    assert bars["backend"] == kind and bars["partitions"] >= 3 and bars["bytes"] > 0
    assert bars["oldest_range"]["start"] <= START.isoformat() < bars["newest_range"]["end"]

    first = client.get("/tables/bars_ohlcv/partitions?limit=2", headers=AUTH)
    assert first.status_code == 200, first.get_json()
    page = first.get_json()
    starts = [p["range"]["start"] for p in page["partitions"]]
    assert len(starts) == 2 and starts == sorted(starts, reverse=True) and page["next_before"] == starts[-1]
    rest = client.get(f"/tables/bars_ohlcv/partitions?limit=1000&before={quote(page['next_before'])}", headers=AUTH)
    listed = starts + [p["range"]["start"] for p in rest.get_json()["partitions"]]
    assert len(listed) == bars["partitions"] and rest.get_json()["next_before"] is None
    ours = [
        p
        for p in page["partitions"] + rest.get_json()["partitions"]
        if START.isoformat() <= p["range"]["start"] < (START + timedelta(days=21)).isoformat()
    ]
    assert len(ours) == 3 and all(p["bytes"] > 0 and p["compressed"] is False for p in ours)
    assert sum(p["estimated_rows"] or 0 for p in ours) == 21 * 24  # ANALYZE ran: exact for tables this small


@pytest.mark.parametrize(
    "path, status",
    [
        ("/tables/nope/partitions", 404),
        ("/tables/pg_class/partitions", 404),
        ("/tables/bars_ohlcv/partitions?limit=0", 400),
        ("/tables/bars_ohlcv/partitions?limit=1001", 400),
        ("/tables/bars_ohlcv/partitions?limit=abc", 400),
        ("/tables/bars_ohlcv/partitions?limit=", 400),
        ("/tables/bars_ohlcv/partitions?before=yesterday", 400),
        ("/tables/bars_ohlcv/partitions?before=0001-01-01T00:00:00Z", 400),
        ("/tables/bars_ohlcv/partitions?after=2020-01-01", 400),
    ],
)
def test_bad_names_are_404_and_bad_query_values_400(setup, path, status):
    _, client = setup
    answer = client.get(path, headers=AUTH)
    assert answer.status_code == status, answer.get_json()
    assert answer.get_json()["error"]

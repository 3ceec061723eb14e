"""Continuous aggregates through the real service: GET /aggregates, POST /refresh/aggregate."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import psycopg
import requests

from tests.support.bars import bar_series, insert_bars, reference_rollup, rollup_rows, source_rows

UTC = UTC
BASE = datetime(2024, 5, 1, tzinfo=UTC)
TICK_ROLLUPS = {
    "tick_agg_1m": "1 minute",
    "tick_agg_5m": "5 minutes",
    "tick_agg_1h": "1 hour",
    "tick_vwap_daily": "1 day",
    "tick_spread_stats": "5 minutes",
    "tick_rate_stats": "1 minute",
}


def test_list_describes_both_aggregates(migrated_service):
    resp = migrated_service.get("/aggregates")
    assert resp.status_code == 200
    docs = {d["name"]: d for d in resp.json()["aggregates"]}
    assert set(docs) == {"bars_ohlcv_1h", "bars_ohlcv_1d", *TICK_ROLLUPS}
    assert docs["bars_ohlcv_1h"]["bucket_width"] == "1 hour" and docs["bars_ohlcv_1d"]["bucket_width"] == "1 day"
    assert {n: docs[n]["bucket_width"] for n in TICK_ROLLUPS} == TICK_ROLLUPS
    for doc in docs.values():
        assert doc["source"] == ("tick_data" if doc["name"] in TICK_ROLLUPS else "bars_ohlcv")
        assert doc["backend"] == "postgres"
        assert doc["last_refresh_at"] is None and doc["watermark"] is None and doc["pending_invalidations"] == 0
    assert requests.get(migrated_service.url + "/aggregates", timeout=5).status_code == 401
    assert requests.post(migrated_service.url + "/refresh/aggregate", timeout=5).status_code == 401


BAD_REFRESHES = [
    ({"name": "bars_ohlcv_5m"}, 404, "bars_ohlcv_5m"),
    ({"name": 7}, 400, "name"),
    ({"start": "yesterday"}, 400, "start"),
    ({"start": "2024-13-01T00:00:00Z"}, 400, "start"),
    ({"start": "2024-05-01T00:00:00Z", "end": "2024-05-01T25:00:00Z"}, 400, "end"),
    ({"start": 1714521600}, 400, "start"),
    ({"start": "2024-05-02T00:00:00Z", "end": "2024-05-01T00:00:00Z"}, 400, "start must be before end"),
    ({"start": "2024-05-01T00:00:00Z", "end": "2024-05-01T00:00:00+00:00"}, 400, "start must be before end"),
    ({"end": "2024-05-01T00:00:00Z"}, 400, "start"),
    ({"start": "8000-01-01T00:00:00Z"}, 400, "start must be before end"),
    ({"start": "0999-01-01T00:00:00Z"}, 400, "start"),
    ({"window": "1d"}, 400, "window"),
]


def test_refresh_rejects_bad_input_and_records_no_job(migrated_service):
    for body, status, field in BAD_REFRESHES:
        resp = migrated_service.post("/refresh/aggregate", body)
        assert resp.status_code == status, (body, resp.text)
        assert field in resp.json()["error"], body
    assert migrated_service.get("/jobs", params={"job": "refresh_aggregate"}).json()["jobs"] == []


def test_refresh_jobs_make_the_rollups_match_the_source(migrated_service, migrated_database_url):
    database_url = migrated_database_url
    with psycopg.connect(database_url, autocommit=True) as c:
        insert_bars(c, bar_series("AAPL", BASE, BASE + timedelta(days=2), timedelta(minutes=5)))
    listed = {d["name"]: d for d in migrated_service.get("/aggregates").json()["aggregates"]}
    assert listed["bars_ohlcv_1h"]["pending_invalidations"] == 48
    assert listed["bars_ohlcv_1d"]["pending_invalidations"] == 2
    doc = migrated_service.run_job("/refresh/aggregate", {})  # pending invalidations, all aggregates
    out = doc["result"]["aggregates"]
    assert out["bars_ohlcv_1h"]["buckets"] == 48 and out["bars_ohlcv_1h"]["rows_written"] == 48
    assert out["bars_ohlcv_1d"]["window"] == {"start": BASE.isoformat(), "end": (BASE + timedelta(days=2)).isoformat()}
    listed = {d["name"]: d for d in migrated_service.get("/aggregates").json()["aggregates"]}
    assert listed["bars_ohlcv_1h"]["pending_invalidations"] == 0
    assert listed["bars_ohlcv_1h"]["watermark"] == (BASE + timedelta(days=2)).isoformat()
    assert listed["bars_ohlcv_1h"]["last_refresh_at"]
    # a late correction, then a windowed refresh of one aggregate
    with psycopg.connect(database_url, autocommit=True) as c:
        c.execute("UPDATE bars_ohlcv SET close = -1 WHERE ts = %s", (BASE + timedelta(hours=30, minutes=55),))
    doc = migrated_service.run_job(
        "/refresh/aggregate",
        {"name": "bars_ohlcv_1h", "start": "2024-05-02T06:10:00Z", "end": "2024-05-02T07:00:00+00:00"},
    )
    result = doc["result"]["aggregates"]
    assert list(result) == ["bars_ohlcv_1h"]
    assert result["bars_ohlcv_1h"]["window"] == {
        "start": "2024-05-02T06:00:00+00:00",
        "end": "2024-05-02T07:00:00+00:00",
    }
    assert result["bars_ohlcv_1h"]["buckets"] == 1 and result["bars_ohlcv_1h"]["rows_written"] == 1
    with psycopg.connect(database_url, autocommit=True) as c:
        for name, width in (("bars_ohlcv_1h", timedelta(hours=1)),):
            assert rollup_rows(c, name) == reference_rollup(source_rows(c), width)
        listed = {d["name"]: d for d in migrated_service.get("/aggregates").json()["aggregates"]}
        assert listed["bars_ohlcv_1d"]["pending_invalidations"] == 1  # the 1d bucket still waits
        assert listed["bars_ohlcv_1h"]["pending_invalidations"] == 0

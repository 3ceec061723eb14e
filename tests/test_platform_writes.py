"""The platform's writers and readers, verbatim, on our schema (issue 15; docs/contracts.md).

Every statement the pipeline issues (its upserts on the time-first keys, job_runs
start/progress/finish and the summary read, news without an id, signals without
metadata, ticks, the tick replayer, the tick metrics, latest_prices) runs as a
pipeline role (not a superuser, not the owner: row-level security applies) against:

- a freshly migrated database, and
- one migrated to today's schema (0011) with rows in it, then upgraded,

on plain Postgres and (marked `timescaledb`) on TimescaleDB, and every value is read
back. Plus: forced row-level security (a session without app.tenant_id reads and
writes nothing, the owner included; the store's maintenance path sees every tenant, the
pipeline cannot take it; retention removes every tenant's old rows), and a property test
that the six tick rollups equal a reference aggregation of tick_data on both backends.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from psycopg.types.json import Jsonb
from yoyo import get_backend, read_migrations

from app import migrator
from app.timeseries import partitions, retention, rollups
from tests.support.common import wait_for
from tests.support.db import create_database, drop_database, make_settings
from tests.support.ticks import TICK_REPLAY, TICK_ROLLUPS, diff, insert_ticks, reference, rollup, same, tick_rows
from tests.support.timescale import requires_timescaledb

UTC = UTC
T0 = datetime(2024, 3, 4, 14, 30, tzinfo=UTC)
TODAY = "0011_backfill"  # the schema before issue 15

# -- the pipeline's statements ---------------------------------------------------------------
BARS_UPSERT = (
    "INSERT INTO bars (ts, tenant_id, vendor, symbol, timeframe, open_price, high_price, low_price, close_price, volume) "
    "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s) "
    "ON CONFLICT (ts, tenant_id, vendor, symbol, timeframe) DO UPDATE SET open_price = EXCLUDED.open_price, "
    "high_price = EXCLUDED.high_price, low_price = EXCLUDED.low_price, close_price = EXCLUDED.close_price, "
    "volume = EXCLUDED.volume, updated_at = NOW()"
)
FUNDAMENTALS_UPSERT = (
    "INSERT INTO fundamentals (asof, tenant_id, vendor, symbol, total_assets, total_liabilities, net_income, eps) "
    "VALUES (%s, %s, %s, %s, %s, %s, %s, %s) "
    "ON CONFLICT (asof, tenant_id, vendor, symbol) DO UPDATE SET total_assets = EXCLUDED.total_assets, "
    "total_liabilities = EXCLUDED.total_liabilities, net_income = EXCLUDED.net_income, eps = EXCLUDED.eps, "
    "updated_at = NOW()"
)
NEWS_UPSERT = (  # no id: the column's default
    "INSERT INTO news (published_at, tenant_id, vendor, title, url, symbol, sentiment_score) "
    "VALUES (%s, %s, %s, %s, %s, %s, %s) "
    "ON CONFLICT (published_at, tenant_id, vendor, id) DO UPDATE SET title = EXCLUDED.title, url = EXCLUDED.url, "
    "symbol = EXCLUDED.symbol, sentiment_score = EXCLUDED.sentiment_score, updated_at = NOW()"
)
OPTIONS_UPSERT = (
    "INSERT INTO options_snap (ts, tenant_id, vendor, symbol, expiry, option_type, strike, iv, delta, gamma, oi, "
    "volume, spot) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s) "
    "ON CONFLICT (ts, tenant_id, vendor, symbol, expiry, option_type, strike) DO UPDATE SET iv = EXCLUDED.iv, "
    "delta = EXCLUDED.delta, gamma = EXCLUDED.gamma, oi = EXCLUDED.oi, volume = EXCLUDED.volume, spot = EXCLUDED.spot, "
    "updated_at = NOW()"
)
OHLCV_UPSERT = (
    'INSERT INTO bars_ohlcv (provider, symbol, "interval", ts, open, high, low, close, volume) '
    "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s) "
    'ON CONFLICT (provider, symbol, "interval", ts) DO UPDATE SET open = EXCLUDED.open, high = EXCLUDED.high, '
    "low = EXCLUDED.low, close = EXCLUDED.close, volume = EXCLUDED.volume"
)
SIGNAL_UPSERT = (
    "INSERT INTO signals (provider, symbol, ts, name, value, score, metadata) VALUES (%s, %s, %s, %s, %s, %s, %s) "
    "ON CONFLICT (provider, symbol, ts, name) DO UPDATE SET value = EXCLUDED.value, score = EXCLUDED.score, "
    "metadata = EXCLUDED.metadata"
)
JOB_START = (
    "INSERT INTO job_runs (job_name, dataset_name, provider, mode, status, config_fingerprint, pipeline_version, "
    "symbols, metadata) VALUES (%s, %s, %s, %s, 'running', %s, %s, %s, %s) RETURNING id"
)
JOB_PROGRESS = (
    "UPDATE job_runs SET rows_written = rows_written + %s, rows_failed = rows_failed + %s, "
    "min_ts = LEAST(COALESCE(min_ts, %s), %s), max_ts = GREATEST(COALESCE(max_ts, %s), %s), updated_at = NOW() "
    "WHERE id = %s"
)
JOB_FINISH = (
    "UPDATE job_runs SET status = %s, completed_at = NOW(), error_message = %s, updated_at = NOW() WHERE id = %s"
)
JOB_SUMMARY = (
    "SELECT job_name, provider, status, run_count, avg_duration_ms, total_rows, last_run_at, failure_count "
    "FROM job_runs_summary WHERE job_name = %s"
)
LATEST_PRICES = (
    "SELECT tenant_id, vendor, symbol, price, price_timestamp FROM latest_prices "
    "WHERE tenant_id = %s AND vendor = %s AND symbol = ANY(%s)"
)
TICK_TABLE_STATS = (
    "SELECT relname, n_live_tup FROM pg_stat_user_tables WHERE relname LIKE 'tick_agg_%' "
    "OR relname LIKE 'tick_vwap_%' OR relname LIKE 'tick_spread_%' OR relname LIKE 'tick_rate_%'"
)
TICK_RATE = (
    "SELECT provider, symbol, SUM(ticks_per_minute) FROM tick_rate_stats "
    "WHERE bucket > NOW() - INTERVAL '5 minutes' GROUP BY provider, symbol"
)


# -- databases -----------------------------------------------------------------------------
def migrate_to_today(url: str, redis_url: str) -> None:
    """Apply the migrations up to today's schema (0011) only, as yoyo would have."""
    backend = get_backend(
        migrator.yoyo_url(make_settings(url, redis_url), "test-today"), migration_table=migrator.MIGRATION_TABLE
    )
    try:
        todo = read_migrations(str(migrator.MIGRATIONS_DIR)).filter(lambda m: m.id <= TODAY)
        with backend.lock():
            backend.apply_migrations(backend.to_apply(todo))
    finally:
        backend.connection.close()


LEGACY_START = datetime(2024, 1, 2, 9, 0, tzinfo=UTC)


def seed_today(url: str) -> None:
    """Rows written on today's schema: they must keep their values through the upgrade."""
    with psycopg.connect(url, autocommit=True) as c:
        c.execute(
            "INSERT INTO job_runs (job_name, provider, status, rows_written, started_at, completed_at) "
            "VALUES ('legacy', 'p', 'success', 7, %s, %s)",
            (LEGACY_START, LEGACY_START + timedelta(minutes=3)),
        )
        c.execute("INSERT INTO job_runs (job_name, started_at) VALUES ('legacy-running', %s)", (LEGACY_START,))
        c.execute(
            "INSERT INTO news (published_at, tenant_id, vendor, id, title) VALUES (%s, 'acme', 'v', 'n-legacy', 'old')",
            (LEGACY_START,),
        )
        c.execute(
            "INSERT INTO signals (provider, symbol, ts, name, value, metadata) "
            "VALUES ('p', 'AAPL', %s, 'rsi', 1, '{\"k\": 1}'), ('p', 'AAPL', %s, 'ema', 2, DEFAULT)",
            (LEGACY_START, LEGACY_START),
        )


def check_today_kept(url: str) -> None:
    with psycopg.connect(url, autocommit=True) as c:
        rows = c.execute(
            "SELECT job_name, rows_written, started_at, completed_at, created_at, updated_at FROM job_runs "
            "WHERE job_name LIKE 'legacy%' ORDER BY job_name"
        ).fetchall()
        done = LEGACY_START + timedelta(minutes=3)
        assert rows == [
            ("legacy", 7, LEGACY_START, done, LEGACY_START, done),
            ("legacy-running", 0, LEGACY_START, None, LEGACY_START, LEGACY_START),
        ]
        assert c.execute("SELECT id, title FROM news WHERE tenant_id = 'acme'").fetchall() == [("n-legacy", "old")]
        assert sorted(c.execute("SELECT name, metadata FROM signals").fetchall()) == [("ema", {}), ("rsi", {"k": 1})]


# What the pipeline's role is granted (docs/contracts.md): the tables themselves, never partitions.
PIPELINE_TABLES = "tenants, bars, fundamentals, news, options_snap, bars_ohlcv, signals, job_runs, tick_data"
PIPELINE_VIEWS = "latest_prices, latest_ohlcv_prices, data_freshness, job_runs_summary"


class Role:
    """A login role of its own on a cluster (roles are cluster-wide): created, granted, dropped."""

    def __init__(self, db_url: str, prefix: str):
        self.db_url = db_url
        self.name = f"{prefix}_{uuid.uuid4().hex[:8]}"
        with psycopg.connect(db_url, autocommit=True) as c:
            c.execute(f"CREATE ROLE {self.name} LOGIN")

    @property
    def url(self) -> str:
        return self.db_url.replace("postgres@", f"{self.name}@", 1)

    def grant_pipeline(self, as_url: str | None = None) -> Role:
        """What the platform's pipeline role gets: DML on the tables, the sequences, the views."""
        with psycopg.connect(as_url or self.db_url, autocommit=True) as c:
            c.execute(f"GRANT SELECT, INSERT, UPDATE, DELETE ON {PIPELINE_TABLES} TO {self.name}")
            c.execute(f"GRANT SELECT ON {PIPELINE_VIEWS}, {', '.join(TICK_ROLLUPS)} TO {self.name}")
            c.execute(f"GRANT USAGE ON SEQUENCE job_runs_id_seq TO {self.name}")
        return self

    def drop(self) -> None:
        with psycopg.connect(self.db_url, autocommit=True) as c:
            c.execute(f"DROP OWNED BY {self.name}")
            c.execute(f"DROP ROLE IF EXISTS {self.name}")


@pytest.fixture(params=["fresh", "upgraded"])
def platform_db(request, redis_url):
    """(database url, how it came to be) on plain Postgres."""
    name, url = create_database()
    try:
        if request.param == "upgraded":
            migrate_to_today(url, redis_url)
            seed_today(url)
        migrator.apply(make_settings(url, redis_url))
        if request.param == "upgraded":
            check_today_kept(url)
        yield url, request.param
    finally:
        drop_database(name)


@pytest.fixture(params=["fresh", "upgraded"])
def ts_platform_db(request, timescale_cluster, redis_url):
    """The same on TimescaleDB."""
    name, url = timescale_cluster.create_database()
    try:
        if request.param == "upgraded":
            migrate_to_today(url, redis_url)
            seed_today(url)
            with psycopg.connect(url, autocommit=True) as c:  # the upgrade alters signals' compressed chunks too
                assert c.execute("SELECT count(compress_chunk(ch)) FROM show_chunks('signals') ch").fetchone()[0] > 0
        migrator.apply(make_settings(url, redis_url))
        if request.param == "upgraded":
            check_today_kept(url)
        yield url, request.param
    finally:
        timescale_cluster.drop_database(name)


# -- the contract --------------------------------------------------------------------------
def _tenant_writes(p: psycopg.Connection) -> None:
    """bars, fundamentals, news, options_snap: the upserts on the time-first keys, read back."""
    p.execute("SET app.tenant_id = 'acme'")
    bar = (T0, "acme", "polygon", "AAPL", "1m", Decimal("189.1"), Decimal("189.5"), Decimal("188.9"), Decimal("189.25"))
    p.execute(BARS_UPSERT, (*bar, 1200))
    p.execute(BARS_UPSERT, (*bar[:8], Decimal("189.30000001"), 1300))  # the upsert updates
    p.execute(BARS_UPSERT, (T0 - timedelta(days=1), "acme", "polygon", "AAPL", "1d", 1, 2, 0.5, Decimal("180"), 9))
    p.execute(BARS_UPSERT, (T0 - timedelta(minutes=1), "acme", "polygon", "MSFT", "1m", 1, 2, 0.5, Decimal("410.5"), 3))
    got = p.execute(
        "SELECT ts, tenant_id, vendor, symbol, timeframe, open_price, high_price, low_price, close_price, volume "
        "FROM bars WHERE symbol = 'AAPL' AND timeframe = '1m'"
    ).fetchall()
    assert got == [(*bar[:8], Decimal("189.30000001"), 1300)]

    fund = (T0, "acme", "polygon", "AAPL", Decimal("352583000000.00"), Decimal("290437000000.00"))
    p.execute(FUNDAMENTALS_UPSERT, (*fund, Decimal("96995000000.00"), Decimal("6.1300")))
    p.execute(FUNDAMENTALS_UPSERT, (*fund, Decimal("96995000000.00"), Decimal("6.1600")))
    got = p.execute(
        "SELECT asof, tenant_id, vendor, symbol, total_assets, total_liabilities, net_income, eps FROM fundamentals"
    ).fetchall()
    assert got == [(*fund, Decimal("96995000000.00"), Decimal("6.1600"))]

    item = (T0, "acme", "benzinga", "Apple beats", "https://example.test/a", "AAPL", Decimal("0.8125"))
    p.execute(NEWS_UPSERT, item)
    p.execute(NEWS_UPSERT, item)  # no id: never conflicts, a second row
    got = p.execute(
        "SELECT published_at, tenant_id, vendor, title, url, symbol, sentiment_score, id FROM news "
        "WHERE vendor = 'benzinga'"
    ).fetchall()
    assert [r[:7] for r in got] == [item, item]
    assert len({r[7] for r in got}) == 2 and all(uuid.UUID(r[7]) for r in got)

    opt = (T0, "acme", "polygon", "AAPL", datetime(2024, 6, 21).date(), "C", Decimal("190.00000000"))
    p.execute(OPTIONS_UPSERT, (*opt, 0.25, 0.5, 0.01, 1000, 50, Decimal("189.25000000")))
    p.execute(OPTIONS_UPSERT, (*opt, 0.26, 0.52, 0.011, 1100, 60, Decimal("189.30000000")))
    got = p.execute(
        "SELECT ts, tenant_id, vendor, symbol, expiry, option_type, strike, iv, delta, gamma, oi, volume, spot "
        "FROM options_snap"
    ).fetchall()
    assert got == [(*opt, 0.26, 0.52, 0.011, 1100, 60, Decimal("189.30000000"))]

    # latest_prices: the newest close per tenant, vendor and symbol; another tenant's bars are not seen
    p.execute("SET app.tenant_id = 'other'")
    p.execute(BARS_UPSERT, (T0 + timedelta(hours=1), "other", "polygon", "AAPL", "1m", 1, 1, 1, Decimal("1"), 1))
    p.execute("SET app.tenant_id = 'acme'")
    got = p.execute(LATEST_PRICES, ("acme", "polygon", ["AAPL", "MSFT", "NONE"])).fetchall()
    assert sorted(got) == [
        ("acme", "polygon", "AAPL", Decimal("189.30000001"), T0),
        ("acme", "polygon", "MSFT", Decimal("410.5"), T0 - timedelta(minutes=1)),
    ]
    assert p.execute(LATEST_PRICES, ("other", "polygon", ["AAPL"])).fetchall() == []


def _provider_writes(p: psycopg.Connection) -> None:
    """bars_ohlcv, signals (with and without metadata), job_runs and its summary."""
    p.execute(OHLCV_UPSERT, ("polygon", "AAPL", "1m", T0, 1.0, 2.0, 0.5, 1.5, 100.0))
    p.execute(OHLCV_UPSERT, ("polygon", "AAPL", "1m", T0, 1.0, 2.5, 0.5, 1.75, 120.0))
    got = p.execute(
        'SELECT provider, symbol, "interval", ts, open, high, low, close, volume FROM bars_ohlcv'
    ).fetchall()
    assert got == [("polygon", "AAPL", "1m", T0, 1.0, 2.5, 0.5, 1.75, 120.0)]

    p.execute(SIGNAL_UPSERT, ("polygon", "AAPL", T0, "rsi", 61.5, None, None))
    p.execute(SIGNAL_UPSERT, ("polygon", "AAPL", T0, "ema", 189.0, 0.9, Jsonb({"window": 20})))
    p.execute(SIGNAL_UPSERT, ("polygon", "AAPL", T0, "ema", 189.5, None, None))  # metadata dropped again
    got = p.execute(
        "SELECT name, value, score, metadata FROM signals WHERE provider = 'polygon' ORDER BY name"
    ).fetchall()
    assert got == [("ema", 189.5, None, None), ("rsi", 61.5, None, None)]

    run_id = p.execute(
        JOB_START, ("ticks.live", "ticks", "polygon", "live", "fp-1", "1.4.2", ["AAPL", "MSFT"], Jsonb({"k": "v"}))
    ).fetchone()[0]
    created, updated0 = p.execute("SELECT created_at, updated_at FROM job_runs WHERE id = %s", (run_id,)).fetchone()
    p.execute(JOB_PROGRESS, (10, 1, T0, T0, T0, T0, run_id))
    p.execute(JOB_PROGRESS, (5, 0, T0 - timedelta(hours=1), T0 - timedelta(hours=1), T0, T0, run_id))
    p.execute(JOB_FINISH, ("success", None, run_id))
    got = p.execute(
        "SELECT job_name, dataset_name, provider, mode, status, config_fingerprint, pipeline_version, rows_written, "
        "rows_failed, symbols, min_ts, max_ts, error_message, metadata, created_at, updated_at, completed_at, "
        "elapsed_ms FROM job_runs WHERE id = %s",
        (run_id,),
    ).fetchone()
    assert got[:14] == (
        "ticks.live",
        "ticks",
        "polygon",
        "live",
        "success",
        "fp-1",
        "1.4.2",
        15,
        1,
        ["AAPL", "MSFT"],
        T0 - timedelta(hours=1),
        T0,
        None,
        {"k": "v"},
    )
    assert got[14] == created and got[15] >= updated0 >= created and got[16] is not None and got[17] >= 0
    summary = p.execute(JOB_SUMMARY, ("ticks.live",)).fetchall()
    assert [(r[0], r[1], r[2], r[3], r[5], r[7]) for r in summary] == [("ticks.live", "polygon", "success", 1, 15, 0)]
    assert summary[0][4] == float(got[17])


def _tick_writes(p: psycopg.Connection, store: psycopg.Connection, backend: str) -> None:
    """The tick consumer, the replayer, the rollups and the pipeline's tick metrics."""
    ticks = [
        (
            "polygon",
            "aapl",
            189.0 + i / 8,
            T0 + timedelta(seconds=7 * i),
            None if i % 5 == 0 else float(i % 9),
            None,
            None,
        )
        for i in range(120)
    ]
    ticks += [("polygon", "msft", 410.0, T0 + timedelta(seconds=3), 10.0, 409.9, 410.1)]
    insert_ticks(p, ticks)
    again = p.execute(  # a replayed tick is ignored, the first one stays
        "INSERT INTO tick_data (provider, symbol, price, ts, size, bid, ask) "
        "VALUES (%s, UPPER(%s), %s, %s, %s, %s, %s) ON CONFLICT (provider, symbol, ts) DO NOTHING",
        ("polygon", "aapl", 1.0, T0, 1.0, None, None),
    )
    assert again.rowcount == 0
    with psycopg.RawCursor(p) as cur:
        cur.execute(TICK_REPLAY, ("polygon", ["AAPL", "MSFT"], T0, T0 + timedelta(seconds=14)))
        got = cur.fetchall()
    want = sorted(
        [(pr, s.upper(), price, ts, size, bid, ask) for pr, s, price, ts, size, bid, ask in ticks],
        key=lambda t: t[3],
    )
    want = [t for t in want if t[3] < T0 + timedelta(seconds=14)]
    assert [r[:7] for r in got] == want and all(r[7] is not None for r in got)

    for name in TICK_ROLLUPS:
        rollups.refresh_pending(store, name)
    stored = tick_rows(store)
    for name in TICK_ROLLUPS:
        got_rollup, want_rollup = rollup(p, name), reference(name, stored)
        assert want_rollup and same(got_rollup, want_rollup), (name, diff(got_rollup, want_rollup))

    # the pipeline's rate metric over the last five minutes (database time)
    now = p.execute("SELECT now()").fetchone()[0]
    insert_ticks(p, [("polygon", "live", 1.0, now - timedelta(seconds=s), 1.0, None, None) for s in (50, 40, 30)])
    rollups.refresh_pending(store, "tick_rate_stats")
    rates = {(r[0], r[1]): r[2] for r in p.execute(TICK_RATE).fetchall()}
    assert rates == {("polygon", "LIVE"): 3}

    names = {r[0] for r in p.execute(TICK_TABLE_STATS).fetchall()}
    if backend == "postgres":
        assert names == set(TICK_ROLLUPS)
    else:  # continuous aggregates are views, which pg_stat_user_tables does not list (as on the platform)
        assert names == set()


def run_contract(db_url: str, backend: str) -> None:
    pipeline = Role(db_url, "mds_pipeline").grant_pipeline()
    try:
        with (
            psycopg.connect(pipeline.url, autocommit=True) as p,
            psycopg.connect(db_url, autocommit=True) as store,
        ):
            _tenant_writes(p)
            _provider_writes(p)
            _tick_writes(p, store, backend)
    finally:
        pipeline.drop()


def test_the_platforms_statements_work_on_plain_postgres(platform_db):
    url, _how = platform_db
    run_contract(url, "postgres")


@pytest.mark.timescaledb
@requires_timescaledb
def test_the_platforms_statements_work_on_timescaledb(ts_platform_db):
    url, _how = ts_platform_db
    run_contract(url, "timescaledb")


# -- row-level security ------------------------------------------------------------------------
TENANT_ROWS = {
    "bars": "INSERT INTO bars (ts, tenant_id, vendor, symbol, timeframe, close_price) VALUES ({ts}, %s, 'v', 'AAPL', '1d', 1)",
    "fundamentals": "INSERT INTO fundamentals (asof, tenant_id, vendor, symbol) VALUES ({ts}, %s, 'v', 'AAPL')",
    "news": "INSERT INTO news (published_at, tenant_id, vendor, title) VALUES ({ts}, %s, 'v', 'x')",
    "options_snap": "INSERT INTO options_snap (ts, tenant_id, vendor, symbol, expiry, option_type, strike) "
    "VALUES ({ts}, %s, 'v', 'AAPL', '2030-01-01', 'C', 1)",
}


def _write(conn, table: str, tenant: str, ts: str = "now()") -> None:
    conn.execute(TENANT_ROWS[table].format(ts=ts), (tenant,))


def _counts(conn) -> dict:
    return {t: dict(conn.execute(f"SELECT tenant_id, count(*) FROM {t} GROUP BY 1").fetchall()) for t in TENANT_ROWS}


def _assert_isolated(conn) -> None:
    """No app.tenant_id: nothing read, nothing written, nothing updated or deleted."""
    assert _counts(conn) == {t: {} for t in TENANT_ROWS}
    for table in TENANT_ROWS:
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            _write(conn, table, "t1")
        assert conn.execute(f"UPDATE {table} SET updated_at = now()").rowcount == 0
        assert conn.execute(f"DELETE FROM {table}").rowcount == 0


def test_a_pipeline_session_sees_and_writes_only_its_tenant_and_cannot_take_the_maintenance_path(conn):
    for table in TENANT_ROWS:
        for tenant in ("t1", "t2"):
            _write(conn, table, tenant)
    pipeline = Role(_url(conn), "mds_pipeline").grant_pipeline()
    try:
        with psycopg.connect(pipeline.url, autocommit=True) as p:
            _assert_isolated(p)
            p.execute("SET app.maintenance = 'on'")  # not the owner: the flag gives nothing
            _assert_isolated(p)
            p.execute("SET app.tenant_id = 't1'")
            assert _counts(p) == {t: {"t1": 1} for t in TENANT_ROWS}
            for table in TENANT_ROWS:
                with pytest.raises(psycopg.errors.InsufficientPrivilege):  # WITH CHECK: not another tenant's rows
                    _write(p, table, "t2")
                _write(p, table, "t1", "now() - interval '1 hour'")
                assert p.execute(f"DELETE FROM {table} WHERE tenant_id = 't2'").rowcount == 0
    finally:
        pipeline.drop()
    assert _counts(conn) == {t: {"t1": 2, "t2": 1} for t in TENANT_ROWS}


def _url(conn) -> str:
    info = conn.info
    return f"postgresql://{info.user}@{info.host}:{info.port}/{info.dbname}"


@pytest.fixture
def owned_database(redis_url):
    """A database owned and migrated by a non-superuser role (the store as owner), on plain Postgres."""
    name, admin_url = create_database()
    owner = Role(admin_url, "mds_owner")
    with psycopg.connect(admin_url, autocommit=True) as c:
        c.execute(f'ALTER DATABASE "{name}" OWNER TO {owner.name}')
    migrator.apply(make_settings(owner.url, redis_url))
    yield owner, admin_url
    drop_database(name)
    with psycopg.connect(admin_url.rsplit("/", 1)[0] + "/postgres", autocommit=True) as c:
        c.execute(f"DROP ROLE IF EXISTS {owner.name}")


def _old_and_new_rows(conn) -> None:
    """Per tenant: rows 60 days and 30 days + 1 hour old (expired under 30 days; the latter in the
    partition or chunk straddling the cutoff, or just before it) and one an hour old."""
    for tenant in ("t1", "t2"):
        conn.execute("SELECT set_config('app.tenant_id', %s, false)", (tenant,))
        for table in TENANT_ROWS:
            for age in ("60 days", "30 days 1 hour", "1 hour"):
                _write(conn, table, tenant, f"now() - interval '{age}'")
    conn.execute("RESET app.tenant_id")


def test_the_owner_is_isolated_too_and_the_maintenance_path_sees_and_expires_every_tenant(owned_database, redis_url):
    from app import db

    owner, _admin_url = owned_database
    with psycopg.connect(owner.url, autocommit=True) as o:
        assert not o.execute("SELECT rolsuper OR rolbypassrls FROM pg_roles WHERE rolname = current_user").fetchone()[0]
        _old_and_new_rows(o)
        _assert_isolated(o)  # FORCE: the owner without a tenant reads and writes nothing
    settings_ = make_settings(owner.url, redis_url)
    with db.connect(settings_, autocommit=True, maintenance=True) as m:
        assert _counts(m) == {t: {"t1": 3, "t2": 3} for t in TENANT_ROWS}
        for table in TENANT_ROWS:
            retention.set_policy(m, table, timedelta(days=30), True)
            result = retention.apply_table(m, table)
            assert result["rows_removed"] == 4, (table, result)
        assert _counts(m) == {t: {"t1": 1, "t2": 1} for t in TENANT_ROWS}


@pytest.mark.timescaledb
@requires_timescaledb
def test_on_timescaledb_the_owner_is_isolated_and_retention_expires_every_tenant(timescale_cluster, redis_url):
    from app import db

    name, admin_url = timescale_cluster.create_database()
    owner = Role(admin_url, "mds_owner")
    try:
        with psycopg.connect(admin_url, autocommit=True) as c:
            c.execute(f'ALTER DATABASE "{name}" OWNER TO {owner.name}')
            c.execute("CREATE EXTENSION IF NOT EXISTS timescaledb")  # a superuser's step, done before the store
        migrator.apply(make_settings(owner.url, redis_url))
        with psycopg.connect(owner.url, autocommit=True) as o:
            assert o.execute("SELECT count(*) FROM timescaledb_information.hypertables").fetchone()[0] >= 7
            _old_and_new_rows(o)
            _assert_isolated(o)
        with db.connect(make_settings(owner.url, redis_url), autocommit=True, maintenance=True) as m:
            assert _counts(m) == {t: {"t1": 3, "t2": 3} for t in TENANT_ROWS}
            for table in TENANT_ROWS:
                retention.set_policy(m, table, timedelta(days=30), True)
                assert retention.apply_table(m, table)["rows_removed"] == 4, table
            assert _counts(m) == {t: {"t1": 1, "t2": 1} for t in TENANT_ROWS}
    finally:
        timescale_cluster.drop_database(name)
        with psycopg.connect(timescale_cluster.admin_url, autocommit=True) as c:
            c.execute(f"DROP ROLE IF EXISTS {owner.name}")


# -- the six tick rollups equal a reference aggregation of tick_data ------------------------------
BASE = datetime(2024, 1, 1, tzinfo=UTC)
SPAN_S = 2 * 86400 + 7200  # a bit more than two days: several days, hours, 5- and 1-minute buckets
SERIES = [("p1", "AAPL"), ("p1", "MSFT"), ("p2", "AAPL")]

whole = st.integers(1, 400).map(float)
size = st.one_of(st.none(), st.integers(0, 50).map(float))
quote = st.one_of(st.none(), st.tuples(st.integers(-5, 400), st.integers(0, 9)))  # bid (may be <= 0), spread
second = st.integers(0, SPAN_S - 1)
tick = st.tuples(st.integers(0, len(SERIES) - 1), second, whole, size, quote)
tick_ops = st.one_of(
    st.tuples(st.just("insert"), st.lists(tick, min_size=1, max_size=40)),
    st.tuples(st.just("burst"), st.integers(0, len(SERIES) - 1), second, st.integers(1, 120)),
    st.tuples(st.just("update"), second, st.integers(1, 7200), st.integers(-20, 20)),
    st.tuples(st.just("delete"), second, st.integers(1, 7200)),
    st.tuples(st.just("pending"), st.sampled_from(TICK_ROLLUPS)),
    st.tuples(st.just("window"), st.sampled_from(TICK_ROLLUPS), second, st.integers(1, SPAN_S)),
)


def _at(s: int) -> datetime:
    return BASE + timedelta(seconds=s)


def _tick(s, sec, price, sz, q):
    provider, symbol = SERIES[s]
    bid, ask = (None, None) if q is None else (float(q[0]), float(q[0] + q[1]))
    return (provider, symbol.lower(), price, _at(sec), sz, bid, ask)


def _apply_tick_op(conn, op) -> None:
    kind = op[0]
    if kind == "insert":
        insert_ticks(conn, [_tick(*t) for t in op[1]])
    elif kind == "burst":  # many ticks of one series in one bucket, one statement each
        _, s, sec, n = op
        insert_ticks(conn, [_tick(s, sec + i, 100.0 + i % 7, float(i % 3), (99, 2)) for i in range(n)])
    elif kind == "update":  # not the pipeline's, but a rollup must follow any change
        _, sec, length, delta = op
        conn.execute(
            "UPDATE tick_data SET price = price + %s WHERE ts >= %s AND ts < %s",
            (float(delta), _at(sec), _at(sec + length)),
        )
    elif kind == "delete":
        _, sec, length = op
        conn.execute("DELETE FROM tick_data WHERE ts >= %s AND ts < %s", (_at(sec), _at(sec + length)))


def _check_tick_refresh(conn, op, plain: bool) -> None:
    name = op[1]
    if op[0] == "pending":
        rollups.refresh_pending(conn, name)
        got, want = rollup(conn, name), reference(name, tick_rows(conn))
        assert same(got, want), (name, diff(got, want))
        if plain:
            assert rollups.pending_invalidations(conn, name) == 0
        return
    _, _, sec, length = op
    out = rollups.refresh(conn, name, _at(sec), _at(sec + length))
    lo, hi = datetime.fromisoformat(out["window"]["start"]), datetime.fromisoformat(out["window"]["end"])
    assert lo <= _at(sec) and hi >= _at(sec + length)
    got, want = rollup(conn, name, lo, hi), reference(name, tick_rows(conn), lo, hi)
    assert same(got, want), (name, lo, hi, diff(got, want))


def _reset_ticks(conn, plain: bool) -> None:
    if plain:
        conn.execute(
            "TRUNCATE tick_data, store_rollup_source_log, store_rollup_invalidations, " + ", ".join(TICK_ROLLUPS)
        )
        conn.execute("UPDATE store_aggregates SET watermark = NULL, last_refresh_at = NULL")
    else:
        conn.execute("DELETE FROM tick_data")
        for name in TICK_ROLLUPS:
            conn.execute("CALL refresh_continuous_aggregate(%s, NULL, NULL)", (name,))


def _run_tick_steps(conn, steps, plain: bool) -> None:
    _reset_ticks(conn, plain)
    for op in steps:
        if op[0] in ("pending", "window"):
            _check_tick_refresh(conn, op, plain)
        else:
            _apply_tick_op(conn, op)
    for name in TICK_ROLLUPS:  # the pending refresh always catches up completely
        _check_tick_refresh(conn, ("pending", name), plain)


@pytest.fixture
def tick_conn(migrated_database_url):
    with psycopg.connect(migrated_database_url, autocommit=True) as c:
        partitions.ensure_range(c, "tick_data", BASE, BASE + timedelta(days=1))  # the rest lands in DEFAULT
        yield c


@pytest.mark.slow  # several seconds: a property test or many processes
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(steps=st.lists(tick_ops, min_size=1, max_size=12))
def test_after_any_refresh_the_tick_rollups_equal_a_reference_aggregation(tick_conn, steps):
    _run_tick_steps(tick_conn, steps, plain=True)


@pytest.fixture
def ts_tick_conn(timescale_cluster, redis_url):
    name, url = timescale_cluster.create_database()
    migrator.apply(make_settings(url, redis_url))
    with psycopg.connect(url, autocommit=True) as c:
        yield c
    timescale_cluster.drop_database(name)


@pytest.mark.timescaledb
@requires_timescaledb
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(steps=st.lists(tick_ops, min_size=1, max_size=10))
def test_on_timescaledb_the_tick_continuous_aggregates_equal_a_reference_aggregation(ts_tick_conn, steps):
    _run_tick_steps(ts_tick_conn, steps, plain=False)


@pytest.mark.slow  # several seconds: a property test or many processes
def test_a_new_minute_of_ticks_recomputes_one_bucket_per_rollup_never_the_day(tick_conn):
    day = [_tick(s, 600 * i + s, 100.0 + i % 5, 1.0, (99, 1)) for i in range(144) for s in range(3)]
    insert_ticks(tick_conn, day)
    for name in TICK_ROLLUPS:
        rollups.refresh_pending(tick_conn, name)
    minute = BASE + timedelta(hours=13, minutes=7)
    insert_ticks(
        tick_conn, [("p1", "aapl", 150.0, minute + timedelta(seconds=s), 2.0, 149.0, 151.0) for s in range(60)]
    )
    assert rollups.pending_invalidations(tick_conn, "tick_agg_1m") == 1
    results = {name: rollups.refresh_pending(tick_conn, name) for name in TICK_ROLLUPS}
    assert {name: r["buckets"] for name, r in results.items()} == dict.fromkeys(TICK_ROLLUPS, 1)
    assert tick_conn.execute("SELECT count(*) FROM store_rollup_source_log").fetchone()[0] == 0
    for name in TICK_ROLLUPS:
        got, want = rollup(tick_conn, name), reference(name, tick_rows(tick_conn))
        assert same(got, want), (name, diff(got, want))


# -- freshness under the default schedule ----------------------------------------------------------
def test_the_one_minute_rollups_get_a_schedule_of_their_own():
    from app.jobs.schedules import definitions

    def named(**env):
        return {d.name: d for d in definitions(make_settings("postgresql://x@h/db", "redis://h", **env))}

    default = named()
    assert default["refresh_aggregate"].every == timedelta(minutes=5)
    for name in ("tick_agg_1m", "tick_rate_stats"):
        d = default[f"refresh_aggregate.{name}"]
        assert (d.job, d.every, d.paused, d.body) == ("refresh_aggregate", timedelta(minutes=1), False, {"name": name})
    tick_schedules = {"refresh_aggregate.tick_agg_1m", "refresh_aggregate.tick_rate_stats"}
    assert {n for n in default if n.startswith("refresh_aggregate.")} == tick_schedules
    # refreshes off, or already at least as frequent: no schedules of their own
    assert set(named(REFRESH_SCHEDULE="30s")) == set(named(REFRESH_SCHEDULE="off")) == set(default) - tick_schedules


@pytest.mark.slow
def test_under_the_default_schedule_new_ticks_reach_the_one_minute_rollups_within_two_minutes(
    migrated_database_url, service_factory
):
    svc = service_factory(migrated_database_url, env={"REFRESH_SCHEDULE": "5 minutes"})
    with psycopg.connect(migrated_database_url, autocommit=True) as c:
        now = c.execute("SELECT date_bin('1 minute', now(), timestamptz 'epoch')").fetchone()[0]
        insert_ticks(
            c, [("live", "fresh", 10.0 + s, now - timedelta(seconds=60 - s), 1.0, 9.0, 11.0) for s in range(5)]
        )

        def landed():
            rows = c.execute(
                "SELECT (SELECT tick_count FROM tick_agg_1m WHERE provider = 'live'), "
                "(SELECT ticks_per_minute FROM tick_rate_stats WHERE provider = 'live')"
            ).fetchone()
            return rows == (5, 5)

        wait_for(landed, 130, 1.0, "the 1-minute tick rollups to hold the new ticks")
    jobs = svc.get("/jobs", params={"job": "refresh_aggregate"}).json()["jobs"]
    assert {j["params"]["name"] for j in jobs if j["trigger"] == "schedule"} >= {"tick_agg_1m", "tick_rate_stats"}
    listed = {s["name"]: s for s in svc.get("/schedules").json()["schedules"]}
    assert listed["refresh_aggregate.tick_agg_1m"]["every"] == "1 minute"

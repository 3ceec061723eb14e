"""The market-data schema on plain Postgres: tables, keys, checks, triggers, RLS, views."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import psycopg
import pytest

from tests.support.bars import bar_series, insert_bars
from tests.support.db import make_settings
from tests.support.platform import TIME_COLUMNS

TABLES = ("tenants", "bars", "fundamentals", "news", "options_snap", "bars_ohlcv", "signals", "job_runs", "tick_data")
NOW = datetime.now(UTC).replace(microsecond=0)


def _key(conn, table):
    return conn.execute(
        """SELECT array_agg(a.attname ORDER BY k.pos) FROM pg_index i
           CROSS JOIN LATERAL unnest(i.indkey) WITH ORDINALITY k(attnum, pos)
           JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum
           WHERE i.indrelid = %s::regclass AND i.indisprimary""",
        (table,),
    ).fetchone()[0]


def test_every_contract_table_and_view_exists_with_its_key(conn):
    for table in TABLES:
        assert conn.execute("SELECT to_regclass(%s)", (table,)).fetchone()[0] is not None, table
    for view in ("latest_prices", "latest_ohlcv_prices", "data_freshness", "job_runs_summary"):
        assert conn.execute("SELECT relkind FROM pg_class WHERE relname = %s", (view,)).fetchone()[0] == "v"
    assert _key(conn, "bars_ohlcv") == ["provider", "symbol", "interval", "ts"]
    assert _key(conn, "bars") == ["ts", "tenant_id", "vendor", "symbol", "timeframe"]
    assert _key(conn, "fundamentals") == ["asof", "tenant_id", "vendor", "symbol"]
    assert _key(conn, "news") == ["published_at", "tenant_id", "vendor", "id"]
    assert _key(conn, "options_snap") == ["ts", "tenant_id", "vendor", "symbol", "expiry", "option_type", "strike"]
    assert _key(conn, "signals") == ["provider", "symbol", "ts", "name"]
    assert _key(conn, "tick_data") == ["provider", "symbol", "ts"]
    types = dict(
        conn.execute(
            """SELECT attname, format_type(atttypid, atttypmod) FROM pg_attribute
           WHERE attrelid = 'bars_ohlcv'::regclass AND attnum > 0 AND NOT attisdropped"""
        ).fetchall()
    )
    assert {types[c] for c in ("open", "high", "low", "close", "volume")} == {"double precision"}
    assert types["ts"] == "timestamp with time zone"


def test_time_series_tables_are_range_partitioned_with_a_default_and_premade_partitions(conn):
    for table, column in TIME_COLUMNS.items():
        strategy, key = conn.execute(
            """SELECT p.partstrat, a.attname FROM pg_partitioned_table p
               JOIN pg_attribute a ON a.attrelid = p.partrelid AND a.attnum = p.partattrs[0]
               WHERE p.partrelid = %s::regclass""",
            (table,),
        ).fetchone()
        assert (strategy, key) == ("r", column), table
        assert conn.execute("SELECT to_regclass(%s)", (f"{table}_default",)).fetchone()[0] is not None
        # the partition that holds "now" and the next ones exist already
        routed = conn.execute(
            """SELECT count(*) FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
               WHERE i.inhparent = %s::regclass AND c.relname <> %s""",
            (table, f"{table}_default"),
        ).fetchone()[0]
        assert routed >= 5, table


def test_lower_case_symbols_are_rejected_everywhere(conn):
    conn.execute("SET app.tenant_id = 't1'")
    statements = [
        ("INSERT INTO bars_ohlcv (provider, symbol, \"interval\", ts) VALUES ('p', 'aapl', '1m', now())", ()),
        ("INSERT INTO signals (provider, symbol, ts, name, value) VALUES ('p', 'Msft', now(), 'rsi', 1)", ()),
        ("INSERT INTO bars (ts, tenant_id, vendor, symbol, timeframe) VALUES (now(), 't1', 'v', 'ibm', '1d')", ()),
        ("INSERT INTO fundamentals (asof, tenant_id, vendor, symbol) VALUES (now(), 't1', 'v', 'ibm')", ()),
        ("INSERT INTO news (published_at, tenant_id, vendor, id, symbol) VALUES (now(), 't1', 'v', 'n1', 'ibm')", ()),
        (
            "INSERT INTO options_snap (ts, tenant_id, vendor, symbol, expiry, option_type, strike) "
            "VALUES (now(), 't1', 'v', 'ibm', '2030-01-01', 'C', 10)",
            (),
        ),
    ]
    for statement, args in statements:
        with pytest.raises(psycopg.errors.CheckViolation):
            conn.execute(statement, args)
    # upper case and a NULL news symbol are fine
    conn.execute("INSERT INTO news (published_at, tenant_id, vendor, id) VALUES (now(), 't1', 'v', 'n2')")
    conn.execute("INSERT INTO bars_ohlcv (provider, symbol, \"interval\", ts) VALUES ('p', 'AAPL', '1m', now())")
    with pytest.raises(psycopg.errors.CheckViolation):
        conn.execute(
            "INSERT INTO options_snap (ts, tenant_id, vendor, symbol, expiry, option_type, strike) "
            "VALUES (now(), 't1', 'v', 'IBM', '2030-01-01', 'X', 10)"
        )


def test_updated_at_moves_on_update_and_created_at_does_not(conn):
    conn.execute("INSERT INTO tenants (tenant_id, name) VALUES ('acme', 'Acme')")
    conn.execute(
        "INSERT INTO bars_ohlcv (provider, symbol, \"interval\", ts, close) VALUES ('p', 'AAPL', '1m', %s, 1)", (NOW,)
    )
    for table, where in (("tenants", "tenant_id = 'acme'"), ("bars_ohlcv", "symbol = 'AAPL'")):
        before = conn.execute(f"SELECT created_at, updated_at FROM {table} WHERE {where}").fetchone()
        with conn.transaction():  # now() is the transaction start: use a later transaction
            conn.execute(f"UPDATE {table} SET created_at = created_at WHERE {where}")
        after = conn.execute(f"SELECT created_at, updated_at FROM {table} WHERE {where}").fetchone()
        assert after[0] == before[0]
        assert after[1] > before[1], table
    tid = conn.execute("SELECT id FROM tenants WHERE tenant_id = 'acme'").fetchone()[0]
    assert isinstance(tid, uuid.UUID)


def test_times_are_utc_whatever_the_session_time_zone(migrated_database_url):
    with psycopg.connect(migrated_database_url, autocommit=True, options="-c TimeZone=America/New_York") as c:
        c.execute(
            'INSERT INTO bars_ohlcv (provider, symbol, "interval", ts, close) '
            "VALUES ('p', 'AAPL', '1m', '2024-03-01 09:30:00-05', 1)"
        )
    with psycopg.connect(migrated_database_url, autocommit=True, options="-c TimeZone=UTC") as c:
        ts = c.execute("SELECT ts FROM bars_ohlcv").fetchone()[0]
        assert ts == datetime(2024, 3, 1, 14, 30, tzinfo=UTC)


def test_plain_inserts_of_any_time_succeed_and_land_in_a_partition_or_the_default(conn):
    rows = [
        ("p", "OLD", "1m", datetime(1971, 5, 1, tzinfo=UTC), 1, 1, 1, 1, 1),
        ("p", "FAR", "1m", datetime(2400, 1, 1, tzinfo=UTC), 1, 1, 1, 1, 1),
        ("p", "NOW", "1m", NOW, 1, 1, 1, 1, 1),
    ]
    insert_bars(conn, rows)
    conn.execute("INSERT INTO bars_ohlcv (provider, symbol, \"interval\", ts) VALUES ('p', 'INF', '1m', 'infinity')")
    where = dict(conn.execute("SELECT symbol, tableoid::regclass::text FROM bars_ohlcv").fetchall())
    assert where["OLD"] == where["FAR"] == where["INF"] == "bars_ohlcv_default"
    assert where["NOW"].startswith("bars_ohlcv_p")
    for table in TIME_COLUMNS:  # every table takes a historical row
        if table == "bars_ohlcv":
            continue
        conn.execute("SET app.tenant_id = 't1'")
        cols = {
            "bars": "(ts, tenant_id, vendor, symbol, timeframe) VALUES ('1980-01-01', 't1', 'v', 'A', '1d')",
            "fundamentals": "(asof, tenant_id, vendor, symbol) VALUES ('1980-01-01', 't1', 'v', 'A')",
            "news": "(published_at, tenant_id, vendor, id) VALUES ('1980-01-01', 't1', 'v', 'x')",
            "options_snap": "(ts, tenant_id, vendor, symbol, expiry, option_type, strike) "
            "VALUES ('1980-01-01', 't1', 'v', 'A', '1980-02-01', 'P', 1)",
            "signals": "(provider, symbol, ts, name, value) VALUES ('p', 'A', '1980-01-01', 'x', 1)",
            "tick_data": "(provider, symbol, ts, price) VALUES ('p', 'A', '1980-01-01', 1)",
        }[table]
        conn.execute(f"INSERT INTO {table} {cols}")


@pytest.fixture
def tenant_role(migrated_database_url):
    """A non-owner login role (roles are cluster-wide: unique name, dropped afterwards)."""
    role = f"mds_tenant_{uuid.uuid4().hex[:8]}"
    dbname = migrated_database_url.rsplit("/", 1)[1]
    with psycopg.connect(migrated_database_url, autocommit=True) as c:
        c.execute(f"CREATE ROLE {role} LOGIN")
        c.execute(
            f"GRANT SELECT, INSERT ON bars, fundamentals, news, options_snap, latest_prices, data_freshness, "
            f"bars_ohlcv, signals TO {role}"
        )
    yield role
    with psycopg.connect(migrated_database_url, autocommit=True) as c:
        c.execute(f"REVOKE ALL ON ALL TABLES IN SCHEMA public FROM {role}")
        c.execute(f"DROP OWNED BY {role}")
    with psycopg.connect(migrated_database_url.rsplit("/", 1)[0] + "/postgres", autocommit=True) as c:
        c.execute(f'REVOKE ALL ON DATABASE "{dbname}" FROM {role}')
        c.execute(f"DROP ROLE IF EXISTS {role}")


def test_row_level_security_isolates_tenants(migrated_database_url, tenant_role, conn):
    for tenant in ("t1", "t2"):
        conn.execute(
            "INSERT INTO bars (ts, tenant_id, vendor, symbol, timeframe, close_price) "
            "VALUES (now(), %s, 'v', 'AAPL', '1d', 1)",
            (tenant,),
        )
        conn.execute("INSERT INTO news (published_at, tenant_id, vendor, id) VALUES (now(), %s, 'v', 'n')", (tenant,))
    url = migrated_database_url.replace("postgres@", f"{tenant_role}@")
    with psycopg.connect(url, autocommit=True) as c:
        assert c.execute("SELECT count(*) FROM bars").fetchone()[0] == 0  # no tenant set: nothing
        c.execute("SET app.tenant_id = 't1'")
        assert c.execute("SELECT DISTINCT tenant_id FROM bars").fetchall() == [("t1",)]
        assert c.execute("SELECT DISTINCT tenant_id FROM news").fetchall() == [("t1",)]
        assert [r[0] for r in c.execute("SELECT source FROM data_freshness WHERE dataset = 'bars'")] == ["v"]
        with pytest.raises(psycopg.errors.InsufficientPrivilege):  # WITH CHECK: no writes for another tenant
            c.execute(
                "INSERT INTO bars (ts, tenant_id, vendor, symbol, timeframe) VALUES (now(), 't2', 'v', 'X', '1d')"
            )
        c.execute("INSERT INTO bars (ts, tenant_id, vendor, symbol, timeframe) VALUES (now(), 't1', 'v', 'X', '1d')")
    assert conn.execute("SELECT count(*) FROM bars WHERE tenant_id = 't1'").fetchone()[0] == 2


def test_latest_prices_and_data_freshness(conn):
    start = NOW - timedelta(hours=2)
    insert_bars(conn, bar_series("AAPL", start, NOW, timedelta(minutes=1)))
    insert_bars(conn, bar_series("MSFT", start, NOW - timedelta(hours=1), timedelta(minutes=5), provider="other"))
    latest = {(r[0], r[1]): r[2] for r in conn.execute("SELECT provider, symbol, ts FROM latest_ohlcv_prices")}
    assert latest == {
        ("prov", "AAPL"): NOW - timedelta(minutes=1),
        ("other", "MSFT"): NOW - timedelta(hours=1, minutes=5),
    }
    fresh = {
        r[0]: r[1] for r in conn.execute("SELECT source, last_ts FROM data_freshness WHERE dataset = 'bars_ohlcv'")
    }
    assert fresh == {"prov": NOW - timedelta(minutes=1), "other": NOW - timedelta(hours=1, minutes=5)}


def test_market_data_migrations_are_idempotent(migrated_database_url, redis_url):
    """yoyo may re-run a migration whose bookkeeping was lost: nothing may change or fail.

    (0008 is left out: 0012 reshaped its latest_prices view, which 0008 cannot replace;
    yoyo re-runs only the migration it was applying, never one behind a later one.)
    """
    from yoyo import read_migrations

    from app import migrator

    with psycopg.connect(migrated_database_url, autocommit=True) as c:
        insert_bars(c, bar_series("AAPL", NOW - timedelta(days=1), NOW, timedelta(hours=1)))
        before = c.execute("SELECT count(*) FROM pg_class").fetchone()[0]
        c.execute(
            "DELETE FROM _yoyo_migration WHERE (migration_id >= '0003' AND migration_id < '0008') "
            "OR (migration_id >= '0012' AND migration_id < '0020')"
        )
    result = migrator.apply(make_settings(migrated_database_url, redis_url))
    ids = [m.id for m in read_migrations(str(migrator.MIGRATIONS_DIR))]
    assert result["applied"] == [i for i in ids if "0003" <= i < "0008" or "0012" <= i < "0020"]
    with psycopg.connect(migrated_database_url, autocommit=True) as c:
        assert c.execute("SELECT count(*) FROM pg_class").fetchone()[0] == before
        assert c.execute("SELECT count(*) FROM bars_ohlcv").fetchone()[0] == 24
        # the re-run did not re-invalidate the history a second time
        assert (
            c.execute("SELECT count(*) FROM store_rollup_invalidations WHERE aggregate = 'bars_ohlcv_1h'").fetchone()[0]
            <= 24
        )

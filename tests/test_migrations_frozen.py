"""Migrations are frozen history: they never import the application, and they build exactly
the schema the code expects, the same as the migration files they replaced.

- Every file in `migrations/` is checked (AST) for imports outside the standard library,
  psycopg and yoyo (so never `app`, in any form) and for touching `sys.path`.
- A database migrated by the frozen files is compared, on plain Postgres and on
  TimescaleDB, with `app.timeseries.catalog` (tables, time columns, widths, compression,
  retention defaults, aggregates) and with a catalogue dump (tests/support/catalogue.py)
  of a database migrated by the previous files, taken from git history (commit
  PREVIOUS, the last one before the migrations were frozen; those files import the old
  application, so its `app/` is extracted too and run in a subprocess).
- A database migrated by the previous files and then by the current ones ends up with
  the same catalogue as a fresh install; re-running the frozen migrations changes nothing.
- The fallbacks: a role that may not create the extension gets plain partitions; an
  existing unpartitioned table stops the migration with a message saying what to do.
"""

from __future__ import annotations

import ast
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import psycopg
import pytest
from yoyo import get_backend, read_migrations

from app import migrator
from app.timeseries import catalog, intervals, partitions
from tests.support.catalogue import diff, dump, normalise
from tests.support.common import ROOT, TOKEN
from tests.support.db import create_database, drop_database, make_settings
from tests.support.timescale import requires_timescaledb

PREVIOUS = "c03de13"  # the last commit whose migrations 0003-0006 imported the application
REDIS_URL = "redis://127.0.0.1:9/0"  # settings need one; migrating never connects to it
FROZEN = ("0003_bars_ohlcv", "0004_retention_policies", "0005_aggregates", "0006_market_data_tables")


# -- no migration imports the application ---------------------------------------------------
ALLOWED_ROOTS = frozenset(sys.stdlib_module_names) | {"psycopg", "yoyo"}
_IMPORTERS = {"__import__", "import_module", "run_module", "run_path", "addsitedir", "exec", "eval"}
_SYS_STATE = {"path", "meta_path", "path_hooks", "path_importer_cache", "modules"}


def import_violations(source: str) -> list[str]:
    """What in a migration's source imports beyond stdlib/psycopg/yoyo or touches sys.path."""
    found = []
    tree = ast.parse(source)
    sys_names = {"sys"} | {
        a.asname or a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names if a.name == "sys"
    }
    for node in ast.walk(tree):
        line = getattr(node, "lineno", 0)
        if isinstance(node, ast.Import):
            found += [f"line {line}: import {a.name}" for a in node.names if a.name.split(".")[0] not in ALLOWED_ROOTS]
        elif isinstance(node, ast.ImportFrom):
            module = node.module or ""
            if node.level or module.split(".")[0] not in ALLOWED_ROOTS:
                found.append(f"line {line}: from {'.' * node.level}{module} import ...")
            if module == "sys" and any(a.name in _SYS_STATE for a in node.names):
                found.append(f"line {line}: from sys import {', '.join(a.name for a in node.names)}")
        elif isinstance(node, ast.Call):
            func = node.func
            name = func.id if isinstance(func, ast.Name) else func.attr if isinstance(func, ast.Attribute) else ""
            if name in _IMPORTERS:
                found.append(f"line {line}: {name}(...) loads code at run time")
        elif isinstance(node, ast.Attribute) and node.attr in _SYS_STATE:
            owner = node.value
            if (isinstance(owner, ast.Name) and owner.id in sys_names) or (
                isinstance(owner, ast.Attribute) and owner.attr == "sys"
            ):
                found.append(f"line {line}: sys.{node.attr}")
        elif isinstance(node, ast.Constant) and node.value == "PYTHONPATH":
            found.append(f"line {line}: 'PYTHONPATH'")
    return found


def test_no_migration_imports_the_application_or_touches_sys_path():
    files = sorted((ROOT / "migrations").glob("*.py"))
    problems = {f.name: v for f in files if (v := import_violations(f.read_text()))}
    assert problems == {}, "migrations are frozen: stdlib, psycopg and yoyo only, values written into the file"


@pytest.mark.parametrize(
    "source",
    [
        "import app",
        "import app.timeseries.catalog as c",
        "from app import migrator",
        "from app.timeseries import catalog",
        "from .helpers import x",
        "import importlib\nimportlib.import_module('app.timeseries')",
        "m = __import__('app')",
        "import sys\nsys.path.insert(0, '/srv')",
        "import sys as s\ns.path.append('/srv')",
        "from sys import path\npath.append('/srv')",
        "import os\nos.sys.path.insert(0, '/srv')",
        "import sys\nsys.modules['x'] = None",
        "import os\nos.environ['PYTHONPATH'] = '/srv'",
        "import requests",
        "exec(open('app/timeseries/catalog.py').read())",
    ],
)
def test_the_import_check_catches_each_way_of_reaching_the_application(source):
    assert import_violations(source)


def test_the_import_check_allows_a_frozen_python_migration():
    source = (
        "import json\nfrom datetime import timedelta\n\nfrom psycopg import sql\nfrom yoyo import step\n\n"
        "__depends__ = {'0011_backfill'}\nWIDTH = timedelta(days=7)\n\n"
        "def apply(conn):\n    conn.execute(sql.SQL('SELECT {}').format(sql.Literal(json.dumps({}))))\n\n"
        "steps = [step(apply)]\n"
    )
    assert import_violations(source) == []


# -- databases on both backends ---------------------------------------------------------------
@dataclass
class Server:
    """Fresh databases on one backend's server, all dropped at the end of the module."""

    backend: str
    create: Callable[[], tuple[str, str]]  # -> (name, url)
    drop: Callable[[str], None]
    made: list[str] = field(default_factory=list)

    def new_database(self) -> str:
        name, url = self.create()
        self.made.append(name)
        return url

    def drop_all(self) -> None:
        for name in self.made:
            self.drop(name)


@pytest.fixture(
    scope="module",
    params=[
        "postgres",
        pytest.param("timescaledb", marks=[pytest.mark.timescaledb, pytest.mark.slow, requires_timescaledb]),
    ],
)
def server(request):
    if request.param == "postgres":
        srv = Server("postgres", create_database, drop_database)
    else:
        cluster = request.getfixturevalue("timescale_cluster")
        srv = Server("timescaledb", cluster.create_database, cluster.drop_database)
    yield srv
    srv.drop_all()


@dataclass
class Install:
    url: str
    catalogue: dict[str, list[str]]
    applied: list[str]
    started: datetime
    finished: datetime


def _db_now(url: str) -> datetime:
    with psycopg.connect(url) as conn:
        return conn.execute("SELECT clock_timestamp()").fetchone()[0]


def _dump(url: str) -> dict[str, list[str]]:
    with psycopg.connect(url, autocommit=True) as conn:
        return dump(conn)


def migrate_fresh(server: Server, only: set[str] | None = None) -> Install:
    """A new database migrated by the current files (all, or only the ids in `only`)."""
    url = server.new_database()
    settings = make_settings(url, REDIS_URL)
    started = _db_now(url)
    if only is None:
        applied = migrator.apply(settings)["applied"]
    else:
        backend = get_backend(migrator.yoyo_url(settings, "test-frozen"), migration_table=migrator.MIGRATION_TABLE)
        try:
            todo = backend.to_apply(read_migrations(str(migrator.MIGRATIONS_DIR)).filter(lambda m: m.id in only))
            with backend.lock(timeout=10):
                backend.apply_migrations(todo)
            applied = [m.id for m in todo]
        finally:
            backend.connection.close()
    return Install(url, _dump(url), applied, started, _db_now(url))


@pytest.fixture(scope="module")
def fresh(server) -> Install:
    """A database migrated by every current migration file."""
    return migrate_fresh(server)


# -- the previous files, from git history ------------------------------------------------------
@pytest.fixture(scope="module")
def previous_tree(tmp_path_factory) -> Path:
    """`app/` and `migrations/` as they were at PREVIOUS, extracted from git."""
    git = shutil.which("git")
    probe = (
        subprocess.run(
            [git, "-C", str(ROOT), "rev-parse", "--verify", "--quiet", f"{PREVIOUS}^{{commit}}"],
            capture_output=True,
            timeout=60,
        )
        if git
        else None
    )
    if probe is None or probe.returncode != 0:
        pytest.skip(
            f"git history with commit {PREVIOUS} is not available (no git, or a shallow clone: "
            "`git fetch --unshallow`); the upgrade from the previous migration files cannot be checked"
        )
    tree = tmp_path_factory.mktemp("previous")
    archive = subprocess.run(
        [git, "-C", str(ROOT), "archive", "--format=tar", PREVIOUS, "app", "migrations"],
        capture_output=True,
        check=True,
        timeout=120,
    )
    subprocess.run(["tar", "-x", "-C", str(tree)], input=archive.stdout, check=True, timeout=120)
    return tree


@pytest.fixture(scope="module")
def previous(server, previous_tree) -> Install:
    """A database migrated by the previous files with the previous application (a subprocess)."""
    url = server.new_database()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "DATABASE_URL", "REDIS_URL")}
    env.update(DATABASE_URL=url, REDIS_URL=REDIS_URL, ADMIN_TOKEN=TOKEN, LOG_LEVEL="WARNING")
    started = _db_now(url)
    proc = subprocess.run(
        [sys.executable, "-m", "app.manage", "migrate"],
        cwd=previous_tree,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    with psycopg.connect(url) as conn:
        applied = [r[0] for r in conn.execute("SELECT migration_id FROM _yoyo_migration ORDER BY applied_at_utc")]
    return Install(url, _dump(url), applied, started, _db_now(url))


def test_the_import_check_flags_the_previous_migrations_that_imported_the_application(previous_tree):
    files = sorted((previous_tree / "migrations").glob("*.py"))
    assert [f.stem for f in files] == list(FROZEN)
    for f in files:
        found = import_violations(f.read_text())
        assert any("sys.path" in v for v in found) and any("app.timeseries" in v for v in found), (f.name, found)


@pytest.mark.slow
def test_the_frozen_files_build_exactly_what_the_previous_files_built(server, previous):
    assert all((ROOT / "migrations" / f"{m}.sql").exists() for m in FROZEN)
    assert set(FROZEN) <= set(previous.applied)
    frozen = migrate_fresh(server, only=set(previous.applied))
    assert sorted(frozen.applied) == sorted(previous.applied)
    differences = diff(
        normalise(previous.catalogue), normalise(frozen.catalogue), (f"previous files ({PREVIOUS})", "frozen files")
    )
    assert not differences, differences


@pytest.mark.slow
def test_a_database_migrated_by_the_previous_files_upgrades_to_a_fresh_install(previous, fresh):
    settings = make_settings(previous.url, REDIS_URL)
    result = migrator.apply(settings)
    # same ids: nothing the old database applied runs again, only migrations added since
    assert result["applied"] == [m for m in migrator.disk_ids() if m not in previous.applied]
    differences = diff(normalise(fresh.catalogue), normalise(_dump(previous.url)), ("fresh install", "upgraded"))
    assert not differences, differences


def test_rerunning_the_frozen_migrations_changes_nothing(server):
    """yoyo may apply a migration again after a kill between applying and recording it."""
    url = migrate_fresh(server).url
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO bars_ohlcv (provider, symbol, \"interval\", ts, close) VALUES ('p', 'AAPL', '1d', %s, 1.5)",
            (datetime(2001, 2, 3, tzinfo=UTC),),
        )
        before = dump(conn)
        # and 0014, which alters 0005's trigger function (SECURITY DEFINER): re-running 0005
        # alone undoes that, which yoyo never does (it re-runs only the migration it was applying)
        again = [*FROZEN, "0014_tick_rollups"]
        conn.execute("DELETE FROM _yoyo_migration WHERE migration_id = ANY(%s)", (again,))
    assert migrator.apply(make_settings(url, REDIS_URL))["applied"] == again
    with psycopg.connect(url, autocommit=True) as conn:
        differences = diff(before, dump(conn), ("migrated", "migrated again"))
        assert not differences, differences
        assert conn.execute("SELECT count(*), sum(close) FROM bars_ohlcv").fetchone() == (1, 1.5)


# -- the catalogue the code expects -------------------------------------------------------------
def _one(conn, query: str, *params):
    row = conn.execute(query, params).fetchone()
    return row[0] if row else None


def _columns(conn, relation: str) -> list[tuple[str, str, bool]]:
    return conn.execute(
        """SELECT attname, format_type(atttypid, atttypmod), attnotnull FROM pg_attribute
           WHERE attrelid = %s::regclass AND attnum > 0 AND NOT attisdropped ORDER BY attnum""",
        (relation,),
    ).fetchall()


ROLLUP_COLUMNS = ["provider", "symbol", "interval", "bucket", "open", "high", "low", "close", "volume"]


def _expect_postgres(conn, install: Install) -> None:
    for t in catalog.TABLES.values():
        assert _one(conn, "SELECT relkind FROM pg_class WHERE oid = %s::regclass", t.name) == "p", t.name
        assert _one(conn, "SELECT pg_get_partkeydef(%s::regclass)", t.name) == f"RANGE ({t.time_column})"
        assert partitions.default_partition(conn, t.name) == f"{t.name}_default"
        index = _one(conn, "SELECT pg_get_indexdef(%s::regclass)", f"{t.name}_{t.time_column}_idx")
        assert index and index.endswith(f"USING btree ({t.time_column} DESC)"), index
        parts = partitions.list_partitions(conn, t.name)
        assert parts, t.name
        # premade: the epoch-aligned slots from one width before "now" to PREMAKE_CHUNKS ahead
        slots = [parts[0].lo + i * t.chunk for i in range(partitions.PREMAKE_CHUNKS + 2)]
        assert [(p.name, p.lo, p.hi) for p in parts] == [
            (partitions.partition_name(t.name, lo), lo, lo + t.chunk) for lo in slots
        ]
        earliest = partitions.align(install.started - t.chunk, t.chunk)
        latest = partitions.align(install.finished - t.chunk, t.chunk)
        assert earliest <= parts[0].lo <= latest, (t.name, parts[0], install.started, install.finished)
    for agg in catalog.AGGREGATES.values():
        assert _one(conn, "SELECT relkind FROM pg_class WHERE oid = %s::regclass", agg.name) == "r"
        assert [c[0] for c in _columns(conn, agg.name)] == ROLLUP_COLUMNS
        assert _one(conn, "SELECT pg_get_indexdef(%s::regclass)", f"{agg.name}_bucket_idx").endswith("(bucket)")
    sources = {a.source for a in catalog.ROLLUPS.values()}
    triggers = conn.execute(
        "SELECT tgrelid::regclass::text, tgname FROM pg_trigger WHERE tgname ~ '_rollup_(ins|upd|del)$'"
    ).fetchall()
    assert sorted(triggers) == sorted((s, f"{s}_rollup_{op}") for s in sources for op in ("ins", "upd", "del"))


def _expect_timescaledb(conn) -> None:
    for t in catalog.TABLES.values():
        dim = conn.execute(
            """SELECT column_name, time_interval FROM timescaledb_information.dimensions
               WHERE hypertable_schema = current_schema() AND hypertable_name = %s""",
            (t.name,),
        ).fetchall()
        assert dim == [(t.time_column, t.chunk)], t.name
        settings = conn.execute(
            """SELECT coalesce(segmentby, ''), coalesce(orderby, '')
               FROM timescaledb_information.hypertable_compression_settings WHERE hypertable = %s::regclass""",
            (t.name,),
        ).fetchone()
        assert settings == (",".join(t.compress_segmentby), t.compress_orderby), t.name
        after = conn.execute(
            """SELECT (config->>'compress_after')::interval FROM timescaledb_information.jobs
               WHERE proc_name = 'policy_compression' AND hypertable_name = %s""",
            (t.name,),
        ).fetchall()
        assert after == ([(t.compress_after,)] if t.compress_after else []), t.name
    for agg in catalog.AGGREGATES.values():
        row = conn.execute(
            """SELECT hypertable_name, materialized_only, view_definition
               FROM timescaledb_information.continuous_aggregates WHERE view_name = %s""",
            (agg.name,),
        ).fetchone()
        assert row is not None and row[:2] == (agg.source, True), (agg.name, row)
        width = re.search(r"time_bucket\('([^']+)'::interval", row[2])
        assert width and _one(conn, "SELECT %s::interval", width[1]) == agg.bucket, row[2]
        # only source intervals strictly finer than the bucket (0022), as the catalog's `where`
        where = re.search(r"\bWHERE\b(.*)\bGROUP BY\b", row[2], re.S)
        assert where and '"interval"' in where[1], row[2]
        finer = intervals.finer_than(int(agg.bucket.total_seconds()))
        assert tuple(re.findall(r"'([^']+)'::text", where[1])) == finer, row[2]
        assert agg.where == '"interval" IN (' + ", ".join(f"'{n}'" for n in finer) + ")"
        assert [c[0] for c in _columns(conn, agg.name)] == ROLLUP_COLUMNS
        assert _one(conn, f"SELECT count(*) FROM {agg.name}") == 0  # created WITH NO DATA


def test_a_fresh_install_has_the_schema_the_catalog_describes(server, fresh):
    with psycopg.connect(fresh.url, autocommit=True) as conn:
        for t in catalog.TABLES.values():
            assert (t.time_column, "timestamp with time zone", True) in _columns(conn, t.name), t.name
        seeds = conn.execute("SELECT table_name, retain, enabled FROM store_retention_policies").fetchall()
        assert sorted(seeds) == sorted((t.name, t.default_retain, True) for t in catalog.TABLES.values())
        aggregates = conn.execute("SELECT name, source, bucket_width FROM store_aggregates").fetchall()
        assert sorted(aggregates) == sorted((a.name, a.source, a.bucket) for a in catalog.ROLLUPS.values())
        # the machine's server gives plain Postgres unless it preloads TimescaleDB itself
        timescaledb = _one(conn, "SELECT count(*) FROM pg_extension WHERE extname = 'timescaledb'") == 1
        assert timescaledb or server.backend == "postgres"
        if timescaledb:
            _expect_timescaledb(conn)
        else:
            _expect_postgres(conn, fresh)
    assert fresh.applied == list(migrator.disk_ids())


@pytest.mark.timescaledb
@requires_timescaledb
def test_a_role_that_may_not_create_timescaledb_gets_plain_postgres_partitions(timescale_cluster):
    """TimescaleDB is preloaded and the role can see that (pg_read_all_settings), but it may not
    CREATE EXTENSION (no CREATE on the database; it may create tables in schema public)."""
    role = f"mds_migrator_{os.getpid()}"
    name, admin_db_url = timescale_cluster.create_database()
    with psycopg.connect(timescale_cluster.admin_url, autocommit=True) as admin:
        admin.execute(f"CREATE ROLE {role} LOGIN IN ROLE pg_read_all_settings")
    with psycopg.connect(admin_db_url, autocommit=True) as admin:
        admin.execute(f"GRANT CREATE ON SCHEMA public TO {role}")
    url = admin_db_url.replace("postgres@", f"{role}@")
    try:
        started = _db_now(url)
        applied = migrator.apply(make_settings(url, REDIS_URL))["applied"]
        with psycopg.connect(url, autocommit=True) as conn:
            assert _one(conn, "SELECT count(*) FROM pg_extension WHERE extname = 'timescaledb'") == 0
            _expect_postgres(conn, Install(url, {}, applied, started, _db_now(url)))
    finally:
        timescale_cluster.drop_database(name)
        with psycopg.connect(timescale_cluster.admin_url, autocommit=True) as admin:
            admin.execute(f"DROP ROLE IF EXISTS {role}")


def test_an_existing_unpartitioned_table_stops_the_migration_with_a_clear_error(database_url):
    with psycopg.connect(database_url, autocommit=True) as conn:
        if _one(conn, "SELECT current_setting('shared_preload_libraries') ~ 'timescaledb'"):
            pytest.skip("this server preloads TimescaleDB, which turns the table into a hypertable instead")
        conn.execute("CREATE TABLE bars_ohlcv (provider text, symbol text, ts timestamptz)")
    with pytest.raises(psycopg.errors.RaiseException, match="bars_ohlcv exists but is not partitioned; convert it"):
        migrator.apply(make_settings(database_url, REDIS_URL))
    with psycopg.connect(database_url, autocommit=True) as conn:
        applied = [r[0] for r in conn.execute("SELECT migration_id FROM _yoyo_migration ORDER BY 1")]
        assert applied == ["0001_job_ledger", "0002_job_runs"]  # 0003 rolled back as a whole
        assert _one(conn, "SELECT relkind FROM pg_class WHERE oid = 'bars_ohlcv'::regclass") == "r"
        assert _one(conn, "SELECT to_regproc('store_touch_updated_at')") is None

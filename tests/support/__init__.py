"""Helpers the tests share: real servers and processes, stand-ins, data builders.

Test modules import from here (`from tests.support.db import create_database`), never
from `conftest` or from another test module; `tests/conftest.py` only declares fixtures
built from these helpers.

- `common`: the repository root, the admin token, free ports, `wait_for` (polling with a deadline)
- `db`: fresh databases on the machine's Postgres, `make_settings`
- `redis`: a throwaway `redis-server`
- `service`: gunicorn + worker subprocesses and an HTTP client for them
- `local_run`: `scripts/run-local.sh` in a pseudo-terminal, a slow vendor, what a run leaves behind
- `pg_cluster`: a throwaway Postgres cluster a test may stop and start
- `timescale`: a throwaway Postgres cluster with TimescaleDB preloaded
- `faults`: the migration blocker, a job's database sessions, process probes
- `bars`: bars_ohlcv rows, rollups computed in Python; `rollup_ops`: the property tests' operations
- `backfill`: backfill source files and what the table must hold; `file_server`: an HTTP source
- `platform`: the time-series tables as the platform expects them (literal, not from the catalogue)
- `catalogue`: a database's schema as sorted lines from pg_catalog, normalised and diffed
- `registry_standin`: the schema registry over HTTP; `dockerfile`, `compose_merge`: the image checks
"""

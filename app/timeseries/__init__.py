"""Time-series storage of the market-data tables, on TimescaleDB or on plain Postgres 15.

- `catalog`: the time-series tables and aggregates (names, time columns, chunk widths,
  default retention, compression) — the one list every other module reads.
- `backend`: is TimescaleDB installed, and is a given table a hypertable.
- `partitions`: plain-Postgres range partitions (ensure_range, default-partition sweep).
- `retention`: policies and the removal of rows older than the policy's cutoff.
- `rollups`: continuous aggregates (TimescaleDB) / incrementally maintained rollup tables.
"""

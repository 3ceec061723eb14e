"""Backfill: loading history into the store from files and URLs, fast and safely repeatable.

- `sources`: where rows come from (a file inside BACKFILL_SOURCE_DIR, or an http(s) URL),
  opened as one decompressed byte stream; gzip detected by its magic bytes.
- `rows`: parsing NDJSON / CSV lines and validating every row; batches of ready-to-COPY
  CSV bytes plus their counts, offsets and bad-row samples.
- `loader`: the write path: COPY a batch into a temporary staging table, then a
  set-based merge into the target, with the checkpoint in the same transaction.
- `pipeline`: several sessions writing batches at once, merging and committing in order.
- `checkpoints`: where an unfinished load stopped, so a re-run resumes exactly there.
- `runs`: the platform's `job_runs` audit row (mode 'backfill', heartbeat, final status).
- `bars`: the `bars_ohlcv` job itself, tying the above together.
"""

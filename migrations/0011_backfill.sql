-- depends: 0002_job_runs
-- Backfill checkpoints (app/backfill/checkpoints.py). Idempotent on purpose.
--
-- One row per (job, source): where the last load of that source stopped. It is written
-- in the same transaction as each batch of rows, so a run that crashed resumes at the
-- first row it had not committed. `identity` (file size, mtime and inode, or the HTTP
-- ETag / Last-Modified / length) and `fingerprint` (format, default provider/interval)
-- must match for a resume; otherwise the load starts over (the upsert keeps that safe).

CREATE TABLE IF NOT EXISTS store_backfill_checkpoints (
    source_key    text PRIMARY KEY,
    job           text NOT NULL,
    source        text NOT NULL,
    fingerprint   text NOT NULL,
    identity      jsonb NOT NULL DEFAULT '{}'::jsonb,
    status        text NOT NULL DEFAULT 'loading' CHECK (status IN ('loading', 'done')),
    line          bigint NOT NULL DEFAULT 0,
    byte_offset   bigint NOT NULL DEFAULT 0,
    header        text[],
    rows_read     bigint NOT NULL DEFAULT 0,
    rows_written  bigint NOT NULL DEFAULT 0,
    rows_rejected bigint NOT NULL DEFAULT 0,
    bad_samples   jsonb NOT NULL DEFAULT '[]'::jsonb,
    symbols       text[] NOT NULL DEFAULT '{}',
    providers     text[] NOT NULL DEFAULT '{}',
    min_ts        timestamptz,
    max_ts        timestamptz,
    batches       integer NOT NULL DEFAULT 0,
    run_id        uuid,
    job_run_id    bigint,
    started_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX IF NOT EXISTS store_backfill_checkpoints_updated ON store_backfill_checkpoints (updated_at DESC);

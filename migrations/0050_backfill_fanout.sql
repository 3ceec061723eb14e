-- depends: 0011_backfill
-- Backfills of many files (app/jobs/fanout.py): one parent run, one child run per file.
-- Idempotent on purpose (yoyo may re-run it after a kill); plain Postgres and TimescaleDB.
--
-- A child run carries its parent's run id in params->>'parent' (GET /jobs?parent=<id>
-- lists them); the partial index keeps that lookup cheap however long the ledger grows.
-- A checkpoint remembers the fan-out group (the parent's single-flight key) that
-- finished it, so triggering the same parent again skips the files already loaded.

CREATE INDEX IF NOT EXISTS store_jobs_parent ON store_jobs ((params ->> 'parent')) WHERE params ? 'parent';

ALTER TABLE store_backfill_checkpoints ADD COLUMN IF NOT EXISTS fanout_group text;

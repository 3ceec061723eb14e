-- depends: 0011_backfill
-- The operator's day: retries recorded in the ledger, keyset paging, schedules as data.
-- Idempotent on purpose: the API and the worker also execute this file at start (after
-- 0001, see app/jobs/ledger.py: bootstrap), so the ledger is complete before any
-- migration ran. Plain SQL: Postgres 15 and TimescaleDB alike.

-- A retry (POST /jobs/<run_id>/retry) records the run it repeats.
ALTER TABLE store_jobs ADD COLUMN IF NOT EXISTS retry_of uuid;

-- GET /jobs pages newest first on (requested_at, run_id): a stable cursor under inserts.
CREATE INDEX IF NOT EXISTS store_jobs_page ON store_jobs (requested_at DESC, run_id DESC);

-- Schedules as data (GET /schedules, PUT /schedules/<name>). A row whose `every` is NULL
-- has not been initialised yet: the first process to see it writes the environment's
-- value (RETENTION_SCHEDULE, ...). From then on the table is the truth, for every worker.
ALTER TABLE store_schedules ADD COLUMN IF NOT EXISTS job text;
ALTER TABLE store_schedules ADD COLUMN IF NOT EXISTS params jsonb NOT NULL DEFAULT '{}'::jsonb;
ALTER TABLE store_schedules ADD COLUMN IF NOT EXISTS every interval;
ALTER TABLE store_schedules ADD COLUMN IF NOT EXISTS paused boolean NOT NULL DEFAULT false;
ALTER TABLE store_schedules ADD COLUMN IF NOT EXISTS updated_at timestamptz;

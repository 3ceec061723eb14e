-- The store's job ledger: every admin trigger and scheduled run is one row here.
-- Idempotent on purpose: the API and the worker also execute this file at start
-- (app/jobs/ledger.py: bootstrap) so the very first POST /migrate on an empty
-- database can be recorded and polled before any migration has run.

CREATE TABLE IF NOT EXISTS store_jobs (
    run_id              uuid PRIMARY KEY,
    job                 text NOT NULL,
    status              text NOT NULL DEFAULT 'queued'
                        CHECK (status IN ('queued', 'running', 'success', 'failed', 'cancelled')),
    params              jsonb NOT NULL DEFAULT '{}'::jsonb,
    progress            jsonb NOT NULL DEFAULT '{}'::jsonb,
    result              jsonb,
    error               text,
    request_id          text,
    trigger             text NOT NULL DEFAULT 'api',
    single_flight_key   text,
    timeout_s           double precision NOT NULL DEFAULT 3600,
    worker              text,
    attempts            integer NOT NULL DEFAULT 0,
    requested_at        timestamptz NOT NULL DEFAULT now(),
    started_at          timestamptz,
    finished_at         timestamptz,
    heartbeat_at        timestamptz,
    enqueued_at         timestamptz,
    cancel_requested_at timestamptz
);

-- Single flight: at most one queued-or-running job per key.
CREATE UNIQUE INDEX IF NOT EXISTS store_jobs_single_flight
    ON store_jobs (single_flight_key) WHERE status IN ('queued', 'running');
CREATE INDEX IF NOT EXISTS store_jobs_requested ON store_jobs (requested_at DESC);
CREATE INDEX IF NOT EXISTS store_jobs_job_status ON store_jobs (job, status, requested_at DESC);
CREATE INDEX IF NOT EXISTS store_jobs_active ON store_jobs (status) WHERE status IN ('queued', 'running');

-- Idempotency-Key: the same key with the same request returns the same run.
CREATE TABLE IF NOT EXISTS store_idempotency (
    key          text PRIMARY KEY,
    request_hash text NOT NULL,
    run_id       uuid NOT NULL REFERENCES store_jobs (run_id) ON DELETE CASCADE,
    created_at   timestamptz NOT NULL DEFAULT now()
);

-- Schedules: when each periodic job was last enqueued (worker/scheduler.py).
CREATE TABLE IF NOT EXISTS store_schedules (
    name             text PRIMARY KEY,
    last_enqueued_at timestamptz,
    last_run_id      uuid
);

-- The platform's pipeline job audit table (CONTRACTS.md §5) and its 24-hour summary view.

CREATE TABLE IF NOT EXISTS job_runs (
    id                 bigserial PRIMARY KEY,
    job_name           text NOT NULL,
    dataset_name       text,
    provider           text,
    mode               text NOT NULL DEFAULT 'live' CHECK (mode IN ('live', 'backfill')),
    status             text NOT NULL DEFAULT 'running'
                       CHECK (status IN ('running', 'success', 'failure', 'cancelled')),
    config_fingerprint text,
    pipeline_version   text,
    rows_written       bigint NOT NULL DEFAULT 0,
    rows_failed        bigint NOT NULL DEFAULT 0,
    symbols            text[],
    min_ts             timestamptz,
    max_ts             timestamptz,
    error_message      text,
    metadata           jsonb NOT NULL DEFAULT '{}'::jsonb,
    started_at         timestamptz NOT NULL DEFAULT now(),
    completed_at       timestamptz,
    elapsed_ms         bigint GENERATED ALWAYS AS
                       ((EXTRACT(EPOCH FROM (completed_at - started_at)) * 1000)::bigint) STORED
);

CREATE INDEX IF NOT EXISTS job_runs_started ON job_runs (started_at DESC);
CREATE INDEX IF NOT EXISTS job_runs_name_status ON job_runs (job_name, status, started_at DESC);

CREATE OR REPLACE VIEW job_runs_summary AS
SELECT job_name,
       provider,
       status,
       count(*)                          AS run_count,
       avg(elapsed_ms)::double precision AS avg_duration_ms,
       coalesce(sum(rows_written), 0)    AS total_rows,
       max(started_at)                   AS last_run_at,
       count(*) FILTER (WHERE status = 'failure') AS failure_count
FROM job_runs
WHERE started_at >= now() - interval '24 hours'
GROUP BY job_name, provider, status;

-- Schema drift against the platform's registry (app/drift/). Idempotent on purpose.
--
-- store_drift_checks: one row per drift check (history, pruned after 30 days by the job);
--   `results` holds that check's per-schema findings.
-- store_schema_drift: the latest finding per (track, schema), plus when drift was last
--   seen, which survives checks that found the schema synced or the registry unreachable.

CREATE TABLE IF NOT EXISTS store_drift_checks (
    id                 bigserial PRIMARY KEY,
    run_id             uuid,
    track              text NOT NULL,
    checked_at         timestamptz NOT NULL,
    registry_reachable boolean NOT NULL,
    error              text,
    results            jsonb NOT NULL DEFAULT '[]'::jsonb
);
CREATE INDEX IF NOT EXISTS store_drift_checks_track_time ON store_drift_checks (track, checked_at DESC);
CREATE INDEX IF NOT EXISTS store_drift_checks_time ON store_drift_checks (checked_at DESC);

CREATE TABLE IF NOT EXISTS store_schema_drift (
    track            text NOT NULL,
    schema           text NOT NULL,
    check_id         bigint NOT NULL,
    status           text NOT NULL
                     CHECK (status IN ('synced', 'drift', 'missing_in_registry', 'unknown')),
    drift_type       text
                     CHECK (drift_type IN ('content_mismatch', 'version_mismatch', 'missing_in_registry')),
    local_sha256     text NOT NULL,
    registry_sha256  text,
    local_version    text,
    registry_version text,
    error            text,
    checked_at       timestamptz NOT NULL,
    last_drift_at    timestamptz,
    last_drift_type  text,
    PRIMARY KEY (track, schema)
);
CREATE INDEX IF NOT EXISTS store_schema_drift_check ON store_schema_drift (check_id);

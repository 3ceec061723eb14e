DROP TABLE IF EXISTS store_schema_drift;
DROP TABLE IF EXISTS store_drift_checks;

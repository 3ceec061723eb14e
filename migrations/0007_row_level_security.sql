-- depends: 0006_market_data_tables
-- Row-level security on the tenant-scoped tables, keyed on the session setting
-- app.tenant_id (SET app.tenant_id = '...' or set_config('app.tenant_id', ..., true)).
-- A session without the setting sees and writes no tenant rows. ENABLE (not FORCE):
-- the tables' owner (the store itself: migrations, retention) is not filtered;
-- the platform's reader/writer roles are.

ALTER TABLE bars ENABLE ROW LEVEL SECURITY;
ALTER TABLE fundamentals ENABLE ROW LEVEL SECURITY;
ALTER TABLE news ENABLE ROW LEVEL SECURITY;
ALTER TABLE options_snap ENABLE ROW LEVEL SECURITY;

DROP POLICY IF EXISTS tenant_isolation ON bars;
CREATE POLICY tenant_isolation ON bars
    USING (tenant_id = current_setting('app.tenant_id', true))
    WITH CHECK (tenant_id = current_setting('app.tenant_id', true));
DROP POLICY IF EXISTS tenant_isolation ON fundamentals;
CREATE POLICY tenant_isolation ON fundamentals
    USING (tenant_id = current_setting('app.tenant_id', true))
    WITH CHECK (tenant_id = current_setting('app.tenant_id', true));
DROP POLICY IF EXISTS tenant_isolation ON news;
CREATE POLICY tenant_isolation ON news
    USING (tenant_id = current_setting('app.tenant_id', true))
    WITH CHECK (tenant_id = current_setting('app.tenant_id', true));
DROP POLICY IF EXISTS tenant_isolation ON options_snap;
CREATE POLICY tenant_isolation ON options_snap
    USING (tenant_id = current_setting('app.tenant_id', true))
    WITH CHECK (tenant_id = current_setting('app.tenant_id', true));

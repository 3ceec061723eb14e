-- depends: 0014_tick_rollups 0007_row_level_security
-- Tenant isolation for every connection, the tables' owner included (FORCE), and one
-- explicit way through for the store's own maintenance. Frozen history: literal SQL only.
--
-- A session sees and writes a tenant table's rows only for the tenant in app.tenant_id
-- (0007's tenant_isolation policy), whoever it connects as, unless it is a maintenance
-- session: one that sets app.maintenance = 'on' AND whose role is (a member of) the
-- table's owner. The store's job and migration sessions are such sessions; the platform's
-- pipeline connects as its own role, which is not a member of the owner, so setting the
-- flag gives it nothing. Superusers and BYPASSRLS roles are not subject to row-level
-- security at all (PostgreSQL); the pipeline must use neither.

ALTER TABLE bars FORCE ROW LEVEL SECURITY;
ALTER TABLE fundamentals FORCE ROW LEVEL SECURITY;
ALTER TABLE news FORCE ROW LEVEL SECURITY;
ALTER TABLE options_snap FORCE ROW LEVEL SECURITY;

DROP POLICY IF EXISTS store_maintenance ON bars;
CREATE POLICY store_maintenance ON bars
    USING (current_setting('app.maintenance', true) = 'on'
           AND pg_has_role((SELECT relowner FROM pg_class WHERE oid = 'bars'::regclass), 'MEMBER'))
    WITH CHECK (current_setting('app.maintenance', true) = 'on'
                AND pg_has_role((SELECT relowner FROM pg_class WHERE oid = 'bars'::regclass), 'MEMBER'));
DROP POLICY IF EXISTS store_maintenance ON fundamentals;
CREATE POLICY store_maintenance ON fundamentals
    USING (current_setting('app.maintenance', true) = 'on'
           AND pg_has_role((SELECT relowner FROM pg_class WHERE oid = 'fundamentals'::regclass), 'MEMBER'))
    WITH CHECK (current_setting('app.maintenance', true) = 'on'
                AND pg_has_role((SELECT relowner FROM pg_class WHERE oid = 'fundamentals'::regclass), 'MEMBER'));
DROP POLICY IF EXISTS store_maintenance ON news;
CREATE POLICY store_maintenance ON news
    USING (current_setting('app.maintenance', true) = 'on'
           AND pg_has_role((SELECT relowner FROM pg_class WHERE oid = 'news'::regclass), 'MEMBER'))
    WITH CHECK (current_setting('app.maintenance', true) = 'on'
                AND pg_has_role((SELECT relowner FROM pg_class WHERE oid = 'news'::regclass), 'MEMBER'));
DROP POLICY IF EXISTS store_maintenance ON options_snap;
CREATE POLICY store_maintenance ON options_snap
    USING (current_setting('app.maintenance', true) = 'on'
           AND pg_has_role((SELECT relowner FROM pg_class WHERE oid = 'options_snap'::regclass), 'MEMBER'))
    WITH CHECK (current_setting('app.maintenance', true) = 'on'
                AND pg_has_role((SELECT relowner FROM pg_class WHERE oid = 'options_snap'::regclass), 'MEMBER'));

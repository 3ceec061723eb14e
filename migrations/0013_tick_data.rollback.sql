DELETE FROM store_retention_policies WHERE table_name = 'tick_data';
DROP TABLE IF EXISTS tick_data CASCADE;

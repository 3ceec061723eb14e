"""A database's schema as sorted, readable lines, read from pg_catalog (and TimescaleDB's views).

`dump(conn)` returns `{section: [line, ...]}`; `as_text` joins it into one string, and
`diff` of two catalogues shows exactly which table, column, index, constraint, trigger,
policy, function, view, chunk setting or seed row differs. It covers the
schemas `public` and, with TimescaleDB, `_timescaledb_internal` (materialization and
compressed hypertables), leaving out what belongs to extensions themselves.

`normalise` replaces what depends on the day a database was migrated: the names and
bounds of the plain-Postgres partitions made ahead of "now" (`bars_p20261126`,
`FOR VALUES FROM ('2026-11-26 ...')`).
"""

from __future__ import annotations

import difflib
import re
from datetime import UTC, datetime

import psycopg

SCHEMAS = ("public", "_timescaledb_internal")

# Relations (and their columns, indexes, ...) of the dumped schemas that no extension owns.
_OWN_RELATIONS = """
    SELECT c.oid, n.nspname, c.relname
    FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
    WHERE n.nspname = ANY(%(schemas)s)
      AND NOT EXISTS (SELECT 1 FROM pg_depend d
                      WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid AND d.deptype = 'e')
"""

_SECTIONS: dict[str, str] = {
    "extensions": "SELECT extname, extversion FROM pg_extension",
    "relations": f"""
        WITH own AS ({_OWN_RELATIONS})
        SELECT own.nspname || '.' || own.relname, c.relkind, c.relpersistence,
               'rls=' || c.relrowsecurity || '/' || c.relforcerowsecurity,
               'options=' || coalesce(array_to_string(c.reloptions, ','), ''),
               'partkey=' || coalesce(pg_get_partkeydef(c.oid), ''),
               'parent=' || coalesce((SELECT i.inhparent::regclass::text FROM pg_inherits i
                                      WHERE i.inhrelid = c.oid), ''),
               'bound=' || coalesce(pg_get_expr(c.relpartbound, c.oid), ''),
               'acl=' || coalesce(c.relacl::text, '')
        FROM own JOIN pg_class c ON c.oid = own.oid
        WHERE c.relkind IN ('r', 'p', 'v', 'm', 'f')""",
    "columns": f"""
        WITH own AS ({_OWN_RELATIONS})
        SELECT own.nspname || '.' || own.relname,
               '#' || row_number() OVER (PARTITION BY a.attrelid ORDER BY a.attnum),
               a.attname, format_type(a.atttypid, a.atttypmod),
               CASE WHEN a.attnotnull THEN 'NOT NULL' ELSE 'NULL' END,
               'default=' || coalesce(pg_get_expr(ad.adbin, ad.adrelid), ''),
               'identity=' || a.attidentity::text, 'generated=' || a.attgenerated::text,
               'collation=' || coalesce((SELECT collname FROM pg_collation WHERE oid = a.attcollation
                                         AND a.attcollation <> 0), ''),
               'local=' || a.attislocal || ' inherited=' || a.attinhcount
        FROM own JOIN pg_attribute a ON a.attrelid = own.oid
        JOIN pg_class c ON c.oid = own.oid
        LEFT JOIN pg_attrdef ad ON ad.adrelid = a.attrelid AND ad.adnum = a.attnum
        WHERE a.attnum > 0 AND NOT a.attisdropped AND c.relkind IN ('r', 'p', 'v', 'm', 'f')""",
    "constraints": f"""
        WITH own AS ({_OWN_RELATIONS})
        SELECT own.nspname || '.' || own.relname, co.conname, co.contype,
               pg_get_constraintdef(co.oid),
               'deferrable=' || co.condeferrable || '/' || co.condeferred, 'validated=' || co.convalidated,
               'local=' || co.conislocal || ' inherited=' || co.coninhcount
        FROM own JOIN pg_constraint co ON co.conrelid = own.oid""",
    "indexes": f"""
        WITH own AS ({_OWN_RELATIONS})
        SELECT pg_get_indexdef(x.indexrelid),
               'valid=' || x.indisvalid, 'primary=' || x.indisprimary, 'unique=' || x.indisunique,
               'parent=' || coalesce((SELECT i.inhparent::regclass::text FROM pg_inherits i
                                      WHERE i.inhrelid = x.indexrelid), '')
        FROM own JOIN pg_index x ON x.indrelid = own.oid""",
    "triggers": f"""
        WITH own AS ({_OWN_RELATIONS})
        SELECT own.nspname || '.' || own.relname, t.tgname, 'enabled=' || t.tgenabled::text,
               'internal=' || t.tgisinternal, 'cloned=' || (t.tgparentid <> 0),
               pg_get_triggerdef(t.oid)
        FROM own JOIN pg_trigger t ON t.tgrelid = own.oid
        WHERE NOT t.tgisinternal OR t.tgparentid <> 0""",
    "policies": """
        SELECT schemaname || '.' || tablename, policyname, permissive, array_to_string(roles, ','), cmd,
               'using=' || coalesce(qual, ''), 'check=' || coalesce(with_check, '')
        FROM pg_policies WHERE schemaname = ANY(%(schemas)s)""",
    "functions": """
        SELECT pg_get_functiondef(p.oid)
        FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
        WHERE n.nspname = ANY(%(schemas)s) AND p.prokind IN ('f', 'p')
          AND NOT EXISTS (SELECT 1 FROM pg_depend d
                          WHERE d.classid = 'pg_proc'::regclass AND d.objid = p.oid AND d.deptype = 'e')""",
    "views": f"""
        WITH own AS ({_OWN_RELATIONS})
        SELECT own.nspname || '.' || own.relname, pg_get_viewdef(own.oid)
        FROM own JOIN pg_class c ON c.oid = own.oid WHERE c.relkind IN ('v', 'm')""",
    "types": """
        SELECT n.nspname || '.' || t.typname, t.typtype,
               coalesce((SELECT string_agg(e.enumlabel, ',' ORDER BY e.enumsortorder) FROM pg_enum e
                         WHERE e.enumtypid = t.oid), ''),
               CASE WHEN t.typtype = 'd' THEN format_type(t.typbasetype, t.typtypmod) ELSE '' END
        FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace
        WHERE n.nspname = ANY(%(schemas)s) AND t.typtype IN ('e', 'd', 'r', 'm')
          AND NOT EXISTS (SELECT 1 FROM pg_depend d
                          WHERE d.classid = 'pg_type'::regclass AND d.objid = t.oid AND d.deptype = 'e')""",
    "sequences": """
        SELECT schemaname || '.' || sequencename, data_type::text, start_value, min_value, max_value,
               increment_by, cycle, cache_size
        FROM pg_sequences WHERE schemaname = ANY(%(schemas)s)""",
    "retention seed rows": "SELECT table_name, retain::text, enabled FROM store_retention_policies",
    "aggregate rows": "SELECT name, source, bucket_width::text FROM store_aggregates",
    "applied migrations": "SELECT migration_id FROM _yoyo_migration",
}

_TIMESCALEDB_SECTIONS: dict[str, str] = {
    "timescaledb hypertables": """
        SELECT hypertable_schema || '.' || hypertable_name, num_dimensions, compression_enabled,
               primary_dimension, primary_dimension_type::text
        FROM timescaledb_information.hypertables""",
    "timescaledb dimensions": """
        SELECT hypertable_schema || '.' || hypertable_name, dimension_number, column_name, column_type::text,
               dimension_type, time_interval::text, integer_interval, integer_now_func, num_partitions
        FROM timescaledb_information.dimensions""",
    "timescaledb compression settings": """
        SELECT hypertable::text, 'segmentby=' || coalesce(segmentby, ''), 'orderby=' || coalesce(orderby, ''),
               compress_interval_length::text, coalesce(index::text, '')
        FROM timescaledb_information.hypertable_compression_settings""",
    "timescaledb jobs": """
        SELECT job_id, application_name, schedule_interval::text, max_runtime::text, max_retries,
               retry_period::text, proc_schema || '.' || proc_name, scheduled, fixed_schedule,
               coalesce(config::text, ''), coalesce(hypertable_schema || '.' || hypertable_name, ''),
               coalesce(check_schema || '.' || check_name, '')
        FROM timescaledb_information.jobs""",
    "timescaledb continuous aggregates": """
        SELECT view_schema || '.' || view_name, hypertable_schema || '.' || hypertable_name,
               'materialized_only=' || materialized_only, 'compression=' || compression_enabled,
               materialization_hypertable_schema || '.' || materialization_hypertable_name, view_definition
        FROM timescaledb_information.continuous_aggregates""",
}


def _line(row: tuple) -> str:
    return " | ".join("" if v is None else str(v) for v in row)


def dump(conn: psycopg.Connection) -> dict[str, list[str]]:
    """Every section's rows as sorted lines."""
    sections = dict(_SECTIONS)
    if conn.execute("SELECT EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'timescaledb')").fetchone()[0]:
        sections.update(_TIMESCALEDB_SECTIONS)
    out: dict[str, list[str]] = {}
    params = {"schemas": list(SCHEMAS)}
    for name, query in sections.items():
        rows = conn.execute(query, params if "%(schemas)s" in query else None).fetchall()
        out[name] = sorted(_line(r) for r in rows)
    return out


_PARTITION_NAME = re.compile(r"(?<=_p)\d{8}(?:_\d{6})?")
_BOUND = re.compile(r"FOR VALUES FROM \('([^']*)'\) TO \('([^']*)'\)")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _bound(match: re.Match) -> str:
    """A range bound without its date, keeping its width and its offset from an epoch-aligned slot."""
    lo, hi = (datetime.fromisoformat(v) for v in match.groups())
    width = hi - lo
    offset = (lo - _EPOCH) % width if width else width
    return f"FOR VALUES FROM ('<date>') TO ('<date>' + '{width}'), {offset} after an aligned slot"


def normalise(catalogue: dict[str, list[str]]) -> dict[str, list[str]]:
    """The same catalogue with the dates of premade partitions (names and bounds) blanked."""

    def fix(line: str) -> str:
        return _BOUND.sub(_bound, _PARTITION_NAME.sub("<date>", line))

    return {name: sorted(fix(line) for line in lines) for name, lines in catalogue.items()}


def as_text(catalogue: dict[str, list[str]]) -> str:
    """One line per object under a `== section ==` header: what a failed comparison diffs."""
    return "\n".join(f"== {name} ==\n" + "\n".join(lines) for name, lines in catalogue.items()) + "\n"


def diff(expected: dict[str, list[str]], actual: dict[str, list[str]], labels: tuple[str, str]) -> str:
    """A unified diff of two catalogues ('' when equal): the message of a failed comparison."""
    lines = difflib.unified_diff(
        as_text(expected).splitlines(), as_text(actual).splitlines(), *labels, n=1, lineterm=""
    )
    return "\n".join(lines)

"""Job `retention`: apply the retention policies (all tables, or one), optionally as a dry run."""

from __future__ import annotations

from app import validation
from app.config import Settings
from app.jobs.base import LOCK_ERRORS, JobContext, JobError, JobKind, gave_up_on_locks
from app.timeseries import catalog, retention


def parse(body: dict, settings: Settings) -> dict:
    validation.only(body, ["table", "dry_run"])
    table = validation.one_of(body.get("table"), catalog.TABLES, "table", "a time-series table")
    return {"table": table, "dry_run": validation.flag(body, "dry_run")}


def run(ctx: JobContext, params: dict) -> dict:
    tables = [params["table"]] if params["table"] else list(catalog.TABLES)
    results: dict[str, dict] = {}
    failed: dict[str, str] = {}
    with ctx.connect(autocommit=True) as conn:
        for table in tables:
            ctx.check()
            try:
                results[table] = retention.apply_table(
                    conn, table, dry_run=params["dry_run"], check=ctx.check, progress=ctx.progress
                )
            except LOCK_ERRORS as exc:
                failed[table] = gave_up_on_locks(exc)
            ctx.progress(tables=results, failed=failed)
            ctx.log.info("retention applied", table=table, result=results.get(table), error=failed.get(table))
    if failed:
        raise JobError("retention incomplete: " + "; ".join(f"{t}: {m}" for t, m in failed.items()))
    return {"dry_run": params["dry_run"], "tables": results}


def _key(params: dict) -> str:
    prefix = "retention-dry-run" if params["dry_run"] else "retention"
    return f"{prefix}:{params['table'] or '*'}"


KIND = JobKind(
    name="retention",
    run=run,
    parse=parse,
    single_flight=_key,
    timeout_s=4 * 3600,
    description="Remove rows older than each table's retention (drop partitions/chunks, delete the straddling part).",
)

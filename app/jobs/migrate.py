"""Job `migrate`: apply pending yoyo migrations (or list them with dry_run)."""

from __future__ import annotations

from app import migrator, validation
from app.config import Settings
from app.jobs.base import JobContext, JobError, JobKind


def parse(body: dict, settings: Settings) -> dict:
    validation.only(body, ["dry_run"])
    return {"dry_run": validation.flag(body, "dry_run")}


def run(ctx: JobContext, params: dict) -> dict:
    try:
        result = migrator.apply(ctx.settings, dry_run=params["dry_run"], session_name=ctx.session_name)
    except migrator.MigrationBusy as exc:
        raise JobError(str(exc)) from None
    return result


KIND = JobKind(
    name="migrate",
    run=run,
    parse=parse,
    single_flight=lambda p: "migrate:dry-run" if p["dry_run"] else "migrate",
    timeout_s=1800,
    description="Apply pending schema migrations (dry_run lists them).",
)

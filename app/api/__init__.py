"""HTTP blueprints, one module per concern. Handlers stay thin: parse, call, answer."""

from __future__ import annotations

from flask import Blueprint


def blueprints() -> list[Blueprint]:
    """Every blueprint the API serves, in registration order."""
    from app.api import aggregates, backfill, drift, jobs, openapi, probes, retention, schedules, schema, ui

    return [
        probes.bp,
        schema.bp,
        jobs.bp,
        drift.bp,
        openapi.bp,
        retention.bp,
        aggregates.bp,
        backfill.bp,
        schedules.bp,
        ui.bp,
    ]

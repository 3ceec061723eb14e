"""Backfill: the catalogue of backfill jobs, their trigger, and source files (admin)."""

from __future__ import annotations

import errno

import psycopg
from flask import Blueprint, g, jsonify, request
from flask.blueprints import BlueprintSetupState
from flask.typing import ResponseReturnValue
from werkzeug.exceptions import ClientDisconnected, RequestEntityTooLarge
from werkzeug.routing import BaseConverter

from app.api.common import json_body, settings, trigger
from app.auth import admin_required
from app.backfill import fileset, uploads
from app.backfill.sources import SourceError
from app.errors import ApiError, BadRequest, NotFound
from app.jobs import backfill, fanout, service

bp = Blueprint("backfill", __name__)


class _JobName(BaseConverter):
    """A backfill job name: any path segment but `sources` (that path is the file routes', so
    OPTIONS /backfill/sources advertises only their methods)."""

    regex = r"(?!sources(?![^/]))[^/]+"


@bp.record_once
def _register_converter(state: BlueprintSetupState) -> None:
    state.app.url_map.converters.setdefault("jobname", _JobName)


@bp.get("/backfill")
@admin_required
def list_backfill_jobs() -> ResponseReturnValue:
    return jsonify({"jobs": backfill.catalogue(), "source_dir": fileset.resolved_root(settings().backfill_source_dir)})


@bp.post("/backfill/<jobname:job>")
@admin_required
def trigger_backfill(job: str) -> ResponseReturnValue:
    entry = backfill.CATALOGUE.get(job)
    if entry is None:
        known = sorted(backfill.CATALOGUE)
        raise NotFound(f"no backfill job {job[:80]!r}; known: {', '.join(known)}", known=known)
    kind = entry[0]
    params = kind.parse(json_body(), settings())
    if "files" not in params:
        return trigger(kind, params=params)
    timeout_s = service.timeout_for(settings(), kind)

    def create(conn: psycopg.Connection) -> tuple[str, bool, list[str]]:
        return fanout.create(
            conn,
            kind.name,
            params["parent"],
            params["files"],
            kind.single_flight,
            request_id=g.get("request_id"),
            timeout_s=timeout_s,
        )

    return trigger(kind, params=params["parent"], create=create)


# -- source files -----------------------------------------------------------------------------
def _source_error(exc: SourceError) -> BadRequest:
    return BadRequest(f"{exc} ({fileset.where(settings().backfill_source_dir)})")


@bp.put("/backfill/sources/<path:name>")
@admin_required
def upload_source(name: str) -> ResponseReturnValue:
    limit = settings().backfill_upload_max_bytes
    too_large = ApiError(f"upload larger than BACKFILL_UPLOAD_MAX_BYTES ({limit} bytes)", 413)
    if request.content_length is not None and request.content_length > limit:
        raise too_large
    request.max_content_length = limit + 1  # our own check below says it first
    stream = request.stream
    try:
        saved = uploads.save(settings().backfill_source_dir, name, stream.read, limit, request.content_length)
    except SourceError as exc:
        raise _source_error(exc) from None
    except (uploads.TooLarge, RequestEntityTooLarge):
        raise too_large from None
    except (ClientDisconnected, uploads.Interrupted, OSError) as exc:
        if getattr(exc, "errno", None) in (errno.ENOSPC, errno.EDQUOT):
            raise ApiError("no space left for the upload in BACKFILL_SOURCE_DIR; nothing was kept", 507) from None
        raise BadRequest(f"the upload was interrupted; nothing was kept ({type(exc).__name__})") from None
    return jsonify(saved), 201, {"Location": f"/backfill/sources/{name}"}


@bp.get("/backfill/sources")
@admin_required
def list_sources() -> ResponseReturnValue:
    prefix = request.args.get("prefix", "")
    try:
        found = uploads.listing(settings().backfill_source_dir, prefix)
    except SourceError as exc:
        raise _source_error(exc) from None
    return jsonify({**found, "prefix": prefix, "source_dir": fileset.resolved_root(settings().backfill_source_dir)})


@bp.delete("/backfill/sources/<path:name>")
@admin_required
def delete_source(name: str) -> ResponseReturnValue:
    try:
        removed = uploads.delete(settings().backfill_source_dir, name)
    except SourceError as exc:
        raise _source_error(exc) from None
    if not removed:
        raise NotFound(f"no uploaded file {name[:80]!r} (names are relative to uploads/)")
    return jsonify({"name": name, "deleted": True})

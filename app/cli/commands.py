"""The `mds` commands. Each is a thin call of the HTTP API plus a rendering of its answer.

Exit codes: 0 done (a watched job ended `success`), 1 an error or a job that ended
`failed`/`cancelled`, 2 bad usage, 130 interrupted (Ctrl-C).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import quote

import click
from rich.console import Console
from rich.json import JSON
from rich.table import Table
from rich.text import Text

from app.cli import render
from app.cli.client import Client, CliError, NotOffered, target
from app.cli.watch import Watcher, phase_text
from app.config import VERSION

F = TypeVar("F", bound=Callable[..., Any])

INTERRUPTED = 130
UPLOAD_TIMEOUT_S = 600.0


@dataclass
class App:
    client: Client
    out: Console
    err: Console
    json: bool = False
    poll: float = 1.0

    def emit(self, data: object) -> None:
        """--json: the API's JSON document as it came."""
        click.echo(json.dumps(data, indent=2, ensure_ascii=False))


def _console(stderr: bool) -> Console:
    console = Console(stderr=stderr, highlight=False, soft_wrap=True)
    if not console.is_terminal:  # scripts and CI: wide lines instead of wrapped tables
        console = Console(stderr=stderr, highlight=False, soft_wrap=True, width=160, no_color=True)
    return console


def _app(ctx: click.Context) -> App:
    app = ctx.find_object(App)
    assert app is not None, "the mds group sets ctx.obj"
    return app


def json_option(f: F) -> F:
    """`--json` on every command (the group's `mds --json ...` works too)."""

    def set_json(ctx: click.Context, _param: object, value: bool) -> bool:
        if value:
            _app(ctx).json = True
        return value

    return click.option(
        "--json", "as_json", is_flag=True, expose_value=False, callback=set_json, help="Print the API's JSON."
    )(f)


def wait_options(f: F) -> F:
    f = click.option(
        "--cancel-on-interrupt", is_flag=True, help="On Ctrl-C, cancel the job without asking (exit 130)."
    )(f)
    return click.option("--wait", "-w", is_flag=True, help="Follow the job with a live bar until it ends.")(f)


# -- the group -----------------------------------------------------------------------------------
@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.option("--url", metavar="URL", help="The store's base URL [env STORE_URL; default http://127.0.0.1:8082].")
@click.option("--token", metavar="TOKEN", help="Admin bearer token [env ADMIN_TOKEN].")
@click.option("--json", "as_json", is_flag=True, help="Print the API's JSON instead of tables.")
@click.option("--poll", type=click.FloatRange(0.2, 10), default=1.0, show_default=True, help="Seconds between polls.")
@click.version_option(VERSION, message="mds (market-data-store) %(version)s")
@click.pass_context
def cli(ctx: click.Context, url: str | None, token: str | None, as_json: bool, poll: float) -> None:
    """Drive a market-data store over its HTTP API: status, migrations, retention,
    rollups, backfills, drift and the jobs they run."""
    ctx.obj = App(client=Client(target(url, token)), out=_console(False), err=_console(True), json=as_json, poll=poll)


def run(argv: list[str] | None = None) -> int:
    """Entry point of `mds` and `python -m app.cli`: the exit code, errors as one line."""
    err = Console(stderr=True, highlight=False, soft_wrap=True)
    try:
        code = cli.main(args=argv, prog_name="mds", standalone_mode=False)
    except click.exceptions.Abort:
        err.print("interrupted", markup=False)
        return INTERRUPTED
    except KeyboardInterrupt:
        err.print("interrupted", markup=False)
        return INTERRUPTED
    except click.ClickException as exc:
        exc.show()
        return exc.exit_code
    except CliError as exc:
        err.print(Text.assemble(Text("error: ", style="red bold"), Text(exc.message)))
        return exc.exit_code
    return code if isinstance(code, int) else 0


# -- following jobs ------------------------------------------------------------------------------
def _follow(app: App, run_id: str, cancel_on_interrupt: bool) -> int:
    try:
        doc = Watcher(app.client, app.err, app.poll).follow(run_id)
    except KeyboardInterrupt:
        return _interrupted(app, run_id, cancel_on_interrupt)
    if app.json:
        app.emit(doc)
    else:
        render.summary(app.out, doc)
    return 0 if doc["status"] == "success" else 1


def _interrupted(app: App, run_id: str, cancel: bool) -> int:
    app.err.print("interrupted", markup=False)
    if not cancel and sys.stdin.isatty():
        try:
            cancel = click.confirm(f"Cancel job {run_id}?", default=False, err=True)
        except (click.exceptions.Abort, KeyboardInterrupt, EOFError):
            cancel = False
    if cancel:
        try:
            doc = app.client.post(f"/jobs/{run_id}/cancel")
        except CliError as exc:
            app.err.print(Text(f"could not cancel {run_id}: {exc.message}"))
        else:
            app.err.print(Text(f"cancel requested: job {run_id} is {doc['status']}"))
    else:
        app.err.print(Text(f"stopped watching; the job goes on: mds jobs watch {run_id}"))
    return INTERRUPTED


def _trigger(app: App, path: str, body: dict, wait: bool, cancel_on_interrupt: bool, what: str | None = None) -> int:
    answer = app.client.post(path, body, what=what)
    run_id = answer["run_id"]
    if not wait:
        if app.json:
            app.emit(answer)
        else:
            same = "" if answer.get("new", True) else " (one was already queued or running: that run)"
            app.out.print(Text(f"{answer['job']} run {run_id}{same}"))
            app.out.print(Text(f"follow it: mds jobs watch {run_id}", style="dim"))
        return 0
    if not app.json:
        app.out.print(Text(f"{answer['job']} run {run_id}"))
    return _follow(app, run_id, cancel_on_interrupt)


# -- status and migrate --------------------------------------------------------------------------
def _gauges(metrics_text: str, names: tuple[str, ...]) -> dict[str, float]:
    from prometheus_client.parser import text_string_to_metric_families

    found: dict[str, float] = {}
    try:
        for family in text_string_to_metric_families(metrics_text):
            for sample in family.samples:
                if sample.name in names and not sample.labels:
                    found[sample.name] = sample.value
    except ValueError:
        pass
    return found


@cli.command()
@json_option
@click.option("--failed", "failed_limit", type=click.IntRange(0, 50), default=5, show_default=True)
@click.pass_obj
def status(app: App, failed_limit: int) -> int:
    """Health, readiness, schema version, workers, queue depth and the last failed jobs.

    Exits 0 when the store is ready, 1 when it is not."""
    client = app.client
    ready = client.request("GET", "/readyz", accept=(503,))
    health = ready.json()
    schema = client.request("GET", "/schema/version", accept=(503,)).json()
    gauges = _gauges(client.request("GET", "/metrics").text, ("store_workers", "store_queue_depth"))
    failed: dict = {"jobs": []}
    if failed_limit:
        failed = client.get("/jobs", params={"status": "failed", "limit": failed_limit})
    if app.json:
        app.emit({"readyz": health, "schema": schema, "metrics": gauges, "failed": failed})
        return 0 if ready.status_code == 200 else 1
    out = app.out
    out.print(
        Text.assemble(
            Text("store ", style="bold"),
            Text(client.url),
            "  ",
            Text(str(health.get("state")), style=_state_style(health.get("state"))),
            "  ",
            Text("ready", style="green") if ready.status_code == 200 else Text("not ready", style="red bold"),
            f"  version {health.get('version', '?')}",
        )
    )
    pending = schema.get("pending") or []
    out.print(
        Text(
            f"schema   {schema.get('version', '?')} ({len(pending)} pending{': ' + ', '.join(pending) if pending else ''})"
        )
    )
    workers = gauges.get("store_workers")
    depth = gauges.get("store_queue_depth")
    out.print(
        Text(
            f"workers  {'?' if workers is None else int(workers)} alive   "
            f"queue  {'?' if depth is None else int(depth)} waiting"
        )
    )
    rows = [
        [c.get("name"), Text(str(c.get("state")), style=_state_style(c.get("state"))), _details(c.get("details"))]
        for c in health.get("components", [])
    ]
    out.print(render.table(None, ["component", "state", "details"], rows))
    if failed_limit:
        jobs = failed.get("jobs", [])
        if jobs:
            out.print(_jobs_table("last failed jobs", jobs))
        else:
            out.print(Text("no failed jobs", style="dim"))
    return 0 if ready.status_code == 200 else 1


def _state_style(state: str) -> str:
    return {"healthy": "green", "degraded": "yellow", "unhealthy": "red"}.get(state, "")


def _details(details: object) -> str:
    if not isinstance(details, dict):
        return ""
    return ", ".join(f"{k}={v}" for k, v in details.items())


@cli.command()
@json_option
@click.option("--dry-run", is_flag=True, help="Only list the pending migrations.")
@wait_options
@click.pass_obj
def migrate(app: App, dry_run: bool, wait: bool, cancel_on_interrupt: bool) -> int:
    """Apply pending migrations (job `migrate`)."""
    return _trigger(app, "/migrate", {"dry_run": True} if dry_run else {}, wait, cancel_on_interrupt)


# -- jobs ----------------------------------------------------------------------------------------
def _jobs_table(title: str | None, jobs: list[dict]) -> Table:
    rows = []
    for doc in jobs:
        progress = render.percent(doc) or (phase_text(doc, 40) if doc.get("status") == "running" else "")
        error = doc.get("error") or ""
        rows.append(
            [
                doc.get("run_id"),
                doc.get("job"),
                render.status(doc.get("status", "?")),
                progress,
                render.when(doc.get("requested_at")),
                render.duration(doc),
                error if len(error) <= 60 else error[:59] + "…",
            ]
        )
    return render.table(title, ["run_id", "job", "status", "progress", "requested", "took", "error"], rows)


@cli.group(invoke_without_command=True)
@json_option
@click.option("--status", help="Status, or several comma-separated (queued,running,success,failed,cancelled).")
@click.option("--job", help="Job kind, or a prefix such as 'backfill.'.")
@click.option("--since", metavar="TIME", help="Requested at or after this ISO 8601 time.")
@click.option("--until", metavar="TIME", help="Requested before this ISO 8601 time.")
@click.option("--trigger", "trigger_", metavar="WHO", help="Who triggered it (api, schedule, ...).")
@click.option("--limit", type=click.IntRange(1, 200), default=20, show_default=True)
@click.option("--cursor", help="The next page, as printed after a full page.")
@click.pass_context
def jobs(
    ctx: click.Context,
    status: str | None,
    job: str | None,
    since: str | None,
    until: str | None,
    trigger_: str | None,
    limit: int,
    cursor: str | None,
) -> int | None:
    """List jobs, newest first (subcommands: show, watch, cancel, retry)."""
    if ctx.invoked_subcommand is not None:
        return None
    app: App = ctx.obj
    given = {"status": status, "job": job, "since": since, "until": until, "trigger": trigger_}
    params: dict[str, object] = {k: v for k, v in given.items() if v}
    params["limit"] = limit
    if cursor:
        params["cursor"] = cursor
    answer = app.client.get("/jobs", params=params)
    newer = {"since", "until", "trigger", "cursor"} & set(params)
    if newer and "total" not in answer and "next_cursor" not in answer:
        # An older store ignores these query parameters: the list would not be what was asked.
        raise NotOffered(f"this store does not offer filtering jobs by {', '.join(sorted(newer))}")
    if app.json:
        app.emit(answer)
        return 0
    app.out.print(_jobs_table(None, answer.get("jobs", [])))
    total = answer.get("total")
    shown = len(answer.get("jobs", []))
    if isinstance(total, int):
        app.out.print(Text(f"{shown} of {total} jobs", style="dim"))
    if answer.get("next_cursor"):
        app.out.print(Text(f"more: mds jobs --cursor {answer['next_cursor']}", style="dim"))
    return 0


def _run_id_path(run_id: str) -> str:
    return quote(run_id.strip(), safe="")


@jobs.command("show")
@json_option
@click.argument("run_id")
@click.pass_obj
def jobs_show(app: App, run_id: str) -> int:
    """Everything about one job: params, progress, result, error, timings."""
    doc = app.client.get(f"/jobs/{_run_id_path(run_id)}")
    if app.json:
        app.emit(doc)
        return 0
    out = app.out
    out.print(
        Text.assemble(render.status(doc["status"]), " ", Text(doc["job"], style="bold"), f"  run {doc['run_id']}")
    )
    for key in ("requested_at", "started_at", "finished_at"):
        out.print(Text(f"  {key.replace('_at', ''):<10} {render.when(doc.get(key))}"))
    out.print(Text(f"  took       {render.duration(doc)}"))
    for key in ("trigger", "attempts", "queue_position", "waiting_for", "cancel_requested"):
        if doc.get(key) not in (None, False):
            out.print(Text(f"  {key:<10} {render.text(doc[key]).plain}"))
    if doc.get("error"):
        out.print(Text.assemble(Text("error: ", style="red bold"), Text(str(doc["error"]))))
    for key in ("params", "progress", "result"):
        if doc.get(key):
            out.print(Text(key, style="bold"))
            out.print(JSON.from_data(doc[key], ensure_ascii=False))
    return 0


@jobs.command("watch")
@json_option
@click.argument("run_id")
@click.option("--cancel-on-interrupt", is_flag=True, help="On Ctrl-C, cancel the job without asking.")
@click.pass_obj
def jobs_watch(app: App, run_id: str, cancel_on_interrupt: bool) -> int:
    """Follow a job until it ends: exit 0 on success, 1 on failure."""
    return _follow(app, _run_id_path(run_id), cancel_on_interrupt)


@jobs.command("cancel")
@json_option
@click.argument("run_id")
@click.pass_obj
def jobs_cancel(app: App, run_id: str) -> int:
    """Cancel a job: a queued one never runs, a running one is stopped."""
    doc = app.client.post(f"/jobs/{_run_id_path(run_id)}/cancel")
    if app.json:
        app.emit(doc)
    elif doc["status"] == "cancelled":
        app.out.print(Text(f"job {doc['run_id']} cancelled"))
    else:
        app.out.print(Text(f"cancel requested: job {doc['run_id']} is stopping ({doc['status']})"))
    return 0


@jobs.command("retry")
@json_option
@click.argument("run_id")
@wait_options
@click.pass_obj
def jobs_retry(app: App, run_id: str, wait: bool, cancel_on_interrupt: bool) -> int:
    """Run a failed or cancelled job again, with the same parameters."""
    path = f"/jobs/{_run_id_path(run_id)}/retry"
    return _trigger(app, path, {}, wait, cancel_on_interrupt, what="retrying jobs (POST /jobs/<run_id>/retry)")


# -- retention and rollups -----------------------------------------------------------------------
@cli.group()
def retention() -> None:
    """Retention policies and their enforcement."""


@retention.command("policies")
@json_option
@click.pass_obj
def retention_policies(app: App) -> int:
    """The retention policy of every time-series table."""
    answer = app.client.get("/retention/policies")
    if app.json:
        app.emit(answer)
        return 0
    rows = [
        [
            p.get("table"),
            p.get("retain"),
            Text("enabled", style="green") if p.get("enabled") else Text("disabled", style="dim"),
            p.get("backend"),
            render.when(p.get("last_applied_at")),
            render.when(p.get("watermark")),
        ]
        for p in answer.get("policies", [])
    ]
    app.out.print(render.table(None, ["table", "retain", "state", "backend", "last applied", "cutoff"], rows))
    return 0


@retention.command("set")
@json_option
@click.argument("table")
@click.argument("retain")
@click.option("--disable/--enable", "disable", default=None, help="Switch the policy off or on (default: unchanged).")
@click.pass_obj
def retention_set(app: App, table: str, retain: str, disable: bool | None) -> int:
    """Set TABLE's retention to RETAIN (e.g. '30 days')."""
    body: dict = {"retain": retain}
    if disable is not None:
        body["enabled"] = not disable
    doc = app.client.put(f"/retention/policies/{quote(table, safe='')}", body)
    if app.json:
        app.emit(doc)
    else:
        state = "enabled" if doc.get("enabled") else "disabled"
        app.out.print(Text(f"{doc['table']}: keep {doc['retain']} ({state})"))
    return 0


@retention.command("apply")
@json_option
@click.option("--table", help="Only this table (default: every table with an enabled policy).")
@click.option("--dry-run", is_flag=True, help="Count what would be removed; remove nothing.")
@wait_options
@click.pass_obj
def retention_apply(app: App, table: str | None, dry_run: bool, wait: bool, cancel_on_interrupt: bool) -> int:
    """Enforce retention now (job `retention`)."""
    body: dict = {}
    if table:
        body["table"] = table
    if dry_run:
        body["dry_run"] = True
    return _trigger(app, "/retention/apply", body, wait, cancel_on_interrupt)


@cli.command()
@json_option
@click.pass_obj
def aggregates(app: App) -> int:
    """Continuous aggregates: watermark, last refresh, pending invalidations."""
    answer = app.client.get("/aggregates")
    if app.json:
        app.emit(answer)
        return 0
    rows = [
        [
            a.get("name"),
            a.get("source"),
            a.get("bucket_width"),
            a.get("backend"),
            render.when(a.get("last_refresh_at")),
            render.when(a.get("watermark")),
            a.get("pending_invalidations"),
        ]
        for a in answer.get("aggregates", [])
    ]
    columns = ["name", "source", "bucket", "backend", "last refresh", "watermark", "pending"]
    app.out.print(render.table(None, columns, rows))
    return 0


@cli.command()
@json_option
@click.argument("name", required=False)
@click.option("--start", metavar="TIME", help="ISO 8601 start of the window.")
@click.option("--end", metavar="TIME", help="ISO 8601 end of the window.")
@wait_options
@click.pass_obj
def refresh(
    app: App, name: str | None, start: str | None, end: str | None, wait: bool, cancel_on_interrupt: bool
) -> int:
    """Refresh the continuous aggregates (or only NAME) (job `refresh_aggregate`)."""
    body = {k: v for k, v in {"name": name, "start": start, "end": end}.items() if v}
    return _trigger(app, "/refresh/aggregate", body, wait, cancel_on_interrupt)


# -- backfill ------------------------------------------------------------------------------------
def _typed(value: str, kind: str, name: str) -> object:
    if kind == "integer":
        try:
            return int(value)
        except ValueError:
            raise CliError(f"--param {name} must be an integer, got {value!r}") from None
    if kind == "boolean":
        if value.lower() not in ("true", "false"):
            raise CliError(f"--param {name} must be true or false, got {value!r}")
        return value.lower() == "true"
    return value


def _catalogue(app: App) -> list[dict]:
    return app.client.get("/backfill").get("jobs", [])


def _sources(app: App) -> dict | None:
    try:
        return app.client.get("/backfill/sources", what="uploaded sources (GET /backfill/sources)")
    except NotOffered:
        return None


def _upload(app: App, path: Path, name: str) -> dict:
    if not path.is_file():
        raise CliError(f"--upload: no such file: {path}")
    with path.open("rb") as body:
        resp = app.client.request(
            "PUT",
            f"/backfill/sources/{quote(name, safe='')}",
            data=body,
            headers={"Content-Type": "application/octet-stream"},
            timeout=UPLOAD_TIMEOUT_S,
            what="uploads (PUT /backfill/sources/<name>)",
        )
    return resp.json()


@cli.command()
@json_option
@click.argument("job", required=False)
@click.argument("source", required=False)
@click.option("--param", "-p", "params", multiple=True, metavar="KEY=VALUE", help="A job parameter (repeatable).")
@click.option("--upload", type=click.Path(dir_okay=False, path_type=Path), help="Upload this file, then load it.")
@wait_options
@click.pass_obj
def backfill(
    app: App,
    job: str,
    source: str | None,
    params: tuple[str, ...],
    upload: Path | None,
    wait: bool,
    cancel_on_interrupt: bool,
) -> int:
    """Load history: `mds backfill bars_ohlcv SOURCE [-p key=value ...]` (job `backfill.JOB`).

    Without JOB, lists the backfill jobs with their parameters (and uploaded sources)."""
    catalogue = _catalogue(app)
    if job is None:
        sources = _sources(app)
        if app.json:
            app.emit({"jobs": catalogue, **({"sources": sources} if sources is not None else {})})
            return 0
        for item in catalogue:
            app.out.print(Text.assemble(Text(item["name"], style="bold"), "  ", Text(item.get("description", ""))))
            rows = [
                [p["name"], p["type"], "yes" if p["required"] else "", p.get("default"), p.get("description")]
                for p in item.get("parameters", [])
            ]
            app.out.print(render.table(None, ["parameter", "type", "required", "default", "meaning"], rows))
        if sources is not None:
            listed = sources.get("sources", []) if isinstance(sources, dict) else []
            rows = [
                [s.get("name"), s.get("size"), render.when(s.get("uploaded_at") or s.get("modified_at"))]
                for s in listed
            ]
            app.out.print(render.table("sources", ["name", "bytes", "when"], rows))
        return 0
    entry: dict | None = next((e for e in catalogue if e["name"] == job), None)
    if entry is None:
        known = ", ".join(e["name"] for e in catalogue)
        raise CliError(f"no backfill job {job!r}; known: {known}")
    types = {p["name"]: p["type"] for p in entry.get("parameters", [])}
    body: dict = {}
    for item in params:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise CliError(f"--param wants KEY=VALUE, got {item!r}")
        body[key] = _typed(value, types.get(key, "string"), key)
    if upload is not None:
        stored = _upload(app, upload, source or upload.name)
        source = stored.get("source") or stored.get("name") or source or upload.name
        if not app.json:
            app.out.print(Text(f"uploaded {upload} as {source}"))
    if source is not None:
        body["source"] = source
    return _trigger(app, f"/backfill/{quote(job, safe='')}", body, wait, cancel_on_interrupt)


# -- drift ---------------------------------------------------------------------------------------
@cli.group(invoke_without_command=True)
@json_option
@click.option("--track", type=click.Choice(["v1", "v2"]), help="Schema track (default: the store's).")
@click.pass_context
def drift(ctx: click.Context, track: str | None) -> int | None:
    """Schema drift per pinned schema (subcommand: check)."""
    if ctx.invoked_subcommand is not None:
        return None
    app: App = ctx.obj
    answer = app.client.get("/drift", params={"track": track} if track else None)
    if app.json:
        app.emit(answer)
        return 0
    reach = answer.get("registry_reachable")
    app.out.print(
        Text(
            f"track {answer.get('track')}  last check {render.when(answer.get('checked_at'))}  "
            f"registry {'reachable' if reach else 'unreachable' if reach is False else 'unknown'}"
        )
    )
    if answer.get("error"):
        app.out.print(Text.assemble(Text("error: ", style="red bold"), Text(str(answer["error"]))))
    rows = [
        [s.get("schema"), s.get("status"), s.get("drift_type"), s.get("local_version"), s.get("registry_version")]
        for s in answer.get("schemas", [])
    ]
    app.out.print(render.table(None, ["schema", "status", "drift", "local", "registry"], rows))
    return 0


@drift.command("check")
@json_option
@wait_options
@click.pass_obj
def drift_check(app: App, wait: bool, cancel_on_interrupt: bool) -> int:
    """Compare the pinned schemas with the registry now (job `drift_check`)."""
    return _trigger(app, "/drift/check", {}, wait, cancel_on_interrupt)


# -- schedules -----------------------------------------------------------------------------------
SCHEDULES = "schedules (GET /schedules)"


@cli.group(invoke_without_command=True)
@json_option
@click.pass_context
def schedules(ctx: click.Context) -> int | None:
    """The periodic jobs (subcommands: set, run)."""
    if ctx.invoked_subcommand is not None:
        return None
    app: App = ctx.obj
    answer = app.client.get("/schedules", what=SCHEDULES)
    if app.json:
        app.emit(answer)
        return 0
    rows = [
        [
            s.get("name"),
            s.get("job"),
            s.get("every"),
            Text("paused", style="yellow") if s.get("paused") else Text("active", style="green"),
            render.status(s["last_status"]) if s.get("last_status") else None,
            render.when(s.get("last_started_at")),
            render.when(s.get("next_run_at")),
        ]
        for s in answer.get("schedules", [])
    ]
    columns = ["name", "job", "every", "state", "last", "last started", "next run"]
    app.out.print(render.table(None, columns, rows))
    return 0


@schedules.command("set")
@json_option
@click.argument("name")
@click.option("--every", metavar="INTERVAL", help="How often, e.g. '10 minutes'.")
@click.option("--pause/--resume", "pause", default=None, help="Pause or resume the schedule.")
@click.pass_obj
def schedules_set(app: App, name: str, every: str | None, pause: bool | None) -> int:
    """Change how often schedule NAME runs, or pause/resume it."""
    body: dict = {}
    if every:
        body["every"] = every
    if pause is not None:
        body["paused"] = pause
    if not body:
        raise click.UsageError("give --every and/or --pause/--resume")
    doc = app.client.put(f"/schedules/{quote(name, safe='')}", body, what="changing schedules (PUT /schedules/<name>)")
    if app.json:
        app.emit(doc)
    else:
        state = "paused" if doc.get("paused") else "active"
        app.out.print(Text(f"{doc.get('name', name)}: every {doc.get('every')} ({state})"))
    return 0


@schedules.command("run")
@json_option
@click.argument("name")
@wait_options
@click.pass_obj
def schedules_run(app: App, name: str, wait: bool, cancel_on_interrupt: bool) -> int:
    """Run schedule NAME's job now."""
    path = f"/schedules/{quote(name, safe='')}/run"
    return _trigger(app, path, {}, wait, cancel_on_interrupt, what="running schedules (POST /schedules/<name>/run)")

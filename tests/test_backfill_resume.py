"""Resuming a backfill (app/backfill/bars.py + checkpoints.py), run in-process on a real database.

The checkpoint commits with each batch, so after any failure the table holds exactly the
rows the checkpoint counts, and the next run of the same source reads on from there:
rows before it are not read again, rows after it are written once.
"""

from __future__ import annotations

import threading
import time
import uuid
from datetime import UTC

import psycopg
import pytest
import structlog

from app.backfill import checkpoints
from app.jobs import backfill
from app.jobs.base import JobContext, JobError
from tests.support.backfill import bars, expected, job_context, stored, write_ndjson
from tests.support.common import wait_for
from tests.support.db import make_settings
from tests.support.file_server import FileServer


@pytest.fixture
def source_dir(tmp_path):
    path = tmp_path / "src"
    path.mkdir()
    return path


@pytest.fixture
def settings(migrated_database_url, redis_url, source_dir):
    return make_settings(
        migrated_database_url, redis_url, BACKFILL_SOURCE_DIR=source_dir, BACKFILL_URL_ALLOW="127.0.0.1"
    )


def run(settings, source: str, **kw) -> dict:
    ctx = job_context(settings)
    params = {
        "source": source,
        "format": "ndjson",
        "max_bad_rows": 0,
        "batch_rows": 10,
        "provider": None,
        "interval": None,
        **kw,
    }
    return backfill.run_bars(ctx, params)


def checkpoint(url: str) -> tuple:
    with psycopg.connect(url) as conn:
        return conn.execute(
            "SELECT status, line, rows_read, rows_written, rows_rejected FROM store_backfill_checkpoints"
        ).fetchone()


def test_a_load_stopped_by_a_bad_row_resumes_after_its_last_committed_batch(settings, source_dir):
    url = settings.database_url
    good = bars(99, ("rs1",))
    write_ndjson(source_dir / "r.ndjson", good[:50] + [{**good[0], "close": "n/a"}] + good[50:])
    with pytest.raises(JobError, match="first bad line 51"):
        run(settings, "r.ndjson")
    assert checkpoint(url) == ("loading", 50, 50, 50, 0)
    assert stored(url, ["rs1"]) == expected(good[:50])  # the five complete batches, nothing more
    with psycopg.connect(url, autocommit=True) as conn:  # a mark on a committed row
        conn.execute("UPDATE bars_ohlcv SET close = -1 WHERE ts = %s", (good[0]["ts"],))

    result = run(settings, "r.ndjson", max_bad_rows=1)
    assert result["resumed_from"]["line"] == 50
    assert (result["rows_read"], result["rows_written"], result["rows_rejected"]) == (100, 99, 1)
    assert result["bad_rows"] == [{"line": 51, "reason": "close is not a number: 'n/a'"}]
    assert checkpoint(url) == ("done", 100, 100, 99, 1)
    with psycopg.connect(url) as conn:  # lines before the checkpoint were not read again
        assert conn.execute("SELECT close FROM bars_ohlcv WHERE ts = %s", (good[0]["ts"],)).fetchone()[0] == -1
        assert conn.execute("SELECT count(*) FROM bars_ohlcv").fetchone()[0] == 99

    # a finished load is not resumed: the next run reads it all again (and repairs the mark)
    result = run(settings, "r.ndjson", max_bad_rows=1)
    assert result["resumed_from"] is None
    assert (result["rows_written"], result["rows_unchanged"]) == (1, 98)
    assert stored(url, ["rs1"]) == expected(good)


@pytest.mark.slow  # several seconds: a property test or many processes
def test_a_crash_between_batches_resumes_and_writes_every_row_exactly_once(settings, source_dir):
    url = settings.database_url
    rows = bars(6000, ("cr1", "cr2"))
    write_ndjson(source_dir / "crash.ndjson", rows)
    with FileServer(source_dir) as server:
        source = f"{server.url}/slow/crash.ndjson"
        ctx = JobContext(
            run_id=str(uuid.uuid4()),
            kind=backfill.BARS.name,
            settings=settings,
            log=structlog.get_logger("test"),
            deadline=time.monotonic() + 120,
        )
        failure: list[BaseException] = []

        def job():
            try:
                backfill.run_bars(
                    ctx,
                    {
                        "source": source,
                        "format": "ndjson",
                        "max_bad_rows": 0,
                        "batch_rows": 250,
                        "provider": None,
                        "interval": None,
                    },
                )
            except BaseException as exc:  # noqa: BLE001 - what the crash looked like
                failure.append(exc)

        thread = threading.Thread(target=job)
        thread.start()
        wait_for(lambda: (checkpoint(url) or (None, 0))[1] >= 1000, 30, message="a few committed batches")
        with psycopg.connect(url, autocommit=True) as conn:  # the database drops every session of the job
            ended = conn.execute(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE application_name = %s",
                (ctx.session_name,),
            ).fetchone()[0]
        thread.join(30)
        assert ended >= 1 and failure and isinstance(failure[0], psycopg.OperationalError), failure
        status, line, read, written, _ = checkpoint(url)
        assert status == "loading" and 1000 <= line < 6000 and read == written == line
        assert stored(url, ["cr1", "cr2"])[0] == line  # the table holds what the checkpoint counts

        result = run(settings, source, batch_rows=250)
    assert result["resumed_from"]["line"] == line
    # every row written once: had a batch been applied twice, its second write would count as unchanged
    assert (result["rows_read"], result["rows_written"], result["rows_unchanged"]) == (6000, 6000, 0)
    assert stored(url, ["cr1", "cr2"]) == expected(rows)


def test_a_changed_source_or_other_parameters_start_over(settings, source_dir):
    url = settings.database_url
    good = bars(30, ("ch1",))
    write_ndjson(source_dir / "c.ndjson", good[:20] + [b"{"] + good[20:])
    with pytest.raises(JobError):
        run(settings, "c.ndjson")
    assert checkpoint(url)[:2] == ("loading", 20)
    result = run(settings, "c.ndjson", interval="1m", max_bad_rows=1)  # another shape of rows
    assert result["resumed_from"] is None and result["rows_read"] == 31

    with pytest.raises(JobError):
        run(settings, "c.ndjson")
    write_ndjson(source_dir / "c.ndjson", good)  # the provider re-exported the file
    result = run(settings, "c.ndjson")
    assert result["resumed_from"] is None and result["rows_read"] == 30 and result["rows_written"] == 0


def test_one_source_is_loaded_by_one_run_at_a_time(settings, source_dir):
    write_ndjson(source_dir / "l.ndjson", bars(5))
    key = checkpoints.source_key(backfill.BARS.name, "file", "l.ndjson")
    with psycopg.connect(settings.database_url, autocommit=True) as other:
        assert checkpoints.try_lock(other, key)
        with pytest.raises(JobError, match="another run is loading l.ndjson right now"):
            run(settings, "l.ndjson")
    assert run(settings, "l.ndjson")["rows_written"] == 5


def test_a_source_that_vanished_before_the_run_fails_it_by_name(settings, source_dir):
    with pytest.raises(JobError, match="no file 'gone.ndjson'"):
        run(settings, "gone.ndjson")


def test_a_csv_load_resumes_with_the_header_it_read_before(settings, source_dir):
    from tests.support.backfill import write_csv

    url = settings.database_url
    good = bars(40, ("cv1",))
    path = write_csv(source_dir / "r.csv", good)
    lines = path.read_text().splitlines()
    path.write_text("\n".join(lines[:26] + ["prov,cv1,1m,2024-02-05T00:00:00Z,1,2,3,4,5"] + lines[26:]) + "\n")
    with pytest.raises(JobError, match="first bad line 27: low 3.0 > high 2.0"):
        run(settings, "r.csv", format="csv")
    assert checkpoint(url)[:2] == ("loading", 21)  # the header and two batches of ten
    result = run(settings, "r.csv", format="csv", max_bad_rows=1)
    assert result["resumed_from"]["line"] == 21
    assert (result["rows_read"], result["rows_written"], result["rows_rejected"]) == (41, 40, 1)
    assert stored(url, ["cv1"]) == expected(good)


def test_rows_older_than_the_retention_policy_load_with_a_warning(settings, source_dir):
    from datetime import datetime, timedelta

    from app.timeseries import retention

    # 2012 is older than the default 1825 days on any date this suite will run
    write_ndjson(source_dir / "old.ndjson", bars(4, start=datetime(2012, 3, 1, tzinfo=UTC)))
    result = run(settings, "old.ndjson")
    assert result["rows_written"] == 4
    [warning] = result["warnings"]
    assert "older than the retention of bars_ohlcv" in warning and "PUT /retention/policies/bars_ohlcv" in warning
    # Rows the policy keeps load without a warning. The policy is raised to a century
    # (as the warning advises) so this does not turn false once 2024 is five years ago.
    with psycopg.connect(settings.database_url, autocommit=True) as conn:
        retention.set_policy(conn, "bars_ohlcv", timedelta(days=36500), True)
    write_ndjson(source_dir / "new.ndjson", bars(4))
    assert run(settings, "new.ndjson")["warnings"] == []
    write_ndjson(source_dir / "old-again.ndjson", bars(4, start=datetime(2012, 3, 1, tzinfo=UTC), provider="again"))
    assert run(settings, "old-again.ndjson")["warnings"] == []


def test_a_batch_the_database_refuses_fails_the_load_and_the_batches_before_it_stay(settings, source_dir):
    url = settings.database_url
    rows = bars(100, ("db1",))  # volume of row i is i
    write_ndjson(source_dir / "v.ndjson", rows)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("ALTER TABLE bars_ohlcv ADD CONSTRAINT test_volume_below_55 CHECK (volume < 55)")
    with pytest.raises(psycopg.errors.CheckViolation):
        run(settings, "v.ndjson")
    assert checkpoint(url)[:2] == ("loading", 50)
    assert stored(url, ["db1"]) == expected(rows[:50])
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("ALTER TABLE bars_ohlcv DROP CONSTRAINT test_volume_below_55")
        job_run = conn.execute("SELECT status, error_message, rows_written FROM job_runs").fetchone()
    assert job_run[0] == "failure" and "test_volume_below_55" in job_run[1] and job_run[2] == 50
    result = run(settings, "v.ndjson")
    assert result["resumed_from"]["line"] == 50 and result["rows_written"] == 100
    assert stored(url, ["db1"]) == expected(rows)


def test_a_truncated_gzip_file_fails_the_load_after_what_it_could_read(settings, source_dir):
    import gzip
    import json

    blob = gzip.compress(b"".join(json.dumps(r).encode() + b"\n" for r in bars(20_000, ("tr1",))))
    (source_dir / "cut.ndjson.gz").write_bytes(blob[: len(blob) * 3 // 4])
    with pytest.raises(
        JobError, match=r"the source cannot be read after line \d+: the gzip stream ends before its end marker"
    ):
        run(settings, "cut.ndjson.gz", batch_rows=1000)
    status, line, *_ = checkpoint(settings.database_url)
    assert status == "loading" and line > 0 and line % 1000 == 0
    assert stored(settings.database_url, ["tr1"])[0] == line

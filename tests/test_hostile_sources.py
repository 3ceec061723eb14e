"""Hostile sources against the real reading code (app/backfill/sources.py, fetch.py, rows.py)
and a hostile HTTP server on 127.0.0.1: every bound is hit and asserted.

The service-level versions (a worker's RSS, seconds to `cancelled`, threads left) are in
tests/faults/test_hostile_backfill.py.
"""

from __future__ import annotations

import gzip
import io
import os
import threading
import time
import zlib

import pytest

from app.backfill import fetch
from app.backfill.rows import Reader, RowLimits, TooManyBadRows
from app.backfill.sources import Limits, Source, SourceError, open_source, parse_source
from app.netpolicy import AllowList, PolicyError, is_numeric_spelling
from tests.support.common import wait_for
from tests.support.db import make_settings
from tests.support.hostile_server import SECRET, HostileServer, closed_port

pytestmark = pytest.mark.timeout(120)
LOCAL = AllowList.parse("127.0.0.1")


def limits(**kw) -> Limits:
    return Limits(**{"allow": LOCAL, **kw})


def read_all(source: Source, root: str, lim: Limits, stopped=lambda: False) -> bytes:
    with open_source(source, root, lim, stopped) as opened:
        return opened.stream.read()


def gzip_of_zeros(total: int, byte: bytes = b"\0") -> bytes:
    """A gzip of `total` bytes of `byte`, built piecewise (never `total` bytes in memory)."""
    comp = zlib.compressobj(9, zlib.DEFLATED, 31)
    piece = byte * (1 << 20)
    out = [comp.compress(piece) for _ in range(total >> 20)]
    out.append(comp.flush())
    return b"".join(out)


# -- the allow list ------------------------------------------------------------------------------
@pytest.mark.parametrize("host", ["127.1", "2130706433", "0x7f000001", "0177.0.0.1", "0x7f.1", "017700000001"])
def test_numeric_spellings_of_addresses_are_recognised(host):
    assert is_numeric_spelling(host)
    assert "numeric spelling" in LOCAL.early_refusal(host, 80)


def test_allow_list_entries_parse_and_bad_ones_name_themselves():
    allow = AllowList.parse("vendor.example.com, *.data.example.org:443, 10.0.0.0/8, [2001:db8::1]:8443, 127.0.0.1:81")
    assert str(allow) == "vendor.example.com,*.data.example.org:443,10.0.0.0/8,[2001:db8::1/128]:8443,127.0.0.1/32:81"
    for bad in ("127.1", "exa mple.com", "host:99999", "[::1", "http://x"):
        with pytest.raises(PolicyError, match="BACKFILL_URL_ALLOW entry"):
            AllowList.parse(bad)


def test_every_resolved_address_must_be_public_or_named():
    import ipaddress as ip

    allow = AllowList.parse("vendor.example.com,10.1.0.0/16")
    public, loop = ip.ip_address("93.184.216.34"), ip.ip_address("127.0.0.1")
    assert allow.refusal("vendor.example.com", 443, [public]) is None
    # a name on the list that resolves (even partly) to loopback/link-local/private: refused
    for bad in ("127.0.0.1", "169.254.169.254", "10.2.0.1", "0.0.0.0", "::ffff:127.0.0.1", "::1", "fe80::1"):
        why = allow.refusal("vendor.example.com", 443, [public, ip.ip_address(bad)])
        assert why and "non-public" in why and bad not in why
    # a name not on the list: only when every address is inside a listed block
    assert allow.refusal("files.internal", 80, [ip.ip_address("10.1.2.3")]) is None
    assert "not in BACKFILL_URL_ALLOW" in allow.refusal("files.internal", 80, [ip.ip_address("10.1.2.3"), public])
    assert "not in BACKFILL_URL_ALLOW" in allow.refusal("other.example.com", 80, [public])
    assert (
        AllowList().refusal("vendor.example.com", 80, [public]) == "URL sources are off (BACKFILL_URL_ALLOW is empty)"
    )
    assert allow.refusal("x", 80, [loop]) is not None
    # ports: an entry with a port allows only that port
    assert AllowList.parse("127.0.0.1:81").refusal("127.0.0.1", 81, [loop]) is None
    assert AllowList.parse("127.0.0.1:81").refusal("127.0.0.1", 82, [loop]) is not None


@pytest.mark.parametrize(
    "url, message",
    [
        ("http://127.1:8080/x.csv", "numeric spelling"),
        ("http://2130706433/x.csv", "numeric spelling"),
        ("http://0x7f000001/x.csv", "numeric spelling"),
        ("http://169.254.169.254/latest/meta-data/x.csv", "not in BACKFILL_URL_ALLOW"),
        ("http://0.0.0.0:80/x.csv", "not in BACKFILL_URL_ALLOW"),
        ("http://[::1]:80/x.csv", "not in BACKFILL_URL_ALLOW"),
        ("http://user:pw@127.0.0.1/x.csv", "credentials"),
        ("http://@127.0.0.1/x.csv", "credentials"),
    ],
)
def test_the_api_refuses_what_it_can_tell_without_resolving(url, message):
    with pytest.raises(SourceError, match=message):
        parse_source(url, "/nonexistent", LOCAL)


def test_url_sources_are_off_by_default():
    with pytest.raises(SourceError, match=r"URL sources are off \(BACKFILL_URL_ALLOW is empty\)"):
        parse_source("https://vendor.example.com/bars.csv", "/nonexistent")


def test_redirects_only_to_allowed_targets_and_at_most_three():
    data = b'{"n": 1}\n'
    with HostileServer() as server, HostileServer() as other:
        server.serve("a.ndjson", data)
        only_this = AllowList.parse(f"127.0.0.1:{server.port}")
        assert read_all(Source("http", f"{server.url}/redirect/3/a.ndjson"), "/x", limits(allow=only_this)) == data
        with pytest.raises(SourceError, match="more than 3 redirects"):
            read_all(Source("http", f"{server.url}/redirect/4/a.ndjson"), "/x", limits(allow=only_this))
        # a redirect to another port of the same host, to the metadata address, to a numeric spelling
        other.serve("a.ndjson", data)
        for target in (
            f"{other.url}/files/a.ndjson",
            "http://169.254.169.254/latest/meta-data/",
            f"http://127.1:{server.port}/files/a.ndjson",
            f"http://[::ffff:127.0.0.1]:{other.port}/files/a.ndjson",
            f"http://u:p@127.0.0.1:{server.port}/files/a.ndjson",
            "file:///etc/passwd",
        ):
            with pytest.raises(SourceError) as err:
                read_all(Source("http", f"{server.url}/to?{target}"), "/x", limits(allow=only_this))
            assert any(w in str(err.value) for w in ("not in BACKFILL_URL_ALLOW", "numeric", "credentials", "scheme"))
        assert not [p for p in other.paths if p.startswith("/files/")]  # never reached


def test_errors_never_echo_the_response_and_a_refused_port_reads_like_a_closed_one(tmp_path):
    with HostileServer() as server:
        source = Source("http", f"{server.url}/secret.csv")
        with open_source(source, "/x", limits()) as opened:
            reader = Reader(opened.stream, "csv", batch_rows=10, max_bad_rows=0, limits=RowLimits(show_values=False))
            with pytest.raises(SourceError) as err:
                list(reader.batches())
        assert SECRET not in str(err.value) and "not shown for URL sources" in str(err.value)
        # the same file's rows as NDJSON: the reasons name the field, not the server's value
        body = (
            f'{{"provider": "p", "symbol": "{SECRET}", "interval": "1m", "ts": "{SECRET}", "open": "{SECRET}", '
            '"high": 1, "low": 1, "close": 1, "volume": 1}\n'
        ).encode()
        server.serve("rows.ndjson", body * 3)
        with open_source(Source("http", f"{server.url}/files/rows.ndjson"), "/x", limits()) as opened:
            reader = Reader(opened.stream, "ndjson", batch_rows=10, max_bad_rows=5, limits=RowLimits(show_values=False))
            batches = list(reader.batches())
        reasons = [s["reason"] for b in batches for s in b.samples]
        assert len(reasons) == 3 and not any(SECRET in r for r in reasons), reasons
        with pytest.raises(SourceError) as missing:
            read_all(Source("http", f"{server.url}/nothing-here"), "/x", limits())
        assert str(missing.value) == f"could not fetch the source: 127.0.0.1:{server.port} answered HTTP 404"
    closed = closed_port()
    with pytest.raises(SourceError) as refused:
        read_all(Source("http", f"http://127.0.0.1:{closed}/x.csv"), "/x", limits())
    assert str(refused.value) == f"could not fetch the source: could not connect to 127.0.0.1:{closed}"


# -- time: headers, trickles, deadline, stop ------------------------------------------------------
def test_headers_one_byte_at_a_time_fail_within_the_rate_window():
    with HostileServer(pause=0.5) as server:
        t0 = time.monotonic()
        with pytest.raises(SourceError, match=r"no complete response headers within 2 s"):
            read_all(Source("http", f"{server.url}/slow-headers"), "/x", limits(rate_window=2.0))
        assert time.monotonic() - t0 < 10


def test_a_trickling_body_fails_on_the_minimum_rate_and_a_long_one_on_the_deadline():
    with HostileServer(pause=0.3) as server:
        t0 = time.monotonic()
        with pytest.raises(SourceError, match=r"slower than BACKFILL_MIN_RATE_BYTES \(1000 bytes/s\)"):
            read_all(Source("http", f"{server.url}/trickle"), "/x", limits(min_rate=1000, rate_window=2.0))
        assert time.monotonic() - t0 < 10
        t0 = time.monotonic()
        with pytest.raises(SourceError, match=r"longer than BACKFILL_DOWNLOAD_DEADLINE_SECONDS \(2 s\)"):
            read_all(Source("http", f"{server.url}/trickle"), "/x", limits(min_rate=0, download_deadline=2.0))
        assert time.monotonic() - t0 < 10


def test_a_stop_ends_a_blocked_download_and_its_threads_within_a_second():
    with HostileServer(pause=5.0) as server:
        before = {t.name for t in threading.enumerate()}
        stop = threading.Event()
        failure: list[BaseException] = []

        def job():
            try:
                read_all(Source("http", f"{server.url}/trickle"), "/x", limits(min_rate=0), stop.is_set)
            except BaseException as exc:  # noqa: BLE001 - handed to the test
                failure.append(exc)

        t = threading.Thread(target=job)
        t.start()
        wait_for(lambda: server.paths, 10, message="the download to start")
        time.sleep(0.5)  # not synchronisation: let the read block on the socket, the state under test
        stopped_at = time.monotonic()
        stop.set()
        t.join(timeout=5)
        assert not t.is_alive() and time.monotonic() - stopped_at < 2
        assert failure and "stopped" in str(failure[0])
        assert not [x for x in threading.enumerate() if x.name == "backfill-fetch-watchdog"]
        ours = {x.name for x in threading.enumerate() if "process_request_thread" not in x.name}
        assert ours <= before


# -- size: lines, gzip, files ----------------------------------------------------------------------
def test_a_line_without_newline_is_refused_while_reading_not_after(tmp_path):
    (tmp_path / "long.ndjson").write_bytes(b"x" * (3 << 20) + b"\n" + b'{"a": 1}\n')
    with open_source(Source("file", "long.ndjson"), str(tmp_path), limits()) as opened:
        reader = Reader(opened.stream, "ndjson", batch_rows=10, max_bad_rows=0, limits=RowLimits(max_line_bytes=4096))
        with pytest.raises(
            TooManyBadRows, match=r"line 1: the line is longer than BACKFILL_MAX_LINE_BYTES \(4096 bytes\)"
        ):
            list(reader.batches())
        assert opened.bytes_read <= (2 << 20)  # stopped within a buffer or two, not at the end
    # allowed as a bad row: skipped in bounded pieces, the next line still read
    with open_source(Source("file", "long.ndjson"), str(tmp_path), limits()) as opened:
        reader = Reader(opened.stream, "ndjson", batch_rows=10, max_bad_rows=5, limits=RowLimits(max_line_bytes=4096))
        batches = list(reader.batches())
    assert [s["line"] for b in batches for s in b.samples] == [1, 2]
    assert reader.line == 2 and reader.offset == (3 << 20) + 1 + 9


def test_a_sparse_file_with_no_newline_is_bounded(tmp_path):
    path = tmp_path / "sparse.csv"
    with open(path, "wb") as f:
        f.truncate(400 << 20)  # 400 MB of zeros, no disk used
    with pytest.raises(SourceError, match=r"larger than BACKFILL_MAX_FILE_BYTES \(104857600 bytes\)"):
        read_all(Source("file", "sparse.csv"), str(tmp_path), limits(max_file_bytes=100 << 20))
    with open_source(Source("file", "sparse.csv"), str(tmp_path), limits()) as opened:
        reader = Reader(opened.stream, "csv", batch_rows=10, max_bad_rows=0)
        with pytest.raises(SourceError, match="header is longer than BACKFILL_MAX_LINE_BYTES"):
            list(reader.batches())
        assert opened.bytes_read <= 3 << 20


def test_gzip_bombs_stop_at_the_ratio_or_the_decompressed_cap(tmp_path):
    (tmp_path / "zeros.csv.gz").write_bytes(gzip_of_zeros(256 << 20))
    (tmp_path / "newlines.ndjson.gz").write_bytes(gzip_of_zeros(256 << 20, b"\n"))
    for name in ("zeros.csv.gz", "newlines.ndjson.gz"):
        t0 = time.monotonic()
        with pytest.raises(SourceError, match=r"expands more than BACKFILL_MAX_GZIP_RATIO \(200x\)"):
            read_all(Source("file", name), str(tmp_path), limits())
        assert time.monotonic() - t0 < 20
    body = b"".join(b'{"n": %d}\n' % i for i in range(200_000))  # ordinary text: a ratio of about 5
    (tmp_path / "plain.ndjson.gz").write_bytes(gzip.compress(body))
    with pytest.raises(SourceError, match=r"expands to more than BACKFILL_MAX_DECOMPRESSED_BYTES \(100000 bytes\)"):
        read_all(Source("file", "plain.ndjson.gz"), str(tmp_path), limits(max_decompressed_bytes=100_000))
    assert read_all(Source("file", "plain.ndjson.gz"), str(tmp_path), limits()) == body
    # several members, and zero padding after the last, read as one stream
    (tmp_path / "multi.gz").write_bytes(gzip.compress(b"a\n") + gzip.compress(b"b\n") + b"\0" * 512)
    assert read_all(Source("file", "multi.gz"), str(tmp_path), limits()) == b"a\nb\n"


def test_blank_lines_count_toward_progress_and_a_limit():
    data = b"\n" * 5000 + b'{"a": 1}\n'
    reader = Reader(
        io.BufferedReader(io.BytesIO(data)),
        "ndjson",
        batch_rows=10,
        max_bad_rows=10,
        limits=RowLimits(max_blank_lines=1000),
    )
    with pytest.raises(SourceError, match=r"more than BACKFILL_MAX_BLANK_LINES \(1000\) blank lines"):
        list(reader.batches())
    assert reader.line == 1001 and reader.blank == 1001
    csv_data = b"provider,symbol,interval,ts,open,high,low,close,volume\n" + b"\r\n" * 20
    reader = Reader(io.BufferedReader(io.BytesIO(csv_data)), "csv", batch_rows=10, max_bad_rows=0)
    list(reader.batches())
    assert (reader.line, reader.blank) == (21, 20)


# -- local files: FIFOs and swaps ----------------------------------------------------------------------
def test_a_fifo_is_refused_at_open_without_blocking(tmp_path):
    os.mkfifo(tmp_path / "pipe.csv")
    t0 = time.monotonic()
    with pytest.raises(SourceError, match="'pipe.csv' is not a regular file"):
        read_all(Source("file", "pipe.csv"), str(tmp_path), limits())
    assert time.monotonic() - t0 < 2


def test_a_fifo_swapped_in_after_the_check_never_blocks_the_open(tmp_path):
    """Swap a FIFO in for the checked file in a loop, racing the open, until the open has
    met the FIFO many times; every open returns at once (refused) or reads the file."""
    path = tmp_path / "race.csv"
    path.write_bytes(b"a\n")
    source = parse_source("race.csv", str(tmp_path))
    met_fifo = opened_file = 0
    stop = threading.Event()

    def swapper():
        while not stop.is_set():
            tmp = tmp_path / "race.tmp"
            try:
                os.mkfifo(tmp)
                os.replace(tmp, path)
                tmp.write_bytes(b"a\n")
                os.replace(tmp, path)
            except OSError:
                pass

    t = threading.Thread(target=swapper, daemon=True)
    t.start()
    deadline = time.monotonic() + 30
    try:
        while met_fifo < 50 and time.monotonic() < deadline:
            t0 = time.monotonic()
            try:
                assert read_all(source, str(tmp_path), limits()) == b"a\n"
                opened_file += 1
            except SourceError as exc:
                assert "not a regular file" in str(exc) or "no file" in str(exc), exc
                met_fifo += "not a regular file" in str(exc)
            assert time.monotonic() - t0 < 2  # never blocked in open
    finally:
        stop.set()
        t.join(5)
    assert met_fifo >= 50, (met_fifo, opened_file)


def test_fetch_limits_are_what_the_settings_say(tmp_path):
    s = make_settings(
        "postgresql://x@127.0.0.1/x",
        "redis://127.0.0.1:1/0",
        BACKFILL_URL_ALLOW="127.0.0.1:8080",
        BACKFILL_MIN_RATE_BYTES="10",
        BACKFILL_RATE_WINDOW_SECONDS="3",
        BACKFILL_DOWNLOAD_DEADLINE_SECONDS="60",
    )
    assert Limits.from_settings(s).http == fetch.Limits(AllowList.parse("127.0.0.1:8080"), 60.0, 10, 3.0)

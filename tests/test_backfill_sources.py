"""Backfill sources (app/backfill/sources.py): the directory jail, URLs, gzip, size caps.

HTTP sources are served by `tests.support.file_server.FileServer` (a real http.server on
127.0.0.1 serving a directory).
"""

from __future__ import annotations

import gzip
import os

import pytest

from app.backfill.sources import Limits, Source, SourceError, detect_format, open_source, parse_source
from app.netpolicy import AllowList
from tests.support.file_server import FileServer

LOCAL = AllowList.parse("127.0.0.1")  # the test servers' address, allowed explicitly


def cap(max_download_bytes: int) -> Limits:
    return Limits(max_download_bytes=max_download_bytes, allow=LOCAL)


@pytest.fixture
def jail(tmp_path):
    root = tmp_path / "sources"
    (root / "sub").mkdir(parents=True)
    (root / "sub" / "bars.csv").write_text("x\n")
    (root / "data.ndjson.gz").write_bytes(gzip.compress(b'{"a": 1}\n'))
    (tmp_path / "secret.csv").write_text("outside\n")
    return root


def test_paths_inside_the_directory_are_accepted_and_made_canonical(jail):
    assert parse_source("sub/bars.csv", str(jail)) == Source("file", "sub/bars.csv")
    assert parse_source("sub/../sub/./bars.csv", str(jail)) == Source("file", "sub/bars.csv")
    assert parse_source(str(jail / "sub" / "bars.csv"), str(jail)) == Source("file", "sub/bars.csv")
    os.symlink(jail / "sub" / "bars.csv", jail / "link.csv")
    assert parse_source("link.csv", str(jail)) == Source("file", "sub/bars.csv")


@pytest.mark.parametrize(
    "path, message",
    [
        ("../secret.csv", "outside BACKFILL_SOURCE_DIR"),
        ("/etc/passwd", "outside BACKFILL_SOURCE_DIR"),
        ("sub/../../secret.csv", "outside BACKFILL_SOURCE_DIR"),
        ("nope.csv", "no file 'nope.csv'"),
        ("sub", "not a regular file"),
        ("", "must be a non-empty string"),
        ("a\x00b", "NUL"),
    ],
)
def test_paths_that_escape_or_do_not_exist_are_refused(jail, path, message):
    with pytest.raises(SourceError, match=message):
        parse_source(path, str(jail))


def test_a_symlink_pointing_outside_is_refused_even_at_open_time(jail, tmp_path):
    os.symlink(tmp_path / "secret.csv", jail / "escape.csv")
    with pytest.raises(SourceError, match="outside BACKFILL_SOURCE_DIR"):
        parse_source("escape.csv", str(jail))
    # accepted while it pointed inside, then swapped for a link to the outside
    os.symlink(jail / "sub" / "bars.csv", jail / "swap.csv")
    source = parse_source("swap.csv", str(jail))
    os.unlink(jail / "sub" / "bars.csv")
    os.symlink(tmp_path / "secret.csv", jail / "sub" / "bars.csv")
    with pytest.raises(SourceError, match="outside BACKFILL_SOURCE_DIR"):
        with open_source(source, str(jail), cap(1 << 20)):
            pass


def test_a_missing_source_directory_is_named(tmp_path):
    with pytest.raises(SourceError, match="BACKFILL_SOURCE_DIR does not exist on this server$"):
        parse_source("x.csv", str(tmp_path / "absent"))


@pytest.mark.parametrize(
    "url, message",
    [
        ("ftp://example.com/bars.csv", "scheme 'ftp' is not supported"),
        ("file:///etc/passwd", "scheme 'file' is not supported"),
        ("s3://bucket/bars.csv", "scheme 's3' is not supported"),
        ("http://user:pw@127.0.0.1/bars.csv", "credentials"),
        ("http:///bars.csv", "no host"),
        ("http://127.0.0.1:99999/x.csv", "not a valid URL"),
    ],
)
def test_urls_other_than_plain_http_and_https_are_refused(url, message):
    with pytest.raises(SourceError, match=message):
        parse_source(url, "/nonexistent")


def test_format_comes_from_the_name_unless_given():
    assert detect_format(Source("file", "a/b.ndjson.gz"), None) == "ndjson"
    assert detect_format(Source("file", "b.jsonl"), None) == "ndjson"
    assert detect_format(Source("http", "http://h/x/b.CSV.gz?sig=1"), None) == "csv"
    assert detect_format(Source("file", "dump.bin"), "csv") == "csv"
    with pytest.raises(SourceError, match="format: cannot tell"):
        detect_format(Source("file", "dump.bin"), None)
    with pytest.raises(SourceError, match="format must be one of ndjson, csv"):
        detect_format(Source("file", "x.csv"), "xml")


def test_gzip_is_recognised_by_its_bytes_whatever_the_name(jail):
    (jail / "plain.csv").write_bytes(gzip.compress(b"hello\nworld\n"))
    with open_source(parse_source("plain.csv", str(jail)), str(jail), cap(1 << 20)) as opened:
        assert opened.compressed
        assert opened.stream.read() == b"hello\nworld\n"
        assert set(opened.identity) == {"size", "mtime_ns", "inode"}


def test_skip_moves_into_the_decompressed_content_for_plain_and_gzip_files(jail):
    body = b"".join(b"line %d\n" % i for i in range(1000))
    (jail / "p.csv").write_bytes(body)
    (jail / "g.csv.gz").write_bytes(gzip.compress(body))
    for name in ("p.csv", "g.csv.gz"):
        with open_source(parse_source(name, str(jail)), str(jail), cap(1 << 30)) as opened:
            opened.skip(len(b"".join(b"line %d\n" % i for i in range(500))))
            assert opened.stream.readline() == b"line 500\n"


def test_http_sources_stream_with_identity_and_refuse_404_and_oversize(tmp_path):
    body = b"".join(b'{"n": %d}\n' % i for i in range(5000))
    (tmp_path / "bars.ndjson").write_bytes(body)
    (tmp_path / "bars.ndjson.gz").write_bytes(gzip.compress(body))
    with FileServer(tmp_path) as server:
        for name in ("bars.ndjson", "bars.ndjson.gz", "stream/bars.ndjson.gz"):
            source = parse_source(f"{server.url}/{name}", "/nonexistent", LOCAL)
            with open_source(source, "/nonexistent", cap(10 << 20)) as opened:
                assert opened.stream.read() == body
                assert opened.compressed == name.endswith(".gz")
                if not name.startswith("stream/"):
                    assert opened.identity["last_modified"] and opened.identity["content_length"]
        with pytest.raises(SourceError, match="answered HTTP 404$"):
            with open_source(parse_source(f"{server.url}/missing.csv", "/x", LOCAL), "/x", cap(1 << 20)):
                pass
        # announced size over the cap: refused before reading
        with pytest.raises(SourceError, match=r"is \d+ bytes, larger than BACKFILL_MAX_DOWNLOAD_BYTES \(1000 bytes\)"):
            with open_source(parse_source(f"{server.url}/bars.ndjson", "/x", LOCAL), "/x", cap(1000)):
                pass
        # no Content-Length: stopped once the bytes read pass the cap
        with pytest.raises(SourceError, match=r"larger than BACKFILL_MAX_DOWNLOAD_BYTES \(1000 bytes\)"):
            with open_source(parse_source(f"{server.url}/stream/bars.ndjson", "/x", LOCAL), "/x", cap(1000)) as opened:
                opened.stream.read()


def test_an_unreachable_host_is_a_source_error_not_a_crash():
    with pytest.raises(SourceError, match="could not connect to 127.0.0.1:9"):
        with open_source(Source("http", "http://127.0.0.1:9/bars.csv"), "/x", cap(1 << 20)):
            pass

"""Every error is JSON with a 4xx code that says what is wrong."""

from __future__ import annotations

import json
import socket

import requests

from tests.support.common import TOKEN


def test_unknown_route_and_wrong_method(migrated_service):
    resp = requests.get(migrated_service.url + "/nope", timeout=5)
    assert resp.status_code == 404 and resp.json()["error"]
    resp = requests.delete(migrated_service.url + "/health", timeout=5)
    assert resp.status_code == 405 and resp.json()["error"]
    assert "GET" in resp.headers["Allow"]


def test_body_over_one_mebibyte_is_413_and_nothing_is_recorded(migrated_service):
    # The answer comes from the declared length, before the body is sent (as with
    # `Expect: 100-continue`); a raw socket avoids racing the server's close.
    with socket.create_connection(("127.0.0.1", migrated_service.port), timeout=10) as sock:
        sock.sendall(
            b"POST /migrate HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            + f"Authorization: Bearer {TOKEN}\r\nContent-Length: {1024 * 1024 + 1}\r\n\r\n".encode()
        )
        data = b""
        while b"\r\n\r\n" not in data or not data.rstrip().endswith(b"}"):
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 413")
    assert "too large" in json.loads(body)["error"]
    assert migrated_service.get("/jobs").json()["jobs"] == []


def test_chunked_body_over_the_limit_is_413(migrated_service):
    def chunks():
        for _ in range(20):
            yield b" " * (64 * 1024)
        yield b"{}"

    resp = migrated_service.post("/migrate", data=chunks(), headers={"Content-Type": "application/json"})
    assert resp.status_code == 413
    assert resp.json()["error"]


def test_deeply_nested_json_is_400(migrated_service):
    body = "[" * 10000 + "]" * 10000
    resp = migrated_service.post("/migrate", data=body, headers={"Content-Type": "application/json"})
    assert resp.status_code == 400
    assert "JSON" in resp.json()["error"] or "object" in resp.json()["error"]

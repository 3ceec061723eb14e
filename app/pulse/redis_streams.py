"""The `redis` event bus: Redis Streams with the platform's envelope (docs/contracts.md, "Pulse events").

One XADD per event on key `<namespace>:<stream>` with the single field `data` (the JSON
envelope), trimmed to about `MAXLEN` entries (MAXLEN ~) so a stream nobody consumes
stays bounded.
"""

from __future__ import annotations

import json

import redis

from app.config import Settings

MAXLEN = 10_000


def stream_key(settings: Settings, stream: str) -> str:
    return f"{settings.md_namespace}:{stream}"


class RedisStreamsBus:
    def __init__(self, settings: Settings, client: redis.Redis | None = None, maxlen: int = MAXLEN):
        """`client`: the process's Redis client; without one the bus opens its own."""
        self.settings = settings
        self.client = client if client is not None else redis.Redis.from_url(settings.redis_url)
        self.maxlen = maxlen

    def send(self, stream: str, envelope: dict) -> None:
        data = json.dumps(envelope, separators=(",", ":"), ensure_ascii=False)
        self.client.xadd(stream_key(self.settings, stream), {"data": data}, maxlen=self.maxlen, approximate=True)

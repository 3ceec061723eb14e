"""The `inmem` event bus: events kept in this process (tests, single-process use).

Each stream keeps its newest `maxlen` envelopes. Subscribers are called synchronously
on publish; a failing subscriber is logged and does not affect the others.
"""

from __future__ import annotations

import threading
from collections import defaultdict, deque
from collections.abc import Callable

from app import logs

MAXLEN = 10_000


class InMemoryBus:
    def __init__(self, maxlen: int = MAXLEN):
        self.maxlen = maxlen
        self._streams: dict[str, deque] = defaultdict(lambda: deque(maxlen=self.maxlen))
        self._subscribers: dict[str, list[Callable[[dict], None]]] = defaultdict(list)
        self._lock = threading.Lock()

    def send(self, stream: str, envelope: dict) -> None:
        with self._lock:
            self._streams[stream].append(envelope)
            subscribers = list(self._subscribers[stream])
        for fn in subscribers:
            try:
                fn(envelope)
            except Exception:  # noqa: BLE001 - a consumer's bug must not break the producer
                logs.get("pulse").exception("inmem subscriber failed", stream=stream)

    def events(self, stream: str) -> list[dict]:
        """The envelopes kept for `stream`, oldest first."""
        with self._lock:
            return list(self._streams.get(stream, ()))

    def subscribe(self, stream: str, fn: Callable[[dict], None]) -> Callable[[], None]:
        """Call `fn(envelope)` for every new event on `stream`; returns an unsubscribe function."""
        with self._lock:
            self._subscribers[stream].append(fn)

        def unsubscribe() -> None:
            with self._lock:
                if fn in self._subscribers[stream]:
                    self._subscribers[stream].remove(fn)

        return unsubscribe

    def clear(self) -> None:
        with self._lock:
            self._streams.clear()
            self._subscribers.clear()


BUS = InMemoryBus()

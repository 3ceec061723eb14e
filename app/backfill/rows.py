"""Parsing and validating backfill rows: NDJSON or CSV lines in, CSV batches for COPY out.

Each valid row becomes `[line, provider, SYMBOL, interval, epoch_seconds, open, high, low,
close, volume]`; a few thousand of them are turned into CSV text by one `orjson.dumps`
call (the text values are checked to hold no quote, backslash or bracket, so JSON's
quoting is CSV's). The time travels as epoch seconds (a double holds every microsecond
of 1970..2100 exactly enough for `to_timestamp` to round back to it).

A bad row is skipped, counted and sampled (line number and reason); one more than
`max_bad_rows` stops the read with `TooManyBadRows`.
"""

from __future__ import annotations

import csv
import io
import math
import zlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from operator import itemgetter
from typing import TYPE_CHECKING, Any

import orjson

from app.backfill.csvlines import CsvLines
from app.backfill.sources import SourceError
from app.backfill.task import BackfillError

if TYPE_CHECKING:
    from app.backfill.layout import Layout

FIELDS = ("provider", "symbol", "interval", "ts", "open", "high", "low", "close", "volume")
PRICES = ("open", "high", "low", "close")
SAMPLE_LIMIT = 20
CHUNK_ROWS = 5000  # rows per orjson.dumps call
MIN_EPOCH = 0.0  # 1970-01-01
MAX_EPOCH = 4102444800.0  # 2100-01-01
_MAX_LEN = {"provider": 64, "symbol": 32, "interval": 16}
_CACHE_LIMIT = 100_000
_UTC = UTC
_fromiso = datetime.fromisoformat
_PROVIDER, _SYMBOL, _INTERVAL, _EPOCH = itemgetter(1), itemgetter(2), itemgetter(3), itemgetter(4)
_isfinite = math.isfinite


class BadRow(Exception):
    """One row is invalid; the message is the reason shown to the user."""


class TooManyBadRows(BackfillError):
    def __init__(self, count: int, allowed: int, first: dict):
        self.count, self.allowed, self.first = count, allowed, first
        super().__init__(
            f"more than max_bad_rows={allowed} bad rows; first bad line {first['line']}: {first['reason']}"
        )


@dataclass
class Batch:
    """Valid rows as CSV chunks, and where in the source the batch ends."""

    chunks: list[bytes] = field(default_factory=list)
    rows: int = 0  # valid rows
    read: int = 0  # records read (valid + rejected)
    rejected: int = 0
    end_line: int = 0  # physical lines consumed from the start of the source
    end_offset: int = 0  # decompressed bytes consumed from the start of the source
    header: list[str] | None = None  # the CSV header (a resumed read needs it)
    samples: list[dict] = field(default_factory=list)  # rejected rows: line and reason
    min_epoch: float = math.inf
    max_epoch: float = -math.inf
    symbols: set = field(default_factory=set)
    providers: set = field(default_factory=set)
    intervals: set = field(default_factory=set)
    slots: set = field(default_factory=set)  # epoch // slot_width of its rows (only when asked)


def epoch_to_datetime(value: float) -> datetime:
    return datetime.fromtimestamp(round(value, 6), _UTC)


def _csv_text(rows: list[list]) -> bytes:
    """`[[1,"a",2.5],[2,"b",3.0]]` -> b'1,"a",2.5\\n2,"b",3.0\\n' (texts hold no brackets)."""
    return orjson.dumps(rows)[2:-2].replace(b"],[", b"\n") + b"\n"


class Validator:
    """Checks rows; caches the text fields and times it has already accepted.

    `row(line, values)` takes the nine FIELDS values and returns the row ready for COPY,
    or raises BadRow. It is the hot path (millions of calls): plain dict lookups first,
    the careful checks only for values not seen before.
    """

    def __init__(
        self,
        provider: str | None = None,
        interval: str | None = None,
        *,
        symbol: str | None = None,
        ts_parser: Callable[[object], float] | None = None,
        volume_optional: bool = False,
    ) -> None:
        """`provider`/`interval`/`symbol`: constants for every row (a row with its own value
        must agree); `ts_parser(value) -> epoch seconds` (default ISO 8601, naive = UTC)."""
        self.default_provider = provider
        self.default_interval = interval
        self._caches: dict[str, dict] = {"provider": {}, "symbol": {}, "interval": {}, "ts": {}}
        self.constants: dict[str, str] = {}
        for name, value in (("provider", provider), ("interval", interval), ("symbol", symbol)):
            if value is not None:
                self.constants[name] = self.text(name, value)
        self._parse_ts = ts_parser or _iso_epoch
        self.volume_optional = volume_optional
        self.row = self._make_row()

    def _seed(self, name: str, cache: dict) -> None:
        if name in self.constants:
            cache[None] = self.constants[name]

    def text(self, name: str, value: object) -> str:
        cache = self._caches[name]
        try:
            return cache[value]
        except (KeyError, TypeError):
            pass
        if value is None:
            raise BadRow(f"{name} is missing")
        if not isinstance(value, str):
            raise BadRow(f"{name} must be a string, got {_show(value)}")
        clean = value.strip()
        limit = _MAX_LEN[name]
        if not clean:
            raise BadRow(f"{name} is empty")
        if len(clean) > limit:
            raise BadRow(f"{name} is longer than {limit} characters")
        if not clean.isascii() or not clean.isprintable() or any(c in clean for c in '"\\[],'):
            raise BadRow(f'{name} {_show(value)} has characters outside printable ASCII or one of " \\ [ ] ,')
        if name == "symbol":
            clean = clean.upper()
        constant = self.constants.get(name)
        if constant is not None and clean != constant:
            raise BadRow(f"{name} {_show(value)} differs from the {name} parameter {constant!r}")
        if len(cache) >= _CACHE_LIMIT:
            cache.clear()
            self._seed(name, cache)
        cache[value] = clean
        return clean

    def epoch(self, value: object) -> float:
        cache = self._caches["ts"]
        try:
            return cache[value]
        except (KeyError, TypeError):
            pass
        if value is None:
            raise BadRow("ts is missing")
        epoch = self._parse_ts(value)
        if not MIN_EPOCH <= epoch < MAX_EPOCH:
            raise BadRow(f"ts {_show(value)} is outside 1970..2099")
        if len(cache) >= _CACHE_LIMIT:
            cache.clear()
        cache[value] = epoch
        return epoch

    def _make_row(self) -> Callable[[int, Sequence[Any]], list]:
        providers, symbols, intervals, times = (self._caches[k] for k in ("provider", "symbol", "interval", "ts"))
        text, epoch_of = self.text, self.epoch
        optional = self.volume_optional
        for name in ("provider", "symbol", "interval"):
            self._seed(name, self._caches[name])

        def row(line: int, values: Sequence[Any]) -> list:
            p, s, i, ts, o, h, lo, c, v = values
            try:
                p = providers[p]
                s = symbols[s]
                i = intervals[i]
                e = times[ts]
            except (KeyError, TypeError):
                p, s, i = text("provider", p), text("symbol", s), text("interval", i)
                e = epoch_of(ts)
            if not (type(o) is float and type(h) is float and type(lo) is float and type(c) is float):
                o, h, lo, c = _prices(o, h, lo, c)
            if type(v) is not float and (v is not None or not optional):
                v = _volume(v)
            if not (lo <= o <= h and lo <= c <= h):
                raise BadRow(_price_order(o, h, lo, c))
            if v is not None and v < 0:
                raise BadRow(f"volume is negative: {v!r}")
            return [line, p, s, i, e, o, h, lo, c, v]

        return row


def _iso_epoch(value: object) -> float:
    if not isinstance(value, str):
        raise BadRow(f"ts must be an ISO 8601 string, got {_show(value)}")
    try:
        parsed = _fromiso(value)
    except ValueError:
        raise BadRow(f"ts is not an ISO 8601 time: {_show(value)}") from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=_UTC)
    return parsed.timestamp()


def _prices(o: object, h: object, lo: object, c: object) -> tuple:
    """The four prices as numbers: one call per row, C-level float() for text (CSV); the
    careful per-field check only when that fails."""
    if type(o) is str and type(h) is str and type(lo) is str and type(c) is str:
        try:
            fo, fh, fl, fc = float(o), float(h), float(lo), float(c)
        except ValueError:
            pass
        else:
            if (fo + fh + fl + fc) * 0.0 == 0.0:  # all finite (inf or nan would make it nan)
                return fo, fh, fl, fc
    return _number("open", o), _number("high", h), _number("low", lo), _number("close", c)


def _volume(v: object) -> float:
    if type(v) is str:
        try:
            f = float(v)
        except ValueError:
            pass
        else:
            if f * 0.0 == 0.0:
                return f
    return _number("volume", v)


def _number(name: str, value: object) -> float:
    if type(value) is float or type(value) is int:
        return value
    if isinstance(value, str):
        try:
            number = float(value)
        except ValueError:
            raise BadRow(f"{name} is not a number: {_show(value)}") from None
        if not _isfinite(number):
            raise BadRow(f"{name} is not a finite number: {_show(value)}")
        return number
    if value is None or value == "":
        raise BadRow(f"{name} is missing")
    raise BadRow(f"{name} is not a number: {_show(value)}")


def _price_order(o: float, h: float, lo: float, c: float) -> str:
    if lo > h:
        return f"low {lo!r} > high {h!r}"
    if o < lo:
        return f"low {lo!r} > open {o!r}"
    if o > h:
        return f"open {o!r} > high {h!r}"
    if c < lo:
        return f"low {lo!r} > close {c!r}"
    return f"close {c!r} > high {h!r}"


def _show(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


class Reader:
    """Reads batches of validated rows from a decompressed byte stream.

    `line`/`offset` say where the stream starts (0 for a fresh load, the checkpoint's
    values when resuming); `bad_before` and `first_bad` carry the rejected rows counted
    by the run that made the checkpoint.
    """

    def __init__(
        self,
        stream: io.BufferedIOBase,
        fmt: str,
        *,
        batch_rows: int,
        max_bad_rows: int,
        provider: str | None = None,
        interval: str | None = None,
        line: int = 0,
        offset: int = 0,
        header: list[str] | None = None,
        bad_before: int = 0,
        samples: list[dict] | None = None,
        layout: Layout | None = None,
        slot_width: float | None = None,
    ) -> None:
        """`layout`: an `app.backfill.layout.Layout` (default: our own columns, ISO times);
        `slot_width`: seconds; when set, each batch collects the slots (epoch // width)
        its rows fall in (a dry run's partitions)."""
        if layout is None:
            from app.backfill.layout import Layout

            layout = Layout()
        self.layout = layout
        self.stream = stream
        self.fmt = fmt
        self.batch_rows = batch_rows
        self.max_bad_rows = max_bad_rows
        self.validator = Validator(
            provider,
            interval,
            symbol=layout.symbol,
            ts_parser=None if layout.ts_format == "iso" and layout.timezone == "UTC" else layout.ts_parser(),
            volume_optional=layout.volume_optional,
        )
        self.slot_width = slot_width
        self._keys: tuple = FIELDS
        self.line = line
        self.offset = offset
        self.header = header
        self.bad = bad_before
        self.first_bad: dict | None = samples[0] if samples else None
        self._batch = Batch()
        self._pending: list[list] = []
        self._row = self.validator.row
        self._chunk = min(CHUNK_ROWS, batch_rows)

    # -- shared bookkeeping --------------------------------------------------------------
    def _reject(self, line: int, reason: str) -> None:
        self.bad += 1
        batch = self._batch
        batch.rejected += 1
        batch.read += 1
        sample = {"line": line, "reason": reason}
        if self.first_bad is None:
            self.first_bad = sample
        if len(batch.samples) < SAMPLE_LIMIT:
            batch.samples.append(sample)
        if self.bad > self.max_bad_rows:
            raise TooManyBadRows(self.bad, self.max_bad_rows, self.first_bad)

    def _flush_chunk(self) -> bool:
        """Turn the pending rows into a CSV chunk of the batch; True when the batch is full."""
        pending = self._pending
        batch = self._batch
        if pending:
            epochs = list(map(_EPOCH, pending))
            lo, hi = min(epochs), max(epochs)
            batch.min_epoch = min(batch.min_epoch, lo)
            batch.max_epoch = max(batch.max_epoch, hi)
            batch.symbols.update(map(_SYMBOL, pending))
            batch.providers.update(map(_PROVIDER, pending))
            batch.intervals.update(map(_INTERVAL, pending))
            if self.slot_width:
                width = self.slot_width
                lo_slot, hi_slot = int(lo // width), int(hi // width)
                if lo_slot == hi_slot:  # the usual case: one partition per chunk of rows
                    batch.slots.add(lo_slot)
                else:
                    batch.slots.update(int(e // width) for e in epochs)
            batch.rows += len(pending)
            batch.read += len(pending)
            batch.chunks.append(_csv_text(pending))
            self._pending = []
        return batch.rows >= self.batch_rows

    def _cut(self) -> Batch:
        self._flush_chunk()
        batch, self._batch = self._batch, Batch()
        batch.end_line, batch.end_offset, batch.header = self.line, self.offset, self.header
        return batch

    def batches(self) -> Iterator[Batch]:
        """Yield `Batch`es until the stream ends (the last one may be empty of rows)."""
        try:
            if self.fmt == "ndjson":
                yield from self._ndjson()
            else:
                yield from self._csv()
        except (OSError, EOFError, zlib.error) as exc:
            raise SourceError(f"the source cannot be read after line {self.line}: {exc}") from None
        yield self._cut()

    # -- NDJSON ----------------------------------------------------------------------------
    def _ndjson(self) -> Iterator[Batch]:
        """The hot loop: one JSON parse, one C-level field pick and one validation per line."""
        loads = orjson.loads
        fast = not self.validator.constants and not self.validator.volume_optional
        pick = self._picker(fast) if self.layout.columns is None else None

        def first(doc: Any) -> tuple:  # a mapping is resolved on the file's first object
            nonlocal pick
            if type(doc) is not dict:
                raise TypeError
            self._keys = self.layout.ndjson_keys(doc)
            pick = self._picker(fast)
            return pick(doc)

        if pick is None:
            pick = first
        make_row, chunk = self._row, self._chunk
        line, offset = self.line, self.offset
        pending = self._pending
        try:
            for raw in self.stream:
                line += 1
                offset += len(raw)
                try:
                    pending.append(make_row(line, pick(loads(raw))))
                except (BadRow, ValueError, TypeError, KeyError, AttributeError):
                    self.line, self.offset = line, offset
                    self._odd_json_line(raw)
                    continue
                if len(pending) >= chunk:
                    self.line, self.offset = line, offset
                    full = self._flush_chunk()
                    pending = self._pending
                    if full:
                        yield self._cut()
        finally:
            self.line, self.offset = line, offset

    def _odd_json_line(self, raw: bytes) -> None:
        """A line the fast path refused: blank, not JSON, fields missing, or a bad row."""
        try:
            doc = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            if raw.strip():
                self._reject(self.line, f"invalid JSON: {str(exc).split(':')[0]}")
            return
        if type(doc) is not dict:
            self._reject(self.line, "not a JSON object")
            return
        try:
            self._pending.append(self._row(self.line, tuple(map(doc.get, self._keys))))
        except BadRow as exc:
            self._reject(self.line, str(exc))

    def _picker(self, fast: bool) -> Callable[[dict], tuple]:
        """Fields out of a JSON object: one C-level itemgetter when every field must be
        there, else `dict.get` per field (absent fields come from the parameters)."""
        keys = self._keys
        if fast:
            return itemgetter(*keys)
        return lambda doc: tuple(map(doc.get, keys))

    # -- CSV --------------------------------------------------------------------------------
    def read_header(self) -> list[str]:
        """The CSV header (the first line); sets `self.header`."""
        raw = self.stream.readline()
        self.line += 1
        self.offset += len(raw)
        text = raw.decode("utf-8", "replace").lstrip("\ufeff")
        names = self.layout.split_header(text.rstrip("\r\n"))
        self.header = [n.strip().lower() for n in names]
        return self.header

    def _csv(self) -> Iterator[Batch]:
        if self.header is None and self.layout.header:
            self.read_header()
        values, width = self.layout.csv_picker(self.header, self.validator.constants)
        make_row, chunk = self._row, self._chunk
        lines = CsvLines(self.stream, self.line, self.offset, self.layout.delimiter)
        reader, line0, pending = lines.reader, self.line, self._pending
        try:
            while True:
                try:
                    record = next(reader)
                except StopIteration:
                    return
                except csv.Error as exc:
                    self.line = line0 + reader.line_num
                    self._reject(self.line, f"malformed CSV: {exc}")
                    continue
                line = line0 + reader.line_num
                if len(record) != width:
                    if record:
                        self.line = line
                        self._reject(line, f"expected {width} fields, got {len(record)}")
                    continue
                try:
                    pending.append(make_row(line, values(record)))
                except BadRow as exc:
                    self.line = line
                    self._reject(line, str(exc))
                    continue
                if len(pending) >= chunk:
                    self.line, self.offset = line, lines.offset()
                    full = self._flush_chunk()
                    pending = self._pending
                    if full:
                        yield self._cut()
        finally:
            self.line, self.offset = lines.line(), lines.offset()

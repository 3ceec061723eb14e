"""Parsing and validating backfill rows: NDJSON or CSV lines in, CSV batches for COPY out.

Each valid row becomes `[provider, SYMBOL, interval, ts, open, high, low, close, volume]`,
the columns of `bars_ohlcv` in its order, so a batch can be COPYed straight into a
partition (app/backfill/loader.py). The time is Postgres' own: microseconds since
2000-01-01 UTC (`_micros`, made once per distinct source value); its epoch seconds are
kept beside the rows for the batch's range and partitions. Every few thousand rows
become one chunk of tuples in Postgres' binary COPY format (`encode`): the server then
parses no text at all (no `timestamptz` or `float8` input functions), which saves about
a fifth of its work per row. `COPY_HEADER` and `COPY_TRAILER` frame the chunks of one COPY.

A bad row is skipped, counted and sampled (line number and reason); one more than
`max_bad_rows` stops the read with `TooManyBadRows`.

Rows that cannot hurt the store (docs/backfill.md, "Row rules"):

- numbers: ASCII syntax only (`[+-]digits[.digits][e[+-]digits]`: no `_`, no other
  digits, no `inf`/`nan`); prices 0 <= p < 1e15 and volume 0 <= v < 1e15, so sums
  over any bucket stay far from a double's range;
- time: ISO 8601 in ASCII, inside the window [`time_min`, now + `time_ahead`); digits
  past the microsecond must be zeros (the store keeps microseconds; truncating would
  merge distinct rows);
- symbol: `SYMBOL_CHARS` (letters, digits and `. - _ / : ^ =`), starting with a letter,
  a digit, `^`, `.` or `_` (so never `= + - @`, which spreadsheets run as formulas);
- a line longer than `max_line_bytes` is a bad row, read past without being held
  whole; blank lines count toward progress and toward `max_blank_lines`;
- CSV is parsed line by line: an unterminated quote fails its own line only. A plain
  line is checked at once by the file's line pattern (`Layout.csv_line`); any other
  takes the per-field checks, with the same outcome for every line both accept.
"""

from __future__ import annotations

import csv
import io
import math
import re
import struct
import zlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import partial
from operator import itemgetter
from typing import TYPE_CHECKING, Any

import orjson

from app.backfill.sources import SourceError
from app.backfill.task import BackfillError
from app.timeseries import intervals as bar_intervals

if TYPE_CHECKING:
    from app.backfill.layout import Layout

FIELDS = ("provider", "symbol", "interval", "ts", "open", "high", "low", "close", "volume")
PRICES = ("open", "high", "low", "close")
SAMPLE_LIMIT = 20
CHUNK_ROWS = 5000  # rows per encoded chunk
FIRST_BATCH_ROWS = 20_000  # the first batch of a read holds at most this many rows
READ_PIECE = 1 << 16  # bytes per read while skipping an over-long line
MAX_VALUE = 1e15  # prices and volume must stay below it (and not be negative)
MIN_EPOCH = -2208988800.0  # 1900-01-01: the default lower bound of the time window
MAX_EPOCH = 4102444800.0  # 2100-01-01: a default upper bound (the job passes now + 2 days)
SYMBOL_CHARS = "A-Z a-z 0-9 . - _ / : ^ ="
_SYMBOL_RE = re.compile(r"^[A-Za-z0-9^._][A-Za-z0-9._/:^=-]*$")
_NUMBER_RE = re.compile(r"^[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?$")
_FRACTION_RE = re.compile(r"T?[0-9:]+[.,]([0-9]{7,})")
_FORMULA_START = "=+-@"
_MAX_LEN = {"provider": 64, "symbol": 32, "interval": 16}
_CACHE_LIMIT = 100_000
_UTC = UTC
_fromiso = datetime.fromisoformat
_PROVIDER, _SYMBOL, _INTERVAL, _TS = itemgetter(0), itemgetter(1), itemgetter(2), itemgetter(3)
_isfinite = math.isfinite
_PG_EPOCH_US = 946_684_800_000_000  # 2000-01-01 UTC (Postgres' epoch) in Unix microseconds
COPY_HEADER = b"PGCOPY\n\xff\r\n\x00" + struct.pack(">ii", 0, 0)  # signature, flags, no extension
COPY_TRAILER = struct.pack(">h", -1)
_FIELDS = struct.Struct(">h").pack(len(FIELDS))
_TAIL = struct.Struct(">iqididididid").pack  # ts, open, high, low, close, volume, each after its length
_TAIL_NO_VOLUME = struct.Struct(">iqididididi").pack  # ... and a NULL volume (length -1)
_HEADS_LIMIT = 100_000


class BadRow(Exception):
    """One row is invalid; the message is the reason shown to the user."""


class TooManyBadRows(BackfillError):
    def __init__(self, count: int, allowed: int, first: dict):
        self.count, self.allowed, self.first = count, allowed, first
        super().__init__(
            f"more than max_bad_rows={allowed} bad rows; first bad line {first['line']}: {first['reason']}"
        )


@dataclass(frozen=True)
class RowLimits:
    """Bounds on lines and rows (settings BACKFILL_*)."""

    max_line_bytes: int = 1024 * 1024
    max_blank_lines: int = 100_000
    min_epoch: float = MIN_EPOCH
    max_epoch: float = MAX_EPOCH
    show_values: bool = True  # False for URL sources: errors never repeat their content
    slot_seconds: float = 86400.0  # Batch.slots: the days (UTC) with rows, what partitions are made for


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
    slots: set = field(default_factory=set)  # days (epoch // slot_seconds) the rows fall on
    stamps: set = field(default_factory=set)  # the distinct times, Postgres microseconds (for the rollups)


def epoch_to_datetime(value: float) -> datetime:
    return datetime.fromtimestamp(round(value, 6), _UTC)


def _micros(epoch: float) -> int:
    """Epoch seconds -> microseconds since 2000-01-01 UTC, Postgres' `timestamptz` (the
    microsecond nearest, as its `to_timestamp` rounds; exact for every time a parser here
    produces)."""
    return round(epoch * 1_000_000) - _PG_EPOCH_US


def micros_to_datetime(micros: int) -> datetime:
    return datetime(2000, 1, 1, tzinfo=_UTC) + timedelta(microseconds=micros)


def _text_fields(provider: str, symbol: str, interval: str) -> bytes:
    """The start of a binary COPY tuple: the field count and the three text fields."""
    out = [_FIELDS]
    for value in (provider, symbol, interval):
        data = value.encode()
        out.append(struct.pack(">i", len(data)) + data)
    return b"".join(out)


def encode(rows: list[list], heads: dict) -> bytes:
    """Rows -> binary COPY tuples (no header or trailer). `heads` caches the encoded text
    fields per (provider, symbol, interval)."""
    out: list[bytes] = []
    append = out.append
    tail, tail_no_volume = _TAIL, _TAIL_NO_VOLUME
    for p, s, i, us, o, h, lo, c, v in rows:
        key = (p, s, i)
        head = heads.get(key)
        if head is None:
            if len(heads) >= _HEADS_LIMIT:
                heads.clear()
            head = heads[key] = _text_fields(p, s, i)
        if v is None:
            append(head + tail_no_volume(8, us, 8, o, 8, h, 8, lo, 8, c, -1))
        else:
            append(head + tail(8, us, 8, o, 8, h, 8, lo, 8, c, 8, v))
    return b"".join(out)


class Validator:
    """Checks rows; caches the text fields and times it has already accepted.

    `row(line, values)` takes the nine FIELDS values and returns the row ready for COPY
    (and appends its epoch seconds to `epochs`), or raises BadRow. It is the hot path (millions of calls): plain dict lookups first,
    the careful checks only for values not seen before.
    """

    def __init__(
        self,
        provider: str | None = None,
        interval: str | None = None,
        *,
        min_epoch: float = MIN_EPOCH,
        max_epoch: float = MAX_EPOCH,
        show_values: bool = True,
        symbol: str | None = None,
        ts_parser: Callable[[object], float] | None = None,
        volume_optional: bool = False,
    ) -> None:
        """`provider`/`interval`/`symbol`: constants for every row (a row with its own value
        must agree); `ts_parser(value) -> epoch seconds` (a layout's time format; default
        ISO 8601, naive = UTC); `volume_optional`: a missing volume stores NULL."""
        self.default_provider = provider
        self.default_interval = interval
        self.min_epoch, self.max_epoch = min_epoch, max_epoch
        self.show = _show if show_values else _hidden
        self._caches: dict[str, dict] = {"provider": {}, "symbol": {}, "interval": {}, "ts": {}}
        self.constants: dict[str, str] = {}
        for name, value in (("provider", provider), ("interval", interval), ("symbol", symbol)):
            if value is not None:
                self.constants[name] = self.text(name, value)
        self._parse_ts = ts_parser
        self.volume_optional = volume_optional
        self.epochs: list[float] = []  # epoch seconds of the rows made since the last take_epochs()
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
        show = self.show
        if not isinstance(value, str):
            raise BadRow(f"{name} must be a string, got {show(value)}")
        clean = value.strip()
        limit = _MAX_LEN[name]
        if not clean:
            raise BadRow(f"{name} is empty")
        if len(clean) > limit:
            raise BadRow(f"{name} is longer than {limit} characters")
        if name == "symbol":
            if not _SYMBOL_RE.match(clean):
                raise BadRow(f"symbol {show(value)} must use {SYMBOL_CHARS} and start with a letter, a digit, ^ . or _")
            clean = clean.upper()
        elif (
            not clean.isascii()
            or not clean.isprintable()
            or any(c in clean for c in '"\\[],')
            or clean[0] in _FORMULA_START
        ):
            raise BadRow(
                f'{name} {show(value)} has characters outside printable ASCII or one of " \\ [ ] , '
                "or starts with one of = + - @"
            )
        elif name == "interval":
            try:
                clean = bar_intervals.normalise(clean)
            except bar_intervals.UnknownInterval as exc:
                raise BadRow(str(exc)) from None
        constant = self.constants.get(name)
        if constant is not None and clean != constant:
            raise BadRow(f"{name} {show(value)} differs from the {name} parameter {constant!r}")
        if len(cache) >= _CACHE_LIMIT:
            cache.clear()
            self._seed(name, cache)
        cache[value] = clean
        return clean

    def stamp(self, value: object) -> tuple[float, int]:
        """(epoch seconds, Postgres microseconds for COPY) of a ts value; cached per value."""
        cache = self._caches["ts"]
        try:
            return cache[value]
        except (KeyError, TypeError):
            pass
        show = self.show
        if self._parse_ts is not None and value is not None:  # a layout's time format
            epoch = self._parse_ts(value)
        else:
            epoch = self._iso_epoch(value)
        if not self.min_epoch <= epoch < self.max_epoch:
            raise BadRow(
                f"ts {show(value)} is outside the accepted window "
                f"{epoch_to_datetime(self.min_epoch).isoformat()} .. {epoch_to_datetime(self.max_epoch).isoformat()}"
            )
        if len(cache) >= _CACHE_LIMIT:
            cache.clear()
        cache[value] = found = (epoch, _micros(epoch))
        return found

    def _iso_epoch(self, value: object) -> float:
        show = self.show
        if not isinstance(value, str):
            raise BadRow("ts is missing" if value is None else f"ts must be an ISO 8601 string, got {show(value)}")
        if not value.isascii() or len(value) > 64:
            raise BadRow(f"ts is not an ISO 8601 time in ASCII: {show(value)}")
        try:
            parsed = _fromiso(value)
        except ValueError:
            raise BadRow(f"ts is not an ISO 8601 time: {show(value)}") from None
        fraction = _FRACTION_RE.search(value)
        if fraction and fraction.group(1)[6:].strip("0"):
            raise BadRow(
                f"ts {show(value)} has digits past the microsecond; the store keeps microseconds "
                "(round the times, or two rows could become one)"
            )
        if parsed.tzinfo is None:
            parsed = parsed.replace(tzinfo=_UTC)
        return parsed.timestamp()

    def _make_row(self) -> Callable[[int, Sequence[Any]], list]:
        providers, symbols, intervals, times = (self._caches[k] for k in ("provider", "symbol", "interval", "ts"))
        text, stamp_of, show = self.text, self.stamp, self.show
        optional = self.volume_optional
        epochs_append = self.epochs.append
        for name in ("provider", "symbol", "interval"):
            self._seed(name, self._caches[name])

        def row(line: int, values: Sequence[Any]) -> list:
            p, s, i, ts, o, h, lo, c, v = values
            try:
                p = providers[p]
                s = symbols[s]
                i = intervals[i]
                e, t = times[ts]
            except (KeyError, TypeError):
                p, s, i = text("provider", p), text("symbol", s), text("interval", i)
                e, t = stamp_of(ts)
            if not (type(o) is float and type(h) is float and type(lo) is float and type(c) is float):
                o, h = _number("open", o, show), _number("high", h, show)
                lo, c = _number("low", lo, show), _number("close", c, show)
            if type(v) is not float and (v is not None or not optional):
                v = _number("volume", v, show)
            if not (lo <= o <= h and lo <= c <= h):
                raise BadRow(_price_order(o, h, lo, c))
            if not (0 <= lo and h < MAX_VALUE):
                raise BadRow(f"prices must be at least 0 and below {MAX_VALUE:g}; low {lo!r}, high {h!r}")
            if v is not None and not 0 <= v < MAX_VALUE:
                raise BadRow(f"volume must be at least 0 and below {MAX_VALUE:g}, got {v!r}")
            epochs_append(e)  # last: a row refused above leaves no epoch behind
            return [p, s, i, t, o, h, lo, c, v]

        return row


def _number(name: str, value: object, show: Callable[[object], str] | None = None) -> float:
    show = show or _show
    if type(value) is float:
        return value
    if type(value) is int:
        if not -MAX_VALUE < value < MAX_VALUE:  # before float(): a huge int would overflow it
            raise BadRow(f"{name} must be below {MAX_VALUE:g}")
        return float(value)
    if isinstance(value, str):
        text = value.strip()
        if len(text) > 64 or not _NUMBER_RE.match(text):
            if not text:
                raise BadRow(f"{name} is missing")
            raise BadRow(f"{name} is not a number: {show(value)}")
        number = float(text)
        if not _isfinite(number):
            raise BadRow(f"{name} is not a finite number: {show(value)}")
        return number
    if value is None:
        raise BadRow(f"{name} is missing")
    raise BadRow(f"{name} is not a number: {show(value)}")


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


def _never() -> bool:
    return False


def _hidden(value: object) -> str:
    """For URL sources: the value is the server's content, never repeated in errors."""
    return "(value not shown for URL sources)"


class Reader:
    """Reads batches of validated rows from a decompressed byte stream.

    `line`/`offset` say where the stream starts (0 for a fresh load, the checkpoint's
    values when resuming); `bad_before` and `first_bad` carry the rejected rows counted
    by the run that made the checkpoint. `limits` bound lines and the time window.
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
        limits: RowLimits | None = None,
        stopped: Callable[[], bool] | None = None,
        layout: Layout | None = None,
    ) -> None:
        """`layout`: an `app.backfill.layout.Layout` (default: our own columns, ISO times)."""
        if layout is None:
            from app.backfill.layout import Layout

            layout = Layout()
        self.layout = layout
        self._keys: tuple = FIELDS
        self.stream = stream
        self.stopped = stopped or _never
        self.fmt = fmt
        self.batch_rows = batch_rows
        self.max_bad_rows = max_bad_rows
        self.limits = limits = limits or RowLimits()
        self.validator = Validator(
            provider,
            interval,
            min_epoch=limits.min_epoch,
            max_epoch=limits.max_epoch,
            show_values=limits.show_values,
            symbol=layout.symbol,
            ts_parser=None if layout.ts_format == "iso" and layout.timezone == "UTC" else layout.ts_parser(),
            volume_optional=layout.volume_optional,
        )
        self.line = line
        self.offset = offset
        self.header = header
        self.bad = bad_before
        self.blank = 0
        self.first_bad: dict | None = samples[0] if samples else None
        self._batch = Batch()
        self._pending: list[list] = []
        self._heads: dict = {}  # encoded text fields per (provider, symbol, interval)
        self._row = self.validator.row
        self._chunk = min(CHUNK_ROWS, batch_rows)
        # The first batch is small, so the database starts writing within a fraction of
        # a second instead of waiting for a whole batch to be read; then batch_rows.
        self._limit = min(batch_rows, FIRST_BATCH_ROWS)

    # -- shared bookkeeping --------------------------------------------------------------
    def _check_stop(self) -> None:
        if self.stopped():
            raise SourceError("reading stopped: the job was stopped")

    def _reject(self, line: int, reason: str) -> None:
        self.bad += 1
        if not self.bad & 4095:
            self._check_stop()
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

    def _blank_line(self) -> None:
        self.blank += 1
        if not self.blank & 4095:
            self._check_stop()
        if self.blank > self.limits.max_blank_lines:
            raise SourceError(
                f"more than BACKFILL_MAX_BLANK_LINES ({self.limits.max_blank_lines}) blank lines "
                f"(line {self.line}); is this the right file?"
            )

    def _flush_chunk(self) -> bool:
        """Turn the pending rows into a CSV chunk of the batch; True when the batch is full."""
        pending = self._pending
        batch = self._batch
        self._check_stop()
        if pending:
            epochs = self.validator.epochs[:]
            self.validator.epochs.clear()
            batch.stamps.update(map(_TS, pending))
            batch.min_epoch = min(batch.min_epoch, min(epochs))
            batch.max_epoch = max(batch.max_epoch, max(epochs))
            batch.symbols.update(map(_SYMBOL, pending))
            batch.providers.update(map(_PROVIDER, pending))
            batch.intervals.update(map(_INTERVAL, pending))
            width = self.limits.slot_seconds
            batch.slots.update({int(e // width) for e in epochs})
            batch.rows += len(pending)
            batch.read += len(pending)
            batch.chunks.append(encode(pending, self._heads))
            self._pending = []
        return batch.rows >= self._limit

    def _cut(self) -> Batch:
        self._flush_chunk()
        self._limit = self.batch_rows
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

    def _too_long(self) -> str:
        return f"the line is longer than BACKFILL_MAX_LINE_BYTES ({self.limits.max_line_bytes} bytes)"

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
        limit = self.limits.max_line_bytes
        readline = self.stream.readline
        try:
            for raw in iter(partial(readline, limit + 1), b""):
                line += 1
                offset += len(raw)
                try:
                    pending.append(make_row(line, pick(loads(raw))))
                except (BadRow, ValueError, TypeError, KeyError, AttributeError):
                    self.line, self.offset = line, offset
                    if len(raw) > limit and raw[-1:] != b"\n":
                        self._reject(line, self._too_long())  # first: it may end the read
                        offset += self._skip_rest_of_line()
                        self.offset = offset
                    else:
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

    def _skip_rest_of_line(self) -> int:
        """Read past the rest of an over-long line in bounded pieces; the bytes skipped."""
        skipped = 0
        while True:
            self._check_stop()
            more = self.stream.readline(READ_PIECE)
            skipped += len(more)
            if not more or more[-1:] == b"\n":
                return skipped

    def _odd_json_line(self, raw: bytes) -> None:
        """A line the fast path refused: blank, not JSON, fields missing, or a bad row."""
        try:
            doc = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            if raw.strip():
                self._reject(self.line, f"invalid JSON: {str(exc).split(':')[0]}")
            else:
                self._blank_line()
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
        limit = self.limits.max_line_bytes
        raw = self.stream.readline(limit + 1)
        self.line += 1
        self.offset += len(raw)
        if len(raw) > limit and raw[-1:] != b"\n":
            raise SourceError(f"the CSV header is longer than BACKFILL_MAX_LINE_BYTES ({limit} bytes)")
        text = raw.decode("utf-8", "replace").lstrip("\ufeff")
        try:
            names = next(csv.reader([text.rstrip("\r\n")], strict=True, delimiter=self.layout.delimiter), [])
        except csv.Error:
            raise SourceError("the CSV header line is malformed") from None
        self.header = [n.strip().lower() for n in names]
        return self.header

    def _csv(self) -> Iterator[Batch]:
        """One record per physical line: a quote left open fails that line, not the rest."""
        if self.header is None and self.layout.header:
            self.read_header()
        values, width = self.layout.csv_picker(self.header, self.validator.constants, self.limits.show_values)
        plain_line, plain_values = self.layout.csv_line(self.header, self.validator.constants)
        delimiter = self.layout.delimiter
        make_row, chunk = self._row, self._chunk
        reader = csv.reader
        limit = self.limits.max_line_bytes
        for raw in iter(partial(self.stream.readline, limit + 1), b""):
            self.line += 1
            self.offset += len(raw)
            if len(raw) > limit and raw[-1:] != b"\n":
                self._reject(self.line, self._too_long())  # first: it may end the read
                self.offset += self._skip_rest_of_line()
                continue
            text = raw.decode("utf-8", "replace")
            plain = plain_line(text)
            if plain is not None:  # the fast path: one regular expression checked the line
                try:
                    self._pending.append(make_row(self.line, plain_values(plain.groups())))
                except BadRow as exc:
                    self._reject(self.line, str(exc))
                    continue
                if len(self._pending) >= chunk and self._flush_chunk():
                    yield self._cut()
                continue
            if '"' in text:
                try:
                    record = next(reader((text,), strict=True, delimiter=delimiter), [])
                except csv.Error as exc:
                    self._reject(self.line, f"malformed CSV: {exc} (quotes must close on the same line)")
                    continue
            else:
                stripped = text.rstrip("\r\n")
                record = stripped.split(delimiter) if stripped else []
            if not record or record == [""] or not text.strip():
                self._blank_line()
                continue
            if len(record) != width:
                self._reject(self.line, f"expected {width} fields, got {len(record)}")
                continue
            try:
                self._pending.append(make_row(self.line, values(record)))
            except BadRow as exc:
                self._reject(self.line, str(exc))
                continue
            if len(self._pending) >= chunk and self._flush_chunk():
                yield self._cut()

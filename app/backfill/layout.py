"""File layouts: how a vendor's file maps onto our row (`columns`, presets, time formats).

A `Layout` is what the trigger's layout parameters say, checked in the API (`parse`
raises `LayoutError` naming the field: a 400) and stored, fully resolved (a preset's
values written out), in the job's parameters. In the worker it is resolved once per
file, never per row:

- `csv_picker(header)` turns the header (or, for a headerless file, the `columns`
  list) into one compiled function `record -> the nine FIELDS values`, or raises
  `SourceError` naming the missing and the present columns (and the delimiter to
  pass when the header would parse with another one);
- `ndjson_keys(first_object)` finds the JSON key of each field (case-insensitive);
- `ts_parser()` is the function from a time value to epoch seconds (ISO 8601, epoch
  s/ms/us/ns, or a strftime pattern; naive times in `timezone`, where an ambiguous or
  non-existent local time (DST) is a bad row, never shifted).
"""

from __future__ import annotations

import csv
import math
import re
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, tzinfo
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from app.backfill.rows import FIELDS, BadRow
from app.backfill.sources import SourceError

DELIMITERS = (",", ";", "\t", "|")
DECIMALS = (".", ",")
EPOCH_FORMATS = {"epoch_s": 1, "epoch_ms": 1_000, "epoch_us": 1_000_000, "epoch_ns": 1_000_000_000}
TS_FORMATS = ("iso", *EPOCH_FORMATS, "epoch_auto")
CONSTANTS = ("symbol", "provider", "interval")
MAX_COLUMNS = 1000
MAX_NAME = 200
MAX_PATTERN = 100
HEADER_PEEK = 64 * 1024  # bytes of a CSV header read at trigger time
_NUMBERS = ("open", "high", "low", "close", "volume")


class LayoutError(ValueError):
    """A layout parameter is wrong; the message names it (a 400 in the API)."""


@dataclass(frozen=True)
class Preset:
    settings: dict
    needs: tuple[str, ...] = ()  # parameters the user must give (the file does not hold them)
    note: str = ""


_OHLCV_TITLE = {"open": "Open", "high": "High", "low": "Low", "close": "Close", "volume": "Volume"}
PRESETS: dict[str, Preset] = {
    "yahoo": Preset(
        {"format": "csv", "columns": {"ts": "Date", **_OHLCV_TITLE}, "provider": "yahoo", "interval": "1d"},
        ("symbol",),
        "Yahoo Finance history download (Date,Open,High,Low,Close,Adj Close,Volume); stores Close "
        "(split-adjusted), not Adj Close; 'null' rows are bad rows",
    ),
    "stooq": Preset(
        {
            "format": "csv",
            "columns": {"ts": "Date", **_OHLCV_TITLE},
            "provider": "stooq",
            "interval": "1d",
            "volume": "optional",
        },
        ("symbol",),
        "Stooq daily CSV (Date,Open,High,Low,Close,Volume; indices have no Volume)",
    ),
    "polygon_aggs": Preset(
        {"format": "csv", "columns": {"symbol": "ticker", "ts": "window_start"}, "ts_format": "epoch_ns"},
        ("interval",),
        "Polygon flat-file aggregates (ticker,volume,open,close,high,low,window_start,transactions); "
        "window_start in epoch nanoseconds; pass interval 1m (minute_aggs) or 1d (day_aggs)",
    ),
    "binance_klines": Preset(
        {
            "format": "csv",
            "header": False,
            "columns": ["ts", "open", "high", "low", "close", "volume", None, None, None, None, None, None],
            "ts_format": "epoch_auto",
            "provider": "binance",
        },
        ("symbol", "interval"),
        "Binance public-data klines (headerless, 12 columns); open time in epoch ms, or us in newer files "
        "(told apart by magnitude)",
    ),
}
PRESETS["polygon_aggs"].settings["provider"] = "polygon"

# The trigger's layout parameters (besides format, provider and interval, which exist already).
PARAMS = ("preset", "columns", "header", "delimiter", "decimal", "ts_format", "timezone", "volume", "symbol")


@dataclass(frozen=True)
class Layout:
    columns: dict | list | None = None  # field -> file column, or the file's columns in order
    header: bool = True
    delimiter: str = ","
    decimal: str = "."
    ts_format: str = "iso"
    timezone: str = "UTC"
    volume_optional: bool = False
    symbol: str | None = None
    preset: str | None = None
    _zone: Any = field(default=None, compare=False, repr=False)

    # -- parameters ---------------------------------------------------------------------
    def params(self) -> dict:
        """JSON for the job's parameters (only what differs from the default layout)."""
        out = {k: v for k, v in asdict(self).items() if not k.startswith("_")}
        default = asdict(Layout())
        return {k: v for k, v in out.items() if v != default[k]}

    @classmethod
    def from_params(cls, params: dict) -> Layout:
        known = {k: params[k] for k in asdict(cls()) if not k.startswith("_") and k in params}
        return cls(**known)

    def check_format(self, fmt: str) -> None:
        """LayoutError when a CSV-only setting meets an NDJSON source."""
        if fmt != "ndjson":
            return
        if self.delimiter != ",":
            raise LayoutError("delimiter applies to csv sources only")
        if self.decimal != ".":
            raise LayoutError("decimal applies to csv sources only")
        if not self.header or isinstance(self.columns, list):
            raise LayoutError("header: false and columns as a list apply to csv sources only")

    @property
    def is_default(self) -> bool:
        return not self.params()

    def mapped(self, name: str) -> str:
        """The file column (lower case) a field is read from, for a dict mapping or none."""
        cols = self.columns if isinstance(self.columns, dict) else {}
        return str(cols.get(name, name)).strip().lower()

    # -- times ----------------------------------------------------------------------------
    @property
    def zone(self) -> tzinfo:
        if self._zone is None:
            object.__setattr__(self, "_zone", UTC if self.timezone == "UTC" else ZoneInfo(self.timezone))
        return self._zone

    def ts_parser(self) -> Callable[[object], float]:
        """value -> epoch seconds (float), BadRow when it is not a time of this format."""
        fmt = self.ts_format
        if fmt in EPOCH_FORMATS:
            scale = EPOCH_FORMATS[fmt]
            return lambda value: _epoch(value, scale, fmt)
        if fmt == "epoch_auto":
            return _epoch_auto
        zone = self.zone
        if fmt == "iso":
            fromiso = datetime.fromisoformat

            def iso(value: object) -> float:
                if not isinstance(value, str):
                    raise BadRow(f"ts must be an ISO 8601 string, got {_show(value)}")
                try:
                    parsed = fromiso(value)
                except ValueError:
                    raise BadRow(f"ts is not an ISO 8601 time: {_show(value)}") from None
                return _aware(parsed, zone, value).timestamp()

            return iso
        pattern = fmt
        strptime = datetime.strptime

        def pattern_time(value: object) -> float:
            if not isinstance(value, str):
                raise BadRow(f"ts must be a string in the format {pattern!r}, got {_show(value)}")
            try:
                parsed = strptime(value.strip(), pattern)
            except ValueError:
                raise BadRow(f"ts {_show(value)} does not match ts_format {pattern!r}") from None
            return _aware(parsed, zone, value).timestamp()

        return pattern_time

    # -- CSV ------------------------------------------------------------------------------
    def csv_picker(
        self, header: list[str] | None, constants: dict, show_values: bool = True
    ) -> tuple[Callable[[list[str]], tuple], int | None]:
        """(record -> FIELDS values, expected width or None) for this file's header.

        `constants` are the fields given as parameters (a missing column is fine for them).
        """
        index, width = self._csv_index(header, constants, show_values)
        return _compile(index, self.decimal == ","), width

    def csv_line(self, header: list[str] | None, constants: dict) -> tuple[Callable, Callable[[tuple], tuple]]:
        """The fast path of a CSV line: (`fullmatch` of a whole line, its groups -> the
        nine FIELDS values with the numbers already floats).

        One regular expression per file checks a plain line at once: exactly the file's
        columns, no quotes, and every number column in the strict number syntax (bounded
        so that it is always finite and at most 64 characters). A line it accepts gives
        the same values as the per-field checks (`rows._number`); any other line (quotes,
        spaces, empty or odd numbers, a wrong column count) takes the careful path.
        """
        index, width = self._csv_index(header, constants)
        delim = re.escape(self.delimiter)
        point = "," if self.decimal == "," else r"\."
        number = rf"[+-]?(?:[0-9]{{1,30}}(?:{point}[0-9]{{0,25}})?|{point}[0-9]{{1,25}})(?:[eE][+-]?[0-9]{{1,2}})?"
        text = rf'[^{delim}"\r\n]*'
        by_column = {i: f for f, i in index.items()}
        pattern: list[str] = []
        groups: dict[str, int] = {}
        for column in range(width or 0):
            f = by_column.get(column)
            if f is None:
                pattern.append(text)
                continue
            groups[f] = len(groups)
            pattern.append(f"({number})" if f in _NUMBERS else f"({text})")
        parts = []
        for f in FIELDS:
            g = groups.get(f)
            if g is None:
                parts.append("None")
            elif f in _NUMBERS:
                parts.append(f"_float(g[{g}].replace(',', '.'))" if self.decimal == "," else f"_float(g[{g}])")
            else:
                parts.append(f"(g[{g}] or None)")
        convert = eval(f"lambda g: ({', '.join(parts)})", {"_float": float})
        return re.compile(delim.join(pattern) + r"[\r\n]*").fullmatch, convert

    def _csv_index(
        self, header: list[str] | None, constants: dict, show_values: bool = True
    ) -> tuple[dict[str, int], int]:
        """field -> column index, and the number of columns, for this file's header."""
        if isinstance(self.columns, list):
            index = {name: i for i, name in enumerate(self.columns) if name is not None}
            return index, len(self.columns)
        names = [n.strip().lower() for n in header or []]
        index = {}
        for f in FIELDS:
            wanted = self.mapped(f)
            if wanted in names:
                index[f] = names.index(wanted)
        missing = [
            f"{f} (column {self.mapped(f)!r})" if self.mapped(f) != f else f
            for f in FIELDS
            if f not in index and f not in constants and not (f == "volume" and self.volume_optional)
        ]
        if missing:
            raise SourceError(self._header_error(missing, header or [], show_values))
        return index, len(names)

    def _header_error(self, missing: list[str], header: list[str], show_values: bool = True) -> str:
        if not show_values:  # a URL source: errors never repeat its content
            return f"the CSV header lacks column(s) {', '.join(missing)}; it has: (not shown for URL sources)"
        shown = ", ".join(repr(h) for h in header)[:300] or "nothing"
        text = f"the CSV header lacks column(s) {', '.join(missing)}; it has: {shown}"
        if len(header) <= 2:
            line = self.delimiter.join(header)
            for other in DELIMITERS:
                if other != self.delimiter and other in line:
                    parts = next(csv.reader([line], delimiter=other), [])
                    if len(parts) > 2:
                        return f'{text}; the header splits with {other!r}: pass "delimiter": {_json_char(other)}'
        return text

    def split_header(self, line: str) -> list[str]:
        return next(csv.reader([line], delimiter=self.delimiter), [])

    def check_header(self, stream: Any, constants: dict) -> None:
        """SourceError when the first line of a CSV stream does not fit this layout (the
        API calls it at trigger time for local files: a 400 instead of a failed job)."""
        if not self.header or isinstance(self.columns, list):
            return
        raw = stream.readline(HEADER_PEEK)
        if len(raw) >= HEADER_PEEK and not raw.endswith(b"\n"):
            return  # a first line this long is no header: the run fails it under its line bound
        names = [
            n.strip().lower() for n in self.split_header(raw.decode("utf-8", "replace").lstrip("\ufeff").rstrip("\r\n"))
        ]
        self.csv_picker(names, constants)

    # -- NDJSON ---------------------------------------------------------------------------
    def ndjson_keys(self, doc: dict) -> tuple[str, ...]:
        """The key of each field in this file's objects (case-insensitive; first object decides)."""
        lower = {str(k).strip().lower(): k for k in doc}
        return tuple(lower.get(self.mapped(f), self.mapped(f) if self.columns else f) for f in FIELDS)


def _json_char(c: str) -> str:
    return '"\\t"' if c == "\t" else f'"{c}"'


def _compile(index: dict[str, int], decimal_comma: bool) -> Callable[[list[str]], tuple]:
    """One function per file: record -> the nine values ('' becomes None; ',' -> '.' in numbers)."""
    parts = []
    for f in FIELDS:
        i = index.get(f)
        if i is None:
            parts.append("None")
        elif decimal_comma and f in _NUMBERS:
            parts.append(f"_dc(r[{int(i)}])")
        else:
            parts.append(f"(r[{int(i)}] or None)")
    code = f"lambda r: ({', '.join(parts)})"
    return eval(code, {"_dc": _decimal_comma})


def _decimal_comma(value: str) -> str | None:
    return value.replace(",", ".") if value else None


def _show(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _aware(parsed: datetime, zone: tzinfo, raw: object) -> datetime:
    """A naive time placed in `zone`; ambiguous or non-existent local times are bad rows."""
    if parsed.tzinfo is not None or zone is UTC:
        return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)
    first = parsed.replace(tzinfo=zone)
    if first.astimezone(UTC).astimezone(zone).replace(tzinfo=None) != parsed:
        raise BadRow(f"ts {_show(raw)} does not exist in {zone} (skipped by a daylight-saving change)")
    if first.utcoffset() != parsed.replace(tzinfo=zone, fold=1).utcoffset():
        raise BadRow(f"ts {_show(raw)} is ambiguous in {zone} (repeated by a daylight-saving change)")
    return first


def _number_text(value: object, fmt: str) -> int | float:
    if type(value) is int or type(value) is float:
        return value
    if isinstance(value, str):
        text = value.strip()
        try:
            return int(text)
        except ValueError:
            try:
                number = float(text)
            except ValueError:
                pass
            else:
                if math.isfinite(number):
                    return number
    raise BadRow("ts is missing" if value is None else f"ts is not an epoch number ({fmt}): {_show(value)}")


def _epoch(value: object, scale: int, fmt: str) -> float:
    number = _number_text(value, fmt)
    if type(number) is int and scale > 1:
        whole, part = divmod(number, scale)
        return whole + part / scale
    return number / scale


def _epoch_auto(value: object) -> float:
    """Epoch seconds, ms, us or ns, told apart by magnitude (for 1973..2099)."""
    number = _number_text(value, "epoch_auto")
    size = abs(number)
    scale = 1 if size < 1e11 else 1_000 if size < 1e14 else 1_000_000 if size < 1e17 else 1_000_000_000
    return _epoch(number, scale, "epoch_auto")


# -- checking the trigger's parameters ----------------------------------------------------------
def parse(body: dict) -> tuple[Layout, dict]:
    """(layout, overrides for format/provider/interval from the preset) from a trigger body.

    Explicit parameters override the preset's. LayoutError names the field.
    """
    preset_name = body.get("preset")
    preset = None
    if preset_name is not None:
        if preset_name not in PRESETS:
            raise LayoutError(f"preset must be one of {', '.join(PRESETS)}, got {str(preset_name)[:40]!r}")
        preset = PRESETS[preset_name]
    merged = dict(preset.settings) if preset else {}
    merged.update({k: v for k, v in body.items() if v is not None})
    if preset:
        for need in preset.needs:
            if merged.get(need) is None:
                raise LayoutError(f"{need} is required with preset {preset_name}: {preset.note}")
    kw: dict = {"preset": preset_name}
    columns = merged.get("columns")
    header = merged.get("header", True)
    if not isinstance(header, bool):
        raise LayoutError("header must be true or false")
    kw["header"] = header
    if columns is not None:
        kw["columns"] = _columns(columns, header)
    elif not header:
        raise LayoutError('header: false needs "columns" as a list of the file\'s columns in order')
    delimiter = merged.get("delimiter", ",")
    if delimiter not in DELIMITERS:
        raise LayoutError(f"delimiter must be one of {', '.join(_json_char(d) for d in DELIMITERS)}")
    kw["delimiter"] = delimiter
    decimal = merged.get("decimal", ".")
    if decimal not in DECIMALS:
        raise LayoutError('decimal must be "." or ","')
    kw["decimal"] = decimal
    kw["ts_format"] = _ts_format(merged.get("ts_format", "iso"))
    timezone = merged.get("timezone", "UTC")
    kw["timezone"] = _timezone(timezone)
    if timezone != "UTC" and kw["ts_format"].startswith("epoch"):
        raise LayoutError("timezone applies to times without an offset; epoch times are always UTC")
    volume = merged.get("volume", "required")
    if volume not in ("required", "optional"):
        raise LayoutError('volume must be "required" or "optional"')
    kw["volume_optional"] = volume == "optional"
    if "symbol" in merged:
        kw["symbol"] = merged["symbol"]  # checked with provider/interval by the caller
    layout = Layout(**kw)
    if isinstance(layout.columns, list):
        absent = [
            f
            for f in FIELDS
            if f not in layout.columns and merged.get(f) is None and not (f == "volume" and layout.volume_optional)
        ]
        if absent:
            raise LayoutError(
                f"columns: the list has no {', '.join(absent)}; add them, or pass them as parameters "
                "(symbol, provider, interval) or volume: optional"
            )
    overrides = {k: merged[k] for k in ("format", "provider", "interval") if merged.get(k) is not None}
    return layout, overrides


def _columns(columns: object, header: bool) -> dict | list:
    if isinstance(columns, dict):
        if not header:
            raise LayoutError("columns: with header: false, give the file's columns as a list in order")
        unknown = sorted(set(columns) - set(FIELDS))
        if unknown:
            raise LayoutError(f"columns: unknown field(s) {', '.join(unknown)}; fields are {', '.join(FIELDS)}")
        seen: dict[str, str] = {}
        for name, col in columns.items():
            if not isinstance(col, str) or len(col) > MAX_NAME:
                raise LayoutError(f"columns.{name} must be the file's column name (a string of at most {MAX_NAME})")
            key = col.strip().lower()
            if key in seen:
                raise LayoutError(f"columns: {seen[key]} and {name} both map to column {col!r}")
            seen[key] = name
        return {k: columns[k] for k in FIELDS if k in columns}
    if isinstance(columns, list):
        if not columns or len(columns) > MAX_COLUMNS:
            raise LayoutError(f"columns: a list of 1 to {MAX_COLUMNS} entries (a field name, or null to skip)")
        for item in columns:
            if item is not None and item not in FIELDS:
                raise LayoutError(f"columns: {str(item)[:40]!r} is not a field; use one of {', '.join(FIELDS)} or null")
        named = [c for c in columns if c is not None]
        if len(named) != len(set(named)):
            raise LayoutError("columns: a field appears twice in the list")
        return list(columns)
    raise LayoutError("columns must be an object (field -> column name) or a list (the file's columns in order)")


def _ts_format(value: object) -> str:
    if value in TS_FORMATS:
        return str(value)
    if not isinstance(value, str) or "%" not in value or len(value) > MAX_PATTERN:
        raise LayoutError(f"ts_format must be one of {', '.join(TS_FORMATS)} or a strftime pattern such as %Y%m%d")
    sample = datetime(2024, 3, 1, 13, 45, 30, 123456, tzinfo=UTC)
    try:
        datetime.strptime(sample.strftime(value), value)
    except ValueError as exc:
        raise LayoutError(f"ts_format {value[:40]!r} is not a usable strftime pattern: {exc}") from None
    return value


def _timezone(value: object) -> str:
    if not isinstance(value, str) or not value or len(value) > 64:
        raise LayoutError("timezone must be an IANA zone name such as America/New_York")
    if value == "UTC":
        return value
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        raise LayoutError(f"timezone {value[:64]!r} is not a known IANA zone (such as America/New_York)") from None
    return value


def describe_presets() -> dict:
    """For GET /backfill: every preset's settings and what it needs."""
    return {name: {**p.settings, "needs": list(p.needs), "note": p.note} for name, p in PRESETS.items()}

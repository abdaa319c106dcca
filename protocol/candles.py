"""Candle CSV codecs: text rows in, :class:`~protocol.messages.CandleEvent` out (no I/O).

Three formats, told apart by their first line:

* ``ohlcv_ms``: a header ``timestamp_ms,open,high,low,close,volume`` then rows with the candle
  open time in Unix milliseconds (the Binance files of ``shared/data/binance-triangle-1m``).
* ``kraken_ohlcvt``: Kraken's downloadable OHLCVT export, no header, 7 columns
  ``time,open,high,low,close,volume,trades`` with ``time`` the interval start in Unix seconds.
* ``kraken_trades``: Kraken's "time and sales" export, no header, 3 columns
  ``time,price,volume`` (``time`` in seconds, fractions allowed); aggregated into candles of the
  requested interval on load (open = first trade, close = last, volume = sum).

Prices and volumes are ``Decimal`` built from the text as written (``"56777.0"`` stays
``Decimal("56777.0")``), so exact strategies and cross-checks see the file's own digits.

Validation: a row with the wrong number of columns, a non-numeric or non-finite value, a
non-positive price, a negative volume, or ``low > min(open, close)`` / ``high < max(open,
close)`` raises :class:`CandleDataError` naming the source and the 1-based line. Problems that
do not make a row unreadable are *reported, never repaired silently*: duplicate timestamps (the
first row wins), rows out of time order (the series is sorted, stably), and gaps (intervals with
no row; Kraken omits intervals without trades) come back as warning strings in
:class:`CandleSeries`. Nothing is ever filled in.

Resampling (:func:`resample`) aggregates into buckets aligned to the Unix epoch (``floor(ts /
interval)``); a bucket covers whatever candles are present in it, so a gap inside a bucket
shortens it rather than inventing prices.
"""

from __future__ import annotations

import itertools
import re
from array import array
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from itertools import pairwise
from pathlib import Path

from .messages import CandleEvent

__all__ = [
    "FORMATS",
    "MAX_WARNINGS_PER_SOURCE",
    "OHLCV_MS_HEADER",
    "TIMEFRAMES",
    "CandleDataError",
    "CandleSeries",
    "detect_format",
    "iso_ns",
    "parse_candles",
    "parse_timeframe",
    "resample",
    "symbol_from_name",
]

OHLCV_MS_HEADER = "timestamp_ms,open,high,low,close,volume"
FORMATS = ("ohlcv_ms", "kraken_ohlcvt", "kraken_trades")
TIMEFRAMES = {"1m": 60, "5m": 300, "15m": 900, "1h": 3600, "4h": 14400, "1d": 86400}
MAX_WARNINGS_PER_SOURCE = 20
"""Detailed warnings kept per source; the rest are counted in one summary line."""

_NS = 1_000_000_000


class CandleDataError(ValueError):
    """A candle source cannot be read. ``str()`` is one line: ``path:line: reason``.

    Attributes:
        path: the source name (usually the file path).
        line: 1-based line number (0 for the file as a whole, e.g. empty).
        reason: what is wrong.
    """

    def __init__(self, path: str, line: int, reason: str) -> None:
        super().__init__(f"{path}:{line}: {reason}" if line else f"{path}: {reason}")
        self.path = path
        self.line = line
        self.reason = reason


@dataclass(frozen=True, slots=True, kw_only=True)
class CandleSeries:
    """Candles of one source, sorted by open time, without duplicates.

    Attributes:
        path: the source name.
        symbol: the symbol stamped on the candles.
        fmt: one of :data:`FORMATS`.
        interval_s: candle length in seconds.
        candles: the candles.
        warnings: gaps, duplicates and out-of-order rows, one line each (capped; see
            :data:`MAX_WARNINGS_PER_SOURCE`).
        gaps: number of gaps found.
        duplicates: rows dropped because their timestamp was already present.
        out_of_order: rows that came earlier in time than the row before them.
    """

    path: str
    symbol: str
    fmt: str
    interval_s: int
    candles: tuple[CandleEvent, ...]
    warnings: tuple[str, ...] = ()
    gaps: int = 0
    duplicates: int = 0
    out_of_order: int = 0


def iso_ns(ts_ns: int) -> str:
    """``2021-04-20T20:42:00Z`` for a UTC nanosecond timestamp (whole seconds)."""
    return datetime.fromtimestamp(ts_ns // _NS, tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_timeframe(text: str) -> int:
    """``"5m"`` -> 300 seconds; accepts the keys of :data:`TIMEFRAMES`.

    Raises:
        ValueError: an unknown timeframe.
    """
    try:
        return TIMEFRAMES[text.strip()]
    except KeyError:
        raise ValueError(
            f"unknown timeframe {text!r} (known: {', '.join(TIMEFRAMES)})"
        ) from None


def detect_format(first_line: str) -> str | None:
    """Guess the format from the first non-empty line; None when it matches none."""
    line = first_line.strip().lstrip("\ufeff")
    if line.lower().replace(" ", "") == OHLCV_MS_HEADER:
        return "ohlcv_ms"
    n = line.count(",") + 1
    if n == 7:
        return "kraken_ohlcvt"
    if n == 3:
        return "kraken_trades"
    return None


def _dec(path: str, lineno: int, name: str, text: str) -> Decimal:
    try:
        value = Decimal(text)
    except InvalidOperation:
        raise CandleDataError(path, lineno, f"{name} is not a number: {text!r}") from None
    if not value.is_finite():
        raise CandleDataError(path, lineno, f"{name} is not finite: {text!r}")
    return value


def _ts(path: str, lineno: int, text: str, unit_ns: int) -> int:
    text = text.strip()
    if text.isdigit():
        return int(text) * unit_ns
    value = _dec(path, lineno, "time", text)
    if value < 0:
        raise CandleDataError(path, lineno, f"time is negative: {text!r}")
    return int(value * unit_ns)


_INTERN_MAX = 1 << 16
"""Distinct price texts remembered while parsing one source (the cache restarts when full)."""


def _ohlcv_rows(
    lines: Iterable[tuple[int, str]], path: str, symbol: str, interval_s: int, unit_ns: int,
    ncols: int,
) -> tuple[array[int], list[CandleEvent]]:
    linenos: array[int] = array("q")
    out: list[CandleEvent] = []
    # Memory: one Decimal per distinct price text, shared by the candles that write it (a
    # minute's open is usually the previous close, and prices repeat). Decimals are immutable
    # and equal texts give equal Decimals (same digits, same exponent), so sharing changes
    # nothing but the footprint (and saves parsing).
    seen: dict[str, Decimal] = {}
    for lineno, raw in lines:
        parts = raw.split(",")
        if len(parts) != ncols:
            raise CandleDataError(path, lineno, f"expected {ncols} columns, got {len(parts)}")
        ts = _ts(path, lineno, parts[0], unit_ns)
        if len(seen) > _INTERN_MAX:
            seen.clear()
        prices = []
        for name, text in zip(_PRICE_NAMES, parts[1:5], strict=True):
            value = seen.get(text)
            if value is None:
                value = seen[text] = _dec(path, lineno, name, text)
            prices.append(value)
        o, h, lo, c = prices
        v = _dec(path, lineno, "volume", parts[5])
        if lo <= 0 or o <= 0 or c <= 0:
            raise CandleDataError(path, lineno, "prices must be > 0")
        if v < 0:
            raise CandleDataError(path, lineno, "volume must be >= 0")
        if lo > o or lo > c or h < o or h < c:
            raise CandleDataError(path, lineno, f"inconsistent candle: open {o} high {h} "
                                                f"low {lo} close {c}")
        linenos.append(lineno)
        out.append(CandleEvent(symbol=symbol, interval_s=interval_s, open=o, high=h, low=lo,
                               close=c, volume=v, ts_event_ns=ts))
    return linenos, out


_PRICE_NAMES = ("open", "high", "low", "close")


class _Bucket:
    __slots__ = ("bucket", "close", "high", "line", "low", "open", "volume")

    def __init__(self, bucket: int, line: int, price: Decimal, qty: Decimal) -> None:
        self.bucket = bucket
        self.line = line
        self.open = self.high = self.low = self.close = price
        self.volume = qty

    def candle(self, symbol: str, interval_s: int) -> CandleEvent:
        return CandleEvent(symbol=symbol, interval_s=interval_s, open=self.open,
                                      high=self.high, low=self.low, close=self.close,
                                      volume=self.volume, ts_event_ns=self.bucket)


def _trade_rows(lines: Iterable[tuple[int, str]], path: str, symbol: str, interval_s: int
                ) -> tuple[array[int], list[CandleEvent]]:
    step = interval_s * _NS
    linenos: array[int] = array("q")
    out: list[CandleEvent] = []
    # Trades are aggregated in file order; a trade older than the current bucket starts a new
    # candle, which the caller then reports as out of order (or duplicate) like any other row.
    cur: _Bucket | None = None
    for lineno, raw in lines:
        parts = raw.split(",")
        if len(parts) != 3:
            raise CandleDataError(path, lineno, f"expected 3 columns, got {len(parts)}")
        ts = _ts(path, lineno, parts[0], _NS)
        p = _dec(path, lineno, "price", parts[1])
        q = _dec(path, lineno, "volume", parts[2])
        if p <= 0:
            raise CandleDataError(path, lineno, "price must be > 0")
        if q < 0:
            raise CandleDataError(path, lineno, "volume must be >= 0")
        bucket = ts - ts % step
        if cur is not None and cur.bucket == bucket:
            if p > cur.high:
                cur.high = p
            if p < cur.low:
                cur.low = p
            cur.close = p
            cur.volume += q
            continue
        if cur is not None:
            linenos.append(cur.line)
            out.append(cur.candle(symbol, interval_s))
        cur = _Bucket(bucket, lineno, p, q)
    if cur is not None:
        linenos.append(cur.line)
        out.append(cur.candle(symbol, interval_s))
    return linenos, out


def _infer_interval(ts: Sequence[int]) -> int:
    diffs = Counter(b - a for a, b in pairwise(ts) if b > a)
    if not diffs:
        return 60
    # The most common step; ties go to the smallest (a sparse file still has mostly 1-steps).
    best = max(diffs.items(), key=lambda kv: (kv[1], -kv[0]))[0]
    return max(1, best // _NS)


def parse_candles(
    lines: Iterable[str],
    *,
    path: str,
    symbol: str,
    interval_s: int | None = None,
    fmt: str | None = None,
) -> CandleSeries:
    """Parse candle CSV text into a checked :class:`CandleSeries`.

    Args:
        lines: the file's lines (with or without newlines).
        path: the source name used in errors and warnings.
        symbol: the symbol to stamp on every candle.
        interval_s: the candle length; inferred as the most common step between rows when
            None (required for ``kraken_trades``, default 60 there).
        fmt: one of :data:`FORMATS`; detected from the first line when None.

    Returns:
        The candles sorted by time without duplicates, and the warnings.

    Raises:
        CandleDataError: an empty source, an unknown format, or a malformed row.
    """
    # Streamed: the lines are never all held at once (a year of minute rows is 500k lines).
    numbered = ((i, ln.strip()) for i, ln in enumerate(lines, start=1))
    rows = ((i, ln) for i, ln in numbered if ln)
    first = next(rows, None)
    if first is None:
        raise CandleDataError(path, 0, "empty file (no candles)")
    if fmt is None:
        fmt = detect_format(first[1])
        if fmt is None:
            raise CandleDataError(path, first[0], "unknown format: expected the header "
                                  f"{OHLCV_MS_HEADER!r}, 7 columns (Kraken OHLCVT) or 3 "
                                  "columns (Kraken trades)")
    elif fmt not in FORMATS:
        raise ValueError(f"fmt must be one of {FORMATS}, got {fmt!r}")
    body: Iterable[tuple[int, str]] = itertools.chain((first,), rows)
    if fmt == "ohlcv_ms":
        if detect_format(first[1]) == "ohlcv_ms":
            body = rows
        linenos, parsed = _ohlcv_rows(body, path, symbol, interval_s or 0, 1_000_000, 6)
        if not parsed:
            raise CandleDataError(path, 0, "empty file (header only)")
    elif fmt == "kraken_ohlcvt":
        linenos, parsed = _ohlcv_rows(body, path, symbol, interval_s or 0, _NS, 7)
    else:
        linenos, parsed = _trade_rows(body, path, symbol, interval_s or 60)
        interval_s = interval_s or 60
    if not interval_s:
        interval_s = _infer_interval([c.ts_event_ns for c in parsed[:5000]])
        parsed = [_with_interval(c, interval_s) for c in parsed]
    return _check(linenos, parsed, path=path, symbol=symbol, fmt=fmt, interval_s=interval_s)


def _with_interval(c: CandleEvent, interval_s: int) -> CandleEvent:
    return CandleEvent(symbol=c.symbol, interval_s=interval_s, open=c.open, high=c.high,
                       low=c.low, close=c.close, volume=c.volume, ts_event_ns=c.ts_event_ns)


def _check(linenos: array[int], parsed: list[CandleEvent], *, path: str, symbol: str, fmt: str,
           interval_s: int) -> CandleSeries:
    warnings: list[str] = []
    extra = 0

    def warn(text: str) -> None:
        nonlocal extra
        if len(warnings) < MAX_WARNINGS_PER_SOURCE:
            warnings.append(text)
        else:
            extra += 1

    out_of_order = 0
    prev = None
    for lineno, c in zip(linenos, parsed, strict=True):
        if prev is not None and c.ts_event_ns < prev:
            out_of_order += 1
            warn(f"{path}:{lineno}: out of order: {iso_ns(c.ts_event_ns)} after "
                 f"{iso_ns(prev)} (sorted by time)")
        prev = c.ts_event_ns
    if out_of_order:
        order = sorted(range(len(parsed)), key=lambda k: parsed[k].ts_event_ns)  # stable
        linenos = array("q", (linenos[k] for k in order))
        parsed = [parsed[k] for k in order]
    step = interval_s * _NS
    kept: list[CandleEvent] = []
    duplicates = gaps = 0
    last: int | None = None
    last_line = 0
    for lineno, c in zip(linenos, parsed, strict=True):
        ts = c.ts_event_ns
        if last is not None:
            if ts == last:
                duplicates += 1
                warn(f"{path}:{lineno}: duplicate timestamp {iso_ns(ts)} (line {last_line} "
                     "kept)")
                continue
            if ts - last > step:
                gaps += 1
                missing = (ts - last) // step - 1
                warn(f"{path}:{lineno}: gap of {missing} candle(s) of {interval_s}s from "
                     f"{iso_ns(last + step)} to {iso_ns(ts - step)} (not filled)")
        kept.append(c)
        last = ts
        last_line = lineno
    if extra:
        warnings.append(f"{path}: {extra} more warning(s) of the same kinds")
    return CandleSeries(path=path, symbol=symbol, fmt=fmt, interval_s=interval_s,
                        candles=tuple(kept), warnings=tuple(warnings), gaps=gaps,
                        duplicates=duplicates, out_of_order=out_of_order)


def resample(candles: Sequence[CandleEvent], interval_s: int) -> tuple[CandleEvent, ...]:
    """Aggregate time-sorted candles into epoch-aligned buckets of ``interval_s`` seconds.

    Open of the first candle in a bucket, close of the last, max high, min low, summed volume.
    Only buckets with at least one candle are produced (gaps stay gaps).

    Raises:
        ValueError: ``interval_s`` is not a multiple of the candles' own interval.
    """
    if not candles:
        return ()
    src = candles[0].interval_s
    if src <= 0 or interval_s % src:
        raise ValueError(f"cannot resample {src}s candles to {interval_s}s (not a multiple)")
    if interval_s == src:
        return tuple(candles)
    step = interval_s * _NS
    out: list[CandleEvent] = []
    first = candles[0]
    bucket = first.ts_event_ns - first.ts_event_ns % step
    o, h, lo, c, v = first.open, first.high, first.low, first.close, first.volume
    sym = first.symbol
    for k in candles[1:]:
        b = k.ts_event_ns - k.ts_event_ns % step
        if b != bucket:
            out.append(CandleEvent(symbol=sym, interval_s=interval_s, open=o, high=h, low=lo,
                                   close=c, volume=v, ts_event_ns=bucket))
            bucket, o, h, lo, c, v = b, k.open, k.high, k.low, k.close, k.volume
            continue
        if k.high > h:
            h = k.high
        if k.low < lo:
            lo = k.low
        c = k.close
        v += k.volume
    out.append(CandleEvent(symbol=sym, interval_s=interval_s, open=o, high=h, low=lo, close=c,
                           volume=v, ts_event_ns=bucket))
    return tuple(out)


# ----------------------------------------------------------------------------- file names

_QUOTES = ("USDT", "USDC", "USD", "EUR", "GBP", "CAD", "JPY", "CHF", "AUD", "DAI", "XBT", "ETH")
_ASSETS = {"XBT": "BTC", "XDG": "DOGE"}
_BINANCE = re.compile(r"^binance_([A-Z0-9]+)_([A-Z0-9]+)_", re.IGNORECASE)
_KRAKEN = re.compile(r"^kraken_([A-Z0-9]+)_(\d+)$", re.IGNORECASE)
_GENERIC = re.compile(r"^([A-Z0-9]{2,10})_([A-Z0-9]{2,10})(?:[-_.].*)?$")


def _asset(code: str) -> str:
    code = code.upper()
    return _ASSETS.get(code, code)


def symbol_from_name(path: str) -> tuple[str, int | None] | None:
    """``(symbol, interval_s hint)`` from a file name, or None when it tells nothing."""
    stem = Path(path).name.split(".")[0]
    m = _BINANCE.match(stem)
    if m:
        hint = None
        tf = re.search(r"_(\d+)([mhd])_", stem + "_")
        if tf:
            hint = int(tf.group(1)) * {"m": 60, "h": 3600, "d": 86400}[tf.group(2)]
        return f"{_asset(m.group(1))}/{_asset(m.group(2))}", hint
    m = _KRAKEN.match(stem)
    if m:
        alt = m.group(1).upper()
        for q in _QUOTES:
            if alt.endswith(q) and len(alt) > len(q):
                return f"{_asset(alt[: -len(q)])}/{_asset(q)}", int(m.group(2)) * 60
        return None
    m = _GENERIC.match(stem)
    if m:
        return f"{_asset(m.group(1))}/{_asset(m.group(2))}", None
    return None

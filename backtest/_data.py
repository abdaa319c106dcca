"""Loading backtest inputs: files -> symbols -> checked, filtered, resampled candle series.

Symbols come from ``--symbol FILE=BASE/QUOTE`` or the file name:

* ``binance_BTC_USDT_1m_...csv`` -> ``BTC/USDT`` (``binance_<BASE>_<QUOTE>_...``);
* ``kraken_XBTUSD_60.csv`` -> ``BTC/USD`` and ``kraken_ETHXBT_60.csv`` -> ``ETH/BTC`` (Kraken
  altname, quote taken from a known suffix, ``XBT`` is ``BTC`` and ``XDG`` is ``DOGE``; the
  number is the interval in minutes);
* ``BTC_USDT-1m.csv`` (freqtrade style) -> ``BTC/USDT``.

Several files may feed one symbol only if their time ranges do not overlap. Pair metadata for a
backtest is the default :class:`~protocol.instruments.PairInfo` (Kraken's first fee tier, 0.26 %
taker / 0.16 % maker, no order or cost minimum, lot 8 decimals) with ``price_decimals`` the
most decimals the data's prices are written with (first 5,000 candles).

Memory: each file is parsed, then at once stored as :class:`CandleColumns` (~30 bytes a candle
instead of ~450 as objects), so only one file's candle objects exist at a time; the run reads
a :class:`MergedCandles` that rebuilds each candle when the loop reaches it.
"""

from __future__ import annotations

import re
from array import array
from bisect import bisect_left
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any, overload

import numpy as np

from protocol.candles import (
    CandleDataError,
    CandleSeries,
    iso_ns,
    parse_candles,
    resample,
    symbol_from_name,
)
from protocol.instruments import PairInfo
from protocol.messages import CandleEvent
from trading import twin_of

__all__ = ["BacktestInputError", "CandleColumns", "LoadedSymbol", "MergedCandles", "PriceTable",
           "load_inputs", "merge_candles", "pair_for", "symbol_from_name"]

_SYMBOL = re.compile(r"^[A-Z0-9]{1,12}/[A-Z0-9]{1,12}$")
_NS = 1_000_000_000


class BacktestInputError(Exception):
    """Bad backtest input; ``str()`` is the one line shown to the user (exit status 2)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class LoadedSymbol:
    symbol: str
    files: tuple[str, ...]
    interval_s: int
    candles: Sequence[CandleEvent]
    warnings: tuple[str, ...]


def _read(path: str, symbol: str, interval_hint: int | None) -> CandleSeries:
    try:
        with open(path, encoding="utf-8") as fh:
            return parse_candles(fh, path=path, symbol=symbol, interval_s=interval_hint)
    except OSError as exc:
        raise BacktestInputError(f"{path}: cannot read: {exc.strerror or exc}") from exc
    except UnicodeDecodeError as exc:
        raise BacktestInputError(f"{path}: not UTF-8 text") from exc
    except CandleDataError as exc:
        raise BacktestInputError(str(exc)) from exc


def load_inputs(
    paths: Sequence[str],
    *,
    symbols: Mapping[str, str] | None = None,
    timeframe_s: int | None = None,
    start_ns: int | None = None,
    end_ns: int | None = None,
) -> list[LoadedSymbol]:
    """Load, check, merge per symbol, filter to ``[start_ns, end_ns)`` and resample.

    Args:
        paths: the ``--data`` files, in order (this order breaks timestamp ties later).
        symbols: ``--symbol`` overrides, keyed by the path as given or its file name.
        timeframe_s: resample to this interval (a multiple of every file's own).
        start_ns: first candle open time kept (inclusive).
        end_ns: candles opening at or after this are dropped.

    Returns:
        One entry per symbol, in order of first appearance in ``paths``.

    Raises:
        BacktestInputError: unreadable, empty or malformed file, unknown symbol, overlapping
            files for one symbol, mixed intervals, no candle in range, impossible resampling.
    """
    overrides = dict(symbols or {})
    known = set(paths) | {Path(p).name for p in paths}
    for key in overrides:
        if key not in known:
            raise BacktestInputError(f"--symbol {key}=...: {key} is not one of the --data files")
    by_symbol: dict[str, list[_Part]] = {}
    table = PriceTable()
    for path in paths:
        sym = overrides.get(path) or overrides.get(Path(path).name)
        hint: int | None = None
        guessed = symbol_from_name(path)
        if sym is None:
            if guessed is None:
                raise BacktestInputError(f"{path}: unknown symbol: cannot tell the pair from the "
                                         "file name; use --symbol FILE=BASE/QUOTE")
            sym = guessed[0]
        if guessed is not None:
            hint = guessed[1]
        sym = sym.upper()
        if not _SYMBOL.match(sym):
            raise BacktestInputError(f"{path}: unknown symbol {sym!r}: expected BASE/QUOTE")
        series = _read(path, sym, hint)
        # Columns right away: only one file's candle objects exist at a time.
        cols = CandleColumns.from_candles(series.candles, table, symbol=sym,
                                          interval_s=series.interval_s)
        by_symbol.setdefault(sym, []).append(
            _Part(series.path, series.interval_s, cols, series.warnings))
        del series
    out: list[LoadedSymbol] = []
    for sym, group in by_symbol.items():
        seqs = sorted(group, key=lambda s: s.cols.ts[0])
        intervals = {s.interval_s for s in seqs}
        if len(intervals) > 1:
            raise BacktestInputError(f"{sym}: files have different intervals "
                                     f"({', '.join(f'{i}s' for i in sorted(intervals))})")
        warnings: list[str] = []
        prev: _Part | None = None
        for s in seqs:
            t0 = s.cols.ts[0]
            if prev is not None and t0 <= prev.cols.ts[-1]:
                raise BacktestInputError(
                    f"{s.path}: overlaps {prev.path} for {sym} "
                    f"({iso_ns(t0)} <= {iso_ns(prev.cols.ts[-1])})")
            warnings.extend(s.warnings)
            prev = s
        candles = seqs[0].cols if len(seqs) == 1 else CandleColumns.concat([s.cols for s in seqs])
        interval = intervals.pop()
        if start_ns is not None or end_ns is not None:
            lo = bisect_left(candles.ts, start_ns) if start_ns is not None else 0
            hi = bisect_left(candles.ts, end_ns) if end_ns is not None else len(candles)
            candles = candles[lo:hi]
            if not candles:
                raise BacktestInputError(f"{sym}: no candles between --from and --to")
        if timeframe_s is not None and timeframe_s != interval:
            try:
                coarse = resample(candles, timeframe_s)
            except ValueError as exc:
                raise BacktestInputError(f"{sym}: {exc}") from exc
            interval = timeframe_s
            candles = CandleColumns.from_candles(coarse, table, symbol=sym, interval_s=interval)
        out.append(LoadedSymbol(symbol=sym, files=tuple(s.path for s in seqs),
                                interval_s=interval, candles=candles,
                                warnings=tuple(warnings)))
    table.seal()
    return out


@dataclass(frozen=True, slots=True)
class _Part:
    path: str
    interval_s: int
    cols: CandleColumns
    warnings: tuple[str, ...]


def merge_candles(loaded: Sequence[LoadedSymbol]) -> Sequence[CandleEvent]:
    """All candles in (open time, input order).

    Column-stored inputs give a lazy :class:`MergedCandles`; anything else (a sweep's sliced
    tuples) a list, from a stable sort of the concatenated series.
    """
    parts = [ls.candles for ls in loaded]
    if all(isinstance(p, CandleColumns) for p in parts) and 0 < len(parts) < 256:
        return MergedCandles([p for p in parts if isinstance(p, CandleColumns)])
    allc = [c for p in parts for c in p]
    allc.sort(key=lambda c: c.ts_event_ns)
    return allc


def pair_for(symbol: str, candles: Sequence[CandleEvent]) -> PairInfo:
    """Default backtest pair metadata; see the module docstring."""
    base, _, quote = symbol.partition("/")
    decimals = 0
    for c in candles[:5000]:
        for p in (c.open, c.high, c.low, c.close):
            exp = p.as_tuple().exponent
            if isinstance(exp, int) and -exp > decimals:
                decimals = -exp
    return PairInfo(symbol=symbol, base=base, quote=quote, price_decimals=decimals)


# --------------------------------------------------------------------------- compact storage
# A year of minute candles for three symbols is 1.6M CandleEvents: as objects (~450 bytes each
# with their Decimals and timestamp) that is ~700 MB. Loaded series are therefore kept as
# columns (~30 bytes a candle): the open time in an int64 array, the four prices as indexes into
# one table of distinct Decimal prices shared by the whole load, the volume as an int64
# coefficient and an exponent. Candles are rebuilt on access, equal field for field (the same
# Decimal digits and exponent) to the parsed ones, and dropped by the consumer after use.

_NEW = object.__new__
_NO_TICKS = 127  # PriceTable.exp of a price with no integer-tick form
_TICK_LIMIT = 1 << 52  # largest |tick| a column may hold (sums of millions still fit int64)
_POW = {e: Decimal(f"1E{e}") for e in range(-40, 41)}


# Candles are rebuilt through a twin class (see trading._fastinit): ~0.2 us instead of ~1.2.
_Twin = twin_of(CandleEvent)


def _candle(sym: str, iv: int, o: Decimal, h: Decimal, lo: Decimal, c: Decimal, v: Decimal,
            ts: int) -> CandleEvent:
    e: Any = _NEW(_Twin)
    e.symbol = sym
    e.interval_s = iv
    e.open = o
    e.high = h
    e.low = lo
    e.close = c
    e.volume = v
    e.ts_event_ns = ts
    e.ts_recv = 0.0
    e.__class__ = CandleEvent
    return e  # type: ignore[no-any-return]


class PriceTable:
    """The distinct Decimal prices of one load, each stored once (see :class:`CandleColumns`).

    Two prices are the same entry only when their text is the same (``1.10`` and ``1.1`` are
    equal numbers but stay distinct entries, so a rebuilt candle has the file's own digits).
    """

    __slots__ = ("_by_text", "_by_value", "coef", "exp", "flt", "prices")

    def __init__(self) -> None:
        self.prices: list[Decimal] = []
        # Each price as coef * 10**exp (exact), filled at load so a run can turn a column into
        # integer ticks without touching a Decimal (see CandleColumns.close_ticks); a price
        # whose coefficient does not fit 18 digits gets coef 0 and exp 127 (no ticks).
        self.coef: array[int] = array("q")
        self.exp: array[int] = array("b")
        self.flt: array[float] = array("d")  # float(price): screens with a margin, never money
        self._by_value: dict[Decimal, int] = {}  # first entry of each numeric value
        self._by_text: dict[str, int] = {}  # other spellings of a value already present

    def index(self, price: Decimal) -> int:
        """The table index of ``price`` (added when new)."""
        k = self._by_value.get(price)
        if k is None:
            k = self._by_value[price] = len(self.prices)
            self._append(price)
            return k
        known = self.prices[k]
        # compare_total is 0 only for the same sign, digits and exponent (1.1 vs 1.10 is not).
        if known is price or not price.compare_total(known):
            return k
        text = str(price)  # Decimal's str is exact: sign, digits and exponent
        k = self._by_text.get(text)
        if k is None:
            k = self._by_text[text] = len(self.prices)
            self._append(price)
        return k

    def _append(self, price: Decimal) -> None:
        self.prices.append(price)
        self.flt.append(float(price))
        _sign, digits, exp = price.as_tuple()
        if isinstance(exp, int) and -100 <= exp <= 100 and len(digits) <= 18:
            coef = int(price.scaleb(-exp))
            self.coef.append(coef)
            self.exp.append(exp)
        else:
            self.coef.append(0)
            self.exp.append(_NO_TICKS)

    def seal(self) -> None:
        """Drop the lookup dictionaries (the load is done; rebuilding needs only ``prices``)."""
        self._by_value = {}
        self._by_text = {}


class CandleColumns(Sequence[CandleEvent]):
    """One symbol's time-sorted candles in columns; a read-only sequence of CandleEvents.

    Build with :meth:`from_candles`; index, slice and iterate like a tuple (each access builds
    a fresh, equal CandleEvent).
    """

    __slots__ = ("_floats", "_ticks", "c", "h", "interval_s", "lo", "o", "symbol", "table", "ts",
                 "vbig", "vcoef", "vexp")

    def __init__(self, symbol: str, interval_s: int, table: PriceTable) -> None:
        self.symbol = symbol
        self.interval_s = interval_s
        self.table = table
        self.ts: array[int] = array("q")
        self.o: array[int] = array("L")
        self.h: array[int] = array("L")
        self.lo: array[int] = array("L")
        self.c: array[int] = array("L")
        self.vcoef: array[int] = array("q")
        self.vexp: array[int] = array("b")
        self.vbig: dict[int, Decimal] = {}  # row -> volume that does not fit the two columns
        self._ticks: tuple[Any, int] | bool | None = False  # close_ticks(), once complete
        self._floats: dict[str, Any] = {}  # floats(), once complete

    @classmethod
    def from_candles(cls, candles: Iterable[CandleEvent], table: PriceTable, *,
                     symbol: str, interval_s: int) -> CandleColumns:
        """Columns holding ``candles`` (all of ``symbol`` and ``interval_s``, time-sorted)."""
        self = cls(symbol, interval_s, table)
        index = table.index
        ts, o, h, lo, c = self.ts, self.o, self.h, self.lo, self.c
        vcoef, vexp, vbig = self.vcoef, self.vexp, self.vbig
        for row, k in enumerate(candles):
            ts.append(k.ts_event_ns)
            o.append(index(k.open))
            h.append(index(k.high))
            lo.append(index(k.low))
            c.append(index(k.close))
            v = k.volume
            sign, digits, exp = v.as_tuple()
            if (sign or not isinstance(exp, int) or not -40 <= exp <= 40 or len(digits) > 18):
                vbig[row] = v
                vcoef.append(0)
                vexp.append(0)
            else:
                vcoef.append(int(v.scaleb(-exp)))
                vexp.append(exp)
        return self

    @classmethod
    def concat(cls, parts: Sequence[CandleColumns]) -> CandleColumns:
        """One series made of ``parts`` in order (same symbol, interval and table)."""
        first = parts[0]
        self = cls(first.symbol, first.interval_s, first.table)
        for p in parts:
            base = len(self.ts)
            for name in ("ts", "o", "h", "lo", "c", "vcoef", "vexp"):
                getattr(self, name).extend(getattr(p, name))
            self.vbig.update({base + r: v for r, v in p.vbig.items()})
        return self

    def __len__(self) -> int:
        return len(self.ts)

    def close_ticks(self) -> tuple[Any, int] | None:
        """The closes as integer ticks: ``(int64 array, scale)`` with close = tick / 10**scale.

        ``scale`` is the most decimals any close of this series is written with, so every
        tick is exact. None when a close has no such form or a tick would exceed 2**52 (a
        caller then uses the Decimal candles), so kernels can sum millions of ticks in int64.
        Computed once (a run, and every run of a sweep, asks for it; the columns are complete
        once :meth:`from_candles` returns). The array is read-only.
        """
        if self._ticks is False:
            self._ticks = self._close_ticks()
        return self._ticks  # type: ignore[return-value]

    def _close_ticks(self) -> tuple[Any, int] | None:
        if not self.c:
            return None
        idx = np.frombuffer(self.c, dtype=np.uint32 if self.c.itemsize == 4 else np.uint64)
        exp = np.frombuffer(self.table.exp, dtype=np.int8)[idx].astype(np.int64)
        if int(exp.max()) == _NO_TICKS:
            return None
        coef = np.frombuffer(self.table.coef, dtype=np.int64)[idx]
        scale = max(0, -int(exp.min()))
        shift = exp + scale  # >= 0
        top = int(shift.max())
        if top > 18:
            return None
        limit = _TICK_LIMIT // 10**top
        if int(np.abs(coef).max()) >= limit:
            return None
        ticks = coef * np.power(10, shift)
        ticks.flags.writeable = False
        return ticks, scale

    def floats(self, column: str) -> Any:
        """Column ``o``, ``h``, ``lo`` or ``c`` as a float64 NumPy array (screens only).

        Computed once, as :meth:`close_ticks` (every run of a sweep asks); read-only."""
        out = self._floats.get(column)
        if out is None:
            idx = getattr(self, column)
            where = np.frombuffer(idx, dtype=np.uint32 if idx.itemsize == 4 else np.uint64)
            out = np.frombuffer(self.table.flt, dtype=np.float64)[where]
            out.flags.writeable = False
            self._floats[column] = out
        return out

    def _build(self, r: int) -> CandleEvent:
        prices = self.table.prices
        v = self.vbig.get(r) if self.vbig else None
        if v is None:
            v = Decimal(self.vcoef[r]) * _POW[self.vexp[r]]
        # _candle inlined: the candle-skipping loop builds one per event
        e: Any = _NEW(_Twin)
        e.symbol = self.symbol
        e.interval_s = self.interval_s
        e.open = prices[self.o[r]]
        e.high = prices[self.h[r]]
        e.low = prices[self.lo[r]]
        e.close = prices[self.c[r]]
        e.volume = v
        e.ts_event_ns = self.ts[r]
        e.ts_recv = 0.0
        e.__class__ = CandleEvent
        return e  # type: ignore[no-any-return]

    @overload
    def __getitem__(self, k: int) -> CandleEvent: ...

    @overload
    def __getitem__(self, k: slice) -> CandleColumns: ...

    def __getitem__(self, k: int | slice) -> CandleEvent | CandleColumns:
        n = len(self.ts)
        if isinstance(k, slice):
            start, stop, stride = k.indices(n)
            if stride != 1:
                raise ValueError("CandleColumns slices take no step")
            out = CandleColumns(self.symbol, self.interval_s, self.table)
            for name in ("ts", "o", "h", "lo", "c", "vcoef", "vexp"):
                setattr(out, name, getattr(self, name)[start:stop])
            out.vbig = {r - start: v for r, v in self.vbig.items() if start <= r < stop}
            return out
        if k < 0:
            k += n
        if not 0 <= k < n:
            raise IndexError("candle index out of range")
        return self._build(k)

    def __iter__(self) -> Iterator[CandleEvent]:
        if self.vbig:  # rare (a volume beyond 18 digits): the plain path
            for r in range(len(self.ts)):
                yield self._build(r)
            return
        prices = self.table.prices
        sym, iv = self.symbol, self.interval_s
        new, twin, ce, pw, dec = _NEW, _Twin, CandleEvent, _POW, Decimal
        for t, o, h, lo, c, vc, ve in zip(self.ts, self.o, self.h, self.lo, self.c, self.vcoef,
                                          self.vexp, strict=True):
            e: Any = new(twin)
            e.symbol = sym
            e.interval_s = iv
            e.open = prices[o]
            e.high = prices[h]
            e.low = prices[lo]
            e.close = prices[c]
            e.volume = dec(vc) * pw[ve]
            e.ts_event_ns = t
            e.ts_recv = 0.0
            e.__class__ = ce
            yield e


class MergedCandles(Sequence[CandleEvent]):
    """Several :class:`CandleColumns` merged in (open time, part order), built lazily.

    The merge order is two small columns (part, row); candles are rebuilt on access.
    """

    __slots__ = ("parts", "rows", "which")

    def __init__(self, parts: Sequence[CandleColumns]) -> None:
        self.parts = list(parts)
        # A stable sort of the concatenated open times: the parts are concatenated in part
        # order and each is time-sorted, so ties keep part order, as (time, part) wants.
        ts = np.concatenate([np.frombuffer(p.ts, dtype=np.int64) for p in self.parts])
        part = np.concatenate([np.full(len(p), i, dtype=np.uint8)
                               for i, p in enumerate(self.parts)])
        starts = np.cumsum([0] + [len(p) for p in self.parts[:-1]])
        order = (np.arange(len(ts)) if len(self.parts) == 1 and bool(np.all(ts[1:] >= ts[:-1]))
                 else np.argsort(ts, kind="stable"))
        which = part[order]
        self.which: array[int] = array("B")
        self.which.frombytes(which.tobytes())
        self.rows: array[int] = array("L")
        self.rows.frombytes((order - starts[which]).astype(np.dtype("L")).tobytes())

    def __len__(self) -> int:
        return len(self.which)

    @overload
    def __getitem__(self, k: int) -> CandleEvent: ...

    @overload
    def __getitem__(self, k: slice) -> list[CandleEvent]: ...

    def __getitem__(self, k: int | slice) -> CandleEvent | list[CandleEvent]:
        if isinstance(k, slice):
            return [self[i] for i in range(*k.indices(len(self.which)))]
        if k < 0:
            k += len(self.which)
        if not 0 <= k < len(self.which):
            raise IndexError("candle index out of range")
        return self.parts[self.which[k]]._build(self.rows[k])

    def __iter__(self) -> Iterator[CandleEvent]:
        nexts = [iter(p).__next__ for p in self.parts]
        for i in self.which:
            yield nexts[i]()

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
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

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

__all__ = ["BacktestInputError", "LoadedSymbol", "load_inputs", "pair_for", "symbol_from_name"]

_SYMBOL = re.compile(r"^[A-Z0-9]{1,12}/[A-Z0-9]{1,12}$")
_NS = 1_000_000_000


class BacktestInputError(Exception):
    """Bad backtest input; ``str()`` is the one line shown to the user (exit status 2)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class LoadedSymbol:
    symbol: str
    files: tuple[str, ...]
    interval_s: int
    candles: tuple[CandleEvent, ...]
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
    by_symbol: dict[str, list[CandleSeries]] = {}
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
        by_symbol.setdefault(sym, []).append(series)
    out: list[LoadedSymbol] = []
    for sym, group in by_symbol.items():
        seqs = sorted(group, key=lambda s: s.candles[0].ts_event_ns)
        intervals = {s.interval_s for s in seqs}
        if len(intervals) > 1:
            raise BacktestInputError(f"{sym}: files have different intervals "
                                     f"({', '.join(f'{i}s' for i in sorted(intervals))})")
        candles: list[CandleEvent] = []
        warnings: list[str] = []
        prev: CandleSeries | None = None
        for s in seqs:
            c0 = s.candles[0]
            if prev is not None and c0.ts_event_ns <= prev.candles[-1].ts_event_ns:
                raise BacktestInputError(
                    f"{s.path}: overlaps {prev.path} for {sym} "
                    f"({iso_ns(c0.ts_event_ns)} <= {iso_ns(prev.candles[-1].ts_event_ns)})")
            candles.extend(s.candles)
            warnings.extend(s.warnings)
            prev = s
        interval = intervals.pop()
        if start_ns is not None or end_ns is not None:
            lo = start_ns if start_ns is not None else -1
            hi = end_ns if end_ns is not None else 1 << 80
            candles = [c for c in candles if lo <= c.ts_event_ns < hi]
            if not candles:
                raise BacktestInputError(f"{sym}: no candles between --from and --to")
        result: Sequence[CandleEvent] = candles
        if timeframe_s is not None and timeframe_s != interval:
            try:
                result = resample(candles, timeframe_s)
            except ValueError as exc:
                raise BacktestInputError(f"{sym}: {exc}") from exc
            interval = timeframe_s
        out.append(LoadedSymbol(symbol=sym, files=tuple(s.path for s in seqs),
                                interval_s=interval, candles=tuple(result),
                                warnings=tuple(warnings)))
    return out


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

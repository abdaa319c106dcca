"""The candle-skipping loop's view of its input: the merged columns as NumPy arrays, and the
read-only views its kernels get (``trading.strategies.History`` and ``BookTimeline``).

Private to ``backtest._kernel_loop`` (see its docstring for the loop itself).
"""

from __future__ import annotations

from array import array
from bisect import bisect_right
from collections.abc import Sequence
from decimal import Decimal
from typing import Any

import numpy as np

from protocol.messages import CandleEvent
from trading.strategies import CandleKernel

from ._data import CandleColumns, MergedCandles

__all__ = ["History", "KernelInput", "Timeline", "kernel_input", "plain_array", "positions"]


class KernelInput:
    """The merged columns as NumPy arrays: per part its merged positions and close ticks."""

    __slots__ = ("_latest", "n", "parts", "pos", "pos_np", "rows", "ticks", "ts", "which")

    def __init__(self, merged: MergedCandles,
                 ticks: Sequence[tuple[Any, int]]) -> None:
        self.parts: list[CandleColumns] = merged.parts
        self.which = merged.which
        which = np.frombuffer(merged.which, dtype=np.uint8)
        self.n = len(which)
        self.rows = merged.rows
        # pos[i][row] = the merged position of part i's row (parts are time-sorted, and the
        # merge keeps each part's order, so these are increasing).
        self.pos_np = [np.flatnonzero(which == i) for i in range(len(self.parts))]
        # The same as plain arrays: bisect on them costs a fraction of a NumPy call.
        self.pos: list[array[int]] = []
        for where in self.pos_np:
            a = array("q")
            a.frombytes(where.astype(np.int64).tobytes())
            self.pos.append(a)
        self.ticks = list(ticks)
        ts = np.empty(self.n, dtype=np.int64)
        for i, p in enumerate(self.parts):
            ts[self.pos_np[i]] = np.frombuffer(p.ts, dtype=np.int64)
        self.ts = ts
        self._latest: dict[int, Any] = {}

    def latest_rows(self, i: int) -> Any:
        """int32 array over the merged positions: part ``i``'s last row at or before each
        (-1 before its first); built once (the stop search and the book screens read it)."""
        latest = self._latest.get(i)
        if latest is None:
            lat = np.full(self.n, -1, dtype=np.int32)
            where = self.pos_np[i]
            lat[where] = np.arange(len(where), dtype=np.int32)
            latest = np.maximum.accumulate(lat)
            if len(self.parts) * self.n <= 1 << 24:  # kept up to 64 MB
                self._latest[i] = latest
        return latest


def kernel_input(candles: Sequence[CandleEvent]) -> KernelInput | None:
    """The kernel view of ``candles``, or None when it has none (not the column store, a
    symbol split across parts, or a close with no integer-tick form)."""
    if not isinstance(candles, MergedCandles) or not len(candles):
        return None
    symbols = [p.symbol for p in candles.parts]
    if len(set(symbols)) != len(symbols):
        return None
    ticks = []
    for p in candles.parts:
        t = p.close_ticks()
        if t is None:
            return None
        ticks.append(t)
    return KernelInput(candles, ticks)


class History:
    """:class:`trading.strategies.History` over the columns, at the loop's current position."""

    __slots__ = ("at", "inp", "part_of", "sources", "ts_recv")

    def __init__(self, inp: KernelInput) -> None:
        self.inp = inp
        self.at = 0
        self.ts_recv = 0.0  # the column store's candles carry no receive time
        self.part_of = {p.symbol: i for i, p in enumerate(inp.parts)}
        firsts = sorted(range(len(inp.parts)), key=lambda i: inp.pos[i][0])
        self.sources = [(inp.parts[i].symbol, inp.pos[i], inp.parts[i].table.prices,
                         inp.parts[i].c) for i in firsts]

    def closes(self, symbol: str, lo: int, hi: int) -> list[Decimal]:
        part = self.inp.parts[self.part_of[symbol]]
        prices, c = part.table.prices, part.c
        return [prices[c[r]] for r in range(lo, hi)]

    def closes_at(self, positions: Sequence[int]) -> list[Decimal]:
        inp = self.inp
        parts, which, rows = inp.parts, inp.which, inp.rows
        out = []
        for at in positions:
            part = parts[which[at]]
            out.append(part.table.prices[part.c[rows[at]]])
        return out

    def latest_closes(self) -> list[tuple[str, Decimal]]:
        return self.latest_closes_at(self.at)

    def latest_closes_at(self, at: int) -> list[tuple[str, Decimal]]:
        out = []
        for sym, pos, prices, c in self.sources:
            r = bisect_right(pos, at) - 1
            if r >= 0:
                out.append((sym, prices[c[r]]))
        return out


class Timeline:
    """:class:`trading.strategies.BookTimeline` over the kernel input."""

    def __init__(self, inp: KernelInput, bid_mult: Decimal, ask_mult: Decimal) -> None:
        self.n = inp.n
        self._inp = inp
        self._part_of = {p.symbol: i for i, p in enumerate(inp.parts)}
        self._bid = float(bid_mult)
        self._ask = float(ask_mult)
        self._which = np.frombuffer(inp.which, dtype=np.uint8)

    def has(self, symbol: str) -> bool:
        return symbol in self._part_of

    def latest_tops(self, symbol: str) -> tuple[Any, Any]:
        i = self._part_of[symbol]
        close = self._inp.parts[i].floats("c")
        latest = self._inp.latest_rows(i)  # (-1 before the first row)
        vals = np.where(latest >= 0, close[np.maximum(latest, 0)], np.nan)
        return vals * self._bid, vals * self._ask

    def is_symbol(self, symbols: Any) -> Any:
        chosen = np.zeros(256, dtype=bool)  # a lookup table: which parts are ``symbols``
        chosen[[self._part_of[s] for s in symbols if s in self._part_of]] = True
        return chosen[self._which]


def plain_array(code: str, values: Any) -> array[Any]:
    """A NumPy column as a plain array ("d" float64, "q" int64, "i" int32): one element read
    from Python costs a fraction of a NumPy scalar's, and bisect on it is cheap."""
    out = array(code)
    dtype = {"d": np.float64, "q": np.int64, "i": np.int32}[code]
    out.frombytes(np.ascontiguousarray(values, dtype=dtype).tobytes())
    return out


def positions(where: Any) -> array[int]:
    """An int64 NumPy array as a plain array (bisect on it is cheap)."""
    return plain_array("q", where)


def first_reach(lows: Any, highs: Any, r: int, lo: float, hi: float) -> int | None:
    """The first row from ``r`` whose low is at or below ``lo`` or whose high is at or above
    ``hi`` (NumPy float columns), searched in growing slices; None if none does."""
    n = len(lows)
    k = 1024  # most stops are found within a thousand rows: one slice (NumPy costs per call)
    while r < n:
        e = min(n, r + k)
        hit = (lows[r:e] <= lo) | (highs[r:e] >= hi)
        first = int(hit.argmax())
        if hit[first]:
            return r + first
        r, k = e, k * 4
    return None


def block_maxima(values: Any, block: int) -> tuple[list[int], list[float]]:
    """Per block of ``block`` rows of a float column: the row of its maximum and the maximum."""
    pad = (-len(values)) % block
    grid = np.concatenate((values, np.full(pad, -np.inf))).reshape(-1, block)
    arg = grid.argmax(axis=1)
    return (arg + np.arange(len(grid)) * block).tolist(), grid.max(axis=1).tolist()


Gate = tuple[int, int, "array[int]", "array[int]"]  # (kernel index, part, entries, exits)


def kernel_gates(inp: KernelInput, kernels: Sequence[CandleKernel],
                 symbols: Sequence[frozenset[str]]) -> tuple[list[Gate], bool]:
    """Every (candle kernel, part) with candidates: its entry and exit rows as merged
    positions; and whether every close of the run is positive.

    With every close positive each decision observes exactly the latest closes, so the entries
    of a pair that no symbol of the run can size (the kernel's ``never_sized``) are decisions
    of nothing: they are left out (ETH/BTC with a USD notional and no BTC/USD in the run).
    """
    positive = all(bool((ticks > 0).all()) for ticks, _ in inp.ticks)
    run_symbols = frozenset(p.symbol for p in inp.parts)
    gates: list[Gate] = []
    for k, kernel in enumerate(kernels):
        never = getattr(kernel, "never_sized", None) if positive else None
        for i, part in enumerate(inp.parts):
            if part.symbol not in symbols[k]:
                continue
            ticks, scale = inp.ticks[i]
            ins, outs = kernel.candidates(part.symbol, ticks, scale)
            if never is not None and never(part.symbol, run_symbols):
                ins = ins[:0]
            ins = np.asarray(ins, dtype=np.int64)
            outs = np.asarray(outs, dtype=np.int64)
            if len(ins) or len(outs):
                gates.append((k, i, positions(inp.pos_np[i][ins]),
                              positions(inp.pos_np[i][outs])))
    return gates, positive

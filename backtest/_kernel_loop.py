"""The fast path's candle-skipping loop: visit only the candles where something can happen.

:class:`~backtest._engine.FastEngine` runs this loop instead of its per-candle loop when every
strategy offers a candle kernel (``trading.strategies._kernel``) and the input is the column
store. The events of the run, merged by position in the (open time, input order) sequence:

* **equity samples**, at the first candle of each sample period (before that candle, marking
  every symbol at its last close before it: what the per-candle loop does);
* **executions** of orders waiting for a symbol's next open (the next candle of that symbol
  after the decision);
* **kernel candidates**: the rows each strategy named from its close column, in strategy order
  at equal positions, where the strategy's decision code runs on the candle.

Every other candle changes nothing the per-candle loop would have used: no order waits for it,
no sample falls before it, and the strategies said in advance that they cannot act on it. The
per-candle and kernel loops give byte-identical trade logs (``tests/test_backtest_kernels.py``).
Candles are built only at events, from the columns.
"""

from __future__ import annotations

import heapq
from array import array
from bisect import bisect_left, bisect_right
from collections.abc import Callable, Sequence
from decimal import Decimal
from functools import partial
from typing import TYPE_CHECKING, Any

import numpy as np

from protocol.messages import CandleEvent
from trading.strategies import CandleKernel

from ._data import CandleColumns, MergedCandles

if TYPE_CHECKING:
    from ._engine import FastEngine

__all__ = ["KernelInput", "kernel_input", "run_kernels"]

_NS = 1_000_000_000


class KernelInput:
    """The merged columns as NumPy arrays: per part its merged positions and close ticks."""

    __slots__ = ("n", "parts", "pos", "pos_np", "rows", "ticks", "ts")

    def __init__(self, merged: MergedCandles,
                 ticks: Sequence[tuple[Any, int]]) -> None:
        self.parts: list[CandleColumns] = merged.parts
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


class _History:
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

    def latest_closes(self) -> list[tuple[str, Decimal]]:
        at = self.at
        out = []
        for sym, pos, prices, c in self.sources:
            r = bisect_right(pos, at) - 1
            if r >= 0:
                out.append((sym, prices[c[r]]))
        return out


def run_kernels(engine: FastEngine, inp: KernelInput, kernels: Sequence[CandleKernel],
                symbols: Sequence[frozenset[str]], progress: Callable[[int], None] | None,
                progress_every: int) -> None:
    """Run ``engine`` over ``inp`` visiting only its events (see the module docstring).

    ``symbols[k]`` are the symbols kernel ``k``'s strategy trades.
    """
    out = engine.out
    parts, pos_of, rows = inp.parts, inp.pos, inp.rows
    n = inp.n
    # Candidates of every kernel, ordered by (merged position, strategy order).
    cpos, cstrat, cpart, crow = [], [], [], []
    for k, kernel in enumerate(kernels):
        for i, part in enumerate(parts):
            if part.symbol not in symbols[k]:
                continue
            ticks, scale = inp.ticks[i]
            r = np.asarray(kernel.candidates(part.symbol, ticks, scale), dtype=np.int64)
            if len(r):
                cpos.append(inp.pos_np[i][r])
                crow.append(r)
                cstrat.append(np.full(len(r), k, dtype=np.int64))
                cpart.append(np.full(len(r), i, dtype=np.int64))
    if cpos:
        allpos = np.concatenate(cpos)
        allstrat = np.concatenate(cstrat)
        order = np.lexsort((allstrat, allpos))
        c_pos = allpos[order].tolist()
        c_strat = allstrat[order].tolist()
        c_part = np.concatenate(cpart)[order].tolist()
        c_row = np.concatenate(crow)[order].tolist()
    else:
        c_pos = c_strat = c_part = c_row = []
    step = engine._interval_ns
    bucket = inp.ts // step
    bounds = np.flatnonzero(bucket[1:] != bucket[:-1]) + 1
    s_pos = bounds.tolist()
    s_ts = (bucket[bounds] * step).tolist()

    history = _History(inp)
    pending = engine._pending
    part_of = history.part_of
    scheduled: set[str] = set()
    heap: list[tuple[int, int]] = []  # (merged position of the next open, part)
    queue = engine._queue
    acts = [k.act for k in kernels]
    last = out.last_candles
    firsts = sorted(range(len(parts)), key=lambda i: pos_of[i][0])

    def schedule(at: int) -> None:
        # Orders queued at position ``at`` execute at their symbol's next candle after it.
        for sym in pending:
            if sym not in scheduled:
                i = part_of[sym]
                k = bisect_right(pos_of[i], at)
                if k < len(pos_of[i]):
                    heapq.heappush(heap, (pos_of[i][k], i))
                    scheduled.add(sym)

    # The samples' marks: each symbol's last close before the sample, in order of first
    # appearance (the per-candle loop's out.last_candles order); the candles themselves are
    # built once, at the end.
    closes: dict[str, Decimal] = {}
    sources = history.sources

    def mark_before(at: int) -> None:
        for sym, pos, prices, c in sources:
            r = bisect_left(pos, at) - 1
            if r >= 0:
                closes[sym] = prices[c[r]]

    engine._sample(int(inp.ts[0]), closes)
    inf = n + 1
    si = ci = 0
    ns, nc = len(s_pos), len(c_pos)
    next_report = progress_every if progress is not None else inf
    while True:
        sp = s_pos[si] if si < ns else inf
        cp = c_pos[ci] if ci < nc else inf
        hp = heap[0][0] if heap else inf
        m = sp if sp < cp else cp
        if hp < m:
            m = hp
        if m == inf:
            break
        if sp == m:  # a sample comes before the candle at its position
            mark_before(m)
            engine._sample(s_ts[si], closes)
            si += 1
            if progress is not None and m >= next_report:
                progress(m)
                next_report = m + progress_every
            continue
        if hp == m:
            _, i = heapq.heappop(heap)
            part = parts[i]
            scheduled.discard(part.symbol)
            row = rows[m]
            engine._execute_open(part.table.prices[part.o[row]], part.ts[row],
                                 pending.pop(part.symbol), partial(part._build, row))
            if engine._resting:
                raise RuntimeError("a limit order rests in the candle-skipping loop; the "
                                   "kernel strategies emit market orders only")
            if pending:
                schedule(m)
            continue
        part = parts[c_part[ci]]
        row = c_row[ci]
        history.at = m
        sym = part.symbol
        sigs = acts[c_strat[ci]](sym, row, part.table.prices[part.c[row]], history)
        ci += 1
        if sigs:
            queue(sigs, part.ts[row] / _NS)
            if pending:
                if len(pending) == 1 and sym in pending and sym not in scheduled:
                    # the usual case: this symbol's orders, for its next row
                    i = c_part[ci - 1]
                    if row + 1 < len(pos_of[i]):
                        heapq.heappush(heap, (pos_of[i][row + 1], i))
                        scheduled.add(sym)
                else:
                    schedule(m)
    out.candles = n
    if progress is not None:
        progress(n)
    for i in firsts:
        last[parts[i].symbol] = parts[i]._build(len(pos_of[i]) - 1)
    mark_before(n)
    final = max(range(len(parts)), key=lambda i: int(pos_of[i][-1]))
    end_ts = int(inp.ts[-1]) + parts[final].interval_s * _NS
    for sym, orders in pending.items():
        out.warnings.append(f"{len(orders)} order(s) on {sym} decided on the last candle "
                            "never filled (no next candle)")
    engine._sample(end_ts, closes)

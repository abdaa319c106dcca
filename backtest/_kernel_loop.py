"""The fast path's candle-skipping loop: visit only the candles where something can happen.

:class:`~backtest._engine.FastEngine` runs this loop instead of its per-candle loop when every
strategy offers a candle kernel (``trading.strategies._kernel``) and the input is the column
store. The events of the run, merged by position in the (open time, input order) sequence:

* **equity samples**, at the first candle of each sample period (before that candle, marking
  every symbol at its last close before it: what the per-candle loop does);
* **executions** of orders waiting for a symbol's next open (the next candle of that symbol
  after the decision);
* **kernel candidates**: the rows each candle strategy named from its close column (its entry
  rows while it does not hold the symbol, its exit rows while it does), then the positions each
  book strategy (arbitrage) named from the synthetic books' timeline, in strategy order at
  equal positions, where the strategy's decision code runs;
* with the risk engine on, **stop triggers**: for each long position that can exit, the next
  candle whose range reaches its stop-loss or take-profit level (searched in the low/high
  columns with a float margin, so a superset), where the per-candle risk step runs exactly.

Every other candle changes nothing the per-candle loop would have used: no order waits for it,
no sample falls before it, and the strategies and the risk engine said in advance that they
cannot act on it. What such a candle *does* change is the portfolio's mark, hence possibly its
high-water mark (the drawdown limit reads it): before each event the marks are brought up to
date (:meth:`_Run.sync`), and the candles skipped since the last event are marked one by one,
through the per-candle risk step (stop probes included), unless an upper bound of the equity
over them (each symbol at its highest high there, :meth:`Portfolio.equity_bound`) stays below
the high-water mark, in which case none of them could have moved it. The per-candle and kernel
loops give byte-identical trade logs, equity curves and rejections
(``tests/test_backtest_kernels.py``);
``Portfolio.max_drawdown`` (a paper-mode figure; backtest reports measure drawdown on the
equity samples) is the one thing not tracked across skipped candles.
Candles and books are built only at events, from the columns.

After the breaker trips (latched for the rest of a backtest) every strategy signal is refused
and nothing reads the drawdown: the portfolio stops tracking it, an event of candle-strategy
visits alone skips the risk step, and once every keeper refuses with only order-bound intents
in flight (and every close is positive), the candidates up to the next execution or stop
trigger are taken symbol by symbol in runs (``drain``), the refusals being all they yield
(counted a run at once by the kernels that offer ``refused_signals``)
(``tests/test_backtest_kernels_random.py`` holds both loops to the same output on random
markets with exits after a trip).
"""

from __future__ import annotations

import heapq
from array import array
from bisect import bisect_left, bisect_right
from collections.abc import Callable, Sequence
from decimal import Decimal
from functools import partial
from typing import TYPE_CHECKING

import numpy as np

from protocol.messages import BookEvent
from trading.strategies import BookKernel, CandleKernel

from ._kernel_input import (
    History,
    KernelInput,
    Timeline,
    block_maxima,
    first_reach,
    kernel_gates,
    plain_array,
)

if TYPE_CHECKING:
    from ._engine import FastEngine

from ._synthetic import synthetic_book as _synthetic_book

__all__ = ["run_kernels"]

_NS = 1_000_000_000


_ONE = Decimal(1)
_BLOCK = 32  # rows per block of the close maxima behind the equity bound
_STOP_MARGIN = 1e-9  # the stop search's float room: it may visit a candle too many, never miss
_SHORT = 4  # fewer skipped candles than this are marked one by one (cheaper than the bound)
_LATEST_MAX = 1 << 24  # entries of _Run.latest (4 bytes each: 64 MB)


class _Run:
    """One kernel run; see the module docstring. Private to :func:`run_kernels`."""

    def __init__(self, engine: FastEngine, inp: KernelInput) -> None:
        self.engine = engine
        self.inp = inp
        self.pf = engine._pf
        self.risk = engine._risk
        self.limits = engine._limits
        self.parts = inp.parts
        self.syms = [p.symbol for p in inp.parts]
        self.synced = -1  # the candles up to here have been marked
        self.rows = inp.rows
        self.which = inp.which
        self.prices = [p.table.prices for p in inp.parts]
        self.cidx = [p.c for p in inp.parts]
        self.hidx = [p.h for p in inp.parts]
        self.firsts = sorted(range(len(inp.parts)), key=lambda i: inp.pos[i][0])
        self.book_cache: dict[int, tuple[int, BookEvent]] = {}
        if self.risk is not None:
            self._prepare_risk()

    # ------------------------------------------------------------------ marks

    def _prepare_risk(self) -> None:
        self.lows = [p.floats("lo") for p in self.parts]  # NumPy: the stop search's slices
        self.highs = [p.floats("h") for p in self.parts]
        # the same as plain arrays: one element read from Python costs a fraction
        self.low_at = [plain_array("d", x) for x in self.lows]
        self.high_at = [plain_array("d", x) for x in self.highs]
        self.first_at = [pos[0] for pos in self.inp.pos]  # each part's first merged position
        # latest[i][p]: the row of part i's last candle at or before merged position p (-1
        # before its first), what sync() would bisect for at every event; 4 bytes per symbol
        # and candle, so only up to _LATEST_MAX entries (else bisect, None here)
        self.latest: list[array[int]] | None = None
        if len(self.parts) * self.inp.n <= _LATEST_MAX:
            self.latest = [plain_array("i", self.inp.latest_rows(i))
                           for i in range(len(self.parts))]
        # highs, not closes: a stop probe marks a candle's high too (see _mark_each)
        blocks = [block_maxima(p.floats("h"), _BLOCK) for p in self.parts]
        self.block_row: list[list[int]] = [rows for rows, _ in blocks]
        self.block_max: list[list[float]] = [maxima for _, maxima in blocks]
        self.stop_key: list[tuple[Decimal, Decimal | None, bool, Decimal]] = [
            (Decimal(0), None, False, Decimal(0)) for _ in self.parts]
        self.stop_version = [0] * len(self.parts)
        self.stop_state: tuple[int, tuple[str, ...]] = (-1, ())
        self.bands: list[tuple[float, float] | None] = [None] * len(self.parts)
        self.levels: list[tuple[Decimal, Decimal, bool] | None] = [None] * len(self.parts)
        self.can_exit = [False] * len(self.parts)
        self.stops: list[tuple[int, int, int]] = []  # (position, part, version)

    def sync(self, upto: int) -> None:
        """Mark every candle up to position ``upto`` as the per-candle loop would have."""
        a = self.synced + 1
        if upto < a:
            return
        pf = self.pf
        tracking = pf.tracks_drawdown  # off once the breaker latched: no mark can matter then
        if tracking and upto - a < _SHORT:
            self._mark_each(a, upto)
            return
        if tracking and any(a <= first <= upto for first in self.first_at):
            # A symbol's first candle in the gap can switch a rate to marks the bound below
            # does not raise (``relevant`` is the marks read before it): mark each candle.
            self._mark_each(a, upto)
            return
        self.synced = upto
        latest = self.latest
        if latest is not None:
            before = [t[a - 1] for t in latest] if a else [-1] * len(latest)
            last = [t[upto] for t in latest]
        else:
            before = [bisect_left(p, a) - 1 for p in self.inp.pos]
            last = [bisect_right(p, upto) - 1 for p in self.inp.pos]
        relevant = pf.relevant_symbols() if tracking else None
        if relevant:
            highs: dict[str, Decimal] = {}
            for i, sym in enumerate(self.syms):
                if sym in relevant:
                    r0 = before[i] + 1
                    r1 = last[i]
                    if r0 <= r1:
                        bm = self.block_max[i]
                        b = max(range(r0 // _BLOCK, r1 // _BLOCK + 1), key=bm.__getitem__)
                        highs[sym] = self.prices[i][self.hidx[i][self.block_row[i][b]]]
            hwm = pf.high_water_usd
            bound = pf.equity_bound(highs) if highs else None
            if highs and (bound is None or hwm is None
                          or bound * _BOUND_ROOM > hwm):
                self._mark_each(a, upto)
                return
        for i in self.firsts:
            r = last[i]
            if r > before[i]:  # a candle of part i in the gap
                pf.mark(self.syms[i], self.prices[i][self.cidx[i][r]])

    def _mark_each(self, a: int, upto: int) -> None:
        # The per-candle risk step on each candle (a position's candles may carry stop probes,
        # which mark the low and the high); no exit can come out of it here: the candles where
        # one could are stop triggers, visited as events.
        for p in range(a, upto + 1):
            self.risk_step(p)

    def risk_step(self, m: int) -> None:
        """The per-candle risk step on the candle at ``m`` (exits queue like any signal)."""
        i = self.which[m]
        row = self.rows[m]
        band = self.bands[i]
        if band is None or (self.low_at[i][row] > band[0] and self.high_at[i][row] < band[1]):
            # flat, or the candle stays inside the probe window: the step only marks the close
            self.pf.mark(self.syms[i], self.prices[i][self.cidx[i][row]])
        elif self.can_exit[i]:
            self.engine._risk_candle(self.risk, self.parts[i]._build(row))  # type: ignore[arg-type]
        else:
            # No exit can come out (see refresh_stops): the step is its marks, the probes'
            # (adverse extreme first) when the range reaches a level, exactly as
            # stop_probe_prices decides, then the close.
            prices, part, sym = self.prices[i], self.parts[i], self.syms[i]
            lo, hi = prices[part.lo[row]], prices[part.h[row]]
            stop_lo, stop_hi, long = self.levels[i]  # type: ignore[misc]
            if lo <= stop_lo or hi >= stop_hi:
                self.pf.mark(sym, lo if long else hi)
                self.pf.mark(sym, hi if long else lo)
            self.pf.mark(sym, prices[self.cidx[i][row]])
        self.synced = m

    # ------------------------------------------------------------------ stops

    def refresh_stops(self, m: int, retry: set[int]) -> None:
        """Re-search the next stop candle of every position that changed (or was visited).

        Only a long position with no exit in flight can emit an exit (spot: a negative
        per-symbol position is an arbitrage leg, never covered); the other positions' probe
        marks are the business of :meth:`sync`. Every open position also gets its probe window
        (``bands``): a candle strictly inside it shows the risk step no probe and no level.
        """
        assert self.limits is not None and self.risk is not None
        exiting = self.risk._pending_exit
        state = (len(self.engine.out.fills), tuple(exiting))
        if state == self.stop_state and not retry:
            return  # positions and exits in flight change only with fills and exit orders
        self.stop_state = state
        pf, limits = self.pf, self.limits
        pairs = self.engine._pairs
        for i, sym in enumerate(self.syms):
            qty = pf.position_qty(sym)
            pair = pairs[sym]
            # what RiskEngine.on_market could sell: the balance may move with another
            # symbol's fills (the same base currency)
            sellable = pair.round_qty(min(qty, pf.balance(pair.base))) if qty > 0 else qty
            key = (qty, pf.avg_entry(sym), sym in exiting, sellable)
            if key == self.stop_key[i] and i not in retry:
                continue
            self.stop_key[i] = key
            self.stop_version[i] += 1
            qty, avg, pending_exit, sellable = key
            if not qty or avg is None:
                self.bands[i] = None
                continue
            # stop_probe_prices' levels, computed the same way
            if qty > 0:
                lo = avg * (_ONE - limits.stop_loss_pct)
                hi = avg * (_ONE + limits.take_profit_pct)
            else:
                lo = avg * (_ONE - limits.take_profit_pct)
                hi = avg * (_ONE + limits.stop_loss_pct)
            band = (float(lo) * (1 + _STOP_MARGIN), float(hi) * (1 - _STOP_MARGIN))
            self.bands[i] = band
            self.levels[i] = (lo, hi, qty > 0)
            self.can_exit[i] = not (qty < 0 or pending_exit or sellable <= 0)
            if not self.can_exit[i]:
                continue  # no exit can come out of the risk step (RiskEngine.on_market)
            pos = self.inp.pos[i]
            r = first_reach(self.lows[i], self.highs[i], bisect_right(pos, m), *band)
            if r is not None:
                heapq.heappush(self.stops, (pos[r], i, self.stop_version[i]))

    # ------------------------------------------------------------------ books

    def books_at(self, m: int) -> dict[str, BookEvent]:
        """The latest synthetic book of every symbol at position ``m`` (the engine's books)."""
        eng = self.engine
        books = eng._books
        pos = self.inp.pos
        for i in self.firsts:
            r = bisect_right(pos[i], m) - 1
            if r < 0:
                continue
            cached = self.book_cache.get(i)
            if cached is None or cached[0] != r:
                # one object per candle, as the per-candle loop builds: the matcher tracks the
                # depth taken from a book by its identity
                c = self.parts[i]._build(r)
                close = c.close
                book = _synthetic_book(c, close * eng._bid_mult, close * eng._ask_mult,
                                       c.volume)
                self.book_cache[i] = (r, book)
                books[c.symbol] = book
        return books


_BOUND_ROOM = Decimal("1.000000000001")


def run_kernels(engine: FastEngine, inp: KernelInput, kernels: Sequence[CandleKernel],
                symbols: Sequence[frozenset[str]], book_kernels: Sequence[BookKernel],
                progress: Callable[[int], None] | None, progress_every: int) -> None:
    """Run ``engine`` over ``inp`` visiting only its events (see the module docstring).

    ``symbols[k]`` are the symbols candle kernel ``k``'s strategy trades; the book kernels
    act after the candle kernels at a shared position, as the per-candle loop's step 5.
    """
    out = engine.out
    parts, pos_of, rows = inp.parts, inp.pos, inp.rows
    n = inp.n
    run = _Run(engine, inp)
    risk = engine._risk
    # Candle kernels: per (kernel, part) its entry and exit positions, one of them active
    # (kernel.holds), the next active position of each waiting in a heap keyed by (position,
    # strategy order); a holding change bumps the version, leaving stale entries to skip.
    gates, positive = kernel_gates(inp, kernels, symbols)
    holding = [kernels[k].holds(parts[i].symbol) for k, i, _, _ in gates]
    gate_version = [0] * len(gates)
    cands: list[tuple[int, int, int, int]] = []  # (position, kernel, gate, version)

    def arm(g: int, start: int) -> None:
        # the gate's next active position at or after ``start``
        k, _, ins, outs = gates[g]
        active = outs if holding[g] else ins
        j = bisect_left(active, start)
        if j < len(active):
            heapq.heappush(cands, (active[j], k, g, gate_version[g]))

    # each part's gates: a position moves only with fills of its symbol
    gates_of = [[g for g, gate in enumerate(gates) if gate[1] == i] for i in range(len(parts))]

    def regate(start: int, waiting: list[int], part: int | None = None) -> None:
        # After fills (all of ``part``'s symbol, if given): a gate whose holding changed
        # switches row sets (its armed entry goes stale); ``waiting`` gates (decided on this
        # symbol's previous row, see below) arm now.
        for g in range(len(gates)) if part is None else gates_of[part]:
            k, i, _, _ = gates[g]
            now = kernels[k].holds(parts[i].symbol)
            if now != holding[g]:
                holding[g] = now
                gate_version[g] += 1
                if g not in waiting:
                    arm(g, start)
        for g in waiting:
            arm(g, start)

    started = max(run.first_at) if risk is not None else 0  # every symbol has a candle
    # A close <= 0 is no sample: sizing keeps the rate it saw last, which the visiting order
    # would decide, so the runs below need every close positive.
    if not positive:
        started = n + 1

    def commute(kernel: CandleKernel) -> bool:
        check = getattr(kernel, "refusals_commute", None)
        return check is not None and bool(check())

    def drain(barrier: int) -> None:
        # Every candidate before ``barrier`` (the next execution or stop trigger: nothing
        # before it can change a holding), gate after gate. After a trip every signal is
        # refused and changes no strategy state, samples and book visits read none, and sizing
        # re-observes the closes at its own row once every symbol has started: so the counts
        # and every later decision are those of the time-ordered visits.
        while cands[0][0] < barrier:
            at, k, g, version = heapq.heappop(cands)
            if version != gate_version[g]:
                continue
            _, i, ins, outs = gates[g]
            active = outs if holding[g] else ins
            j = bisect_left(active, at)
            part = parts[i]
            sym, prices, cidx, ts = part.symbol, part.table.prices, part.c, part.ts
            count = counts[k]
            if count is not None and sym not in pending:
                # the run's refusals counted at once (each visit's signals are its groups)
                e = bisect_left(active, barrier, j)
                run_at = active[j:e]
                refused = count(sym, run_at, history)
                if refused:
                    rejections["breaker_open"] = rejections.get("breaker_open", 0) + refused
                if e < len(active):
                    heapq.heappush(cands, (active[e], k, g, gate_version[g]))
                continue
            act = acts[k]
            while True:
                row = rows[at]
                history.at = at
                sigs = act(sym, row, prices[cidx[row]], history)
                if sigs:
                    queue(sigs, ts[row] / _NS)
                if sym in pending:
                    deferred.setdefault(i, []).append(g)
                    break
                j += 1
                if j == len(active) or active[j] >= barrier:
                    if j < len(active):
                        heapq.heappush(cands, (active[j], k, g, gate_version[g]))
                    break
                at = active[j]

    # A gate whose visit queued orders for its symbol arms again only after they execute, at
    # the symbol's next row (no row of it comes between): its holding may change there, and
    # an entry armed meanwhile would only go stale.
    deferred: dict[int, list[int]] = {}

    for g in range(len(gates)):
        arm(g, 0)
    # Book kernels: their positions, ordered by (position, strategy order).
    cpos, cstrat = [], []
    if book_kernels:
        timeline = Timeline(inp, engine._bid_mult, engine._ask_mult)
        for k, bk in enumerate(book_kernels):
            where = np.asarray(bk.candidates(timeline), dtype=np.int64)
            cpos.append(where)
            cstrat.append(np.full(len(where), k, dtype=np.int64))
    if cpos:
        allpos = np.concatenate(cpos)
        allstrat = np.concatenate(cstrat)
        order = np.lexsort((allstrat, allpos))
        c_pos = allpos[order].tolist()
        c_strat = allstrat[order].tolist()
    else:
        c_pos = c_strat = []
    step = engine._interval_ns
    bucket = inp.ts // step
    bounds = np.flatnonzero(bucket[1:] != bucket[:-1]) + 1
    s_pos = bounds.tolist()
    s_ts = (bucket[bounds] * step).tolist()

    history = History(inp)
    pending = engine._pending
    part_of = history.part_of
    scheduled: set[str] = set()
    heap: list[tuple[int, int]] = []  # (merged position of the next open, part)
    queue = engine._queue
    acts = [k.act for k in kernels]
    # a kernel's refusals over a run of candidates, counted without visiting each (None: visit)
    counts = [getattr(k, "refused_signals", None) for k in kernels]
    rejections = out.risk_rejections
    book_acts = [k.act for k in book_kernels]
    last = out.last_candles
    firsts = run.firsts
    stops = run.stops if risk is not None else []  # (the loop adds a sentinel)
    versions = run.stop_version if risk is not None else []
    retry: set[int] = set()

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
    next_report = progress_every if progress is not None else inf
    fills = out.fills
    # Sentinels at "never" end every stream, so the loop reads their heads unconditionally.
    s_pos.append(inf)
    c_pos.append(inf)
    heapq.heappush(cands, (inf, 0, 0, 0))
    heapq.heappush(heap, (inf, 0))
    if risk is None:
        stops = []
    heapq.heappush(stops, (inf, 0, 0))
    while True:
        m = sp = s_pos[si]
        gp = cands[0][0]
        if gp < m:
            m = gp
        cp = c_pos[ci]
        if cp < m:
            m = cp
        hp = heap[0][0]
        if hp < m:
            m = hp
        tp = stops[0][0]
        if tp < m:
            m = tp
        if m == inf:
            break
        # After a trip (latched for the run) an event of candle-strategy visits alone needs
        # no risk step: the strategies read no mark, their signals are refused without one,
        # no exit can come out of this candle (it is no stop trigger), and the next event's
        # sync brings the marks up to date (nothing tracks each candle's any more).
        riskless = risk is None or (engine._breaker is not None and gp == m and sp != m
                                    and hp != m and tp != m and cp != m)
        if risk is not None and riskless and m >= started and pending.keys() <= scheduled \
                and all(commute(kernel) for kernel in kernels):
            drain(min(hp, tp))
            continue
        if not riskless:
            run.sync(m - 1)
        if sp == m:  # a sample comes before the candle at its position
            mark_before(m)
            engine._sample(s_ts[si], closes)
            si += 1
            if progress is not None and m >= next_report:
                progress(m)
                next_report = m + progress_every
            if gp != m and cp != m and hp != m and tp != m:
                continue
        if hp == m:
            _, i = heapq.heappop(heap)
            part = parts[i]
            scheduled.discard(part.symbol)
            row = rows[m]
            seen = len(fills)
            engine._execute_open(part.table.prices[part.o[row]], part.ts[row],
                                 pending.pop(part.symbol), partial(part._build, row))
            if engine._resting:
                raise RuntimeError("a limit order rests in the candle-skipping loop; the "
                                   "kernel strategies emit market orders only")
            waiting = deferred.pop(i, [])
            if len(fills) != seen:
                regate(m, waiting, i)  # this candle's decisions see the new holdings
                if risk is not None:
                    run.refresh_stops(m, retry)  # and its risk step the new position
            else:
                for g in waiting:
                    arm(g, m)
                if risk is not None:
                    # a refused exit is no longer in flight: this candle's step may emit it
                    run.refresh_stops(m, retry)
        if not riskless:
            while stops[0][0] == m:
                _, i, version = heapq.heappop(stops)
                if version == versions[i]:
                    retry.add(i)  # visited: look for the next one after it
            run.risk_step(m)
            if pending:
                schedule(m)
        if cands[0][0] != m and cp != m:  # (an execution above may have armed a gate at m)
            if not riskless:
                run.refresh_stops(m, retry)
                retry.clear()
            continue
        i = run.which[m]
        part = parts[i]
        sym = part.symbol
        row = rows[m]
        while cands[0][0] == m:
            _, k, g, version = heapq.heappop(cands)
            if version != gate_version[g]:
                continue
            history.at = m
            sigs = acts[k](sym, row, part.table.prices[part.c[row]], history)
            if sigs:
                queue(sigs, part.ts[row] / _NS)
            if sym in pending:
                deferred.setdefault(i, []).append(g)
            else:
                arm(g, m + 1)
            if sigs and pending:
                if len(pending) == 1 and sym in pending and sym not in scheduled:
                    # the usual case: this symbol's orders, for its next row
                    if row + 1 < len(pos_of[i]):
                        heapq.heappush(heap, (pos_of[i][row + 1], i))
                        scheduled.add(sym)
                else:
                    schedule(m)
        while c_pos[ci] == m:
            k = c_strat[ci]
            ci += 1
            seen = len(fills)
            sigs = book_acts[k](sym, run.books_at(m))
            if sigs:
                engine._book_signals(sigs, part.ts[row] / _NS)
                if pending:
                    schedule(m)
            if len(fills) != seen:
                regate(m + 1, [])
        if not riskless:
            run.refresh_stops(m, retry)
            retry.clear()
    if risk is not None:
        run.sync(n - 1)
    out.candles = n
    if progress is not None:
        progress(n)
    for i in firsts:
        last[parts[i].symbol] = parts[i]._build(len(pos_of[i]) - 1)
    mark_before(n)
    final = max(range(len(parts)), key=lambda i: pos_of[i][-1])
    end_ts = int(inp.ts[-1]) + parts[final].interval_s * _NS
    for sym, orders in pending.items():
        out.warnings.append(f"{len(orders)} order(s) on {sym} decided on the last candle "
                            "never filled (no next candle)")
    engine._sample(end_ts, closes)

"""``--engine actors``: the real actor tree in virtual time, with the fast path's fills.

The strategy, risk and executor actors of paper trading (``actors/``) run unchanged under
``trio.testing.MockClock(autojump_threshold=0)``; only the edges are swapped (SUPERVISION.md §7):
one replay task stands in for the feeds and :class:`~backtest._candle_broker.CandleBroker`
(the fast loop's candle fill rules) for the PaperBroker::

    replay (the single sequencer) ──candles──> executor (CandleBroker) ─fills─> risk, strategies
        │  ├──probes + candles──> risk actor ──orders──> executor
        │  ├──candles──> candle strategy actors ──signals──> (held by the replay)
        │  └──close books──> executor, book strategy actors ──signals──> (held by the replay)
        └── forwards held signals, one approval unit at a time, in strategy order ──> risk

Why it produces the fast path's trade log byte for byte:

* **One source of order.** Candles are emitted in the fast loop's (open time, input order);
  the clock sleeps to each candle's open time (virtual seconds since the first candle).
* **Each candle is fully processed before the next.** After each stage the replay waits for
  ``trio.testing.wait_all_tasks_blocked()`` (every actor idle, every channel empty). Stages
  mirror the loop: (1) the executor executes the symbol's next-open orders and resting limits
  (a separate stage only when the broker has work for the symbol, since the stop-loss probes
  read the ledger after those fills); (2) risk, every strategy and the executor receive the
  candle and the synthetic close book concurrently; (3) the replay forwards the strategies'
  signals to risk in the loop's order (candle strategies in run order, then book strategies),
  one approval unit (signal or arbitrage group) at a time, waiting after each, and after each
  book-strategy unit the unwinds the executor planned, one signal at a time. Strategies only
  read their own state and their event, so running them concurrently cannot change what they
  emit; approvals (and so client order ids), submissions and fills happen in the loop's order.
* **Timers come from the replay.** Equity samples, and the daily-loss / drawdown halt check,
  run at the fast loop's sample times, between candles, with the actors idle. The risk actor's
  own timer and its check after every fill are switched off here (see
  :class:`_SampledRiskActor`): they would trip the breaker at other instants than the loop.
* Lossless plain memory channels (no conflating fan-out), no threads, no I/O, no randomness,
  no supervisor (a crash fails the run instead of restarting a strategy with fresh state).

``--no-risk-limits`` replaces the risk actor with :class:`_BypassGate`, the loop's bypass.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from decimal import Decimal
from typing import Any

import trio
import trio.testing

from actors._breaker import CircuitBreaker
from actors.executor import ExecutorActor
from actors.risk import Feedback, OrderCommand, RiskActor
from actors.strategy import StrategyActor
from protocol.instruments import PairInfo
from protocol.messages import (
    CandleEvent,
    Fill,
    MarketEvent,
    OrderEvent,
    OrderRejected,
    OrderRequest,
    RiskRejection,
    Side,
    Signal,
    TradeEvent,
    signal_groups,
)
from trading import ClientOrderIds, Portfolio, RiskEngine, RiskLimits
from trading.strategies import Arbitrage, Strategy

from ._candle_broker import CandleBroker
from ._engine import EngineOutput, close_book, sample_equity, stop_probe_prices

__all__ = ["ActorEngine"]

_NS = 1_000_000_000
_DAY_NS = 86_400 * _NS
_ZERO = Decimal(0)
_BPS = Decimal(10_000)

Batch = tuple[Signal, ...]


def _channel() -> tuple[trio.MemorySendChannel[Any], trio.MemoryReceiveChannel[Any]]:
    # Unbounded: the replay bounds the work in flight to one candle, and a bounded buffer could
    # deadlock the risk <-> executor loop (each blocked sending to the other).
    return trio.open_memory_channel[Any](math.inf)


class _SampledRiskActor(RiskActor):
    """The risk actor whose halt checks come from the replay's equity samples.

    Live, the actor checks the daily-loss and drawdown limits after every fill and on a timer.
    The fast loop checks them at its equity samples; to reproduce it, the replay runs the check
    at the same samples (SUPERVISION.md §7.2: timers come from the replay) and this subclass
    leaves it to the replay. Everything else (approvals, exits, ledger, breaker -> cancel all)
    is the unchanged actor.
    """

    def _check_halt(self) -> None:
        return None


class _BypassGate:
    """``--no-risk-limits``: every signal becomes an order; fills go straight to the ledger.

    The fast loop's bypass (``FastEngine._approve`` without a risk engine), as an actor with the
    risk actor's channels.
    """

    def __init__(self, portfolio: Portfolio, pairs: Mapping[str, PairInfo],
                 ids: ClientOrderIds, *, signals: trio.abc.ReceiveChannel[Batch],
                 order_events: trio.abc.ReceiveChannel[OrderEvent],
                 orders: trio.abc.SendChannel[OrderCommand]) -> None:
        self._pf = portfolio
        self._pairs = dict(pairs)
        self._ids = ids
        self._signals = signals
        self._order_events = order_events
        self._orders = orders

    async def run(self, *, task_status: trio.TaskStatus[Any] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._signal_loop)
            nursery.start_soon(self._order_event_loop)
            task_status.started()

    async def _signal_loop(self) -> None:
        async for batch in self._signals:
            await self._orders.send(tuple(OrderRequest(
                client_order_id=self._ids.next(), strategy=s.strategy, symbol=s.symbol,
                side=s.side, qty=s.qty, order_type=s.order_type, limit_price=s.limit_price,
                ts_recv=s.ts_recv, group_id=s.group_id, group_size=s.group_size,
                reduce_only=s.reduce_only) for s in batch))

    async def _order_event_loop(self) -> None:
        async for event in self._order_events:
            if isinstance(event, Fill):
                self._pf.apply_fill(event, self._pairs[event.symbol])


class ActorEngine:
    """One backtest run through the actor tree; same arguments as ``FastEngine``.

    Args:
        strategies: the strategies, in call order (one actor each).
        pairs: pair metadata by symbol.
        portfolio: the ledger, holding the initial balances.
        risk_limits: the limits, or None to bypass the risk actor (``--no-risk-limits``).
        slippage_bps: slippage applied to next-open fills.
        spread_bps: full spread of the synthetic books for book-driven strategies.
        equity_interval_s: equity sampling period.
        benchmark_units: base units per symbol held by the buy-and-hold benchmark.
        benchmark_cash: cash the benchmark keeps (not invested).
    """

    def __init__(
        self,
        strategies: Sequence[Strategy],
        pairs: Mapping[str, PairInfo],
        portfolio: Portfolio,
        *,
        risk_limits: RiskLimits | None,
        slippage_bps: Decimal = _ZERO,
        spread_bps: Decimal = Decimal(2),
        equity_interval_s: int = 3600,
        benchmark_units: Mapping[str, Decimal] | None = None,
        benchmark_cash: Decimal = _ZERO,
    ) -> None:
        self._strategies = list(strategies)
        self._pairs = dict(pairs)
        self._pf = portfolio
        self._limits = risk_limits
        self._slippage = slippage_bps
        half = spread_bps / 2 / _BPS
        self._bid_mult = 1 - half
        self._ask_mult = 1 + half
        self._interval_ns = equity_interval_s * _NS
        self._bench_units = dict(benchmark_units or {})
        self._bench_cash = benchmark_cash
        self._first_open: dict[str, Decimal] = {}
        self.out = EngineOutput()
        self.published = 0  # market events the replay delivered (candles, probes, books)

    def set_first_opens(self, opens: Mapping[str, Decimal]) -> None:
        """The first open of each symbol (the benchmark's value before the first close)."""
        self._first_open = dict(opens)

    def run(self, candles: Sequence[CandleEvent]) -> EngineOutput:
        """Run the tree over time-ordered ``candles`` in virtual time and return the output."""
        if candles:
            trio.run(self._main, candles,
                     clock=trio.testing.MockClock(autojump_threshold=0))
        return self.out

    # ------------------------------------------------------------------ the tree

    async def _main(self, candles: Sequence[CandleEvent]) -> None:
        pf, pairs = self._pf, self._pairs
        ids = ClientOrderIds("bt")
        breaker = CircuitBreaker("trading", latching=True)
        self._breaker = breaker
        self._engine = (RiskEngine(self._limits, pf, pairs, ids)
                        if self._limits is not None else None)
        book_names = [s.name for s in self._strategies if isinstance(s, Arbitrage)]
        self._broker = broker = CandleBroker(
            pairs, pf.balances(), immediate=book_names,
            halted=lambda: breaker.is_open, slippage_bps=self._slippage)

        exec_market = _channel()
        risk_market = _channel()
        signals = _channel()        # replay -> risk (one approval unit per message)
        unwinds = _channel()        # executor -> replay (unwind plans, re-sequenced)
        orders = _channel()
        order_events = _channel()
        events = _channel()
        feedback = {s.name: _channel() for s in self._strategies}
        fb_send: dict[str, trio.abc.SendChannel[Feedback]] = {
            n: c[0] for n, c in feedback.items()}
        self._exec_market, self._risk_market = exec_market[0], risk_market[0]
        self._signals, self._unwinds = signals[0], unwinds[1]

        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._sink, events[1])
            if self._engine is not None:
                gate: Any = _SampledRiskActor(
                    self._engine, breaker, signals=signals[1], market=risk_market[1],
                    order_events=order_events[1], orders=orders[0], feedback=fb_send,
                    events=events[0], halt_check_interval=math.inf)
            else:
                gate = _BypassGate(pf, pairs, ids, signals=signals[1],
                                   order_events=order_events[1], orders=orders[0])
            await nursery.start(gate.run)
            await nursery.start(ExecutorActor(
                broker, orders=orders[1], market=exec_market[1], order_events=order_events[0],
                feedback=fb_send, signals=unwinds[0], events=events[0], pairs=pairs).run)
            self._candle_lanes: list[tuple[trio.MemorySendChannel[MarketEvent],
                                           trio.MemoryReceiveChannel[Batch]]] = []
            self._book_lanes: list[tuple[trio.MemorySendChannel[MarketEvent],
                                         trio.MemoryReceiveChannel[Batch]]] = []
            for strat in self._strategies:
                market, held = _channel(), _channel()
                await nursery.start(StrategyActor(
                    strat, market=market[1], feedback=feedback[strat.name][1],
                    signals=held[0]).run)
                lanes = self._book_lanes if isinstance(strat, Arbitrage) else self._candle_lanes
                lanes.append((market[0], held[1]))
            await self._replay(candles)
            nursery.cancel_scope.cancel()

    async def _sink(self, events: trio.MemoryReceiveChannel[Any]) -> None:
        """What the loop's output records: fills in execution order, rejection counts."""
        out = self.out
        async for ev in events:
            if isinstance(ev, Fill):
                out.fills.append(ev)
            elif isinstance(ev, OrderRejected):
                out.order_rejections[ev.reason] = out.order_rejections.get(ev.reason, 0) + 1
            elif isinstance(ev, RiskRejection):
                out.risk_rejections[ev.reason] = out.risk_rejections.get(ev.reason, 0) + 1

    # ------------------------------------------------------------------ the replay

    async def _replay(self, candles: Sequence[CandleEvent]) -> None:
        settle = trio.testing.wait_all_tasks_blocked
        out = self.out
        last = out.last_candles
        broker = self._broker
        exec_send = self._exec_market.send_nowait
        risk_send = self._risk_market.send_nowait if self._engine is not None else None
        candle_lanes, book_lanes = self._candle_lanes, self._book_lanes
        pf, limits = self._pf, self._limits
        step = self._interval_ns
        first_ts = candles[0].ts_event_ns
        await self._sample(first_ts)
        next_sample = first_ts - first_ts % step + step
        clock_ts = first_ts
        published = 0
        for c in candles:
            ts = c.ts_event_ns
            if ts != clock_ts:
                # Virtual time = seconds since the first candle's open; the autojump clock
                # moves there as soon as every actor is idle.
                await trio.sleep_until((ts - first_ts) / _NS)
                clock_ts = ts
            if ts >= next_sample:
                await self._sample(ts - ts % step)
                next_sample = ts - ts % step + step
            sym = c.symbol
            exec_send(c)
            published += 1
            if broker.has_work(sym):
                await settle()  # next-open and resting fills reach the ledger first
            last[sym] = c
            if risk_send is not None:
                probes = stop_probe_prices(pf, limits, c)
                if probes is not None:
                    for price in probes:
                        risk_send(TradeEvent(symbol=sym, side=Side.BUY, price=price, qty=_ZERO,
                                             ts_event_ns=ts))
                        published += 1
                risk_send(c)
                published += 1
            for send, _ in candle_lanes:
                send.send_nowait(c)
                published += 1
            if book_lanes:
                book = close_book(c, self._bid_mult, self._ask_mult)
                exec_send(book)
                published += 1
                for send, _ in book_lanes:
                    send.send_nowait(book)
                    published += 1
            await settle()
            for _, held in candle_lanes:
                await self._forward(held, unwinds=False)
            for _, held in book_lanes:
                await self._forward(held, unwinds=True)
        out.candles = len(candles)
        self.published = published
        for sym, n in broker.pending().items():
            out.warnings.append(f"{n} order(s) on {sym} decided on the last candle never filled "
                                "(no next candle)")
        await self._sample(candles[-1].ts_event_ns + candles[-1].interval_s * _NS)

    async def _forward(self, held: trio.MemoryReceiveChannel[Batch], *, unwinds: bool) -> None:
        """Send one strategy's held signals to risk, one approval unit at a time."""
        settle = trio.testing.wait_all_tasks_blocked
        while True:
            try:
                batch = held.receive_nowait()
            except trio.WouldBlock:
                return
            for group in signal_groups(batch):
                await self._signals.send(tuple(group))
                await settle()
                if unwinds:
                    await self._forward_unwinds()

    async def _forward_unwinds(self) -> None:
        # The loop approves and executes an unwind plan one signal at a time.
        settle = trio.testing.wait_all_tasks_blocked
        while True:
            try:
                plan = self._unwinds.receive_nowait()
            except trio.WouldBlock:
                return
            for sig in plan:
                await self._signals.send((sig,))
                await settle()

    async def _sample(self, ts: int) -> None:
        sample_equity(self.out, self._pf, ts, self._bench_units, self._bench_cash,
                      self._first_open)
        engine = self._engine
        if engine is not None and not self._breaker.is_open:
            reason = engine.check_halt(utc_day=ts // _DAY_NS)
            if reason is not None:
                self.out.warnings.append(f"circuit breaker tripped ({reason}) at sample {ts}: "
                                         "no new orders for the rest of the run")
                # The risk actor sees the breaker open and has the executor cancel everything.
                self._breaker.trip(reason, latch=True)
                await trio.testing.wait_all_tasks_blocked()

"""``--engine actors``: the real actor tree in virtual time, with the fast path's fills.

The strategy, risk and executor actors of paper trading (``actors/``) run unchanged under
``trio.testing.MockClock(autojump_threshold=0)``; only the edges are swapped (SUPERVISION.md §7):
one replay task stands in for the feeds and :class:`~backtest._candle_broker.CandleBroker`
(the fast loop's candle fill rules) for the PaperBroker::

    replay (the single sequencer) ──candles with fills due──> executor (CandleBroker)
        │  ├──probes + candles──> risk actor ──orders──> executor ─fills─> risk, strategies
        │  ├──candles──> candle strategy actors ──signals──┐
        │  └──close books──> book strategy actors ──signals──┴─> held (one tagged mailbox)
        └── forwards held signals, one approval unit at a time, in strategy order ──> risk

Why it produces the fast path's trade log byte for byte:

* **One source of order.** Candles are emitted in the fast loop's (open time, input order);
  virtual time is each candle's open (seconds since the first candle).
* **Each candle is fully processed before the next.** After each stage the replay waits for
  ``trio.testing.wait_all_tasks_blocked()`` (every actor idle, every channel empty). Stages
  mirror the loop: (1) the executor executes the symbol's next-open orders and the resting
  limits the candle's range crosses (a separate stage, since the stop-loss probes read the
  ledger after those fills); (2) risk and every strategy receive the candle (book strategies
  the synthetic close book) concurrently; (3) the replay forwards the strategies' signals to
  risk in the loop's order (candle strategies in run order, then book strategies), one
  approval unit (signal or arbitrage group) at a time, waiting after each, and after each
  book-strategy unit the unwinds the executor planned, one signal at a time. Strategies only
  read their own state and their event, so running them concurrently cannot change what they
  emit; approvals (and so client order ids), submissions and fills happen in the loop's order.
* **Timers come from the replay.** Equity samples, and the daily-loss / drawdown halt check,
  run at the fast loop's sample times, between candles, with the actors idle. The risk actor's
  own timer and its check after every fill are switched off here (see
  ``RiskActor(halt_checks=False)``): they would trip the breaker at other instants than the
  loop.
* Lossless, unbounded lanes (no conflating fan-out), no threads, no I/O, no randomness, no
  supervisor (a crash fails the run instead of restarting a strategy with fresh state).

What it does not spend time on (each is a no-op by construction, and the replay checks it):

* A candle that fills nothing (no order waits for its open, no resting limit of its symbol
  lies strictly inside its range; :meth:`CandleBroker.has_work`) and the synthetic books are
  not delivered to the executor: its market loop would turn them into no event at all. The
  replay makes the broker call in place (the broker's clock and latest book move the same way)
  and fails the run if that call ever returns an event.
* Between timestamps the replay jumps the mock clock itself when no timer is due before the
  next candle (what autojump would do, the same float arithmetic) instead of sleeping, which
  costs the scheduler two idle passes; a due timer is honoured by sleeping.
* The strategies' signals go to one list, tagged with the strategy's place, not one channel
  per strategy that the replay would poll after every candle.
* Market events travel from the replay to each actor through a :class:`_Mailbox` (one sender,
  one receiver, a deque and the parked task), not a general trio memory channel; the other
  edges (signals, orders, order events, feedback) stay memory channels. ``market_lanes=
  "memory"`` switches the lanes back (same trade log, tested; the bench prints both).

Per candle this leaves the minimum a lock-step replay can do: one scheduler pass for the
replay and one in which risk and each strategy take one step (``bench/bench_backtest_actors.py``
prints task steps and passes per candle).

``--no-risk-limits`` replaces the risk actor with :class:`_BypassGate`, the loop's bypass.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from decimal import Decimal
from typing import Any

import outcome
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
from trading.strategies import Arbitrage, Strategy, quiet

from ._candle_broker import CandleBroker
from ._engine import EngineOutput, close_book, sample_equity, stop_probe_prices

__all__ = ["ActorEngine"]

_NS = 1_000_000_000
_DAY_NS = 86_400 * _NS
_ZERO = Decimal(0)
_BPS = Decimal(10_000)

Batch = tuple[Signal, ...]


def _place(item: tuple[int, Batch]) -> int:
    return item[0]


MarketLane = tuple[Callable[[MarketEvent], None], trio.abc.ReceiveChannel[MarketEvent]]


def _channel() -> tuple[trio.MemorySendChannel[Any], trio.MemoryReceiveChannel[Any]]:
    # Unbounded: the replay bounds the work in flight to one candle, and a bounded buffer could
    # deadlock the risk <-> executor loop (each blocked sending to the other).
    return trio.open_memory_channel[Any](math.inf)


def _market_lane(kind: str) -> MarketLane:
    """The replay's ``send_nowait`` and the actor's receive end of one market-data lane."""
    if kind == "mailbox":
        box = _Mailbox()
        return box.send_nowait, box
    send, recv = _channel()
    return send.send_nowait, recv


class _Mailbox(trio.abc.ReceiveChannel[MarketEvent]):
    """A replay -> actor market-data lane: one sender (the replay), one receiver, lossless.

    The replay's market lanes need none of a memory channel's generality (several senders and
    receivers, a bound and back-pressure, clones, statistics); what remains is a deque and the
    one parked receiver, woken with the event itself. The receiver sees a memory channel's
    semantics: ``receive`` is a checkpoint, FIFO, cancellable while parked, and the replay's
    ``send_nowait`` never blocks (unbounded, as the memory channels here). Live, market data
    reaches the strategies through ``actors._channels.FanOut``, also its own channel type;
    ``ActorEngine(market_lanes="memory")`` runs the lanes on trio memory channels instead
    (the same trade log; the bench measures both).
    """

    def __init__(self) -> None:
        self._queue: deque[MarketEvent] = deque()
        self._waiter: trio.lowlevel.Task | None = None
        self._closed = False

    def send_nowait(self, event: MarketEvent) -> None:
        if self._closed:
            raise trio.BrokenResourceError("the receiving actor closed its market lane")
        waiter = self._waiter
        if waiter is not None:
            self._waiter = None
            trio.lowlevel.reschedule(waiter, outcome.Value(event))
        else:
            self._queue.append(event)

    def _abort(self, _: trio.lowlevel.RaiseCancelT) -> trio.lowlevel.Abort:
        self._waiter = None
        return trio.lowlevel.Abort.SUCCEEDED

    async def receive(self) -> MarketEvent:
        if self._closed:
            raise trio.ClosedResourceError
        if self._queue:
            await trio.lowlevel.checkpoint_if_cancelled()
            event = self._queue.popleft()
            await trio.lowlevel.cancel_shielded_checkpoint()
            return event
        if self._waiter is not None:
            raise trio.BusyResourceError("a market lane has one receiver")
        self._waiter = trio.lowlevel.current_task()
        woken: MarketEvent = await trio.lowlevel.wait_task_rescheduled(self._abort)
        return woken

    # ``async for`` straight into receive: ReceiveChannel.__anext__ adds a coroutine frame per
    # event only to turn EndOfChannel (which this lane never raises) into StopAsyncIteration
    __anext__ = receive

    async def aclose(self) -> None:
        self._closed = True
        await trio.lowlevel.checkpoint()


class _SignalBox(trio.abc.SendChannel[Batch]):
    """A strategy actor's signal output: the replay's held-signal mailbox, tagged.

    Each strategy sends through its own box, which tags the batch with the strategy's place in
    the loop's order (candle strategies in run order, then book strategies) and appends it to
    the one list all boxes share, so the replay can restore the loop's order although the
    actors run concurrently. ``send`` is a checkpoint like a memory channel's; the list is
    unbounded for the same reason as every channel here (the replay bounds the work in flight
    to one candle) and is drained by the replay after every candle.
    """

    def __init__(self, place: int, held: list[tuple[int, Batch]]) -> None:
        self._place = place
        self._held = held

    async def send(self, value: Batch) -> None:
        await trio.lowlevel.checkpoint_if_cancelled()
        self._held.append((self._place, value))
        await trio.lowlevel.cancel_shielded_checkpoint()

    async def aclose(self) -> None:
        await trio.lowlevel.checkpoint()


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
        strategies: the strategies, in call order (one actor each); their ``explain``, where
            they have one, is turned off.
        pairs: pair metadata by symbol.
        portfolio: the ledger, holding the initial balances.
        risk_limits: the limits, or None to bypass the risk actor (``--no-risk-limits``).
        slippage_bps: slippage applied to next-open fills.
        spread_bps: full spread of the synthetic books for book-driven strategies.
        equity_interval_s: equity sampling period.
        benchmark_units: base units per symbol held by the buy-and-hold benchmark.
        benchmark_cash: cash the benchmark keeps (not invested).
        market_lanes: what carries market events from the replay to the actors: ``"mailbox"``
            (:class:`_Mailbox`, the default) or ``"memory"`` (trio memory channels, as every
            other edge here). Both give the same run; the mailbox is cheaper per event.
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
        market_lanes: str = "mailbox",
    ) -> None:
        if market_lanes not in ("mailbox", "memory"):
            raise ValueError(f"market_lanes must be 'mailbox' or 'memory', not {market_lanes!r}")
        self._lane_kind = market_lanes
        self._strategies = list(strategies)
        quiet(self._strategies)  # as the fast path: a backtest reads no reason
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
        # What the replay published: market events (candles, stop probes, synthetic books),
        # each counted once, and deliveries (one per actor mailbox an event went to).
        self.published = 0
        self.deliveries = 0

    def set_first_opens(self, opens: Mapping[str, Decimal]) -> None:
        """The first open of each symbol (the benchmark's value before the first close)."""
        self._first_open = dict(opens)

    def run(self, candles: Sequence[CandleEvent]) -> EngineOutput:
        """Run the tree over time-ordered ``candles`` in virtual time and return the output."""
        if candles:
            self._clock = trio.testing.MockClock(autojump_threshold=0)
            trio.run(self._main, candles, clock=self._clock)
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

        lane = self._lane_kind
        exec_send, exec_market = _market_lane(lane)
        risk_send, risk_market = _market_lane(lane)
        signals = _channel()        # replay -> risk (one approval unit per message)
        unwinds = _channel()        # executor -> replay (unwind plans, re-sequenced)
        orders = _channel()
        order_events = _channel()
        events = _channel()
        feedback = {s.name: _channel() for s in self._strategies}
        fb_send: dict[str, trio.abc.SendChannel[Feedback]] = {
            n: c[0] for n, c in feedback.items()}
        self._exec_send, self._risk_send = exec_send, risk_send
        self._signals, self._unwinds = signals[0], unwinds[1]

        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._sink, events[1])
            if self._engine is not None:
                # The replay runs the halt checks at the fast loop's equity samples
                # (SUPERVISION.md §7.2: timers come from the replay), not after each fill.
                gate: Any = RiskActor(
                    self._engine, breaker, signals=signals[1], market=risk_market,
                    order_events=order_events[1], orders=orders[0], feedback=fb_send,
                    events=events[0], halt_checks=False)
            else:
                gate = _BypassGate(pf, pairs, ids, signals=signals[1],
                                   order_events=order_events[1], orders=orders[0])
            await nursery.start(gate.run)
            await nursery.start(ExecutorActor(
                broker, orders=orders[1], market=exec_market, order_events=order_events[0],
                feedback=fb_send, signals=unwinds[0], events=events[0], pairs=pairs).run)
            # One mailbox for every strategy's signals, each batch tagged with the strategy's
            # place in the loop's order (candle strategies in run order, then book strategies):
            # the replay drains it once per candle instead of polling one channel per strategy.
            self._held: list[tuple[int, Batch]] = []
            is_book = [isinstance(s, Arbitrage) for s in self._strategies]
            in_order = ([i for i, b in enumerate(is_book) if not b]
                        + [i for i, b in enumerate(is_book) if b])
            place_of = {index: place for place, index in enumerate(in_order)}
            self._first_book_lane = is_book.count(False)
            lanes: list[Callable[[MarketEvent], None]] = []
            for index, strat in enumerate(self._strategies):
                send, market = _market_lane(lane)
                await nursery.start(StrategyActor(
                    strat, market=market, feedback=feedback[strat.name][1],
                    signals=_SignalBox(place_of[index], self._held)).run)
                lanes.append(send)
            ordered = [lanes[i] for i in in_order]
            self._candle_lanes = ordered[:self._first_book_lane]
            self._book_lanes = ordered[self._first_book_lane:]
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
        exec_send = self._exec_send
        risk_send = self._risk_send if self._engine is not None else None
        candle_sends = self._candle_lanes
        book_sends = self._book_lanes
        fan_out = len(candle_sends) + (risk_send is not None)
        held = self._held
        pf, limits = self._pf, self._limits
        bid_mult, ask_mult = self._bid_mult, self._ask_mult
        step = self._interval_ns
        first_ts = candles[0].ts_event_ns
        await self._sample(first_ts)
        next_sample = first_ts - first_ts % step + step
        clock_ts = first_ts
        probes_sent = exec_candles = 0
        for c in candles:
            ts = c.ts_event_ns
            if ts != clock_ts:
                target = (ts - first_ts) / _NS
                if not self._jump(target):
                    await trio.sleep_until(target)
                clock_ts = ts
            if ts >= next_sample:
                await self._sample(ts - ts % step)
                next_sample = ts - ts % step + step
            sym = c.symbol
            # (1) The executor: the candle fills what waits for this open or rests under its
            # range. The fills reach the ledger before the stop probes read it.
            if broker.has_work(c):
                exec_send(c)
                exec_candles += 1
                await settle()
            elif broker.on_market(c):
                # Nothing to fill: the executor would turn the delivery into no event at all,
                # so the replay only moves the broker's clock (the same call, in place).
                raise AssertionError("a candle without broker work produced order events")
            last[sym] = c
            # (2) Risk and the strategies, concurrently.
            if risk_send is not None:
                probes = stop_probe_prices(pf, limits, c)
                if probes is not None:
                    for price in probes:
                        risk_send(TradeEvent(symbol=sym, side=Side.BUY, price=price, qty=_ZERO,
                                             ts_event_ns=ts))
                    probes_sent += 2
                risk_send(c)
            for send in candle_sends:
                send(c)
            if book_sends:
                book = close_book(c, bid_mult, ask_mult)
                # The broker only keeps the book for immediate orders (it never fills resting
                # limits from it): no executor delivery, the same call in place.
                if broker.on_market(book):
                    raise AssertionError("a synthetic book produced order events")
                for send in book_sends:
                    send(book)
            await settle()
            # (3) Their signals, to risk in the loop's order.
            if held:
                await self._forward()
        n = len(candles)
        out.candles = n
        books = n if book_sends else 0
        self.published = n + books + probes_sent
        self.deliveries = (n * fan_out + books * len(book_sends) + probes_sent
                           + exec_candles)
        for sym, count in broker.pending().items():
            out.warnings.append(f"{count} order(s) on {sym} decided on the last candle never "
                                "filled (no next candle)")
        await self._sample(candles[-1].ts_event_ns + candles[-1].interval_s * _NS)

    def _jump(self, target: float) -> bool:
        """Move virtual time to ``target`` (seconds since the first candle's open) if no timer
        is due before it; False: one is, and the caller sleeps until ``target`` instead.

        With every actor idle and no timer due before ``target``, sleeping would only let the
        autojump clock jump there: the replay jumps the clock itself (the same arithmetic, so
        the same float) and spares the scheduler passes (and, a plain call, a coroutine per
        minute). A pending timer (none of the actors here arms one) is honoured by sleeping,
        so it fires in virtual-time order.
        """
        delta = target - trio.current_time()
        if trio.lowlevel.current_statistics().seconds_to_next_deadline > delta:
            self._clock.jump(delta)
            return True
        return False

    async def _forward(self) -> None:
        """Send the candle's held signals to risk in the loop's order, one unit at a time.

        Each strategy's batches keep their emission order (one task sends them in turn); the
        stable sort puts the strategies in the loop's order. Feedback never makes a strategy
        emit, so nothing is added to the box while it is forwarded.
        """
        settle = trio.testing.wait_all_tasks_blocked
        batches = sorted(self._held, key=_place)
        self._held.clear()
        first_book = self._first_book_lane
        send = self._signals.send_nowait
        for place, batch in batches:
            for group in signal_groups(batch):
                send(tuple(group))
                await settle()
                if place >= first_book:
                    await self._forward_unwinds()
        if self._held:
            # The loop would have approved them with this candle's units: fail, never reorder.
            raise AssertionError("a strategy emitted signals while its feedback was delivered")

    async def _forward_unwinds(self) -> None:
        # The loop approves and executes an unwind plan one signal at a time.
        settle = trio.testing.wait_all_tasks_blocked
        while True:
            try:
                plan = self._unwinds.receive_nowait()
            except trio.WouldBlock:
                return
            for sig in plan:
                self._signals.send_nowait((sig,))
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

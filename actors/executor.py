"""The executor actor: routes approved orders to a broker and reports what happened.

Order of operations for every approved order (the "write-ahead" rule of the persistence issue):

1. the order is recorded in the journal (committed) *before* it is sent to the broker, so a
   crash after sending can never leave an order the system does not know about;
2. it is sent to the broker (``PaperBroker`` here; ``KrakenBroker`` in live mode);
3. every resulting event (accepted, fill, rejected, cancelled) goes to risk (the ledger), to
   the recorder (persistence) and back to the strategy that asked for it.

Arbitrage groups: the executor sends the legs of a group together and watches them. When every
leg is done and one failed or filled partially, it asks ``trading.strategies.plan_unwind`` for
the trades that flatten the residue and sends them to risk as one reduce-only batch; the loss
is booked by the ledger through the unwind's own fills.

``CancelAllOrders`` (the breaker's verdict) cancels every resting order at the broker. Cancels
are always allowed, even with the breaker open.
"""

from __future__ import annotations

import logging
from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Protocol

import trio

from protocol.instruments import PairInfo
from protocol.messages import (
    BookEvent,
    CancelAllOrders,
    Fill,
    MarketEvent,
    OrderAccepted,
    OrderCancelled,
    OrderEvent,
    OrderRejected,
    OrderRequest,
    Signal,
    TradeEvent,
)
from trading.paper import PaperMatcher
from trading.risk import RISK_STRATEGY
from trading.strategies import plan_unwind

from .risk import Feedback, OrderCommand

log = logging.getLogger(__name__)


class Broker(Protocol):
    async def submit(self, order: OrderRequest) -> list[OrderEvent]: ...

    async def cancel_all(self, reason: str) -> list[OrderEvent]: ...

    def on_market(self, event: MarketEvent) -> list[OrderEvent]: ...


class OrderJournal(Protocol):
    """Write-ahead storage: ``record_ahead`` returns once the order is durably committed."""

    async def record_ahead(self, order: OrderRequest) -> None: ...


class ExecutionObserver(Protocol):
    def order_submitted(self, order: OrderRequest, tick_to_order: float) -> None: ...

    def order_event(self, strategy: str, event: OrderEvent) -> None: ...


class PaperBroker:
    """A simulated exchange: Kraken-like validation and fills from ``trading.paper``.

    It keeps its own account balances, as the exchange would, updated by its own fills, so the
    "no negative balances" rule does not depend on another actor's state.
    """

    def __init__(self, pairs: Mapping[str, PairInfo], balances: Mapping[str, Decimal], *,
                 latency: float = 0.0, fill_id_prefix: str = "P") -> None:
        self.pairs = dict(pairs)
        self.balances: dict[str, Decimal] = dict(balances)
        self.latency = latency
        self.matcher = PaperMatcher(self.pairs, fill_id_prefix=fill_id_prefix)
        self._books: dict[str, BookEvent] = {}

    def mids(self) -> dict[str, Decimal]:
        """The latest mid price per symbol (unwind sizing)."""
        return {symbol: book.mid for symbol, book in self._books.items()
                if book.mid is not None}

    def _available(self, currency: str) -> Decimal:
        return self.balances.get(currency, Decimal(0))

    def _settle(self, events: list[Any]) -> list[OrderEvent]:
        for event in events:
            if isinstance(event, Fill):
                pair = self.pairs[event.symbol]
                cost = event.price * event.qty
                sign = event.side.sign
                self.balances[pair.base] = self._available(pair.base) + sign * event.qty
                self.balances[pair.quote] = self._available(pair.quote) - sign * cost
                self.balances[event.fee_currency] = (
                    self._available(event.fee_currency) - event.fee)
        return events

    async def submit(self, order: OrderRequest) -> list[OrderEvent]:
        if self.latency:
            await trio.sleep(self.latency)
        book = self._books.get(order.symbol)
        return self._settle(self.matcher.submit(order, book, available=self._available,
                                                now=trio.current_time()))

    async def cancel_all(self, reason: str) -> list[OrderEvent]:
        return list(self.matcher.cancel_all(now=trio.current_time(), reason=reason))

    def on_market(self, event: MarketEvent) -> list[OrderEvent]:
        if isinstance(event, BookEvent):
            self._books[event.symbol] = event
            return self._settle(list(self.matcher.on_book(event, now=trio.current_time())))
        if isinstance(event, TradeEvent):
            return self._settle(list(self.matcher.on_trade(event, now=trio.current_time())))
        return []


@dataclass
class _Group:
    legs: list[OrderRequest]
    fills: list[Fill] = field(default_factory=list)
    done: set[str] = field(default_factory=set)
    failed: bool = False


#: How many finished orders keep their strategy routing (late fills of cancelled orders).
ROUTING_MEMORY = 100_000
#: An event's place in its delivery order at which the recorder gets it (``_targets``): an
#: outbox entry whose next target is at or before it has not reached persistence yet.
RECORDER_TARGET = 1


class ExecutionState:
    """What must survive an executor restart; owned by the application, not the incarnation.

    ``outbox`` holds events the broker has produced but not yet delivered to every consumer.
    Each entry is ``[payload, next_target]``: a restart resumes delivery where the cancelled
    incarnation stopped (a cancelled trio ``send`` delivered nothing), so no fill is lost and
    none is delivered twice.
    """

    def __init__(self) -> None:
        self.outbox: deque[list[Any]] = deque()
        self.strategy_of: OrderedDict[str, str] = OrderedDict()
        self.group_of: dict[str, str] = {}
        self.groups: dict[str, _Group] = {}
        self.filled: dict[str, Decimal] = {}

    def unrecorded(self) -> list[OrderEvent]:
        """Events still in the outbox that the recorder never received.

        Only a stop leaves any: no incarnation follows to deliver them, so the application
        writes them itself once the recorder has stopped.
        """
        return [entry[0] for entry in self.outbox
                if not isinstance(entry[0], _Signals) and entry[1] <= RECORDER_TARGET]


class _Signals:
    """An outbox entry carrying unwind signals for risk (one approval unit)."""

    __slots__ = ("signals",)

    def __init__(self, signals: tuple[Signal, ...]) -> None:
        self.signals = signals


class ExecutorActor:
    def __init__(
        self,
        broker: Broker,
        *,
        orders: trio.abc.ReceiveChannel[OrderCommand],
        market: trio.abc.ReceiveChannel[MarketEvent],
        order_events: trio.abc.SendChannel[OrderEvent],
        feedback: Mapping[str, trio.abc.SendChannel[Feedback]],
        signals: trio.abc.SendChannel[tuple[Signal, ...]] | None = None,
        events: trio.abc.SendChannel[Any] | None = None,
        journal: OrderJournal | None = None,
        observer: ExecutionObserver | None = None,
        pairs: Mapping[str, PairInfo] | None = None,
        on_journal_error: Callable[[BaseException], None] | None = None,
        prices: Callable[[], Mapping[str, Decimal]] | None = None,
        state: ExecutionState | None = None,
    ) -> None:
        self._prices = prices
        self.broker = broker
        self._orders = orders
        self._market = market
        self._order_events = order_events
        self._feedback = feedback
        self._signals = signals
        self._events = events
        self._journal = journal
        self._observer = observer
        self._pairs = dict(pairs or {})
        self._on_journal_error = on_journal_error
        self.state = state if state is not None else ExecutionState()
        self._handled = 0
        self._drain_lock = trio.Lock()

    async def run(self, *, task_status: trio.TaskStatus[Any] = trio.TASK_STATUS_IGNORED) -> None:
        # Ready at once: delivering what a cancelled incarnation left in the outbox may wait
        # for a consumer that starts after us (rest_for_one starts the tree in order).
        task_status.started()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._market_loop)
            await self._drain()
            await self._order_loop()
            nursery.cancel_scope.cancel()

    async def _order_loop(self) -> None:
        async for command in self._orders:
            if isinstance(command, CancelAllOrders):
                await self._emit(await self.broker.cancel_all(command.reason))
                continue
            await self._execute_all(command)

    async def _execute_all(self, legs: tuple[OrderRequest, ...]) -> None:
        for order in legs:  # before any await: a leg never sent must still route and count
            self._register(order)
        self._handled = 0  # legs that reached the broker (or were refused before it)
        try:
            for order in legs:
                await self._execute(order)
        except BaseException:
            sent = self._handled
            # Cancelled (a restart) before these legs reached the broker: report them rejected
            # so risk releases their reserved exposure. The outbox survives the restart.
            for order in legs[sent:]:
                self._enqueue([OrderRejected(
                    client_order_id=order.client_order_id, strategy=order.strategy,
                    symbol=order.symbol, reason="not sent: executor restarted",
                    ts=trio.current_time())])
            raise

    def _register(self, order: OrderRequest) -> None:
        """Routing and group membership of an order (synchronous, before anything can fail)."""
        st = self.state
        st.strategy_of[order.client_order_id] = order.strategy
        while len(st.strategy_of) > ROUTING_MEMORY:
            st.strategy_of.popitem(last=False)
        if order.group_id is not None and order.group_size > 1:
            group = st.groups.setdefault(order.group_id, _Group(legs=[]))
            group.legs.append(order)
            st.group_of[order.client_order_id] = order.group_id

    async def _execute(self, order: OrderRequest) -> None:
        if self._journal is not None:
            try:
                await self._journal.record_ahead(order)
            except Exception as exc:
                # Never send an order the store does not know about: refuse it instead.
                log.error("write-ahead of %s failed (%s): order not sent",
                          order.client_order_id, exc)
                if self._on_journal_error is not None:
                    self._on_journal_error(exc)
                self._handled += 1
                await self._emit([OrderRejected(
                    client_order_id=order.client_order_id, strategy=order.strategy,
                    symbol=order.symbol, reason="write_ahead_failed", ts=trio.current_time())])
                return
        # The write-ahead's worker thread is not abandoned on cancellation, so a stop that
        # arrived meanwhile is still pending: the order must not reach the broker then (the
        # caller reports it rejected, unsent). Sending it anyway made fills at shutdown that
        # no incarnation was left to deliver.
        await trio.lowlevel.checkpoint_if_cancelled()
        if self._observer is not None:
            self._observer.order_submitted(order, trio.current_time() - order.ts_recv)
        events = await self.broker.submit(order)
        # No checkpoint between the broker's answer and the outbox: see ExecutionState.
        self._handled += 1
        await self._emit(events)

    async def _market_loop(self) -> None:
        on_market = self.broker.on_market
        async for event in self._market:
            fills = on_market(event)
            if fills:
                await self._emit(fills)

    # ------------------------------------------------------------------ delivery

    async def _emit(self, events: Sequence[OrderEvent]) -> None:
        self._enqueue(events)
        await self._drain()

    def _enqueue(self, events: Sequence[OrderEvent]) -> None:
        """Book-keep each event once (synchronously) and queue its deliveries."""
        outbox = self.state.outbox
        for event in events:
            strategy = self.state.strategy_of.get(event.client_order_id, "")
            if self._observer is not None:
                self._observer.order_event(strategy, event)
            outbox.append([event, 0])
            plan = self._track(event)
            if plan and self._signals is not None:
                # Each residue is approved on its own: one refused unwind must not block the rest.
                outbox.extend([_Signals((signal,)), 0] for signal in plan)

    async def _drain(self) -> None:
        # One deliverer at a time: the order loop and the market loop both emit, and two tasks
        # walking the same outbox entry would deliver it twice and skip another (review).
        async with self._drain_lock:
            outbox = self.state.outbox
            while outbox:
                entry = outbox[0]
                targets = self._targets(entry[0])
                while entry[1] < len(targets):
                    await targets[entry[1]](entry[0])
                    entry[1] += 1
                outbox.popleft()

    def _targets(self, payload: Any) -> list[Callable[[Any], Awaitable[None]]]:
        if isinstance(payload, _Signals):
            assert self._signals is not None
            send_signals = self._signals.send

            async def send_unwind(item: _Signals) -> None:
                await send_signals(item.signals)

            return [send_unwind]
        targets: list[Callable[[Any], Awaitable[None]]] = [self._order_events.send]
        if self._events is not None:
            assert len(targets) == RECORDER_TARGET
            targets.append(self._events.send)
        if not isinstance(payload, OrderAccepted):
            owner = self.state.strategy_of.get(payload.client_order_id, "")
            if owner == RISK_STRATEGY and isinstance(payload, Fill):
                # Risk's exits sold every strategy's share of the position: tell them all.
                targets.extend(channel.send for channel in self._feedback.values())
            else:
                feedback = self._feedback.get(owner)
                if feedback is not None:
                    targets.append(feedback.send)
        return targets

    def _track(self, event: OrderEvent) -> list[Signal]:
        """Group bookkeeping; returns the unwind plan of a group that just failed."""
        st = self.state
        cid = event.client_order_id
        group_id = st.group_of.get(cid)
        group = st.groups.get(group_id) if group_id is not None else None
        if isinstance(event, Fill):
            if group is not None:
                st.filled[cid] = st.filled.get(cid, Decimal(0)) + event.qty
                group.fills.append(event)
                leg = next(o for o in group.legs if o.client_order_id == cid)
                if st.filled[cid] >= leg.qty:
                    group.done.add(cid)
        elif isinstance(event, OrderRejected | OrderCancelled):
            st.filled.pop(cid, None)
            if group is not None:
                group.done.add(cid)
                group.failed = True
        if group is None or group_id is None or len(group.done) < len(group.legs) \
                or len(group.legs) < group.legs[0].group_size:
            return []
        del st.groups[group_id]
        for leg in group.legs:
            st.group_of.pop(leg.client_order_id, None)
            st.filled.pop(leg.client_order_id, None)
        if not group.failed:
            return []
        plan = plan_unwind(group.legs, group.fills, pairs=self._pairs or None,
                           prices=self._prices() if self._prices is not None else None,
                           ts_recv=trio.current_time())
        if plan:
            log.warning("arbitrage group %s failed a leg: unwinding %d residue trade(s)",
                        group_id, len(plan))
        return plan

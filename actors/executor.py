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
from collections.abc import Callable, Mapping
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
        self._strategy_of: dict[str, str] = {}
        self._group_of: dict[str, str] = {}
        self._groups: dict[str, _Group] = {}
        self._filled: dict[str, Decimal] = {}

    async def run(self, *, task_status: trio.TaskStatus[Any] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._market_loop)
            task_status.started()
            await self._order_loop()
            nursery.cancel_scope.cancel()

    async def _order_loop(self) -> None:
        async for command in self._orders:
            if isinstance(command, CancelAllOrders):
                for event in await self.broker.cancel_all(command.reason):
                    await self._dispatch(event)
                continue
            for order in command:
                await self._execute(order)

    async def _execute(self, order: OrderRequest) -> None:
        self._strategy_of[order.client_order_id] = order.strategy
        if order.group_id is not None and order.group_size > 1:
            group = self._groups.setdefault(order.group_id, _Group(legs=[]))
            group.legs.append(order)
            self._group_of[order.client_order_id] = order.group_id
        if self._journal is not None:
            try:
                await self._journal.record_ahead(order)
            except Exception as exc:
                # Never send an order the store does not know about: refuse it instead.
                log.error("write-ahead of %s failed (%s): order not sent",
                          order.client_order_id, exc)
                if self._on_journal_error is not None:
                    self._on_journal_error(exc)
                await self._dispatch(OrderRejected(
                    client_order_id=order.client_order_id, strategy=order.strategy,
                    symbol=order.symbol, reason="write_ahead_failed", ts=trio.current_time()))
                return
        if self._observer is not None:
            self._observer.order_submitted(order, trio.current_time() - order.ts_recv)
        for event in await self.broker.submit(order):
            await self._dispatch(event)

    async def _market_loop(self) -> None:
        on_market = self.broker.on_market
        async for event in self._market:
            for order_event in on_market(event):
                await self._dispatch(order_event)

    async def _dispatch(self, event: OrderEvent) -> None:
        cid = event.client_order_id
        strategy = self._strategy_of.get(cid, "")
        if self._observer is not None:
            self._observer.order_event(strategy, event)
        await self._order_events.send(event)
        if self._events is not None:
            await self._events.send(event)
        if not isinstance(event, OrderAccepted):
            feedback = self._feedback.get(strategy)
            if feedback is not None:
                await feedback.send(event)
        await self._track(event)

    async def _track(self, event: OrderEvent) -> None:
        cid = event.client_order_id
        group_id = self._group_of.get(cid)
        group = self._groups.get(group_id) if group_id is not None else None
        if isinstance(event, Fill):
            self._filled[cid] = self._filled.get(cid, Decimal(0)) + event.qty
            if group is not None:
                group.fills.append(event)
                leg = next(o for o in group.legs if o.client_order_id == cid)
                if self._filled[cid] >= leg.qty:
                    group.done.add(cid)
        elif isinstance(event, OrderRejected | OrderCancelled) and group is not None:
            group.done.add(cid)
            group.failed = True
        if isinstance(event, OrderRejected | OrderCancelled) or (
            isinstance(event, Fill) and group is None
        ):
            self._forget(cid)
        if group is not None and group_id is not None and len(group.done) == len(group.legs) \
                and len(group.legs) >= group.legs[0].group_size:
            del self._groups[group_id]
            for leg in group.legs:
                self._forget(leg.client_order_id)
            if group.failed:
                await self._unwind(group)

    def _forget(self, cid: str) -> None:
        # Keep the strategy mapping (late fills of a cancelled order still need routing) but
        # drop group bookkeeping once an order is done.
        self._group_of.pop(cid, None)

    async def _unwind(self, group: _Group) -> None:
        plan = plan_unwind(group.legs, group.fills, pairs=self._pairs or None,
                           prices=self._prices() if self._prices is not None else None,
                           ts_recv=trio.current_time())
        if not plan:
            return
        log.warning("arbitrage group %s failed a leg: unwinding %d residue trade(s)",
                    group.legs[0].group_id, len(plan))
        if self._signals is not None:
            # Each residue is approved on its own: one refused unwind must not block the rest.
            for signal in plan:
                await self._signals.send((signal,))

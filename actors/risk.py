"""The risk supervisor actor: the trading gate.

It owns the portfolio (through ``trading.risk.RiskEngine``) and consults the trading breaker:

* signals from strategies (one batch = one decision, so an arbitrage group passes or fails as a
  whole) become approved ``OrderRequest`` groups for the executor, or a ``RiskRejection`` with a
  reason that goes to the recorder, the metrics and back to the strategy;
* market events mark the portfolio and may produce stop-loss / take-profit exits;
* order events from the executor (fills, rejections, cancellations) update the ledger;
* after every fill and on a timer it checks the daily-loss and drawdown limits, which trip the
  latching breaker;
* when the breaker opens (for any reason, from anywhere) it tells the executor to cancel every
  open order, and approves nothing new until a person resets it.

All of it runs in one trio task group of one actor: the engine is plain synchronous code, so
every decision sees a consistent ledger.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any, Protocol

import trio

from protocol.messages import (
    CancelAllOrders,
    Fill,
    MarketEvent,
    OrderAccepted,
    OrderCancelled,
    OrderEvent,
    OrderRejected,
    OrderRequest,
    RiskRejection,
    Signal,
)
from trading.risk import RISK_STRATEGY, RiskEngine

from ._breaker import CircuitBreaker

log = logging.getLogger(__name__)

OrderCommand = tuple[OrderRequest, ...] | CancelAllOrders
Feedback = Fill | OrderRejected | OrderCancelled | RiskRejection


class RiskObserver(Protocol):
    """Where the risk actor reports (metrics plug in here); every method must be cheap."""

    def rejected(self, rejection: RiskRejection) -> None: ...

class RiskActor:
    def __init__(
        self,
        engine: RiskEngine,
        breaker: CircuitBreaker,
        *,
        signals: trio.abc.ReceiveChannel[tuple[Signal, ...]],
        market: trio.abc.ReceiveChannel[MarketEvent],
        order_events: trio.abc.ReceiveChannel[OrderEvent],
        orders: trio.abc.SendChannel[OrderCommand],
        feedback: Mapping[str, trio.abc.SendChannel[Feedback]],
        events: trio.abc.SendChannel[Any] | None = None,
        observer: RiskObserver | None = None,
        epoch_clock: Callable[[], float] | None = None,
        halt_check_interval: float = 1.0,
        halt_checks: bool = True,
        unwinds: trio.abc.ReceiveChannel[tuple[Signal, ...]] | None = None,
    ) -> None:
        self._unwinds = unwinds
        self.engine = engine
        self.breaker = breaker
        self._signals = signals
        self._market = market
        self._order_events = order_events
        self._orders = orders
        self._feedback = feedback
        self._events = events
        self._observer = observer
        # Daily-loss days are UTC days of the exchange's time; in backtests the clock is virtual.
        self._epoch_clock = epoch_clock or trio.current_time
        self._halt_check_interval = halt_check_interval
        # False when the owner runs the daily-loss / drawdown check itself (the actor backtest
        # runs it at the fast loop's equity samples): no check after fills, no timer.
        self._halt_checks = halt_checks

    async def run(self, *, task_status: trio.TaskStatus[Any] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._signal_loop)
            if self._unwinds is not None:
                nursery.start_soon(self._unwind_loop)
            nursery.start_soon(self._market_loop)
            nursery.start_soon(self._order_event_loop)
            nursery.start_soon(self._breaker_loop)
            nursery.start_soon(self._halt_timer)
            task_status.started()

    # ------------------------------------------------------------------ inputs

    async def _signal_loop(self) -> None:
        async for batch in self._signals:
            await self._decide(batch)

    async def _unwind_loop(self) -> None:
        """Arbitrage unwinds from the executor, on their own lane (see Wiring.unwinds)."""
        assert self._unwinds is not None
        async for batch in self._unwinds:
            await self._decide(batch)

    async def _decide(self, batch: tuple[Signal, ...]) -> None:
        verdict = self.engine.evaluate(batch, now=trio.current_time(),
                                       breaker_open=self.breaker.is_open)
        if isinstance(verdict, RiskRejection):
            await self._reject(batch, verdict)
        elif verdict:
            try:
                await self._orders.send(tuple(verdict))
            except BaseException:
                # A cancelled send delivered nothing (trio's guarantee): undo the approval so
                # the reserved exposure and a pending stop-loss marker are not leaked.
                for order in verdict:
                    self.engine.on_order_event(OrderRejected(
                        client_order_id=order.client_order_id, strategy=order.strategy,
                        symbol=order.symbol, reason="not sent: risk restarted"))
                raise

    async def _reject(self, batch: tuple[Signal, ...], rejection: RiskRejection) -> None:
        log.info("risk rejected %s %s: %s (%s)", rejection.strategy, rejection.symbol,
                 rejection.reason, rejection.detail)
        if self._observer is not None:
            self._observer.rejected(rejection)
        if self._events is not None:
            await self._events.send(rejection)
        feedback = self._feedback.get(rejection.strategy)
        if feedback is not None:
            for _ in batch:  # one release per signal: each is an intent in the strategy
                await feedback.send(rejection)

    async def _market_loop(self) -> None:
        async for event in self._market:
            exits = self.engine.on_market(event)
            for exit_signal in exits:
                await self._decide((exit_signal,))

    async def _order_event_loop(self) -> None:
        async for event in self._order_events:
            if isinstance(event, OrderAccepted):
                continue
            self.engine.on_order_event(event)
            if isinstance(event, Fill) and self._halt_checks:
                self._check_halt()

    # ------------------------------------------------------------------ the gate

    async def _breaker_loop(self) -> None:
        while True:
            await self.breaker.wait_open()
            reason = self.breaker.reason or "breaker open"
            log.warning("trading halted (%s): cancelling all open orders", reason)
            await self._orders.send(CancelAllOrders(reason=f"breaker: {reason}"))
            await self.breaker.wait_closed()
            self.engine.clear_pending_exits()
            log.warning("trading breaker closed: approving orders again")

    async def _halt_timer(self) -> None:
        if not self._halt_checks:
            return
        while True:
            await trio.sleep(self._halt_check_interval)
            self._check_halt()

    def _check_halt(self) -> None:
        utc_day = int(self._epoch_clock() // 86400)
        reason = self.engine.check_halt(utc_day=utc_day)
        # Trip even when already open: another cause (a stale feed) may clear soon, and this
        # latched one must keep trading halted after it does (trip() adds it as a cause).
        if reason is not None and reason not in self.breaker.reasons:
            # The breaker's listeners (app) persist the trip and count it in the metrics.
            self.breaker.trip(reason, latch=True)

__all__ = ["RISK_STRATEGY", "Feedback", "OrderCommand", "RiskActor", "RiskObserver"]

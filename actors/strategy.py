"""The strategy actor: a thin shell around one pure ``trading.strategies`` object.

It receives market events from its own fan-out subscription (conflating: a slow strategy sees
the latest book per symbol, never a stale queue), calls ``on_market`` and sends each non-empty
batch of signals to risk as one message, so the legs of an arbitrage group are judged together.
Feedback (its own fills, rejections and cancellations, from the executor and from risk) arrives
on a lossless channel and keeps the strategy's position bookkeeping exact.

A crash inside the strategy's logic is an ordinary ``Exception``: the supervisor restarts the
actor with backoff, and the strategy object is rebuilt by the factory (its indicators warm up
again; its position state is rebuilt from the portfolio on the next fills).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from decimal import Decimal
from typing import Any

import trio

from protocol.messages import (
    Fill,
    MarketEvent,
    OrderCancelled,
    OrderRejected,
    RiskRejection,
    Signal,
    signal_groups,
)
from trading.strategies import Strategy

log = logging.getLogger(__name__)

Feedback = Fill | OrderRejected | OrderCancelled | RiskRejection
SignalBatch = tuple[Signal, ...]


class StrategyActor:
    def __init__(
        self,
        strategy: Strategy,
        *,
        market: trio.abc.ReceiveChannel[MarketEvent],
        feedback: trio.abc.ReceiveChannel[Feedback],
        signals: trio.abc.SendChannel[SignalBatch],
        on_signals: Callable[[str, int], None] | None = None,
    ) -> None:
        self.strategy = strategy
        self._market = market
        self._feedback = feedback
        self._signals = signals
        self._on_signals = on_signals

    async def run(self, *, task_status: trio.TaskStatus[Any] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._feedback_loop)
            task_status.started()
            await self._market_loop()
            nursery.cancel_scope.cancel()

    async def _market_loop(self) -> None:
        on_market = self.strategy.on_market
        send = self._signals.send
        async for event in self._market:
            signals: Sequence[Signal] = on_market(event)
            if signals:
                if self._on_signals is not None:
                    self._on_signals(self.strategy.name, len(signals))
                for unit in signal_groups(signals):  # an arbitrage group stays one unit
                    await send(tuple(unit))

    async def _feedback_loop(self) -> None:
        strategy = self.strategy
        async for item in self._feedback:
            if isinstance(item, Fill):
                strategy.on_fill(item)
            elif isinstance(item, OrderRejected | OrderCancelled):
                strategy.on_order_closed(item.client_order_id, Decimal(0))
            else:
                # A risk rejection carries no order id: the strategy releases its oldest intent.
                strategy.on_order_closed(f"risk-rejected:{item.reason}", Decimal(0))

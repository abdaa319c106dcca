"""The metrics actor and the bridge from actor hooks to the metrics contract.

``MetricsBridge`` implements every observer protocol of the actors (feed, risk, execution,
supervisor events, breaker changes) on top of ``monitoring.Metrics``, so actors stay unaware of
Prometheus. ``MonitorActor`` serves ``/metrics`` and ``/healthz`` and samples what is cheaper to
read once a second than to push on every event (channel depths, portfolio gauges).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterable
from decimal import Decimal
from typing import Any

import trio

from monitoring import HealthReport, Metrics, serve_metrics
from protocol.messages import (
    Fill,
    OrderAccepted,
    OrderCancelled,
    OrderEvent,
    OrderRejected,
    OrderRequest,
    RiskRejection,
)
from trading.risk import RiskEngine

from ._breaker import BreakerState
from ._channels import ChannelStatistics
from ._supervisor import SupervisorEvent

log = logging.getLogger(__name__)

_STATUS_OF = {OrderAccepted: "accepted", OrderRejected: "rejected", OrderCancelled: "cancelled",
              Fill: "filled"}


class MetricsBridge:
    def __init__(self, metrics: Metrics, *, usd_rate: Callable[[str], Decimal | None]) -> None:
        self.metrics = metrics
        self._usd_rate = usd_rate
        self._tick_to_order = metrics.observe_tick_to_order

    # feeds
    def feed_message(self, feed: str, channel: str) -> None:
        self.metrics.feed_message(feed, channel)

    def feed_event(self, feed: str, kind: str, detail: str) -> None:
        if kind == "reconnecting":
            self.metrics.feed_reconnected(feed)
        elif kind == "decode_error":
            self.metrics.feed_decode_error(feed)
        elif kind == "checksum_mismatch":
            self.metrics.checksum_mismatch(detail.split()[0] if detail else "unknown")

    # strategies
    def signals(self, strategy: str, n: int) -> None:
        for _ in range(n):
            self.metrics.signal(strategy)

    # risk
    def rejected(self, rejection: RiskRejection) -> None:
        self.metrics.risk_rejection(rejection.reason)

    def publish_portfolio(self, engine: RiskEngine) -> None:
        """Publish the portfolio gauges from ``engine``. The MonitorActor calls this once a
        second rather than risk on every tick: a full Decimal snapshot costs more than all
        other metrics of a tick together (bench/bench_metrics.py)."""
        pf = engine.portfolio
        self.metrics.set_portfolio(
            equity=pf.equity_usd(), realized=pf.realized_pnl_usd(),
            unrealized=pf.unrealized_pnl_usd(), exposure=pf.exposure_usd(),
            drawdown=pf.drawdown(), open_positions=pf.open_position_count())
        for position in pf.open_positions():
            value = pf.position_value_usd(position.symbol, position.qty)
            if value is not None:
                self.metrics.set_position(position.symbol, value)
        self.metrics.set_risk(score=engine.risk_score(),
                              drawdown_limit=engine.limits.max_drawdown)

    # execution
    def order_submitted(self, order: OrderRequest, tick_to_order: float) -> None:
        if order.ts_recv:
            self._tick_to_order(max(tick_to_order, 0.0))

    def order_event(self, strategy: str, event: OrderEvent) -> None:
        status = _STATUS_OF.get(type(event), "other")
        self.metrics.order(strategy or "unknown", status)
        if isinstance(event, Fill):
            rate = self._usd_rate(event.fee_currency)
            fee_usd = event.fee * rate if rate is not None else Decimal(0)
            self.metrics.fill(event.strategy, fee_usd)

    # supervision and the breaker
    def supervisor_event(self, event: SupervisorEvent) -> None:
        if event.kind == "started":
            self.metrics.set_actor_up(event.child, True)
        elif event.kind in ("crashed", "exited", "stopped", "gave_up"):
            self.metrics.set_actor_up(event.child, False)
        if event.kind == "restarting":
            self.metrics.actor_restarted(event.child)
        elif event.kind == "gave_up":
            self.metrics.supervisor_gave_up_on(event.supervisor)

    def breaker_changed(self, name: str, old: BreakerState, new: BreakerState,
                        reason: str) -> None:
        if new is BreakerState.OPEN:
            self.metrics.breaker_tripped(_reason_label(reason))
        elif new is BreakerState.CLOSED:
            self.metrics.breaker_reset()


def _reason_label(reason: str) -> str:
    """Low-cardinality label: ``restart_storm:strategies`` -> ``restart_storm``."""
    return reason.split(":", 1)[0].strip().replace(" ", "_") or "unknown"


class MonitorActor:
    """Serves /metrics and /healthz and samples gauges once a second."""

    def __init__(
        self,
        bridge: MetricsBridge,
        health: Callable[[], HealthReport],
        *,
        host: str,
        port: int,
        channel_stats: Callable[[], Iterable[ChannelStatistics]],
        engine: RiskEngine | None = None,
        on_bound: Callable[[int], None] | None = None,
        on_tick: Callable[[], None] | None = None,
        interval: float = 1.0,
    ) -> None:
        self._on_tick = on_tick
        self._bridge = bridge
        self._health = health
        self._host, self._port = host, port
        self._channel_stats = channel_stats
        self._engine = engine
        self._on_bound = on_bound
        self._interval = interval
        self._conflated: dict[str, int] = {}

    async def run(self, *, task_status: trio.TaskStatus[Any] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            port = await nursery.start(lambda task_status: serve_metrics(
                self._bridge.metrics, self._health, host=self._host, port=self._port,
                task_status=task_status))
            log.info("metrics on http://%s:%d/metrics (health: /healthz)", self._host, port)
            if self._on_bound is not None:
                self._on_bound(port)
            task_status.started(port)
            while True:
                self.sample()
                await trio.sleep(self._interval)

    def sample(self) -> None:
        metrics = self._bridge.metrics
        for stats in self._channel_stats():
            metrics.channel_stats(stats.name, stats.depth, stats.peak_depth)
            seen = self._conflated.get(stats.name, 0)
            if stats.conflated > seen:
                metrics.conflated(stats.name, stats.conflated - seen)
                self._conflated[stats.name] = stats.conflated
        if self._engine is not None:
            self._bridge.publish_portfolio(self._engine)
        if self._on_tick is not None:
            self._on_tick()


def feed_ages(last_seen: dict[str, float], feeds: Iterable[str]) -> dict[str, float]:
    now = trio.current_time()
    return {feed: (now - last_seen[feed]) if feed in last_seen else math.inf for feed in feeds}

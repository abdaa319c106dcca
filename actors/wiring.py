"""The plumbing of the application's tree: pair metadata, the channel set, settings checks,
and the small adapters between actors and the metrics.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import trio

from config import Settings
from monitoring import Metrics
from protocol.instruments import PairInfo
from protocol.kraken import KrakenError, PairRegistry, RetryPolicy, open_kraken_rest
from protocol.messages import Fill, MarketEvent, OrderEvent, OrderRequest, Signal
from trading.strategies import build_strategies, standard_params

from ._channels import ChannelStatistics, FanOut, memory_channel_statistics
from .executor import PaperBroker
from .monitor import MetricsBridge
from .risk import Feedback, OrderCommand

log = logging.getLogger(__name__)

BUNDLED_PAIRS = Path(__file__).resolve().parent.parent / "data" / "kraken_asset_pairs.json"
def load_pairs(symbols: Sequence[str], path: Path = BUNDLED_PAIRS) -> dict[str, PairInfo]:
    """Pair metadata for ``symbols`` (and the USD conversion pairs) from an AssetPairs file.

    Paper mode starts from the bundled snapshot so it works offline; its fees and minimums are
    those of the snapshot's date (see data/README.md).
    """
    with path.open() as handle:
        registry = PairRegistry.from_asset_pairs(json.load(handle)["result"])
    pairs: dict[str, PairInfo] = {}
    for symbol in symbols:
        info = registry.find(symbol)
        if info is None:
            raise ValueError(f"unknown pair {symbol!r}: not in {path.name}")
        pairs[info.symbol] = info
    return pairs


async def fetch_pairs(symbols: Sequence[str], rest_url: str, *,
                      within: float = 5.0) -> dict[str, PairInfo] | None:
    """Today's pair metadata (precisions, minimums, fee schedules) from REST ``AssetPairs``,
    or None when Kraken cannot be reached ``within`` seconds (the caller falls back to the
    bundled snapshot and says so). One attempt, no retries: start-up must not hang."""
    try:
        with trio.move_on_after(within):
            async with open_kraken_rest(base_url=rest_url, retry=RetryPolicy.never(),
                                        timeout=within) as client:
                registry = PairRegistry.from_asset_pairs(await client.asset_pairs())
            pairs: dict[str, PairInfo] = {}
            for symbol in symbols:
                info = registry.find(symbol)
                if info is None:
                    return None
                pairs[info.symbol] = info
            return pairs
    except (KrakenError, OSError) as exc:
        log.warning("pair metadata from %s unavailable (%s)", rest_url, exc)
    return None


def market_key(event: MarketEvent) -> tuple[type, str]:
    """Conflation key of the market fan-out: the latest event per (kind, symbol)."""
    return type(event), event.symbol


@dataclass
class Wiring:
    """The channels of one tree (owned here; supervisors hand out clones)."""

    market: FanOut[MarketEvent]
    signals: tuple[trio.MemorySendChannel[tuple[Signal, ...]],
                   trio.MemoryReceiveChannel[tuple[Signal, ...]]]
    orders: tuple[trio.MemorySendChannel[OrderCommand], trio.MemoryReceiveChannel[OrderCommand]]
    order_events: tuple[trio.MemorySendChannel[OrderEvent], trio.MemoryReceiveChannel[OrderEvent]]
    events: tuple[trio.MemorySendChannel[Any], trio.MemoryReceiveChannel[Any]]
    # Unwinds travel executor -> risk while risk may be blocked sending orders to the executor:
    # a bounded channel here could close a cycle, so this one is unbounded (in practice it
    # holds at most one unwind per arbitrage group in flight).
    unwinds: tuple[trio.MemorySendChannel[tuple[Signal, ...]],
                   trio.MemoryReceiveChannel[tuple[Signal, ...]]] = field(
        default_factory=lambda: trio.open_memory_channel[tuple[Signal, ...]](math.inf))
    feedback: dict[str, tuple[trio.MemorySendChannel[Feedback],
                              trio.MemoryReceiveChannel[Feedback]]] = field(default_factory=dict)

    def statistics(self) -> list[ChannelStatistics]:
        stats = list(self.market.statistics())
        stats.append(memory_channel_statistics("signals", self.signals[1]))
        stats.append(memory_channel_statistics("orders", self.orders[1]))
        stats.append(memory_channel_statistics("order_events", self.order_events[1]))
        stats.append(memory_channel_statistics("events", self.events[1]))
        for name, (_, recv) in self.feedback.items():
            stats.append(memory_channel_statistics(f"feedback:{name}", recv))
        return stats



class TimedBroker:
    """The paper exchange's round trips as exchange request latency (``paper:`` endpoints).

    In paper mode PaperBroker *is* the exchange (with ``--paper-latency`` its simulated delay),
    so the Health dashboard's exchange panels show its figures rather than nothing.
    """

    def __init__(self, broker: PaperBroker, metrics: Metrics) -> None:
        self._broker = broker
        self._metrics = metrics

    async def submit(self, order: OrderRequest) -> list[OrderEvent]:
        start = trio.current_time()
        try:
            return await self._broker.submit(order)
        finally:
            self._metrics.exchange_request("paper:AddOrder", trio.current_time() - start)

    async def cancel_all(self, reason: str) -> list[OrderEvent]:
        start = trio.current_time()
        try:
            return await self._broker.cancel_all(reason)
        finally:
            self._metrics.exchange_request("paper:CancelAll", trio.current_time() - start)

    def on_market(self, event: MarketEvent) -> list[OrderEvent]:
        return self._broker.on_market(event)


class ExecutionTap:
    """Forwards execution events to the metrics, keeps this run's fills and counts rejects."""

    def __init__(self, bridge: MetricsBridge, fills: list[Fill],
                 on_event: Callable[[OrderEvent], None]) -> None:
        self._bridge = bridge
        self._fills = fills
        self._on_event = on_event

    def order_submitted(self, order: OrderRequest, tick_to_order: float) -> None:
        self._bridge.order_submitted(order, tick_to_order)

    def order_event(self, strategy: str, event: OrderEvent) -> None:
        self._bridge.order_event(strategy, event)
        if isinstance(event, Fill):
            self._fills.append(event)
        else:
            self._on_event(event)


def check_settings(settings: Settings) -> str | None:
    """What would make the tree crash on start (an unknown pair or strategy, a strategy
    parameter it refuses), as one line; None when the settings can run. Checked before the
    tree starts so a typo exits with status 2 instead of latching a restart-storm breaker."""
    try:
        pairs = load_pairs(settings.pairs)
    except (OSError, ValueError) as exc:
        return f"--pairs: {exc}"
    try:
        for name in settings.strategies:
            params = standard_params([name], {}, settings.quote_currency, (),
                                     settings.order_notional)
            build_strategies([name], params, pairs)
    except (KeyError, ValueError) as exc:
        return f"--strategies: {exc}"
    return None


class OrderedWrites:
    """Small database writes (breaker latches and resets) in submission order, off the event
    loop: a slow database must not freeze the feeds or the cancel-all that follows a trip.

    Before :meth:`run` is running (start-up) and at :meth:`flush` (shutdown) they run inline.
    """

    def __init__(self, what: str) -> None:
        self._what = what
        self._running = False
        # Unbounded on purpose: one item per breaker change, drained in order.
        self._send, self._recv = trio.open_memory_channel[Callable[[], object]](math.inf)

    def submit(self, write: Callable[[], object]) -> None:
        if self._running:
            self._send.send_nowait(write)
        else:
            self._inline(write)

    async def run(self) -> None:
        self._running = True
        try:
            async for write in self._recv:
                try:
                    await trio.to_thread.run_sync(write)
                except Exception as exc:
                    log.error("could not persist the %s: %s", self._what, exc)
        finally:
            self._running = False

    def flush(self) -> None:
        while True:
            try:
                self._inline(self._recv.receive_nowait())
            except trio.WouldBlock:
                return

    def _inline(self, write: Callable[[], object]) -> None:
        try:
            write()
        except Exception as exc:  # the system event still reaches the recorder
            log.error("could not persist the %s: %s", self._what, exc)

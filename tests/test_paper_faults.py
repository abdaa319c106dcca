"""Faults in a running paper system (real actor tree, real loopback WebSocket feed).

* An exception inside one strategy restarts that strategy (and only it); trading continues.
* A restart storm trips the trading breaker: resting orders are cancelled and no new order is
  approved (the rejection reason is ``breaker_open``).
"""

from __future__ import annotations

import pathlib
from collections.abc import Sequence
from decimal import Decimal
from typing import Any

import trio

from actors import Backoff
from actors.app import Application
from config import load_settings
from protocol.messages import (
    BookEvent,
    Fill,
    MarketEvent,
    OrderCancelled,
    OrderType,
    Side,
    Signal,
)
from tests.kraken_ws_server import open_kraken_ws_server

FAST = Backoff(initial=0.01, factor=2.0, maximum=0.05, jitter=0.0)


class ScriptedStrategy:
    """A stand-in strategy: crashes on chosen events, signals on others (per incarnation)."""

    def __init__(self, name: str, *, crash_on: int | None = None, signal_every: int = 0,
                 limit_offset: Decimal | None = None) -> None:
        self.name = name
        self.symbols: tuple[str, ...] = ("BTC/USD",)
        self.crash_on = crash_on
        self.signal_every = signal_every
        self.limit_offset = limit_offset
        self.seen = 0
        self.fills: list[Fill] = []

    def on_market(self, event: MarketEvent) -> Sequence[Signal]:
        if not isinstance(event, BookEvent) or event.symbol != "BTC/USD" or event.mid is None:
            return ()
        self.seen += 1
        if self.crash_on is not None and self.seen == self.crash_on:
            raise RuntimeError(f"{self.name}: injected fault on event {self.seen}")
        if not self.signal_every or self.seen % self.signal_every:
            return ()
        mid = event.mid
        if self.limit_offset is not None:
            price = (mid * (1 - self.limit_offset)).quantize(Decimal("0.1"))
            return (Signal(strategy=self.name, symbol="BTC/USD", side=Side.BUY,
                           qty=Decimal("0.001"), order_type=OrderType.LIMIT, limit_price=price,
                           reference_price=price, ts_recv=event.ts_recv),)
        return (Signal(strategy=self.name, symbol="BTC/USD", side=Side.BUY, qty=Decimal("0.001"),
                       reference_price=mid, ts_recv=event.ts_recv),)

    def on_fill(self, fill: Fill) -> None:
        self.fills.append(fill)

    def on_order_closed(self, client_order_id: str, filled_qty: Decimal) -> None:
        pass


def settings_for(url: str, tmp_path: pathlib.Path, strategies: str, *extra: str) -> Any:
    return load_settings([
        "--mode", "paper", "--ws-url", url, "--metrics-addr", "127.0.0.1:0",
        "--db", f"sqlite:///{tmp_path / 'faults.db'}", "--pairs", "BTC/USD",
        "--strategies", strategies, "--max-position-usd", "100000",
        "--max-exposure-usd", "100000", *extra,
    ], {})


async def wait_until(predicate: Any, seconds: float = 10.0) -> None:
    with trio.fail_after(seconds):
        while not predicate():  # noqa: ASYNC110 - polling app state, which has no events
            await trio.sleep(0.01)


async def test_strategy_exception_restarts_it_and_trading_continues(
        tmp_path: pathlib.Path) -> None:
    incarnations: list[ScriptedStrategy] = []

    def factory(name: str) -> ScriptedStrategy:
        if name == "faulty":
            # The first incarnation crashes on its 3rd book; the next one trades.
            first = not any(s.name == "faulty" for s in incarnations)
            strategy = ScriptedStrategy(name, crash_on=3 if first else None, signal_every=5)
        else:
            strategy = ScriptedStrategy(name, signal_every=7)
        incarnations.append(strategy)
        return strategy

    with trio.fail_after(60):
        async with open_kraken_ws_server(symbols=["BTC/USD"], updates_per_second=200) as server:
            app = Application(settings_for(server.url, tmp_path, "faulty,steady"),
                              strategy_factory=factory, backoff=FAST, run_tag="f1")
            async with trio.open_nursery() as nursery:
                await nursery.start(app.run)
                await wait_until(lambda: any(f.strategy == "faulty" for f in app.fills))
                await wait_until(lambda: sum(f.strategy == "steady" for f in app.fills) >= 3)
                app.request_stop()

    faulty = [s for s in incarnations if s.name == "faulty"]
    steady = [s for s in incarnations if s.name == "steady"]
    assert len(faulty) == 2  # restarted exactly once
    assert len(steady) == 1  # one_for_one: the sibling was never restarted
    assert faulty[1].fills  # the new incarnation traded
    restarts = app.metrics.child("actor_restarts", "faulty")
    assert restarts._value.get() == 1  # type: ignore[union-attr]
    assert not app.breaker.is_open


async def test_restart_storm_trips_breaker_cancels_orders_and_blocks_new_ones(
        tmp_path: pathlib.Path) -> None:
    def factory(name: str) -> ScriptedStrategy:
        if name == "storm":
            return ScriptedStrategy(name, crash_on=1)  # every incarnation dies at once
        # Rest a limit buy 5 % under the market (never fills), then keep signalling.
        return ScriptedStrategy(name, signal_every=3, limit_offset=Decimal("0.05"))

    cancelled: list[OrderCancelled] = []
    with trio.fail_after(60):
        async with open_kraken_ws_server(symbols=["BTC/USD"], updates_per_second=200) as server:
            settings = settings_for(server.url, tmp_path, "resting,storm", "--max-restarts", "3")
            app = Application(settings, strategy_factory=factory, backoff=FAST, run_tag="f2")
            original = app.bridge.order_event

            def spy(strategy: str, event: Any) -> None:
                if isinstance(event, OrderCancelled):
                    cancelled.append(event)
                original(strategy, event)

            app.bridge.order_event = spy  # type: ignore[method-assign]
            async with trio.open_nursery() as nursery:
                await nursery.start(app.run)
                await wait_until(lambda: app.breaker.is_open)
                await wait_until(lambda: not app.broker.matcher.open_orders())
                rejected_before = app.metrics.child("risk_rejections", "breaker_open")
                count = rejected_before._value.get()  # type: ignore[union-attr]
                await wait_until(lambda: rejected_before._value.get() > count)  # type: ignore[union-attr]
                orders_after_trip = len(app.broker.matcher.open_orders())
                await trio.sleep(0.2)
                assert len(app.broker.matcher.open_orders()) == orders_after_trip == 0
                app.request_stop()

    assert app.breaker.reason is not None
    assert app.breaker.reason.startswith("restart_storm")
    assert cancelled, "the resting orders were not cancelled"
    assert all(c.reason.startswith("breaker") for c in cancelled)


async def test_stale_feed_halts_trading_until_the_feed_is_back(tmp_path: pathlib.Path) -> None:
    with trio.fail_after(60):
        async with open_kraken_ws_server(symbols=["BTC/USD"], updates_per_second=100) as server:
            settings = settings_for(server.url, tmp_path, "steady", "--stale-after", "0.3")
            app = Application(settings, strategy_factory=lambda name: ScriptedStrategy(
                name, signal_every=5), backoff=FAST, run_tag="f3")
            async with trio.open_nursery() as nursery:
                await nursery.start(app.run)
                await wait_until(lambda: len(app.fills) >= 1)
                server.stall(1.5)
                await wait_until(lambda: app.breaker.is_open)
                assert app.breaker.reason == "feed_stale:kraken"
                assert app.health().halted
                await wait_until(lambda: not app.breaker.is_open)  # reconnected: trading again
                before = len(app.fills)
                await wait_until(lambda: len(app.fills) > before)
                app.request_stop()

"""Restarts and cancellation at the worst moment lose nothing and leak nothing.

These drive single actors with real trio channels (no network): the executor cancelled after
the broker answered but before the events were delivered, risk cancelled while its approved
order waits for the executor, and a replay feed restarted half-way through its file.
"""

from __future__ import annotations

import json
import pathlib
from decimal import Decimal
from typing import Any

import trio
import trio.lowlevel
import trio.testing

from actors import CircuitBreaker
from actors.executor import ExecutionState, ExecutorActor
from actors.replay import ReplayFeed
from actors.risk import RiskActor
from protocol.instruments import PairInfo
from protocol.messages import (
    BookEvent,
    BookLevel,
    Fill,
    MarketEvent,
    OrderAccepted,
    OrderEvent,
    OrderRequest,
    Side,
    Signal,
)
from trading import ClientOrderIds, Portfolio, RiskEngine, RiskLimits

PAIR = PairInfo(symbol="BTC/USD", base="BTC", quote="USD")


def order(cid: str) -> OrderRequest:
    return OrderRequest(client_order_id=cid, strategy="s", symbol="BTC/USD", side=Side.BUY,
                        qty=Decimal("0.01"))


class InstantBroker:
    """Answers every order at once with an acceptance and a fill (no checkpoint)."""

    def __init__(self) -> None:
        self.submitted: list[str] = []

    async def submit(self, o: OrderRequest) -> list[OrderEvent]:
        self.submitted.append(o.client_order_id)
        return [OrderAccepted(client_order_id=o.client_order_id, exchange_order_id="x"),
                Fill(fill_id="f-" + o.client_order_id, client_order_id=o.client_order_id,
                     strategy=o.strategy, symbol=o.symbol, side=o.side, price=Decimal(100),
                     qty=o.qty, fee=Decimal("0.0026"), fee_currency="USD")]

    async def cancel_all(self, reason: str) -> list[OrderEvent]:
        return []

    def on_market(self, event: MarketEvent) -> list[OrderEvent]:
        return []


async def test_executor_restart_delivers_undelivered_events_exactly_once() -> None:
    broker = InstantBroker()
    state = ExecutionState()
    orders_send, orders_recv = trio.open_memory_channel[Any](10)
    events_send, events_recv = trio.open_memory_channel[OrderEvent](0)  # every send blocks
    _, market_recv = trio.open_memory_channel[MarketEvent](0)

    def incarnation() -> ExecutorActor:
        return ExecutorActor(broker, orders=orders_recv.clone(), market=market_recv.clone(),
                             order_events=events_send, feedback={}, state=state)

    orders_send.send_nowait((order("a"), order("b")))
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            await nursery.start(incarnation().run)
            # "a" was submitted; its events wait in the outbox for a consumer that never comes.
            await trio.testing.wait_all_tasks_blocked()
            nursery.cancel_scope.cancel()
    assert broker.submitted == ["a"]
    assert len(state.outbox) == 3  # accepted + fill of "a", and "b" reported as not sent
    received: list[OrderEvent] = []
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            async def consume() -> None:
                async for event in events_recv:
                    received.append(event)

            nursery.start_soon(consume)
            await nursery.start(incarnation().run)
            await trio.testing.wait_all_tasks_blocked()
            nursery.cancel_scope.cancel()
    kinds = [(type(e).__name__, e.client_order_id) for e in received]
    assert kinds == [("OrderAccepted", "a"), ("Fill", "a"), ("OrderRejected", "b")]
    assert not state.outbox


async def test_risk_cancelled_mid_send_releases_reserved_exposure() -> None:
    engine = RiskEngine(RiskLimits(), Portfolio({"USD": Decimal(10_000)}), {"BTC/USD": PAIR},
                        ClientOrderIds("t"))
    engine.portfolio.mark("BTC/USD", Decimal(100))
    signals_send, signals_recv = trio.open_memory_channel[tuple[Signal, ...]](10)
    orders_send, _orders_recv = trio.open_memory_channel[Any](0)  # the executor never reads
    _, market_recv = trio.open_memory_channel[MarketEvent](0)
    _, order_events_recv = trio.open_memory_channel[OrderEvent](0)
    actor = RiskActor(engine, CircuitBreaker("trading"), signals=signals_recv,
                      market=market_recv, order_events=order_events_recv, orders=orders_send,
                      feedback={}, halt_check_interval=3600)
    signals_send.send_nowait((Signal(strategy="s", symbol="BTC/USD", side=Side.BUY,
                                     qty=Decimal(1), reference_price=Decimal(100)),))
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            await nursery.start(actor.run)
            await trio.testing.wait_all_tasks_blocked()
            assert engine.inflight_qty("BTC/USD") == 1  # approved, waiting to be sent
            nursery.cancel_scope.cancel()
    assert engine.inflight_qty("BTC/USD") == 0  # the unsent approval was rolled back


async def test_restarted_replay_resumes_instead_of_re_trading(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "frames.jsonl"
    lines = []
    for i in range(10):
        price = 100 + i
        raw = json.dumps({"channel": "ticker", "type": "update", "data": [{
            "symbol": "BTC/USD", "bid": price, "bid_qty": 1, "ask": price + 1, "ask_qty": 1,
            "last": price, "volume": 1, "vwap": price, "low": price, "high": price,
            "change": 0, "change_pct": 0, "timestamp": "2024-01-02T00:00:00.000000Z"}]})
        lines.append(json.dumps({"t": 1_700_000_000 + i, "raw": raw}))
    path.write_text("\n".join(lines) + "\n")
    send, recv = trio.open_memory_channel[MarketEvent](100)
    feed = ReplayFeed([path], out=send, speed=0, skip=6)
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            await nursery.start(feed.run)
            await trio.testing.wait_all_tasks_blocked()
            nursery.cancel_scope.cancel()
    got = []
    while True:
        try:
            got.append(recv.receive_nowait())
        except trio.WouldBlock:
            break
    assert [int(e.last) for e in got] == [106, 107, 108, 109]  # type: ignore[union-attr]
    assert feed.published == 10


def test_book_event_helper_is_consistent() -> None:
    book = BookEvent(symbol="BTC/USD", bids=(BookLevel(Decimal(99), Decimal(1)),),
                     asks=(BookLevel(Decimal(101), Decimal(1)),))
    assert book.mid == Decimal(100)


async def test_exchange_reject_storm_trips_but_validation_rejects_do_not(
        tmp_path: pathlib.Path) -> None:
    from actors.app import ORDER_REJECT_COUNT, Application
    from config import load_settings
    from protocol.messages import OrderRejected

    settings = load_settings(["--mode", "paper", "--metrics-addr", "127.0.0.1:0",
                              "--db", f"sqlite:///{tmp_path / 'x.db'}"], {})
    app = Application(settings, run_tag="rs")

    def reject(reason: str) -> OrderRejected:
        return OrderRejected(client_order_id="c", strategy="s", symbol="BTC/USD", reason=reason)

    for _ in range(ORDER_REJECT_COUNT * 2):
        app._count_order_event(reject("EOrder:Insufficient funds"))  # our sizing, not Kraken
    assert not app.breaker.is_open
    for _ in range(ORDER_REJECT_COUNT):
        app._count_order_event(reject("EService:Unavailable"))
    assert app.breaker.reason == "order_rejects"


class BusyBroker(InstantBroker):
    """Fills on every book too, so the order loop and the market loop emit concurrently."""

    def __init__(self) -> None:
        super().__init__()
        self.market_fills = 0

    def on_market(self, event: MarketEvent) -> list[OrderEvent]:
        self.market_fills += 1
        n = self.market_fills
        return [Fill(fill_id=f"m{n}", client_order_id=f"rest{n}", strategy="s",
                     symbol="BTC/USD", side=Side.BUY, price=Decimal(100), qty=Decimal("0.01"),
                     fee=Decimal(0), fee_currency="USD")]


async def test_concurrent_emits_deliver_every_event_exactly_once() -> None:
    """Regression (review): both executor loops draining one outbox delivered a fill twice,
    lost another and crashed on an empty deque."""
    broker = BusyBroker()
    orders_send, orders_recv = trio.open_memory_channel[Any](100)
    market_send, market_recv = trio.open_memory_channel[MarketEvent](100)
    events_send, events_recv = trio.open_memory_channel[OrderEvent](1)
    actor = ExecutorActor(broker, orders=orders_recv, market=market_recv,
                          order_events=events_send, feedback={})
    book = BookEvent(symbol="BTC/USD", bids=(BookLevel(Decimal(99), Decimal(1)),),
                     asks=(BookLevel(Decimal(101), Decimal(1)),))
    for i in range(20):
        orders_send.send_nowait((order(f"o{i}"),))
        market_send.send_nowait(book)
    received: list[OrderEvent] = []
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            await nursery.start(actor.run)
            while len(received) < 60:  # 20 x (accepted + fill) + 20 market fills
                received.append(await events_recv.receive())
                await trio.lowlevel.checkpoint()
            await trio.testing.wait_all_tasks_blocked()
            nursery.cancel_scope.cancel()
    fill_ids = [e.fill_id for e in received if isinstance(e, Fill)]
    assert len(fill_ids) == len(set(fill_ids)) == 40
    assert not actor.state.outbox


async def test_drawdown_latches_even_while_a_temporary_cause_holds_the_breaker() -> None:
    """Regression (review): a drawdown crossed while the breaker was open for a stale feed was
    never recorded, so trading resumed when the feed came back."""
    engine = RiskEngine(RiskLimits(), Portfolio({"USD": Decimal(10_000)}), {"BTC/USD": PAIR},
                        ClientOrderIds("t"))
    breaker = CircuitBreaker("trading", latching=True)
    _, signals_recv = trio.open_memory_channel[tuple[Signal, ...]](1)
    orders_send, _ = trio.open_memory_channel[Any](1)
    _, market_recv = trio.open_memory_channel[MarketEvent](0)
    _, order_events_recv = trio.open_memory_channel[OrderEvent](0)
    actor = RiskActor(engine, breaker, signals=signals_recv, market=market_recv,
                      order_events=order_events_recv, orders=orders_send, feedback={})
    breaker.trip("feed_stale:kraken", latch=False)
    engine.check_halt = lambda *, utc_day: "drawdown"  # type: ignore[method-assign]
    actor._check_halt()
    breaker.resolve("feed_stale:kraken")
    assert breaker.is_open
    assert breaker.reason == "drawdown"

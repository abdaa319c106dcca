"""KrakenWsSession against the loopback Kraken test server (tests/kraken_ws_server.py).

Real sockets and the real clock (the server and the session talk over TCP, which MockClock
cannot fast-forward), so every test has an absolute ``trio.fail_after`` and uses short
stale/backoff settings. Books are checked two ways: every message's checksum is verified by
the session, and after pausing the market the last published book must equal the server's.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import pytest
import trio

from protocol.kraken._errors import KrakenError, PermissionDenied
from protocol.kraken._ws import KrakenWsSession, Subscription
from protocol.messages import BookEvent, MarketEvent, TickerEvent, TradeEvent
from tests.kraken_ws_server import KrakenWsTestServer, open_kraken_ws_server

SYMBOLS = ["BTC/USD", "ETH/USD", "ETH/BTC"]
TOKEN = "s3cret-ws-token-do-not-log"


@dataclass
class Harness:
    server: KrakenWsTestServer
    session: KrakenWsSession
    books: dict[str, BookEvent] = field(default_factory=dict)
    counts: dict[type, int] = field(default_factory=dict)
    events: list[tuple[str, str]] = field(default_factory=list)

    async def until(self, predicate: Callable[[], bool]) -> None:
        # Polling is the point: the predicates read counters that have no event to wait on.
        with trio.fail_after(5):
            while not predicate():  # noqa: ASYNC110
                await trio.sleep(0.01)

    async def books_match_server(self) -> None:
        """Pause the market, let the feed settle, and compare every book with the server's."""
        self.server.pause()

        def match() -> bool:
            for symbol in SYMBOLS:
                event = self.books.get(symbol)
                bids, asks = self.server.book_levels(symbol, 10)
                if event is None or list(event.bids) != bids or list(event.asks) != asks:
                    return False
            return True

        await self.until(match)
        self.server.resume()


@asynccontextmanager
async def running(**server_options: Any) -> AsyncIterator[Harness]:
    session_options = server_options.pop("session", {})
    async with open_kraken_ws_server(symbols=SYMBOLS, seed=1, updates_per_second=400,
                                     heartbeat_interval=0.1, **server_options) as server:
        events: list[tuple[str, str]] = []
        options: dict[str, Any] = {
            "subscriptions": [Subscription(channel="book", symbols=tuple(SYMBOLS)),
                              Subscription(channel="ticker", symbols=tuple(SYMBOLS)),
                              Subscription(channel="trade", symbols=tuple(SYMBOLS))],
            "stale_after": 0.5, "ping_interval": 0.2, "backoff_initial": 0.05,
            "backoff_max": 0.2, "request_timeout": 2.0, "seed": 7,
            "on_event": lambda kind, detail: events.append((kind, detail)),
        }
        options.update(session_options)
        session = KrakenWsSession(server.url, **options)
        harness = Harness(server=server, session=session, events=events)
        send, recv = trio.open_memory_channel[MarketEvent](1000)

        async def consume() -> None:
            async for event in recv:
                harness.counts[type(event)] = harness.counts.get(type(event), 0) + 1
                if isinstance(event, BookEvent):
                    harness.books[event.symbol] = event

        async with trio.open_nursery() as nursery:
            nursery.start_soon(consume)
            await nursery.start(session.run, send)
            yield harness
            nursery.cancel_scope.cancel()


async def test_three_books_verified_and_equal_to_the_server() -> None:
    with trio.fail_after(10):
        async with running() as h:
            await h.until(lambda: all(
                (b := h.session.book(s)) is not None and b.checksums_verified >= 30
                for s in SYMBOLS))
            await h.books_match_server()
            stats = h.session.statistics()
            assert stats.connected
            assert stats.checksum_mismatches == 0
            assert stats.reconnects == 0
            assert stats.messages_by_channel["book"] >= 90
            assert stats.last_message_time is not None
            assert h.counts.get(TickerEvent, 0) > 0
            assert h.counts.get(TradeEvent, 0) > 0
            # The instrument channel is subscribed before any book (precisions first).
            subs = [r["params"]["channel"] for r in h.server.requests
                    if r.get("method") == "subscribe"]
            assert subs[0] == "instrument"
            assert all(isinstance(r.get("req_id"), int) for r in h.server.requests)
            assert [k for k, _ in h.events] == ["connected"]


async def test_wrong_checksum_resubscribes_that_book_and_recovers() -> None:
    with trio.fail_after(10):
        async with running() as h:
            await h.until(lambda: h.session.book("ETH/USD") is not None)
            h.server.corrupt_next_checksum("ETH/USD")
            await h.until(lambda: h.session.statistics().book_resubscribes == 1)
            stats = h.session.statistics()
            assert stats.checksum_mismatches == 1
            assert ("checksum_mismatch", "ETH/USD") in h.events
            unsubscribed = [r["params"] for r in h.server.requests
                            if r.get("method") == "unsubscribe"]
            assert unsubscribed == [{"channel": "book", "symbol": ["ETH/USD"], "depth": 10}]
            # A fresh snapshot rebuilt the book, and it verifies again.
            await h.until(lambda: (b := h.session.book("ETH/USD")) is not None
                          and b.checksums_verified >= 10)
            await h.books_match_server()
            assert h.session.statistics().checksum_mismatches == 1
            assert h.session.statistics().reconnects == 0


async def test_abrupt_disconnect_reconnects_and_rebuilds_books() -> None:
    with trio.fail_after(10):
        async with running() as h:
            await h.until(lambda: all(h.session.book(s) is not None for s in SYMBOLS))
            await h.server.drop_connections()
            await h.server.wait_connections(2)
            await h.until(lambda: h.session.statistics().connections == 2
                          and h.session.connected)
            stats = h.session.statistics()
            assert stats.reconnects == 1
            kinds = [k for k, _ in h.events]
            assert kinds == ["connected", "reconnecting", "connected"]
            book_subs = [r for r in h.server.requests if r.get("method") == "subscribe"
                         and r["params"]["channel"] == "book"]
            assert len(book_subs) == 2  # everything was subscribed again
            await h.until(lambda: all(
                (b := h.session.book(s)) is not None and b.checksums_verified >= 5
                for s in SYMBOLS))
            await h.books_match_server()
            assert h.session.statistics().checksum_mismatches == 0


async def test_malformed_and_unknown_frames_are_counted_and_skipped() -> None:
    with trio.fail_after(10):
        async with running() as h:
            h.server.inject_malformed()
            h.server.inject_malformed()
            h.server.push('{"channel":"no_such_channel","type":"update","data":[]}')
            h.server.push('{"channel":"ticker","type":"update","data":[{"symbol":"BTC/USD"}]}')
            await h.until(lambda: sum(h.session.statistics().decode_errors.values()) == 4)
            stats = h.session.statistics()
            assert stats.decode_errors["invalid_json"] == 2
            assert stats.decode_errors["unknown_channel"] == 1
            assert stats.connected and stats.reconnects == 0
            assert [k for k, _ in h.events].count("decode_error") == 4
            await h.books_match_server()


async def test_stall_is_declared_stale_and_reconnects() -> None:
    with trio.fail_after(10):
        async with running() as h:
            await h.until(lambda: all(h.session.book(s) is not None for s in SYMBOLS))
            h.server.stall(1.0)
            await h.until(lambda: h.session.statistics().stale_disconnects >= 1)
            assert "stale" in [k for k, _ in h.events]
            await h.until(lambda: h.session.connected
                          and h.session.statistics().connections >= 2)
            await h.books_match_server()
            assert h.session.statistics().reconnects >= 1


async def test_refused_subscription_ends_run_with_a_typed_error() -> None:
    with trio.fail_after(5):
        async with open_kraken_ws_server(symbols=SYMBOLS, heartbeat_interval=0.1,
                                         reject_symbols={"ETH/BTC": "EGeneral:Invalid arguments"}
                                         ) as server:
            session = KrakenWsSession(
                server.url, subscriptions=[Subscription(channel="ticker",
                                                        symbols=("BTC/USD", "ETH/BTC"))])
            send, _recv = trio.open_memory_channel[MarketEvent](10)
            with pytest.raises(KrakenError) as info:
                await session.run(send)
            assert info.value.errors == ("EGeneral:Invalid arguments",)


async def test_private_methods_correlate_by_req_id_and_never_log_the_token(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)

    async def token() -> str:
        return TOKEN

    with trio.fail_after(10):
        async with running(token=TOKEN, session={"token_provider": token}) as h:
            channels = [r["params"]["channel"] for r in h.server.requests
                        if r.get("method") == "subscribe"]
            assert {"executions", "balances"} <= set(channels)
            added = await h.session.request("add_order", {"order_type": "limit", "side": "buy",
                                                          "symbol": "BTC/USD",
                                                          "cl_ord_id": "abc-1"})
            assert added.success and added.result["cl_ord_id"] == "abc-1"
            cancelled = await h.session.request_all(
                "cancel_order", {"order_id": ["O1", "O2"]}, expected=2)
            assert sorted(r.result["order_id"] for r in cancelled) == ["O1", "O2"]
            assert len({r.req_id for r in cancelled}) == 1
            dms = await h.session.request("cancel_all_orders_after", {"timeout": 60})
            assert dms.success and "triggerTime" in dms.result
            assert (await h.session.request("cancel_all")).result["count"] == 0
            assert h.server.requests[-1]["params"]["token"] == TOKEN  # it did go on the wire
            await h.server.drop_connections()  # exercise the reconnect logging path too
            await h.until(lambda: h.session.statistics().connections == 2
                          and h.session.connected)
    assert TOKEN not in caplog.text
    assert TOKEN not in repr(h.session)


async def test_private_method_without_token_is_refused() -> None:
    with trio.fail_after(10):
        async with running() as h:
            with pytest.raises(PermissionDenied):
                await h.session.request("cancel_all")


def test_subscription_validates_its_parameters() -> None:
    with pytest.raises(ValueError):
        Subscription(channel="book", symbols=("BTC/USD",), depth=7)
    with pytest.raises(ValueError):
        Subscription(channel="level3", symbols=("BTC/USD",))
    with pytest.raises(ValueError):
        Subscription(channel="ohlc", symbols=("BTC/USD",), interval=2)
    sub = Subscription(channel="ohlc", symbols=("BTC/USD",), interval=5)
    assert sub.params() == {"channel": "ohlc", "symbol": ["BTC/USD"], "interval": 5}


class _ForwardingSend(trio.abc.SendChannel[MarketEvent]):
    """A channel that is not a MemorySendChannel: the session must await ``send`` on it."""

    def __init__(self, inner: trio.MemorySendChannel[MarketEvent]) -> None:
        self.inner = inner
        self.sends = 0

    async def send(self, value: MarketEvent) -> None:
        self.sends += 1
        await self.inner.send(value)

    async def aclose(self) -> None:
        await self.inner.aclose()


@pytest.mark.parametrize("wrapped", [False, True])
async def test_a_slow_consumer_blocks_the_feed_and_loses_nothing(wrapped: bool) -> None:
    """The non-blocking publish path only fills free buffer space; a full channel still blocks.

    The server bursts 600 book messages at once; the consumer has a 2-slot channel and
    stalls on its first event. Every message must still arrive, verified and in order.
    """
    with trio.fail_after(10):
        async with open_kraken_ws_server(symbols=SYMBOLS, seed=3, burst=600,
                                         heartbeat_interval=None) as server:
            session = KrakenWsSession(
                server.url, subscriptions=[Subscription(channel="book", symbols=tuple(SYMBOLS))],
                stale_after=5.0, ping_interval=None)
            send, recv = trio.open_memory_channel[MarketEvent](2)
            target: trio.abc.SendChannel[MarketEvent] = _ForwardingSend(send) if wrapped else send
            last: dict[str, BookEvent] = {}
            times: dict[str, list[int]] = {s: [] for s in SYMBOLS}
            async with trio.open_nursery() as nursery:
                await nursery.start(session.run, target)
                count = 0
                async for event in recv:
                    assert isinstance(event, BookEvent)
                    if count == 0:
                        await trio.sleep(0.2)  # the feed must wait for us, not drop
                    count += 1
                    last[event.symbol] = event
                    times[event.symbol].append(event.ts_event_ns)
                    if count == server.burst_message_count:
                        break
                stats = session.statistics()
                books = [session.book(s) for s in SYMBOLS]
                verified = sum(b.checksums_verified for b in books if b is not None)
                finals = {b.symbol: b.to_event() for b in books if b is not None}
                nursery.cancel_scope.cancel()
    assert stats.checksum_mismatches == 0 and stats.reconnects == 0
    assert stats.messages_by_channel["book"] == server.burst_message_count
    assert verified == server.burst_message_count  # every message verified on arrival
    for symbol in SYMBOLS:
        assert times[symbol] == sorted(times[symbol])
        assert last[symbol].bids == finals[symbol].bids
        assert last[symbol].asks == finals[symbol].asks
    if wrapped:
        assert isinstance(target, _ForwardingSend) and target.sends == count


async def test_raw_frame_hook_sees_every_frame_before_decode_and_replays_the_books() -> None:
    """``on_raw_frame`` records the live session: every text frame, undecodable ones included,
    in arrival order; replaying the recording through the codec and ``OrderBook`` rebuilds the
    very books the session published (what paper mode's ``--record FILE`` relies on)."""
    from protocol.kraken._book import OrderBook
    from protocol.kraken._codec import BookFrame, InstrumentFrame, decode_v2
    from protocol.kraken._errors import DecodeError

    recorded: list[str] = []
    with trio.fail_after(10):
        async with running(session={"on_raw_frame": recorded.append}) as h:
            await h.until(lambda: all(
                (b := h.session.book(s)) is not None and b.checksums_verified >= 10
                for s in SYMBOLS))
            h.server.inject_malformed("not json at all")
            await h.until(lambda: h.session.statistics().decode_errors.get("invalid_json") == 1)
            await h.books_match_server()
            h.server.pause()
            await h.until(lambda: len(recorded) == h.session.statistics().messages_total)
            stats = h.session.statistics()
            finals = {s: h.session.book(s) for s in SYMBOLS}
            h.server.resume()
    assert len(recorded) == stats.messages_total  # every frame, none twice
    assert "not json at all" in recorded
    assert all(isinstance(raw, str) for raw in recorded)
    books: dict[str, OrderBook] = {}
    precisions: dict[str, tuple[int, int]] = {}
    errors = 0
    for raw in recorded:
        try:
            frames = decode_v2(raw, ts_recv=0.0)
        except DecodeError:
            errors += 1
            continue
        for frame in frames:
            if isinstance(frame, InstrumentFrame):
                precisions.update((p.symbol, (p.price_precision, p.qty_precision))
                                  for p in frame.pairs)
            elif isinstance(frame, BookFrame):
                if frame.is_snapshot:
                    pp, qp = precisions[frame.symbol]
                    books[frame.symbol] = OrderBook(frame.symbol, depth=10,
                                                    price_precision=pp, qty_precision=qp)
                books[frame.symbol].apply(frame)  # raises on any checksum mismatch
    assert errors == 1
    for symbol in SYMBOLS:
        final = finals[symbol]
        assert final is not None
        assert books[symbol].bids(10) == final.bids(10)
        assert books[symbol].asks(10) == final.asks(10)
        assert books[symbol].checksums_verified == final.checksums_verified


async def test_a_failing_raw_frame_hook_is_logged_and_the_feed_goes_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    calls = 0

    def broken(raw: str) -> None:
        nonlocal calls
        calls += 1
        raise OSError("disk full")

    with trio.fail_after(10):
        async with running(session={"on_raw_frame": broken}) as h:
            await h.until(lambda: all(
                (b := h.session.book(s)) is not None and b.checksums_verified >= 10
                for s in SYMBOLS))
            await h.books_match_server()
            stats = h.session.statistics()
    assert stats.reconnects == 0 and stats.checksum_mismatches == 0
    assert calls >= stats.messages_total > 0
    assert caplog.text.count("on_raw_frame hook failed") == 1

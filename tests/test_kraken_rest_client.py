"""The REST client against the Kraken-protocol test server over a real loopback socket.

Real clock, short retry delays, and an absolute ``trio.fail_after`` bound on every test.
"""

from __future__ import annotations

import logging
import pathlib
import traceback
from collections.abc import AsyncIterator
from decimal import Decimal

import pytest
import trio

from protocol.kraken._errors import (
    InvalidArguments,
    KrakenError,
    PermissionDenied,
    TransportError,
)
from protocol.kraken._nonce import NonceGenerator
from protocol.kraken._rest import KrakenRestClient, open_kraken_rest
from protocol.kraken._retry import RetryPolicy
from protocol.kraken._signing import KrakenCredentials
from protocol.messages import Side
from tests.kraken_rest_server import (
    DOCS_EXAMPLE_SECRET,
    Fault,
    FaultSpec,
    KrakenRestServer,
    KrakenRestState,
    open_kraken_rest_server,
)

SECRET = DOCS_EXAMPLE_SECRET
API_KEY = "test-api-key-0001-abcdef"
CREDS = KrakenCredentials(API_KEY, SECRET)
FAST = RetryPolicy(delays=(0.05, 0.1, 0.2, 0.4, 0.8))
BOUND = 10.0


@pytest.fixture
async def server() -> AsyncIterator[KrakenRestServer]:
    async with open_kraken_rest_server(KrakenRestState(credentials=CREDS)) as srv:
        yield srv


@pytest.fixture
async def client(server: KrakenRestServer) -> AsyncIterator[KrakenRestClient]:
    async with open_kraken_rest(CREDS, base_url=server.url + "/0/", retry=FAST,
                                timeout=0.5) as c:
        yield c


async def test_public_endpoints_typed_decimal(client: KrakenRestClient) -> None:
    with trio.fail_after(BOUND):
        assert (await client.server_time()).unixtime == 1688669448
        assert (await client.system_status()).status == "online"
        t = await client.ticker("BTC/USD")
        assert t.pair == "XXBTZUSD" and t.bid == Decimal("30300.00000")
        assert t.trades_24h == 38907 and t.open == Decimal("30502.80000")
        book = await client.depth("XBTUSD", count=3)
        assert book.asks[0].price == Decimal("30384.10000")
        assert book.bids[1].volume == Decimal("2.002") and book.bids[1].timestamp == 1688671674
        ohlc = await client.ohlc("XXBTZUSD", interval=1)
        assert len(ohlc.candles) == 4 and ohlc.last == 1688672160
        assert ohlc.candles[0].close == Decimal("30305.7") and ohlc.candles[0].count == 23
        trades = await client.recent_trades("XBTUSD")
        assert trades.trades[0].side is Side.BUY and trades.trades[1].side is Side.SELL
        assert trades.trades[0].time == Decimal("1688669597.8277369")
        assert trades.last == "1688671969993150842"
        pairs = await client.asset_pairs(["BTC/USD", "ETH/XBT"])
        assert set(pairs) == {"XXBTZUSD", "XETHXXBT"}
        for value in (t.ask, book.asks[0].volume, ohlc.candles[0].vwap, trades.trades[0].price):
            assert type(value) is Decimal


async def test_unknown_pair_is_invalid_arguments(client: KrakenRestClient) -> None:
    with trio.fail_after(BOUND), pytest.raises(InvalidArguments) as info:
        await client.depth("NOPE")
    assert info.value.errors == ("EQuery:Unknown asset pair",)


async def test_private_endpoints(client: KrakenRestClient, server: KrakenRestServer) -> None:
    with trio.fail_after(BOUND):
        bal = await client.balance()
        assert bal["ZUSD"] == Decimal("171288.6158")
        v = await client.add_order(pair="XBTUSD", side=Side.BUY, ordertype="limit",
                                   volume=Decimal("0.01"), price=Decimal("30000"), validate=True)
        assert v.validated and v.txid == () and not server.state.orders
        r = await client.add_order(pair="XBTUSD", side=Side.BUY, ordertype="limit",
                                   volume=Decimal("1E-2"), price=Decimal("30000.0"),
                                   cl_ord_id="cl-1")
        sent = server.state.calls("AddOrder")[-1].params
        assert sent["volume"] == "0.01" and sent["price"] == "30000.0"  # no exponent notation
        (txid,) = r.txid
        open_ = await client.open_orders(cl_ord_id="cl-1")
        assert list(open_) == [txid]
        order = open_[txid]
        assert order.cl_ord_id == "cl-1" and order.price == Decimal("30000.0")
        assert order.volume == Decimal("0.01") and order.side is Side.BUY
        assert (await client.query_orders([txid]))[txid].status == "open"
        assert (await client.cancel_order(cl_ord_id="cl-1")).count == 1
        closed = await client.closed_orders(cl_ord_id="cl-1")
        assert closed.count == 1 and closed.orders[txid].status == "canceled"
        assert (await client.cancel_all()).count == 0
        after = await client.cancel_all_orders_after(60)
        assert server.state.cancel_after == 60 and after.trigger_time.endswith("Z")
        hist = await client.trades_history()
        assert hist.count == 2
        assert hist.trades["THVRQM-33VKH-UCI7BS"].price == Decimal("30010.00000")
        token = await client.get_websockets_token()
        assert token.expires == 900 and token.token not in repr(token)


async def test_wrong_secret_is_rejected_by_signature_check(server: KrakenRestServer) -> None:
    wrong = KrakenCredentials(API_KEY, "c2VjcmV0LXRoYXQtaXMtbm90LXRoZS1vbmU=")
    with trio.fail_after(BOUND):
        async with open_kraken_rest(wrong, base_url=server.url, retry=FAST) as c:
            with pytest.raises(PermissionDenied) as info:
                await c.balance()
    assert info.value.errors == ("EAPI:Invalid signature",)
    assert len(server.state.requests) == 1


async def test_no_credentials_for_private_call(server: KrakenRestServer) -> None:
    with trio.fail_after(BOUND), pytest.raises(PermissionDenied):
        async with open_kraken_rest(None, base_url=server.url) as c:
            await c.balance()
    assert not server.state.requests


async def test_nonces_monotonic_concurrent_and_across_restart(
    server: KrakenRestServer, tmp_path: pathlib.Path
) -> None:
    state_file = tmp_path / "nonce"
    # Concurrent requests may reach the server out of nonce order on separate connections;
    # Kraken's answer to that is the per-key nonce window, which the server models.
    server.state.nonce_window = 10**12
    with trio.fail_after(BOUND):
        async with (
            open_kraken_rest(CREDS, base_url=server.url, retry=RetryPolicy.never(),
                             nonce=NonceGenerator(state_file)) as c,
            trio.open_nursery() as nursery,
        ):
            for _ in range(12):
                nursery.start_soon(c.balance)
        first = [r.nonce for r in server.state.requests]
        assert len(set(first)) == 12
        # Restart: a new client and generator reading the same high-water file.
        server.state.nonce_window = 0
        async with open_kraken_rest(CREDS, base_url=server.url, retry=RetryPolicy.never(),
                                    nonce=NonceGenerator(state_file)) as c:
            await c.balance()
    last = server.state.requests[-1].nonce
    assert last is not None and all(n is not None and last > n for n in first)


@pytest.mark.parametrize("fault", [Fault.LOSE_RESPONSE, Fault.HTTP_503_AFTER])
async def test_addorder_accepted_but_response_lost_yields_one_order(
    client: KrakenRestClient, server: KrakenRestServer, fault: Fault
) -> None:
    server.state.inject("AddOrder", fault)
    with trio.fail_after(BOUND):
        result = await client.add_order(pair="XBTUSD", side="buy", ordertype="limit",
                                        volume=Decimal("0.5"), price=Decimal("30000"),
                                        cl_ord_id="amb-1")
    assert result.recovered
    assert len(server.state.orders_with("amb-1")) == 1
    assert len(server.state.calls("AddOrder")) == 1


@pytest.mark.slow
async def test_addorder_slow_response_times_out_then_found(server: KrakenRestServer) -> None:
    # The server processes the order 0.3 s late, after the 0.2 s client deadline; the lookup
    # after the first backoff may still find nothing, so the client resends. Kraken (and this
    # server) refuse a second open order with the same cl_ord_id, so exactly one exists.
    server.state.inject("AddOrder", FaultSpec(Fault.SLOW, delay=0.3))
    with trio.fail_after(BOUND):
        async with open_kraken_rest(CREDS, base_url=server.url, retry=FAST, timeout=0.2) as c:
            result = await c.add_order(pair="XBTUSD", side="sell", ordertype="limit",
                                       volume=Decimal("0.5"), price=Decimal("31000"),
                                       cl_ord_id="slow-1")
        await trio.sleep(0.35)  # let the late original finish in the server
    assert result.txid
    assert len(server.state.orders_with("slow-1")) == 1


async def test_secret_never_leaks(server: KrakenRestServer,
                                  caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    texts: list[str] = [repr(CREDS), str(CREDS)]
    st = server.state
    st.inject("Balance", Fault.HTTP_503, Fault.LOSE_RESPONSE, Fault.INVALID_NONCE,
              Fault.INVALID_NONCE, FaultSpec(Fault.ERROR, errors=("EGeneral:Internal error",)),
              FaultSpec(Fault.SLOW, delay=1.0), Fault.RATE_LIMIT)
    with trio.fail_after(BOUND):
        async with open_kraken_rest(CREDS, base_url=server.url, retry=RetryPolicy.never(),
                                    timeout=0.3) as c:
            texts.append(repr(c))
            for _ in range(7):
                try:
                    await c.balance()
                except KrakenError as exc:
                    texts.extend(traceback.format_exception(exc))
                    texts.extend([repr(exc), str(exc), repr(vars(exc))])
            wrong = KrakenCredentials(API_KEY, "c2VjcmV0LXRoYXQtaXMtbm90LXRoZS1vbmU=")
            async with open_kraken_rest(wrong, base_url=server.url) as c2:
                with pytest.raises(PermissionDenied) as info:
                    await c2.balance()
                texts.extend(traceback.format_exception(info.value))
    assert len(texts) > 20
    texts.extend(r.getMessage() for r in caplog.records)
    texts.extend(repr(r.__dict__) for r in caplog.records)
    blob = "\n".join(texts)
    assert SECRET not in blob
    assert SECRET[:16] not in blob
    assert API_KEY not in "\n".join(r.getMessage() for r in caplog.records)


async def test_transport_error_when_server_absent() -> None:
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    port = listeners[0].socket.getsockname()[1]
    await listeners[0].aclose()  # nothing listens there now
    with trio.fail_after(BOUND):
        async with open_kraken_rest(CREDS, base_url=f"http://127.0.0.1:{port}",
                                    retry=RetryPolicy(delays=(0.01,))) as c:
            with pytest.raises(TransportError) as info:
                await c.system_status()
    assert info.value.endpoint == "SystemStatus"
    assert isinstance(info.value.__cause__, Exception)

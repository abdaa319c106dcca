"""Retry policy and AddOrder reconciliation timing under MockClock.

These tests use ``KrakenRestState.mock_transport()`` (an ``httpx.MockTransport`` calling the same
Kraken-semantics handler as the socket server) because real sockets and ``autojump_clock`` do
not mix: the clock would jump while the kernel is still moving bytes. The same behaviours run
over a real loopback socket with the real clock in test_kraken_rest_client.py.
"""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator
from decimal import Decimal

import pytest
import trio
import trio.testing

from protocol.kraken._errors import (
    InsufficientFunds,
    InvalidArguments,
    InvalidNonce,
    KrakenError,
    PermissionDenied,
    RateLimited,
    ServiceUnavailable,
    TransportError,
)
from protocol.kraken._rest import KrakenRestClient
from protocol.kraken._retry import RetryPolicy, is_ambiguous, is_retryable
from protocol.kraken._signing import KrakenCredentials
from protocol.messages import Side
from tests.kraken_rest_server import DOCS_EXAMPLE_SECRET, Fault, FaultSpec, KrakenRestState

SECRET = DOCS_EXAMPLE_SECRET
CREDS = KrakenCredentials("test-api-key-0001", SECRET)
DELAYS = [2.0, 4.0, 8.0, 16.0, 32.0]


@pytest.fixture
def state() -> KrakenRestState:
    return KrakenRestState(credentials=CREDS)


@pytest.fixture
async def client(
    state: KrakenRestState, autojump_clock: trio.testing.MockClock
) -> AsyncIterator[KrakenRestClient]:
    async with KrakenRestClient(
        CREDS, base_url="http://kraken.test", transport=state.mock_transport(), timeout=10.0
    ) as c:
        yield c


def gaps(state: KrakenRestState, endpoint: str | None = None) -> list[float]:
    times = [r.at for r in state.requests if endpoint is None or r.endpoint == endpoint]
    return [b - a for a, b in itertools.pairwise(times)]


async def test_exact_backoff_then_success(
    autojump_clock: trio.testing.MockClock, client: KrakenRestClient, state: KrakenRestState
) -> None:
    state.inject("Balance", *[Fault.HTTP_503] * 5)
    balance = await client.balance()
    assert balance["XXBT"] == Decimal("1011.1908877900")
    assert gaps(state) == DELAYS
    nonces = [r.nonce for r in state.requests]
    assert len(set(nonces)) == 6  # every attempt signed with a fresh nonce


async def test_gives_up_after_five_retries(
    autojump_clock: trio.testing.MockClock, client: KrakenRestClient, state: KrakenRestState
) -> None:
    state.inject("OpenOrders", *[Fault.UNAVAILABLE] * 6)
    start = trio.current_time()
    with pytest.raises(ServiceUnavailable) as info:
        await client.open_orders()
    assert info.value.errors == ("EService:Unavailable",)
    assert info.value.endpoint == "OpenOrders"
    assert len(state.requests) == 6
    assert gaps(state) == DELAYS
    assert trio.current_time() - start == sum(DELAYS)


@pytest.mark.parametrize("fault", [Fault.HTTP_503, Fault.UNAVAILABLE, Fault.BUSY])
async def test_retryable_kinds(
    autojump_clock: trio.testing.MockClock,
    client: KrakenRestClient,
    state: KrakenRestState,
    fault: Fault,
) -> None:
    state.inject("Ticker", fault, fault)
    ticker = await client.ticker("XBTUSD")
    assert ticker.ask == Decimal("30300.10000")
    assert gaps(state) == [2.0, 4.0]


async def test_timeout_is_retried(
    autojump_clock: trio.testing.MockClock, client: KrakenRestClient, state: KrakenRestState
) -> None:
    state.inject("Depth", FaultSpec(Fault.SLOW, delay=60.0))
    start = trio.current_time()
    book = await client.depth("XBTUSD")
    assert book.bids[0].price == Decimal("30297.00000")
    # 10 s per-attempt bound, then the 2 s backoff.
    assert trio.current_time() - start == pytest.approx(12.0)
    assert gaps(state) == [12.0]


@pytest.mark.parametrize(
    ("errors", "exc_type"),
    [
        (("EGeneral:Permission denied",), PermissionDenied),
        (("EGeneral:Invalid arguments:volume",), InvalidArguments),
        (("EOrder:Insufficient funds",), InsufficientFunds),
        (("EAPI:Rate limit exceeded",), RateLimited),
        (("EService:Market in cancel_only mode",), ServiceUnavailable),
        (("EGeneral:Temporary lockout",), KrakenError),
    ],
)
async def test_non_retryable_errors_are_not_retried(
    autojump_clock: trio.testing.MockClock,
    client: KrakenRestClient,
    state: KrakenRestState,
    errors: tuple[str, ...],
    exc_type: type[KrakenError],
) -> None:
    state.inject("AddOrder", FaultSpec(Fault.ERROR, errors=errors))
    start = trio.current_time()
    with pytest.raises(exc_type) as info:
        await client.add_order(
            pair="XBTUSD",
            side=Side.BUY,
            ordertype="limit",
            volume=Decimal("1"),
            price=Decimal("30000"),
            cl_ord_id="c-1",
        )
    assert info.value.errors == errors
    assert len(state.requests) == 1  # no retry and no reconciliation lookup
    assert trio.current_time() == start
    assert not state.orders


async def test_rate_limited_is_not_retried_and_saturates_limiter(
    autojump_clock: trio.testing.MockClock, client: KrakenRestClient, state: KrakenRestState
) -> None:
    state.inject("Balance", Fault.RATE_LIMIT)
    with pytest.raises(RateLimited):
        await client.balance()
    assert len(state.requests) == 1
    assert client.limiter.statistics().headroom == pytest.approx(2.0)  # model full (max - 2)


async def test_invalid_nonce_retried_once_with_fresh_nonce(
    autojump_clock: trio.testing.MockClock, client: KrakenRestClient, state: KrakenRestState
) -> None:
    state.inject("Balance", Fault.INVALID_NONCE)
    await client.balance()
    first, second = state.calls("Balance")
    assert second.nonce is not None and first.nonce is not None and second.nonce > first.nonce
    assert gaps(state) == [2.0]

    state.requests.clear()
    state.inject("Balance", Fault.INVALID_NONCE, Fault.INVALID_NONCE)
    with pytest.raises(InvalidNonce):
        await client.balance()
    assert len(state.requests) == 2


async def test_addorder_lost_response_is_found_not_resent(
    autojump_clock: trio.testing.MockClock, client: KrakenRestClient, state: KrakenRestState
) -> None:
    state.inject("AddOrder", Fault.LOSE_RESPONSE)
    result = await client.add_order(
        pair="XBTUSD",
        side="buy",
        ordertype="limit",
        volume=Decimal("0.5"),
        price=Decimal("30000.1"),
        cl_ord_id="lost-1",
    )
    assert result.recovered and result.cl_ord_id == "lost-1"
    assert len(state.orders_with("lost-1")) == 1
    assert result.txid == (next(iter(state.orders)),)
    assert [r.endpoint for r in state.requests] == ["AddOrder", "OpenOrders"]
    assert state.calls("OpenOrders")[0].params["cl_ord_id"] == "lost-1"
    assert gaps(state) == [2.0]


async def test_addorder_503_before_accept_is_resent_once(
    autojump_clock: trio.testing.MockClock, client: KrakenRestClient, state: KrakenRestState
) -> None:
    state.inject("AddOrder", Fault.HTTP_503, Fault.HTTP_503)
    result = await client.add_order(
        pair="XBTUSD",
        side="sell",
        ordertype="limit",
        volume=Decimal("0.5"),
        price=Decimal("31000"),
        cl_ord_id="retry-1",
    )
    assert not result.recovered
    assert len(state.orders_with("retry-1")) == 1
    assert [r.endpoint for r in state.requests] == [
        "AddOrder",
        "OpenOrders",
        "ClosedOrders",
        "AddOrder",
        "OpenOrders",
        "ClosedOrders",
        "AddOrder",
    ]
    add_times = [r.at for r in state.calls("AddOrder")]
    assert [b - a for a, b in itertools.pairwise(add_times)] == [2.0, 4.0]


async def test_addorder_filled_market_order_found_in_closed_orders(
    autojump_clock: trio.testing.MockClock, client: KrakenRestClient, state: KrakenRestState
) -> None:
    state.inject("AddOrder", Fault.HTTP_503_AFTER)
    result = await client.add_order(
        pair="XXBTZUSD", side="buy", ordertype="market", volume=Decimal("0.01"), cl_ord_id="mkt-1"
    )
    assert result.recovered
    assert len(state.orders_with("mkt-1")) == 1
    assert state.orders[result.txid[0]]["status"] == "closed"


async def test_addorder_ambiguous_until_exhausted_raises(
    autojump_clock: trio.testing.MockClock, client: KrakenRestClient, state: KrakenRestState
) -> None:
    state.inject("AddOrder", *[Fault.HTTP_503] * 6)
    with pytest.raises(TransportError):
        await client.add_order(
            pair="XBTUSD",
            side="buy",
            ordertype="limit",
            volume=Decimal("0.5"),
            price=Decimal("30000"),
            cl_ord_id="x-1",
        )
    assert len(state.calls("AddOrder")) == 6
    assert not state.orders


async def test_addorder_lookup_failure_backs_off_and_never_duplicates(
    autojump_clock: trio.testing.MockClock, client: KrakenRestClient, state: KrakenRestState
) -> None:
    state.inject("AddOrder", Fault.LOSE_RESPONSE)
    state.inject("OpenOrders", Fault.HTTP_503)
    result = await client.add_order(
        pair="XBTUSD",
        side="buy",
        ordertype="limit",
        volume=Decimal("0.5"),
        price=Decimal("30000"),
        cl_ord_id="lk-1",
    )
    assert result.recovered
    assert len(state.orders_with("lk-1")) == 1
    assert [r.endpoint for r in state.requests] == ["AddOrder", "OpenOrders", "OpenOrders"]
    assert gaps(state) == [2.0, 4.0]


async def test_addorder_userref_only_is_not_resent(
    autojump_clock: trio.testing.MockClock, client: KrakenRestClient, state: KrakenRestState
) -> None:
    state.inject("AddOrder", Fault.LOSE_RESPONSE)
    with pytest.raises(TransportError):
        await client.add_order(
            pair="XBTUSD",
            side="buy",
            ordertype="limit",
            volume=Decimal("0.5"),
            price=Decimal("30000"),
            userref=7,
        )
    assert len(state.orders) == 1 and len(state.requests) == 1


async def test_addorder_generates_cl_ord_id(
    autojump_clock: trio.testing.MockClock, client: KrakenRestClient, state: KrakenRestState
) -> None:
    result = await client.add_order(
        pair="XBTUSD", side="buy", ordertype="limit", volume=Decimal("0.5"), price=Decimal("30000")
    )
    assert result.cl_ord_id is not None and len(result.cl_ord_id) == 36
    assert state.calls("AddOrder")[0].params["cl_ord_id"] == result.cl_ord_id


async def test_ticker_cache_ttl(
    autojump_clock: trio.testing.MockClock, client: KrakenRestClient, state: KrakenRestState
) -> None:
    await client.ticker("XBTUSD")
    await trio.sleep(14.9)
    await client.ticker("XBTUSD")
    assert len(state.calls("Ticker")) == 1
    await trio.sleep(0.2)
    await client.ticker("XBTUSD")
    assert len(state.calls("Ticker")) == 2
    await client.ticker("XBTUSD", max_age=0)
    assert len(state.calls("Ticker")) == 3


def test_classification() -> None:
    assert is_retryable(TransportError("x"))
    assert is_retryable(ServiceUnavailable("x", errors=["EService:Busy"]))
    assert not is_retryable(ServiceUnavailable("x", errors=["EService:Deadline elapsed"]))
    assert is_ambiguous(ServiceUnavailable("x", errors=["EService:Deadline elapsed"]))
    assert is_ambiguous(KrakenError("x", errors=["EGeneral:Internal error"]))
    assert not is_ambiguous(InvalidNonce("x", errors=["EAPI:Invalid nonce"]))
    assert not is_retryable(RateLimited("x"))
    assert RetryPolicy().delays == tuple(DELAYS)
    assert RetryPolicy.exponential().delays == tuple(DELAYS)

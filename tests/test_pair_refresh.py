"""Paper mode takes today's pair metadata from REST AssetPairs, else the bundled snapshot."""

from __future__ import annotations

import copy
from decimal import Decimal

import trio

from actors.wiring import fetch_pairs
from protocol.kraken import KrakenCredentials
from tests.kraken_rest_server import KrakenRestState, open_kraken_rest_server


async def test_pairs_come_from_the_exchange_when_it_answers() -> None:
    state = KrakenRestState(credentials=KrakenCredentials("k", "c2VjcmV0"))
    pairs = copy.deepcopy(state.asset_pairs)
    pairs["XXBTZUSD"]["fees"] = [[0, 0.4], [50000, 0.35]]  # today's fees differ from 2021's
    pairs["XXBTZUSD"]["ordermin"] = "0.00005"
    state.asset_pairs = pairs
    with trio.fail_after(10):
        async with open_kraken_rest_server(state) as server:
            got = await fetch_pairs(["BTC/USD"], server.url)
    assert got is not None
    assert got["BTC/USD"].fee_taker == Decimal("0.004")
    assert got["BTC/USD"].ordermin == Decimal("0.00005")


async def test_unreachable_exchange_falls_back_quickly() -> None:
    with trio.fail_after(10):
        assert await fetch_pairs(["BTC/USD"], "http://127.0.0.1:9", within=2.0) is None


async def test_unknown_pair_falls_back() -> None:
    state = KrakenRestState(credentials=KrakenCredentials("k", "c2VjcmV0"))
    with trio.fail_after(10):
        async with open_kraken_rest_server(state) as server:
            assert await fetch_pairs(["NOPE/USD"], server.url) is None

"""Pair metadata from REST AssetPairs and the name registry (PROTOCOL.md §8)."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

import pytest

from protocol.kraken._errors import DecodeError
from protocol.kraken._pairs import PairRegistry, UnknownPair, pair_info_from_asset_pair
from tests.conftest import FIXTURES, SHARED

SUBSET = FIXTURES / "kraken_rest" / "asset_pairs_20210417_subset.json"
FULL = SHARED / "data" / "kraken-ws-v1" / "kraken_rest_AssetPairs_20210417T1648Z.json"
DOCS = FIXTURES / "kraken_rest" / "docs_examples.json"


def load(path: Any) -> dict[str, Any]:
    return json.loads(path.read_text())["response"]["result"]  # type: ignore[no-any-return]


@pytest.fixture
def registry() -> PairRegistry:
    return PairRegistry.from_asset_pairs(load(SUBSET))


@pytest.mark.parametrize("name", ["BTC/USD", "XBT/USD", "XBTUSD", "XXBTZUSD", "btc/usd"])
def test_every_name_maps_to_the_same_pair(registry: PairRegistry, name: str) -> None:
    info = registry.get(name)
    assert (info.symbol, info.altname, info.rest_name) == ("BTC/USD", "XBTUSD", "XXBTZUSD")
    assert (info.base, info.quote) == ("BTC", "USD")
    assert registry.symbol(name) == "BTC/USD"
    assert registry.rest_name(name) == "XXBTZUSD"
    assert registry.altname(name) == "XBTUSD"
    assert registry.wsname_v1(name) == "XBT/USD"


def test_precisions_minimums_fees(registry: PairRegistry) -> None:
    btc = registry.get("XXBTZUSD")
    assert (btc.price_decimals, btc.lot_decimals) == (1, 8)
    assert btc.ordermin == Decimal("0.0002") and btc.costmin == Decimal(0)  # 2021: no costmin
    assert btc.fee_taker == Decimal("0.0026") and btc.fee_maker == Decimal("0.0016")
    assert btc.tick == Decimal("0.1")
    eth_btc = registry.get("ETH/BTC")
    assert eth_btc.rest_name == "XETHXXBT" and eth_btc.price_decimals == 5
    doge = registry.get("DOGE/BTC")
    assert doge.rest_name == "XXDGXXBT" and doge.ordermin == Decimal(50)
    assert registry.get("XDG/XBT") is doge
    assert registry.get("BTC/USDT").rest_name == "XBTUSDT"  # newer id style
    assert registry.get("DOTUSD").symbol == "DOT/USD"


def test_dark_pool_pairs_skipped_and_unknown_names(registry: PairRegistry) -> None:
    assert len(registry) == 6
    assert "XETHXXBT.d" not in registry
    assert "BTC/USD" in registry and 42 not in registry
    with pytest.raises(UnknownPair):
        registry.get("FOO/BAR")
    assert registry.find("FOO/BAR") is None


def test_docs_example_with_costmin_and_decimal_floats() -> None:
    text = DOCS.read_text()
    from decimal import Decimal as D

    result = json.loads(text, parse_float=D)["responses"]["AssetPairs"]["result"]
    reg = PairRegistry.from_asset_pairs(result)
    btc = reg.get("BTC/USD")
    assert btc.costmin == Decimal("0.5") and btc.ordermin == Decimal("0.0001")
    eth = reg.get("ETH/BTC")
    assert eth.costmin == Decimal("0.00002") and eth.fee_taker == Decimal("0.0026")


def test_malformed_entry_is_decode_error() -> None:
    with pytest.raises(DecodeError):
        pair_info_from_asset_pair("X", {"wsname": "A/B", "altname": "AB"})
    with pytest.raises(DecodeError):
        pair_info_from_asset_pair("X", {"wsname": "A/B", "altname": "AB", "pair_decimals": 1,
                                        "lot_decimals": 8, "ordermin": "abc"})


def test_full_2021_snapshot_round_trips() -> None:
    if not FULL.exists():
        pytest.skip(f"shared data not present at {FULL}")
    result = load(FULL)
    reg = PairRegistry.from_asset_pairs(result)
    with_ws = {k: v for k, v in result.items() if v.get("wsname")}
    assert len(reg) == len(with_ws) == 293
    for pair_id, entry in with_ws.items():
        info = reg.get(pair_id)
        assert info.rest_name == pair_id
        assert reg.get(entry["altname"]) is info
        assert reg.get(entry["wsname"]) is info
        assert reg.get(info.symbol) is info
        assert reg.wsname_v1(info.symbol) == entry["wsname"]
        assert info.fee_taker == Decimal(str(entry["fees"][0][1])) / 100

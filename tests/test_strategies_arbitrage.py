"""Arbitrage (triangular, direct) and unwind: planted cycles with hand-computed sizes (issue 4)."""

from __future__ import annotations

from decimal import ROUND_DOWN, Decimal

import pytest

from protocol.instruments import PairInfo
from protocol.messages import BookEvent, BookLevel, Fill, OrderRequest, Side, Signal, TradeEvent
from trading.strategies import Arbitrage, ArbitrageConfig, plan_unwind

D = Decimal
FEE = D("0.0026")  # Kraken's first tier, taker, per leg
BUYF, SELLF = 1 + FEE, 1 - FEE


def pair(symbol: str, **kw: object) -> PairInfo:
    base, quote = symbol.split("/")
    return PairInfo(symbol=symbol, base=base, quote=quote, lot_decimals=8, **kw)  # type: ignore[arg-type]


TRI = {s: pair(s) for s in ("BTC/USD", "ETH/BTC", "ETH/USD")}


def book(symbol: str, bid: Decimal, ask: Decimal, bq: str = "10", aq: str = "10",
         ts: float = 0.0) -> BookEvent:
    return BookEvent(symbol=symbol, bids=(BookLevel(D(bid), D(bq)),),
                     asks=(BookLevel(D(ask), D(aq)),), ts_recv=ts)


def lot(x: Decimal) -> Decimal:
    return x.quantize(D("1e-8"), rounding=ROUND_DOWN)


# Forward cycle USD -> BTC -> ETH -> USD: buy BTC/USD at ask A1, buy ETH/BTC at ask A2, sell
# ETH/USD at bid B3. Multiplier = B3 (1-f) / (A1 (1+f) A2 (1+f)). Solve B3 for a target net.
A1, A2 = D(50000), D("0.05")


def fwd_bid(net: str) -> Decimal:
    return ((1 + D(net)) * A1 * BUYF * A2 * BUYF / SELLF).quantize(D("0.01"))


def feed_forward(s: Arbitrage, net: str, eth_ask_qty: str = "10") -> list[Signal]:
    out: list[Signal] = []
    out += s.on_market(book("BTC/USD", A1 - 10, A1))
    out += s.on_market(book("ETH/BTC", A2 - D("0.0001"), A2, aq=eth_ask_qty))
    b3 = fwd_bid(net)
    out += s.on_market(book("ETH/USD", b3, b3 + 1, ts=9.5))
    return out


def test_discovers_both_directions_of_the_triangle() -> None:
    s = Arbitrage(ArbitrageConfig(), TRI)
    assert sorted(c.path for c in s.cycles) == ["USD->BTC->ETH->USD", "USD->ETH->BTC->USD"]


def test_triangular_takes_a_half_percent_cycle_sized_by_notional() -> None:
    s = Arbitrage(ArbitrageConfig(), TRI)
    legs = feed_forward(s, "0.005")
    assert [(g.symbol, g.side) for g in legs] == [
        ("BTC/USD", Side.BUY), ("ETH/BTC", Side.BUY), ("ETH/USD", Side.SELL)]
    # 100 USD -> q1 = 100 / (50000 * 1.0026) BTC; q2 = q1 / (0.05 * 1.0026) ETH; q3 = q2.
    q1 = lot(D(100) / (A1 * BUYF))
    q2 = lot(q1 / (A2 * BUYF))
    assert q1 == D("0.00199481") and q2 == D("0.03979273")
    assert [g.qty for g in legs] == [q1, q2, q2]
    assert [g.reference_price for g in legs] == [A1, A2, fwd_bid("0.005")]
    assert len({g.group_id for g in legs}) == 1 and legs[0].group_id is not None
    assert all(g.group_size == 3 and g.strategy == "arbitrage" for g in legs)
    assert all(g.ts_recv == 9.5 and not g.reduce_only for g in legs)
    assert "USD->BTC->ETH->USD" in legs[0].reason


def test_triangular_ignores_a_tenth_percent_cycle() -> None:
    s = Arbitrage(ArbitrageConfig(), TRI)
    assert feed_forward(s, "0.001") == []


def test_triangular_depth_limits_every_leg() -> None:
    s = Arbitrage(ArbitrageConfig(notional=D(100000)), TRI)
    legs = feed_forward(s, "0.005", eth_ask_qty="0.01")
    # Only 0.01 ETH on the ETH/BTC ask: q1 = 0.01 * 0.05 * 1.0026 = 0.0005013 BTC.
    assert [g.qty for g in legs] == [D("0.0005013"), D("0.01"), D("0.01")]


def test_triangular_reverse_direction() -> None:
    # USD -> ETH -> BTC -> USD: buy ETH/USD at ask, sell ETH/BTC at bid, sell BTC/USD at bid.
    s = Arbitrage(ArbitrageConfig(), TRI)
    eth_ask = D(2500)
    btc_bid = D(50000)
    # multiplier = b2 (1-f) * btc_bid (1-f) / (eth_ask (1+f))
    for net, fires in (("0.005", True), ("0.001", False)):
        b2 = ((1 + D(net)) * eth_ask * BUYF / (SELLF * SELLF * btc_bid)).quantize(D("1e-8"))
        s = Arbitrage(ArbitrageConfig(), TRI)
        out = list(s.on_market(book("BTC/USD", btc_bid, btc_bid + 10)))
        out += s.on_market(book("ETH/USD", eth_ask - 1, eth_ask))
        out += s.on_market(book("ETH/BTC", b2, b2 + D("0.001")))
        if not fires:
            assert not out
            continue
        assert [(g.symbol, g.side) for g in out] == [
            ("ETH/USD", Side.BUY), ("ETH/BTC", Side.SELL), ("BTC/USD", Side.SELL)]
        q1 = lot(D(100) / (eth_ask * BUYF))
        q3 = lot(q1 * b2 * SELLF)
        assert [g.qty for g in out] == [q1, q1, q3]


def test_fires_once_per_top_of_book_change() -> None:
    s = Arbitrage(ArbitrageConfig(), TRI)
    legs = feed_forward(s, "0.005")
    assert len(legs) == 3
    b3 = fwd_bid("0.005")
    # Legs in flight: nothing more, even on a changed book.
    assert s.on_market(book("ETH/USD", b3, b3 + 2)) == ()
    for i in range(3):
        s.on_order_closed(f"rejected-{i}", D(0))  # all three rejected before any fill
    assert s.keeper.pending_count() == 0
    # The same tops as when it fired (a deeper-level update, say): no repeat.
    assert s.on_market(book("ETH/USD", b3, b3 + 1)) == ()
    # A change of any leg's top level re-arms the cycle.
    again = s.on_market(book("ETH/USD", b3, b3 + 1, bq="7"))
    assert len(again) == 3 and again[0].group_id != legs[0].group_id


def test_non_book_events_are_ignored() -> None:
    s = Arbitrage(ArbitrageConfig(), TRI)
    assert s.on_market(TradeEvent(symbol="BTC/USD", side=Side.BUY, price=D(1), qty=D(1))) == ()


# --------------------------------------------------------------------------- direct

DIRECT = {s: pair(s) for s in ("BTC/USD", "BTC/USDT")}


@pytest.mark.parametrize(("net", "fires"), [("0.005", True), ("0.001", False)])
def test_direct_over_peg(net: str, fires: bool) -> None:
    s = Arbitrage(ArbitrageConfig(pegs=("USDT=USD",)), DIRECT)
    # Buy BTC/USD at 50000, sell BTC/USDT at bid Y: multiplier = Y (1-f) / (50000 (1+f)).
    y = ((1 + D(net)) * A1 * BUYF / SELLF).quantize(D("0.01"))
    out = list(s.on_market(book("BTC/USD", A1 - 10, A1)))
    out += s.on_market(book("BTC/USDT", y, y + 10))
    if not fires:
        assert not out
        return
    q = lot(D(100) / (A1 * BUYF))
    assert [(g.symbol, g.side, g.qty, g.reference_price) for g in out] == [
        ("BTC/USD", Side.BUY, q, A1), ("BTC/USDT", Side.SELL, q, y)]
    assert all(g.group_size == 2 for g in out)


def test_direct_other_way_round_and_needs_a_peg() -> None:
    y = ((1 + D("0.005")) * A1 * BUYF / SELLF).quantize(D("0.01"))
    s = Arbitrage(ArbitrageConfig(pegs=("USDT=USD",)), DIRECT)
    out = list(s.on_market(book("BTC/USDT", A1 - 10, A1)))  # cheap in USDT now
    out += s.on_market(book("BTC/USD", y, y + 10))
    assert [(g.symbol, g.side) for g in out] == [("BTC/USDT", Side.BUY), ("BTC/USD", Side.SELL)]
    nopeg = Arbitrage(ArbitrageConfig(), DIRECT)
    nopeg.on_market(book("BTC/USDT", A1 - 10, A1))
    assert nopeg.on_market(book("BTC/USD", y, y + 10)) == ()


def test_direct_through_conversion_book_when_triangular_is_off() -> None:
    pairs = {s: pair(s) for s in ("BTC/USD", "BTC/USDT", "USDT/USD")}
    y = ((1 + D("0.005")) * A1 * BUYF / SELLF / SELLF).quantize(D("0.01"))
    s = Arbitrage(ArbitrageConfig(triangular=False), pairs)
    out = list(s.on_market(book("USDT/USD", D(1), D("1.0001"))))
    out += s.on_market(book("BTC/USD", A1 - 10, A1))
    out += s.on_market(book("BTC/USDT", y, y + 10))
    assert [(g.symbol, g.side, g.group_size) for g in out] == [
        ("BTC/USD", Side.BUY, 2), ("BTC/USDT", Side.SELL, 2)]
    # With triangular on, the same opportunity goes out as the 3-leg cycle instead.
    t = Arbitrage(ArbitrageConfig(), pairs)
    out = list(t.on_market(book("USDT/USD", D(1), D("1.0001"))))
    out += t.on_market(book("BTC/USD", A1 - 10, A1))
    out += t.on_market(book("BTC/USDT", y, y + 10))
    assert [(g.symbol, g.side, g.group_size) for g in out] == [
        ("BTC/USD", Side.BUY, 3), ("BTC/USDT", Side.SELL, 3), ("USDT/USD", Side.SELL, 3)]


# --------------------------------------------------------------------------- unwind


def _legs() -> list[OrderRequest]:
    spec = [("BTC/USD", Side.BUY, "0.002"), ("ETH/BTC", Side.BUY, "0.04"),
            ("ETH/USD", Side.SELL, "0.04")]
    return [OrderRequest(client_order_id=f"c{i}", strategy="arbitrage", symbol=sym, side=side,
                         qty=D(q), group_id="arbitrage-1", group_size=3, ts_recv=4.0)
            for i, (sym, side, q) in enumerate(spec)]


def _fill(i: int, price: str, qty: str, fee: str, fee_ccy: str) -> Fill:
    leg = _legs()[i]
    return Fill(fill_id=f"f{i}", client_order_id=leg.client_order_id, strategy="arbitrage",
                symbol=leg.symbol, side=leg.side, price=D(price), qty=D(qty), fee=D(fee),
                fee_currency=fee_ccy)


def test_unwind_second_leg_failed_sells_the_btc_back() -> None:
    fills = [_fill(0, "50000", "0.002", "0.26", "USD")]
    (sig,) = plan_unwind(_legs(), fills)
    assert (sig.symbol, sig.side, sig.qty, sig.reduce_only) == ("BTC/USD", Side.SELL,
                                                                D("0.002"), True)
    assert sig.strategy == "arbitrage" and sig.ts_recv == 4.0 and sig.group_id is None
    assert sig.reference_price == D(50000)
    assert "arbitrage-1" in sig.reason and "BTC" in sig.reason


def test_unwind_partial_last_leg_sells_the_eth_residue_with_base_fee() -> None:
    fills = [
        _fill(0, "50000", "0.002", "0.26", "USD"),
        _fill(1, "0.05", "0.04", "0.000005", "BTC"),   # fee in BTC: 0.002 - 0.002 - 0.000005
        _fill(2, "2525", "0.015", "0.1", "USD"),
    ]
    out = plan_unwind(_legs(), fills, pairs=TRI)
    # ETH: +0.04 - 0.015 = 0.025 -> sell on ETH/USD. BTC: -0.000005 -> buy back on BTC/USD.
    assert [(g.symbol, g.side, g.qty) for g in out] == [
        ("BTC/USD", Side.BUY, D("0.000005")), ("ETH/USD", Side.SELL, D("0.025"))]


def test_unwind_drops_dust_below_ordermin_and_leaves_complete_groups_alone() -> None:
    pairs = {**TRI, "BTC/USD": pair("BTC/USD", ordermin=D("0.0001"))}
    fills = [
        _fill(0, "50000", "0.002", "0.26", "USD"),
        _fill(1, "0.05", "0.04", "0.000005", "BTC"),
        _fill(2, "2525", "0.04", "0.1", "USD"),
    ]
    assert plan_unwind(_legs(), fills, pairs=pairs) == []


def test_unwind_quote_residue_on_start_based_pair_uses_price() -> None:
    # Start EUR is the base of EUR/USD: 10 USD of residue buys back 10 / 1.25 = 8 EUR.
    legs = [OrderRequest(client_order_id="a", strategy="arbitrage", symbol="EUR/USD",
                         side=Side.SELL, qty=D(8), group_id="g")]
    fills = [Fill(fill_id="1", client_order_id="a", strategy="arbitrage", symbol="EUR/USD",
                  side=Side.SELL, price=D("1.25"), qty=D(8), fee=D(0), fee_currency="USD")]
    (sig,) = plan_unwind(legs, fills)
    assert (sig.symbol, sig.side, sig.qty) == ("EUR/USD", Side.BUY, D(8))

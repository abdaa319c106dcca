"""Paper fill model: book walking, fees, partial fills, resting limits, Kraken-like rejects."""

from __future__ import annotations

from collections.abc import Sequence
from decimal import Decimal as D

import pytest

from protocol.instruments import PairInfo
from protocol.messages import (
    BookEvent,
    BookLevel,
    CandleEvent,
    Fill,
    Liquidity,
    OrderAccepted,
    OrderCancelled,
    OrderRejected,
    OrderRequest,
    OrderType,
    Side,
    TradeEvent,
)
from trading.paper import (
    REJECT_COST_MIN,
    REJECT_DUPLICATE,
    REJECT_FUNDS,
    REJECT_NO_LIQUIDITY,
    REJECT_ORDER_MIN,
    REJECT_TICK,
    REJECT_UNKNOWN_PAIR,
    REJECT_VOLUME,
    PaperMatcher,
)

PAIR = PairInfo(symbol="BTC/USD", base="BTC", quote="USD", price_decimals=1, lot_decimals=8,
                ordermin=D("0.0001"), costmin=D("0.5"), fee_taker=D("0.0026"),
                fee_maker=D("0.0016"))


def book(asks: list[tuple[str, str]], bids: list[tuple[str, str]] | None = None) -> BookEvent:
    return BookEvent(
        symbol="BTC/USD",
        bids=tuple(BookLevel(D(p), D(q)) for p, q in (bids or [("99.0", "5")])),
        asks=tuple(BookLevel(D(p), D(q)) for p, q in asks),
        ts_event_ns=7,
    )


BOOK3 = [("100.0", "1"), ("101.0", "2"), ("102.0", "3")]
RICH = {"USD": D(1_000_000), "BTC": D(100)}


def rich(ccy: str) -> D:
    return RICH.get(ccy, D(0))


def order(qty: str, side: Side = Side.BUY, *, cid: str = "c-1", limit: str | None = None,
          symbol: str = "BTC/USD") -> OrderRequest:
    return OrderRequest(
        client_order_id=cid, strategy="s", symbol=symbol, side=side, qty=D(qty),
        order_type=OrderType.LIMIT if limit else OrderType.MARKET,
        limit_price=D(limit) if limit else None,
    )


def fills(events: Sequence[object]) -> list[Fill]:
    return [e for e in events if isinstance(e, Fill)]


def test_market_order_across_three_levels_exact_vwap_and_fee() -> None:
    m = PaperMatcher({"BTC/USD": PAIR}, fill_id_prefix="p")
    ev = m.submit(order("4"), book(BOOK3), available=rich, now=5.0)
    assert isinstance(ev[0], OrderAccepted)
    assert ev[0].exchange_order_id == "pO1"
    fs = fills(ev)
    assert [(f.price, f.qty) for f in fs] == [(D("100.0"), D(1)), (D("101.0"), D(2)),
                                             (D("102.0"), D(1))]
    qty = sum(f.qty for f in fs)
    notional = sum(f.price * f.qty for f in fs)
    assert qty == D(4)
    assert notional / qty == D(101)  # (100 + 202 + 102) / 4
    assert sum(f.fee for f in fs) == D("1.0504")  # 404 × 0.0026
    assert all(f.fee_currency == "USD" and f.liquidity is Liquidity.TAKER for f in fs)
    assert [f.fill_id for f in fs] == ["pT1", "pT2", "pT3"]
    assert all(f.ts == 5.0 and f.ts_event_ns == 7 for f in fs)
    assert len(ev) == 4  # fully filled: nothing cancelled


def test_sell_market_walks_bids() -> None:
    m = PaperMatcher({"BTC/USD": PAIR}, fill_id_prefix="p")
    b = book(BOOK3, bids=[("99.0", "1"), ("98.0", "1")])
    fs = fills(m.submit(order("1.5", Side.SELL), b, available=rich, now=0))
    assert [(f.price, f.qty) for f in fs] == [(D("99.0"), D(1)), (D("98.0"), D("0.5"))]


def test_insufficient_depth_partial_fill_then_cancel() -> None:
    m = PaperMatcher({"BTC/USD": PAIR}, fill_id_prefix="p")
    ev = m.submit(order("10"), book(BOOK3), available=rich, now=1)
    assert sum(f.qty for f in fills(ev)) == D(6)
    assert isinstance(ev[-1], OrderCancelled)
    assert ev[-1].reason == "ioc_insufficient_depth"
    assert m.open_orders() == ()  # a market order never rests


def test_consumed_liquidity_not_reused_until_next_book() -> None:
    m = PaperMatcher({"BTC/USD": PAIR}, fill_id_prefix="p")
    b = book(BOOK3)
    m.submit(order("1.5", cid="a"), b, available=rich, now=0)
    fs = fills(m.submit(order("1", cid="b"), b, available=rich, now=0))
    assert [(f.price, f.qty) for f in fs] == [(D("101.0"), D(1))]  # 100 gone, 0.5 of 101 gone
    ev = m.submit(order("10", cid="c"), b, available=rich, now=0)
    assert sum(f.qty for f in fills(ev)) == D("3.5")  # 6 − 1.5 − 1
    rej = m.submit(order("1", cid="d"), b, available=rich, now=0)
    assert isinstance(rej[0], OrderRejected)
    assert rej[0].reason == REJECT_NO_LIQUIDITY
    fresh = book(BOOK3)  # a new book event restores the depth
    fs = fills(m.submit(order("1", cid="e"), fresh, available=rich, now=0))
    assert [(f.price, f.qty) for f in fs] == [(D("100.0"), D(1))]


@pytest.mark.parametrize(
    ("qty", "limit", "reason"),
    [
        ("0.00005", None, REJECT_ORDER_MIN),
        ("0.005", "100.0", None),  # exactly costmin passes
        ("0.004", "100.0", REJECT_COST_MIN),  # 0.4 USD < costmin 0.5
        ("0", None, REJECT_VOLUME),
        ("0.000000001", None, REJECT_VOLUME),  # rounds down to 0 at 8 lot decimals
        ("1", "99.05", REJECT_TICK),
    ],
)
def test_kraken_like_validation(qty: str, limit: str | None, reason: str | None) -> None:
    m = PaperMatcher({"BTC/USD": PAIR}, fill_id_prefix="p")
    ev = m.submit(order(qty, limit=limit), book(BOOK3), available=rich, now=0)
    if reason is None:
        assert isinstance(ev[0], OrderAccepted)
    else:
        assert len(ev) == 1
        assert isinstance(ev[0], OrderRejected)
        assert ev[0].reason == reason


def test_unknown_pair_and_duplicate_id() -> None:
    m = PaperMatcher({"BTC/USD": PAIR}, fill_id_prefix="p")
    ev = m.submit(order("1", symbol="DOGE/USD"), None, available=rich, now=0)
    assert isinstance(ev[0], OrderRejected)
    assert ev[0].reason == REJECT_UNKNOWN_PAIR
    m.submit(order("1", limit="90.0"), book(BOOK3), available=rich, now=0)
    ev = m.submit(order("1", limit="90.0"), book(BOOK3), available=rich, now=0)
    assert isinstance(ev[0], OrderRejected)
    assert ev[0].reason == REJECT_DUPLICATE


def test_qty_rounded_down_to_lot() -> None:
    m = PaperMatcher({"BTC/USD": PAIR}, fill_id_prefix="p")
    fs = fills(m.submit(order("0.123456789"), book(BOOK3), available=rich, now=0))
    assert fs[0].qty == D("0.12345678")


def test_insufficient_funds_buy_includes_fee_and_sell_needs_base() -> None:
    m = PaperMatcher({"BTC/USD": PAIR}, fill_id_prefix="p")
    # 1 BTC at 100.0 costs 100 + 0.26 fee
    short = {"USD": D("100.25")}
    ev = m.submit(order("1"), book(BOOK3), available=lambda c: short.get(c, D(0)), now=0)
    assert isinstance(ev[0], OrderRejected)
    assert ev[0].reason == REJECT_FUNDS
    enough = {"USD": D("100.26")}
    ev = m.submit(order("1"), book(BOOK3), available=lambda c: enough.get(c, D(0)), now=0)
    assert isinstance(ev[0], OrderAccepted)
    ev = m.submit(order("1", Side.SELL, cid="s"), book(BOOK3),
                  available=lambda c: {"BTC": D("0.5")}.get(c, D(0)), now=0)
    assert isinstance(ev[0], OrderRejected)
    assert ev[0].reason == REJECT_FUNDS


def test_resting_limit_fills_only_when_crossed() -> None:
    m = PaperMatcher({"BTC/USD": PAIR}, fill_id_prefix="p")
    ev = m.submit(order("2", limit="99.0"), book(BOOK3), available=rich, now=0)
    assert [type(e) for e in ev] == [OrderAccepted]
    assert m.reserved("USD") == D("2") * D("99.0") * D("1.0016")
    assert m.on_book(book([("99.0", "5")], bids=[("98.0", "1")]), now=1) == []  # touch only
    assert m.on_trade(TradeEvent(symbol="BTC/USD", side=Side.SELL, price=D("99.0"),
                                 qty=D(5)), now=1) == []
    fs = m.on_trade(TradeEvent(symbol="BTC/USD", side=Side.SELL, price=D("98.9"), qty=D("0.5")),
                    now=2)
    assert [(f.price, f.qty, f.liquidity) for f in fs] == [(D("99.0"), D("0.5"), Liquidity.MAKER)]
    assert fs[0].fee == D("99.0") * D("0.5") * D("0.0016")
    assert m.open_orders()[0].remaining == D("1.5")
    fs = m.on_book(book([("98.9", "5")], bids=[("98.0", "1")]), now=3)
    assert [(f.price, f.qty) for f in fs] == [(D("99.0"), D("1.5"))]
    assert m.open_orders() == ()
    assert m.reserved("USD") == 0


def test_resting_sell_fills_on_candle_high_through_limit() -> None:
    m = PaperMatcher({"BTC/USD": PAIR}, fill_id_prefix="p")
    m.submit(order("1", Side.SELL, limit="110.0"), book(BOOK3), available=rich, now=0)
    assert m.reserved("BTC") == D(1)

    def candle(high: str) -> CandleEvent:
        return CandleEvent(symbol="BTC/USD", interval_s=60, open=D(100), high=D(high),
                           low=D(99), close=D(100), volume=D(1))

    assert m.on_candle(candle("110.0"), now=1) == []
    fs = m.on_candle(candle("110.1"), now=2)
    assert [(f.side, f.price, f.qty) for f in fs] == [(Side.SELL, D("110.0"), D(1))]


def test_marketable_limit_takes_then_rests() -> None:
    m = PaperMatcher({"BTC/USD": PAIR}, fill_id_prefix="p")
    ev = m.submit(order("5", limit="101.0"), book(BOOK3), available=rich, now=0)
    assert [(f.price, f.qty) for f in fills(ev)] == [(D("100.0"), D(1)), (D("101.0"), D(2))]
    (oo,) = m.open_orders()
    assert oo.remaining == D(2)
    assert m.reserved("USD") == D(2) * D("101.0") * D("1.0016")
    (c,) = m.cancel("c-1", now=4)
    assert c.client_order_id == "c-1"
    assert m.reserved("USD") == 0
    assert m.cancel("c-1", now=4) == []


def test_cancel_all_and_reserved_funds_block_new_orders() -> None:
    m = PaperMatcher({"BTC/USD": PAIR}, fill_id_prefix="p")
    wallet = {"USD": D(300)}
    avail = lambda c: wallet.get(c, D(0))  # noqa: E731
    assert isinstance(m.submit(order("2", cid="a", limit="90.0"), None, available=avail,
                               now=0)[0], OrderAccepted)
    ev = m.submit(order("2", cid="b", limit="90.0"), None, available=avail, now=0)
    assert isinstance(ev[0], OrderRejected)  # 180.288 reserved, 120 left < 180.288
    assert ev[0].reason == REJECT_FUNDS
    assert [c.client_order_id for c in m.cancel_all(now=1)] == ["a"]
    assert m.reserved("USD") == 0


def test_the_last_fill_of_a_complete_order_says_the_order_is_done() -> None:
    # A strategy releases what it waits on when its order ends: a market order taken whole
    # ends on its last fill, one cut by the book's depth ends on the cancellation instead,
    # and a resting limit on the fill that takes its remainder (order_done).
    m = PaperMatcher({"BTC/USD": PAIR}, fill_id_prefix="p")
    whole = fills(m.submit(order("4"), book(BOOK3), available=rich, now=0))
    assert [f.order_done for f in whole] == [False, False, True]
    cut = m.submit(order("10", cid="c-2"), book(BOOK3), available=rich, now=0)
    assert not any(f.order_done for f in fills(cut)) and isinstance(cut[-1], OrderCancelled)
    at = m.fill_at(order("1", cid="c-3"), D("100.0"), available=rich, now=0, ts_event_ns=1)
    assert [f.order_done for f in fills(at)] == [True]
    m.submit(order("2", cid="c-4", limit="90.0"), book(BOOK3), available=rich, now=0)
    first = m.on_trade(TradeEvent(symbol="BTC/USD", side=Side.SELL, price=D("89.0"),
                                  qty=D("0.5"), ts_event_ns=2), now=1)
    rest = m.on_trade(TradeEvent(symbol="BTC/USD", side=Side.SELL, price=D("89.0"),
                                 qty=D(5), ts_event_ns=3), now=2)
    assert [f.order_done for f in first] == [False] and [f.order_done for f in rest] == [True]

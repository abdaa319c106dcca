"""Risk rules: every limit rejects with its reason; exits and halts trigger once."""

from __future__ import annotations

from decimal import Decimal as D

import pytest

from protocol.instruments import PairInfo
from protocol.messages import (
    BookEvent,
    BookLevel,
    Fill,
    OrderCancelled,
    OrderRequest,
    OrderType,
    RiskRejection,
    Side,
    Signal,
    TradeEvent,
)
from trading.ids import ClientOrderIds, is_valid_cl_ord_id
from trading.portfolio import Portfolio
from trading.risk import RISK_REASONS, RiskEngine, RiskLimits

PAIRS = {s: PairInfo(symbol=s, base=s.split("/")[0], quote="USD", lot_decimals=4)
         for s in ("BTC/USD", "ETH/USD", "SOL/USD", "ADA/USD")}


def engine(limits: RiskLimits | None = None, usd: int = 100_000) -> RiskEngine:
    return RiskEngine(limits or RiskLimits(), Portfolio({"USD": D(usd)}), PAIRS,
                      ClientOrderIds("t"))


def sig(symbol: str = "BTC/USD", qty: str = "1", side: Side = Side.BUY, price: str = "100",
        **kw: object) -> Signal:
    return Signal(strategy="m", symbol=symbol, side=side, qty=D(qty),
                  reference_price=D(price) if price else None, **kw)  # type: ignore[arg-type]


def fill_all(eng: RiskEngine, orders: list[OrderRequest] | RiskRejection, price: str) -> None:
    assert isinstance(orders, list)
    for o in orders:
        eng.on_fill(Fill(fill_id="f" + o.client_order_id, client_order_id=o.client_order_id,
                         strategy=o.strategy, symbol=o.symbol, side=o.side, price=D(price),
                         qty=o.qty, fee=D(0), fee_currency="USD"))


def reason(result: object) -> str:
    assert isinstance(result, RiskRejection), result
    assert result.reason in RISK_REASONS
    assert result.detail
    return result.reason


def test_approves_with_ids_and_fields() -> None:
    eng = engine()
    out = eng.evaluate([sig(ts_recv=3.5)], now=1, breaker_open=False)
    assert isinstance(out, list)
    (o,) = out
    assert (o.client_order_id, o.symbol, o.side, o.qty, o.ts_recv) == (
        "t-0", "BTC/USD", Side.BUY, D(1), 3.5)
    assert is_valid_cl_ord_id(o.client_order_id)
    assert eng.inflight_qty("BTC/USD") == D(1)


def test_position_limit() -> None:
    eng = engine()
    assert reason(eng.evaluate([sig(qty="10.01")], now=0, breaker_open=False)) == "position_limit"
    assert isinstance(eng.evaluate([sig(qty="10")], now=0, breaker_open=False), list)  # = 1000
    # the in-flight order counts: one more unit is over the limit
    assert reason(eng.evaluate([sig(qty="0.01")], now=0, breaker_open=False)) == "position_limit"


def test_total_exposure_limit() -> None:
    eng = engine(RiskLimits(max_total_exposure_usd=D(1500)))
    fill_all(eng, eng.evaluate([sig("BTC/USD", "9")], now=0, breaker_open=False), "100")
    assert eng.inflight_qty("BTC/USD") == 0
    assert reason(eng.evaluate([sig("ETH/USD", "6.01")], now=0, breaker_open=False)) == (
        "exposure_limit")
    assert isinstance(eng.evaluate([sig("ETH/USD", "6")], now=0, breaker_open=False), list)


def test_open_positions_limit() -> None:
    eng = engine(RiskLimits(max_open_positions=2))
    fill_all(eng, eng.evaluate([sig("BTC/USD")], now=0, breaker_open=False), "100")
    fill_all(eng, eng.evaluate([sig("ETH/USD")], now=0, breaker_open=False), "100")
    assert reason(eng.evaluate([sig("SOL/USD")], now=0, breaker_open=False)) == "open_positions"
    # adding to an existing position is fine
    assert isinstance(eng.evaluate([sig("BTC/USD")], now=0, breaker_open=False), list)


def test_breaker_blocks_everything_including_exits() -> None:
    eng = engine()
    fill_all(eng, eng.evaluate([sig()], now=0, breaker_open=False), "100")
    exit_sig = sig(side=Side.SELL, reduce_only=True)
    assert reason(eng.evaluate([exit_sig], now=0, breaker_open=True)) == "breaker_open"
    assert isinstance(eng.evaluate([exit_sig], now=0, breaker_open=False), list)


def test_reduce_only_passes_limits_and_is_trimmed() -> None:
    eng = engine(RiskLimits(max_position_usd=D(150), max_open_positions=1))
    fill_all(eng, eng.evaluate([sig(qty="1.5")], now=0, breaker_open=False), "100")
    # prices tripled: the position is now over every limit, yet the exit passes
    out = eng.evaluate([sig(side=Side.SELL, qty="5", price="300", reduce_only=True)], now=0,
                       breaker_open=False)
    assert isinstance(out, list)
    assert out[0].qty == D("1.5")
    assert out[0].reduce_only
    assert reason(eng.evaluate([sig("ETH/USD", side=Side.SELL, reduce_only=True)], now=0,
                               breaker_open=False)) == "invalid"


def test_group_all_or_nothing() -> None:
    eng = engine()
    legs = [sig("BTC/USD", "5", group_id="g1", group_size=2),
            sig("ETH/USD", "11", group_id="g1", group_size=2)]
    assert reason(eng.evaluate(legs, now=0, breaker_open=False)) == "position_limit"
    assert eng.inflight_qty("BTC/USD") == 0  # the good leg was not approved alone
    legs[1] = sig("ETH/USD", "5", group_id="g1", group_size=2)
    out = eng.evaluate(legs, now=0, breaker_open=False)
    assert isinstance(out, list)
    assert [o.group_id for o in out] == ["g1", "g1"]
    assert reason(eng.evaluate(legs[:1], now=0, breaker_open=False)) == "invalid"


def test_invalid_and_no_price() -> None:
    eng = engine()
    assert reason(eng.evaluate([sig(qty="0")], now=0, breaker_open=False)) == "invalid"
    assert reason(eng.evaluate([sig("XRP/USD")], now=0, breaker_open=False)) == "invalid"
    assert reason(eng.evaluate([sig(order_type=OrderType.LIMIT)], now=0,
                               breaker_open=False)) == "invalid"
    assert reason(eng.evaluate([sig(price="")], now=0, breaker_open=False)) == "no_price"
    eng.on_market(TradeEvent(symbol="BTC/USD", side=Side.BUY, price=D(100), qty=D(1)))
    assert isinstance(eng.evaluate([sig(price="")], now=0, breaker_open=False), list)


def book(mid: str) -> BookEvent:
    m = D(mid)
    return BookEvent(symbol="BTC/USD", bids=(BookLevel(m - D("0.5"), D(1)),),
                     asks=(BookLevel(m + D("0.5"), D(1)),), ts_recv=9.0)


@pytest.mark.parametrize(("mid", "why"), [("98.5", None), ("98", "stop_loss"),
                                          ("103.5", None), ("104", "take_profit")])
def test_stop_loss_and_take_profit_long(mid: str, why: str | None) -> None:
    eng = engine()
    fill_all(eng, eng.evaluate([sig(qty="2")], now=0, breaker_open=False), "100")
    out = eng.on_market(book(mid))
    if why is None:
        assert out == []
        return
    (s,) = out
    assert (s.side, s.qty, s.reason, s.reduce_only, s.strategy, s.ts_recv) == (
        Side.SELL, D(2), why, True, "risk", 9.0)
    assert eng.on_market(book(mid)) == []  # emitted once
    orders = eng.evaluate(out, now=0, breaker_open=False)
    assert isinstance(orders, list)
    eng.on_order_event(OrderCancelled(client_order_id=orders[0].client_order_id, reason="x"))
    assert len(eng.on_market(book(mid))) == 1  # the exit died: a fresh one is emitted
    fill_all(eng, eng.evaluate(out, now=0, breaker_open=False), mid)
    assert eng.portfolio.position_qty("BTC/USD") == 0
    assert eng.on_market(book(mid)) == []


def test_no_stop_loss_buy_for_sold_inventory() -> None:
    """Spot: selling coins the account held leaves a negative per-symbol position (an arbitrage
    conversion leg, or inventory sold); it is not a short, and "covering" it with a stop-loss
    buy would create exposure out of nothing (review finding)."""
    eng = RiskEngine(RiskLimits(), Portfolio({"USD": D(10_000), "BTC": D(5)}), PAIRS,
                     ClientOrderIds("t"))
    fill_all(eng, eng.evaluate([sig(side=Side.SELL)], now=0, breaker_open=False), "100")
    assert eng.on_market(book("102")) == []
    assert eng.on_market(book("90")) == []


def test_reduce_only_sell_is_checked_against_coins_held() -> None:
    """An arbitrage unwind sells coins a triangle left behind although the per-symbol position
    is flat; a reduce-only sell is sized by the base actually held."""
    eng = RiskEngine(RiskLimits(), Portfolio({"USD": D(10_000), "BTC": D("0.5")}), PAIRS,
                     ClientOrderIds("t"))
    eng.portfolio.mark("BTC/USD", D(100))
    out = eng.evaluate([sig(side=Side.SELL, qty="2", reduce_only=True)], now=0,
                       breaker_open=False)
    assert isinstance(out, list)
    assert out[0].qty == D("0.5")  # trimmed to what is held
    eng2 = engine()
    assert reason(eng2.evaluate([sig(side=Side.SELL, reduce_only=True)], now=0,
                                breaker_open=False)) == "invalid"  # nothing held


def test_open_breaker_still_lets_protective_exits_through() -> None:
    eng = engine()
    fill_all(eng, eng.evaluate([sig(qty="2")], now=0, breaker_open=False), "100")
    (exit_signal,) = eng.on_market(book("97"))  # below the 2 % stop
    assert isinstance(eng.evaluate([exit_signal], now=0, breaker_open=True), list)
    assert reason(eng.evaluate([sig()], now=0, breaker_open=True)) == "breaker_open"
    strategy_exit = sig(side=Side.SELL, reduce_only=True)  # a strategy's exit is not protective
    assert reason(eng.evaluate([strategy_exit], now=0, breaker_open=True)) == "breaker_open"


def test_daily_loss_halt_and_rejection() -> None:
    eng = engine(RiskLimits(daily_loss_limit_usd=D(50), max_drawdown=D(1)))
    fill_all(eng, eng.evaluate([sig(qty="5")], now=0, breaker_open=False), "100")
    assert eng.check_halt(utc_day=1) is None
    eng.on_market(book("90"))  # −50: at the limit, not over it
    assert eng.check_halt(utc_day=1) is None
    eng.on_market(book("89.9"))
    assert eng.check_halt(utc_day=1) == "daily_loss"
    assert reason(eng.evaluate([sig("ETH/USD")], now=0, breaker_open=False)) == "daily_loss"
    assert eng.risk_score() == 1.0
    # exits still pass; a new day starts a new budget
    assert isinstance(eng.evaluate([sig(side=Side.SELL, reduce_only=True)], now=0,
                                   breaker_open=False), list)
    assert eng.check_halt(utc_day=2) is None


def test_drawdown_halt() -> None:
    eng = engine(RiskLimits(max_drawdown=D("0.10"), daily_loss_limit_usd=D(10**9),
                            max_position_usd=D(10**6), max_total_exposure_usd=D(10**6)),
                 usd=1000)
    fill_all(eng, eng.evaluate([sig(qty="10")], now=0, breaker_open=False), "100")
    eng.on_market(book("110"))  # equity 1100 = high water
    eng.on_market(book("100"))  # 1000: drawdown 1/11 ≈ 0.0909
    assert eng.check_halt(utc_day=0) is None
    eng.on_market(book("99"))  # 990: drawdown 0.1 exactly, not over
    assert eng.check_halt(utc_day=0) is None
    eng.on_market(book("98.9"))
    assert eng.check_halt(utc_day=0) == "drawdown"
    assert reason(eng.evaluate([sig("ETH/USD", price="1")], now=0, breaker_open=False)) == (
        "drawdown")


def test_risk_score_formula() -> None:
    eng = engine(RiskLimits(max_open_positions=4, max_total_exposure_usd=D(1000)))
    assert eng.risk_score() == 0.0
    fill_all(eng, eng.evaluate([sig(qty="2")], now=0, breaker_open=False), "100")
    eng.on_market(book("100"))
    assert eng.risk_score() == pytest.approx(0.25)  # max(200/1000, 1/4)
    fill_all(eng, eng.evaluate([sig("ETH/USD", qty="5")], now=0, breaker_open=False), "100")
    assert eng.risk_score() == pytest.approx(0.7)  # exposure 700/1000


def test_client_order_ids() -> None:
    ids = ClientOrderIds("run7", start=35)
    assert [ids.next(), ids.next()] == ["run7-z", "run7-10"]
    assert ids.issued == 37
    with pytest.raises(ValueError):
        ClientOrderIds("has space")
    big = ClientOrderIds("abcdefghijkl", start=36**5 - 1)  # 13 + 5 = 18 chars
    assert len(big.next()) == 18
    with pytest.raises(OverflowError):
        big.next()
    assert is_valid_cl_ord_id("6d1b345e-2821-40e2-ad83-4ecb18a06876")
    assert is_valid_cl_ord_id("da8e4ad59b78481c93e589746b0cf91f")
    assert not is_valid_cl_ord_id("x" * 19)


def test_offsetting_orders_in_flight_do_not_crash_on_fills() -> None:
    """Regression: a buy, a sell and a buy in flight net to zero after the first fill; the
    engine dropped the symbol's in-flight entry and the next fill raised KeyError (which
    crashed the risk actor in paper mode)."""
    eng = RiskEngine(RiskLimits(), Portfolio({"USD": D(10_000), "ETH": D(1)}), PAIRS,
                     ClientOrderIds("t"))
    eng.portfolio.mark("ETH/USD", D(100))
    orders = []
    for side in (Side.BUY, Side.SELL, Side.BUY):
        out = eng.evaluate([sig("ETH/USD", qty="0.01", side=side)], now=0, breaker_open=False)
        assert isinstance(out, list)
        orders += out
    fill_all(eng, [orders[0]], "100")
    assert eng.inflight_qty("ETH/USD") == 0
    fill_all(eng, [orders[1]], "100")  # raised KeyError before the fix
    assert eng.inflight_qty("ETH/USD") == D("0.01")
    fill_all(eng, [orders[2]], "100")
    assert eng.inflight_qty("ETH/USD") == 0


def test_arbitrage_unwinds_pass_an_open_breaker() -> None:
    eng = RiskEngine(RiskLimits(), Portfolio({"USD": D(10_000), "BTC": D("0.5")}), PAIRS,
                     ClientOrderIds("t"))
    eng.portfolio.mark("BTC/USD", D(100))
    unwind = Signal(strategy="arbitrage", symbol="BTC/USD", side=Side.SELL, qty=D("0.5"),
                    reduce_only=True, reference_price=D(100),
                    reason="unwind g1: BTC residue 0.5 back to USD")
    assert isinstance(eng.evaluate([unwind], now=0, breaker_open=True), list)

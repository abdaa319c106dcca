"""Portfolio/ledger: exact balances and FIFO P&L, USD conversion, drawdown, snapshots."""

from __future__ import annotations

from collections import defaultdict, deque
from decimal import Decimal as D
from fractions import Fraction

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocol.instruments import PairInfo
from protocol.messages import Fill, Side
from trading.portfolio import DrawdownNotTracked, Portfolio

BTCUSD = PairInfo(symbol="BTC/USD", base="BTC", quote="USD")
ETHUSD = PairInfo(symbol="ETH/USD", base="ETH", quote="USD")
ETHBTC = PairInfo(symbol="ETH/BTC", base="ETH", quote="BTC")
SOLUSDT = PairInfo(symbol="SOL/USDT", base="SOL", quote="USDT")
PAIRS = {p.symbol: p for p in (BTCUSD, ETHUSD, ETHBTC)}

_n = 0


def fill(symbol: str, side: Side, price: str | D, qty: str | D, fee: str | D = "0",
         strategy: str = "s", fee_ccy: str | None = None) -> Fill:
    global _n
    _n += 1
    return Fill(fill_id=f"f{_n}", client_order_id=f"c{_n}", strategy=strategy, symbol=symbol,
                side=side, price=D(price), qty=D(qty), fee=D(fee),
                fee_currency=fee_ccy or PAIRS.get(symbol, SOLUSDT).quote)


def test_round_trip_hand_computed() -> None:
    pf = Portfolio({"USD": D(1000)})
    pf.apply_fill(fill("BTC/USD", Side.BUY, "100", "2", "0.52"), BTCUSD)
    assert pf.balance("USD") == D("799.48")
    assert pf.balance("BTC") == D(2)
    assert pf.position_qty("BTC/USD") == D(2)
    assert pf.avg_entry("BTC/USD") == D(100)
    pf.apply_fill(fill("BTC/USD", Side.BUY, "130", "1", "0.338"), BTCUSD)
    assert pf.avg_entry("BTC/USD") == D(110)  # (200 + 130) / 3
    pf.mark("BTC/USD", D(120))
    assert pf.unrealized_pnl_usd() == D(30)  # 3 × 120 − 330
    assert pf.exposure_usd() == D(360)
    r = pf.apply_fill(fill("BTC/USD", Side.SELL, "120", "2.5", "0.78"), BTCUSD)
    assert r == D(35)  # FIFO: 2 × (120 − 100) + 0.5 × (120 − 130)
    assert pf.realized_pnl_usd() == D(35)
    assert pf.fees_usd() == D("1.638")
    assert pf.balance("USD") == D(1000) - D(200) - D(130) + D(300) - D("1.638")
    pos = pf.position("BTC/USD")
    assert pos is not None
    assert pos.qty == D("0.5")
    assert pos.avg_entry_price == D(130)
    assert pos.unrealized == D(-5)
    assert pf.equity_usd() == pf.balance("USD") + D("0.5") * D(120)
    stats = pf.strategy_stats()["s"]
    assert (stats.trades, stats.wins, stats.losses) == (3, 1, 0)


def test_flip_through_zero_opens_short() -> None:
    pf = Portfolio({"USD": D(1000), "BTC": D(5)})
    pf.apply_fill(fill("BTC/USD", Side.BUY, "100", "1"), BTCUSD)
    assert pf.apply_fill(fill("BTC/USD", Side.SELL, "90", "3"), BTCUSD) == D(-10)
    assert pf.position_qty("BTC/USD") == D(-2)
    assert pf.avg_entry("BTC/USD") == D(90)
    pf.mark("BTC/USD", D(80))
    assert pf.unrealized_pnl_usd() == D(20)
    assert pf.open_position_count() == 1
    pf.apply_fill(fill("BTC/USD", Side.BUY, "80", "2"), BTCUSD)
    assert pf.open_positions() == ()
    assert pf.realized_pnl()["USD"] == D(10)


def test_usd_conversion_rules() -> None:
    pf = Portfolio({"USD": D(10), "USDT": D(5), "ETH": D(2), "SOL": D(3), "DOGE": D(7),
                    "EUR": D(1)}, usd_equivalents=("USD",))
    assert pf.usd_rate("USD") == 1
    assert pf.usd_rate("USDT") == 1  # pegged
    assert pf.usd_rate("ETH") is None
    pf.mark("ETH/BTC", D("0.05"))
    assert pf.usd_rate("ETH") is None  # no BTC/USD yet
    pf.mark("BTC/USD", D(60000))
    assert pf.usd_rate("ETH") == D(3000)  # cross: 0.05 × 60000
    pf.mark("ETH/USD", D(3100))
    assert pf.usd_rate("ETH") == D(3100)  # a direct mark wins
    pf.mark("SOL/USDT", D(150))
    assert pf.usd_rate("SOL") == D(150)  # quoted in a pegged currency
    pf.mark("USDT/USD", D("0.999"))
    assert pf.usd_rate("USDT") == D("0.999")
    assert pf.usd_rate("SOL") == D("149.850")
    assert set(pf.unpriced_currencies()) == {"DOGE", "EUR"}
    assert pf.equity_usd() == D(10) + D("4.995") + D(6200) + D("449.550")


def test_drawdown_tracks_high_water_and_waits_for_prices() -> None:
    pf = Portfolio({"USD": D(1000), "ETH": D(1)})
    assert pf.high_water_usd is None  # ETH unpriced: no high-water yet
    pf.mark("ETH/USD", D(1000))
    assert pf.high_water_usd == D(2000)
    pf.mark("ETH/USD", D(1200))
    assert pf.high_water_usd == D(2200)
    pf.mark("ETH/USD", D(760))
    assert pf.drawdown() == D("0.2")  # (2200 − 1760) / 2200
    pf.mark("ETH/USD", D(900))
    assert pf.drawdown() == (D(2200) - D(1900)) / D(2200)
    assert pf.max_drawdown() == D("0.2")


def test_stopped_drawdown_tracking_keeps_the_ledger_and_refuses_stale_figures() -> None:
    # What a backtest does when nothing reads the drawdown any more (no risk limits, or the
    # breaker latched): marks and fills still move the equity, the drawdown figures refuse.
    pf = Portfolio({"USD": D(1000), "ETH": D(1)})
    pf.mark("ETH/USD", D(1000))
    pf.stop_drawdown_tracking()
    assert not pf.tracks_drawdown
    pf.mark("ETH/USD", D(1500))
    pf.apply_fill(fill("ETH/USD", Side.SELL, "1500", "1", fee="1.5"), ETHUSD)
    assert pf.equity_usd() == D("2498.5")
    assert pf.balance("USD") == D("2498.5")
    with pytest.raises(DrawdownNotTracked):
        _ = pf.high_water_usd
    with pytest.raises(DrawdownNotTracked):
        pf.drawdown()
    with pytest.raises(DrawdownNotTracked):
        pf.max_drawdown()


def test_snapshot_restore_round_trip() -> None:
    pf = Portfolio({"USD": D(1000)})
    pf.apply_fill(fill("BTC/USD", Side.BUY, "100", "2", "0.5", strategy="a"), BTCUSD)
    pf.apply_fill(fill("BTC/USD", Side.SELL, "110", "1", "0.3", strategy="b"), BTCUSD)
    pf.mark("BTC/USD", D(90))
    snap = pf.snapshot()
    again = Portfolio.restore(snap)
    assert again.snapshot() == snap
    assert again.equity_usd() == pf.equity_usd()
    assert again.realized_pnl_usd() == pf.realized_pnl_usd() == D(10)
    assert again.fees_usd() == D("0.8")
    assert again.drawdown() == pf.drawdown()
    assert again.strategy_stats() == pf.strategy_stats()
    # both keep trading identically
    f = fill("BTC/USD", Side.SELL, "95", "1", "0.2")
    assert again.apply_fill(f, BTCUSD) == pf.apply_fill(f, BTCUSD) == D(-5)
    assert again.snapshot() == pf.snapshot()


# --------------------------------------------------------------------------- recomputation


def _reference(
    initial: dict[str, D], fills: list[Fill]
) -> tuple[dict[str, Fraction], dict[str, Fraction], dict[str, Fraction], dict[str, Fraction]]:
    """Independent recomputation with Fractions and plain FIFO lists."""
    bal: dict[str, Fraction] = defaultdict(Fraction, {k: Fraction(v) for k, v in initial.items()})
    lots: dict[str, deque[list[Fraction]]] = defaultdict(deque)
    realized: dict[str, Fraction] = defaultdict(Fraction)
    fees: dict[str, Fraction] = defaultdict(Fraction)
    for f in fills:
        pair = PAIRS[f.symbol]
        p, q = Fraction(f.price), Fraction(f.qty)
        s = 1 if f.side is Side.BUY else -1
        bal[pair.base] += s * q
        bal[pair.quote] -= s * p * q
        bal[f.fee_currency] -= Fraction(f.fee)
        fees[f.fee_currency] += Fraction(f.fee)
        book = lots[f.symbol]
        left = q
        while left and book and (book[0][0] > 0) != (s > 0):
            lq, lp = book[0]
            take = min(abs(lq), left)
            realized[pair.quote] += (p - lp) * take * (1 if lq > 0 else -1)
            left -= take
            if take == abs(lq):
                book.popleft()
            else:
                book[0][0] = lq - take * (1 if lq > 0 else -1)
        if left:
            book.append([s * left, p])
    qty = {sym: sum((lot[0] for lot in b), Fraction(0)) for sym, b in lots.items()}
    return dict(bal), dict(realized), dict(fees), qty


prices = st.decimals(min_value=D("0.01"), max_value=D("100000"), places=2)
qtys = st.decimals(min_value=D("0.00000001"), max_value=D("50"), places=8)
fill_args = st.tuples(st.sampled_from(sorted(PAIRS)), st.sampled_from([Side.BUY, Side.SELL]),
                      prices, qtys, st.sampled_from(["0", "0.0016", "0.0026"]),
                      st.sampled_from(["a", "b"]))


@settings(max_examples=120, deadline=None)
@given(st.lists(fill_args, max_size=40), prices, prices, st.decimals(
    min_value=D("0.001"), max_value=D("1"), places=5))
def test_ledger_equals_independent_recomputation(
    args: list[tuple[str, Side, D, D, str, str]], btc_mark: D, eth_mark: D, ethbtc_mark: D
) -> None:
    initial = {"USD": D(100000), "BTC": D(3)}
    fills = [fill(sym, side, p, q, (p * q * D(rate)), strategy=strat)
             for sym, side, p, q, rate, strat in args]
    pf = Portfolio(initial)
    for f in fills:
        pf.apply_fill(f, PAIRS[f.symbol])
    bal, realized, fees, qty = _reference(initial, fills)
    for ccy in set(bal) | set(pf.balances()):
        assert pf.balance(ccy) == bal.get(ccy, 0), ccy
    assert {k: v for k, v in pf.realized_pnl().items() if v} == {
        k: v for k, v in realized.items() if v}
    assert {k: v for k, v in pf.fees().items() if v} == {k: v for k, v in fees.items() if v}
    for sym in PAIRS:
        assert pf.position_qty(sym) == qty.get(sym, 0)
    # per-strategy realized sums to the total, exactly
    by_strat: dict[str, D] = defaultdict(D)
    for s in pf.strategy_stats().values():
        for ccy, amt in s.realized:
            by_strat[ccy] += amt
    assert {k: v for k, v in by_strat.items() if v} == {
        k: v for k, v in pf.realized_pnl().items() if v}
    # realized + unrealized (gross) == net quote cash flow + position × mark, per symbol
    pf.mark("BTC/USD", btc_mark)
    pf.mark("ETH/USD", eth_mark)
    pf.mark("ETH/BTC", ethbtc_mark)
    for sym in PAIRS:
        fs = [f for f in fills if f.symbol == sym]
        cash = sum(((-1 if f.side is Side.BUY else 1) * f.price * f.qty for f in fs), D(0))
        pos = pf.position(sym)
        if pos is None:
            continue
        mark = pf.mark_price(sym)
        assert mark is not None
        assert pos.realized + pos.qty * mark - pos.cost == cash + pos.qty * mark
    # and the USD views are the same sums converted at current rates
    assert pf.realized_pnl_usd() == sum(
        (v * (pf.usd_rate(k) or 0) for k, v in pf.realized_pnl().items()), D(0))
    # snapshot/restore is lossless
    assert Portfolio.restore(pf.snapshot()).snapshot() == pf.snapshot()


_SYMBOLS = ("BTC/USD", "BTC/USDT", "ETH/USDT", "ETH/BTC", "SOL/BTC", "SOL/USDT", "USDT/USD",
            "ETH/USD")


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(_SYMBOLS), st.integers(1, 10_000)), max_size=40))
def test_cached_rates_and_high_water_equal_a_fresh_computation(
        marks: list[tuple[str, int]]) -> None:
    # The rate cache is invalidated by the marks a rate read (found or missed) and the
    # high-water update is skipped for marks no held currency's rate read: neither may ever
    # change a figure. A fresh portfolio per step (nothing cached) is the reference.
    balances = {"USD": D(1000), "BTC": D(1), "ETH": D(2), "USDT": D(50), "SOL": D(3)}
    pf = Portfolio(balances)
    seen: dict[str, D] = {}
    hwm: D | None = None
    for sym, raw in marks:
        price = D(raw) / 100
        pf.mark(sym, price)
        seen[sym] = price
        fresh = Portfolio(balances)
        for s, p in seen.items():
            fresh.mark(s, p)
        for ccy in balances:
            assert pf.usd_rate(ccy) == fresh.usd_rate(ccy)
        assert pf.equity_usd() == fresh.equity_usd()
        if not fresh.unpriced_currencies():
            eq = fresh.equity_usd()
            hwm = eq if hwm is None or eq > hwm else hwm
        assert pf.high_water_usd == hwm


_STEP = st.one_of(
    st.tuples(st.just("mark"), st.sampled_from(("BTC/USD", "ETH/USD", "ETH/BTC", "BTC/USDT")),
              st.integers(1, 10_000)),
    st.tuples(st.just("fill"), st.sampled_from(sorted(PAIRS)),
              st.sampled_from([Side.BUY, Side.SELL]), st.sampled_from(["0.5", "1", "2"])))


@settings(max_examples=80, deadline=None)
@given(st.lists(_STEP, max_size=40))
def test_relevant_marks_after_fills_and_marks_equal_a_fresh_portfolios(
        steps: list[tuple[object, ...]]) -> None:
    # The set of marks that can move the equity is kept across fills unless a balance
    # becomes or stops being zero (or a symbol is marked for the first time); a fresh
    # portfolio with the same balances and marks is the reference (a stale set would skip a
    # high-water update that raises it).
    pf = Portfolio({"USD": D(100000), "BTC": D(1), "ETH": D(2)})
    for step in steps:
        if step[0] == "mark":
            _, sym, raw = step
            pf.mark(str(sym), D(int(raw)) / 100)  # type: ignore[call-overload]
        else:
            _, sym, side, qty = step
            pf.apply_fill(fill(str(sym), side, "10", str(qty)), PAIRS[str(sym)])  # type: ignore[arg-type]
        fresh = Portfolio(pf.balances())
        for s in ("BTC/USD", "ETH/USD", "ETH/BTC", "BTC/USDT"):
            price = pf.mark_price(s)
            if price is not None:
                fresh.mark(s, price)
        assert pf.relevant_symbols() == fresh.relevant_symbols()

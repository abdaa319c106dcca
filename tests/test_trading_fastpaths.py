"""The backtest speed-ups in trading/ decide exactly as the plain algorithms they replaced.

Each test drives the optimised code and an independent reference (the former algorithm, written
here) with the same random inputs and asserts identical results: Portfolio high-water/drawdown
with the lazy re-measurement and the rate cache, mean reversion's integer sums and band text,
PositionKeeper's pending counters, and arbitrage's float screen.
"""

from __future__ import annotations

from collections import deque
from decimal import Context, Decimal
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocol.instruments import PairInfo
from protocol.messages import BookEvent, BookLevel, CandleEvent, Fill, Side
from trading.portfolio import Portfolio
from trading.strategies import Arbitrage, ArbitrageConfig, MeanReversion, MeanReversionConfig
from trading.strategies._base import PositionKeeper

D = Decimal
PAIRS = {s: PairInfo(symbol=s, base=s.split("/")[0], quote=s.split("/")[1])
         for s in ("BTC/USDT", "ETH/BTC", "ETH/USDT", "SOL/EUR")}

prices = st.decimals(min_value=D("0.001"), max_value=D("90000"), places=3, allow_nan=False,
                     allow_infinity=False).map(lambda d: d.normalize() if d % 7 == 0 else d)


# --------------------------------------------------------------------------- portfolio


ops = st.lists(st.one_of(
    st.tuples(st.just("mark"), st.sampled_from(sorted(PAIRS)), prices),
    st.tuples(st.just("fill"), st.sampled_from(sorted(PAIRS)), prices,
              st.sampled_from([Side.BUY, Side.SELL]), st.decimals(min_value=D("0.001"),
                                                                  max_value=D(3), places=3)),
    st.tuples(st.just("carry"), st.decimals(min_value=D(1), max_value=D(10**6), places=2)),
), max_size=60)


@settings(max_examples=150, deadline=None)
@given(ops)
def test_portfolio_lazy_high_water_equals_remeasuring_on_every_mark(steps: list[Any]) -> None:
    fast = Portfolio({"USDT": D(10000)})
    ref = Portfolio({"USDT": D(10000)})
    for n, step in enumerate(steps):
        if step[0] == "mark":
            fast.mark(step[1], step[2])
            ref._hwm_stale = True  # the former behaviour: re-measure on every mark
            ref._rates.clear()  # and no rate cache
            ref.mark(step[1], step[2])
        elif step[0] == "fill":
            _, sym, price, side, qty = step
            f = Fill(fill_id=f"f{n}", client_order_id=f"c{n}", strategy="s", symbol=sym,
                     side=side, price=price, qty=qty, fee=D(0), fee_currency=PAIRS[sym].quote)
            fast.apply_fill(f, PAIRS[sym])
            ref._rates.clear()
            ref.apply_fill(f, PAIRS[sym])
        else:
            fast.carry_high_water(step[1])
            ref.carry_high_water(step[1])
        ref._rates.clear()
        assert fast.snapshot() == ref.snapshot()
        assert fast.drawdown() == ref.drawdown()
        assert str(fast.equity_usd()) == str(ref.equity_usd())
        for ccy in ("BTC", "ETH", "USDT", "SOL", "EUR"):
            ref._rates.clear()
            assert fast.usd_rate(ccy) == ref.usd_rate(ccy)


# --------------------------------------------------------------------------- mean reversion

_EXACT = Context(prec=80)


class _RefWindow:  # the former 80-digit Decimal running sums
    def __init__(self, n: int) -> None:
        self.prices: deque[Decimal] = deque(maxlen=n)
        self.s1 = D(0)
        self.s2 = D(0)

    def push(self, p: Decimal) -> None:
        c = _EXACT
        if len(self.prices) == self.prices.maxlen:
            old = self.prices[0]
            self.s1 = c.subtract(self.s1, old)
            self.s2 = c.subtract(self.s2, c.multiply(old, old))
        self.prices.append(p)
        self.s1 = c.add(self.s1, p)
        self.s2 = c.add(self.s2, c.multiply(p, p))


@settings(max_examples=150, deadline=None)
@given(st.lists(prices, min_size=1, max_size=80), st.integers(min_value=2, max_value=6),
       st.sampled_from(["0", "1.5", "0.7", "2"]), st.sampled_from(["0", "0.5", "1.5"]))
def test_mean_reversion_integer_sums_decide_and_print_as_the_decimal_sums(
        closes: list[Decimal], n: int, entry: str, exit_sd: str) -> None:
    cfg = MeanReversionConfig(window=n, entry_sd=D(entry), exit_sd=D(exit_sd),
                              notional_currency="USDT", symbols=("BTC/USDT",))
    s = MeanReversion(cfg, PAIRS)
    ref = _RefWindow(n)
    win = s._windows["BTC/USDT"]
    k_in, k_out = D(entry) * D(entry), D(exit_sd) * D(exit_sd)
    for p in closes:
        win.push(p)
        ref.push(p)
        s1, s2 = win.decimal_sums()
        assert (str(s1), str(s2)) == (str(ref.s1), str(ref.s2))
        if len(ref.prices) < n:
            continue
        c = _EXACT
        spread2 = c.subtract(c.multiply(ref.s2, n), c.multiply(ref.s1, ref.s1))
        d = c.subtract(ref.s1, c.multiply(p, n))
        want_in = d > 0 and c.multiply(d, d) > c.multiply(k_in, spread2)
        e = c.subtract(c.multiply(p, n), ref.s1)
        want_out = e >= 0 and c.multiply(e, e) >= c.multiply(k_out, spread2)
        t = win.ticks[-1]
        ispread = win.s2 * n - win.s1 * win.s1
        a, b = s._k2_in
        got_in = win.s1 - n * t > 0 and (win.s1 - n * t) ** 2 * b > a * ispread
        a, b = s._k2_out
        got_out = n * t - win.s1 >= 0 and (n * t - win.s1) ** 2 * b >= a * ispread
        assert (got_in, got_out) == (want_in, want_out)


def test_mean_reversion_signals_on_candles() -> None:
    cfg = MeanReversionConfig(window=3, entry_sd=D(1), notional_currency="USDT",
                              symbols=("BTC/USDT",))
    s = MeanReversion(cfg, PAIRS)
    out: list[Any] = []
    for i, close in enumerate(["100", "100.5", "101.00", "95"]):
        out += s.on_market(CandleEvent(symbol="BTC/USDT", interval_s=60, open=D(close),
                                       high=D(close), low=D(close), close=D(close),
                                       volume=D(1), ts_event_ns=i))
    assert len(out) == 1 and out[0].side is Side.BUY
    # the band text is computed from the exact sums with the former exponents
    assert out[0].reason.endswith("(mean 98.833333, sd 2.71825, n 3)")


# --------------------------------------------------------------------------- keeper


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["sig", "fill", "close", "expire"]),
                          st.sampled_from(["A/B", "C/B"]),
                          st.floats(min_value=0, max_value=100)), max_size=40))
def test_keeper_pending_counts_match_a_scan(steps: list[Any]) -> None:
    pairs = {s: PairInfo(symbol=s, base=s[0], quote="B") for s in ("A/B", "C/B")}
    k = PositionKeeper("s", pairs, pending_timeout_s=10)
    for n, (op, sym, ts) in enumerate(steps):
        if op == "sig":
            k.signal(sym, Side.BUY, D(1), price=D(1), reason="", ts_recv=ts)
        elif op == "fill":
            k.on_fill(Fill(fill_id=f"f{n}", client_order_id=f"c{n}", strategy="s", symbol=sym,
                           side=Side.BUY, price=D(1), qty=D(1), fee=D(0), fee_currency="B"))
        elif op == "close":
            k.on_order_closed(f"c{n}", D(0))
        else:
            k.expire(ts)
        for s in ("A/B", "C/B"):
            assert k.has_pending(s) == any(i.symbol == s for i in k._intents)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["sig", "group", "fill", "expire"]),
                          st.sampled_from(["A/B", "C/B"]),
                          st.floats(min_value=0, max_value=100)), max_size=30),
       st.integers(min_value=0, max_value=30))
def test_a_refusing_keeper_ends_where_record_and_release_ends(steps: list[Any],
                                                              trip: int) -> None:
    # What the backtest engine does with each refused group: the signals, then one
    # on_order_closed per signal. From ``trip`` on, one keeper refuses everything.
    pairs = {s: PairInfo(symbol=s, base=s[0], quote="B") for s in ("A/B", "C/B")}
    plain = PositionKeeper("s", pairs, pending_timeout_s=10)
    refusing = PositionKeeper("s", pairs, pending_timeout_s=10)
    for n, (op, sym, ts) in enumerate(steps):
        if n == trip:
            refusing.refuse_everything()
        for k in (plain, refusing):
            if op in ("sig", "group"):
                legs = [k.signal(s, Side.BUY, D(1), price=D(1), reason="", ts_recv=ts)
                        for s in ((sym,) if op == "sig" else ("A/B", "C/B"))]
                if n >= trip:  # refused: released at once
                    for _ in legs:
                        k.on_order_closed("risk-rejected:breaker_open", D(0))
            elif op == "fill":  # an order approved before the trip fills
                k.on_fill(Fill(fill_id=f"f{n}", client_order_id=f"c{n}", strategy="s",
                               symbol=sym, side=Side.BUY, price=D(1), qty=D(1), fee=D(0),
                               fee_currency="B"))
            else:
                k.expire(ts)
        assert [(i.symbol, i.remaining, i.ts, i.order_id) for i in refusing._intents] == \
            [(i.symbol, i.remaining, i.ts, i.order_id) for i in plain._intents]
        assert refusing._pending == plain._pending
        assert refusing.positions == plain.positions


# --------------------------------------------------------------------------- arbitrage


def _book(sym: str, bid: Decimal, ask: Decimal) -> BookEvent:
    return BookEvent(symbol=sym, bids=(BookLevel(bid, D(5)),), asks=(BookLevel(ask, D(5)),))


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["BTC/USDT", "ETH/BTC", "ETH/USDT"]),
                          st.integers(min_value=-60, max_value=60)), min_size=1, max_size=30))
def test_arbitrage_float_screen_never_changes_a_decision(moves: list[Any]) -> None:
    pairs = {s: PAIRS[s] for s in ("BTC/USDT", "ETH/BTC", "ETH/USDT")}
    cfg = ArbitrageConfig(notional_currency="USDT", pending_timeout_s=D(0))
    fast = Arbitrage(cfg, pairs)
    slow = Arbitrage(cfg, pairs)
    slow._screen_threshold = float("-inf")  # every cycle priced exactly
    # prices around a fair triangle (ETH/USDT = ETH/BTC * BTC/USDT); moves in 0.05 % steps
    fair = {"BTC/USDT": D(50000), "ETH/BTC": D("0.05"), "ETH/USDT": D(2500)}
    for sym, step in moves:
        mid = fair[sym] * (1 + D(step) / 2000)
        ev = _book(sym, mid * D("0.9999"), mid * D("1.0001"))
        assert fast.on_market(ev) == slow.on_market(ev)


# --------------------------------------------------------------------------- fast constructors


def test_fast_constructor_builds_what_the_dataclass_builds() -> None:
    import dataclasses

    from protocol.messages import Liquidity, OrderAccepted, OrderRequest, Signal
    from trading import fast_constructor

    d = Decimal("1.50")
    cases: list[tuple[type, dict[str, object]]] = [
        (Fill, dict(fill_id="f", client_order_id="c", strategy="s", symbol="B/U",
                    side=Side.SELL, price=d, qty=d, fee=d, fee_currency="U",
                    liquidity=Liquidity.MAKER, ts=2.5, ts_event_ns=7)),
        (Fill, dict(fill_id="f", client_order_id="c", strategy="s", symbol="B/U",
                    side=Side.BUY, price=d, qty=d, fee=d, fee_currency="U")),  # defaults
        (OrderAccepted, dict(client_order_id="c", exchange_order_id="e", ts=1.0)),
        (OrderRequest, dict(client_order_id="c", strategy="s", symbol="B/U", side=Side.BUY,
                            qty=d, reduce_only=True, group_id="g", group_size=2)),
        (Signal, dict(strategy="s", symbol="B/U", side=Side.BUY, qty=d, reason="r")),
    ]
    for cls, kw in cases:
        fast: Any = fast_constructor(cls)(**kw)
        slow = cls(**kw)
        assert type(fast) is cls and fast == slow and repr(fast) == repr(slow)
        assert hash(fast) == hash(slow)
        with pytest.raises(dataclasses.FrozenInstanceError):
            setattr(fast, dataclasses.fields(cls)[0].name, "x")  # still frozen
    with pytest.raises(TypeError):
        fast_constructor(Fill)(fill_id="only")  # a required field missing: refused like cls()

    @dataclasses.dataclass(frozen=True, slots=True)
    class Checked:
        x: int

        def __post_init__(self) -> None:
            if self.x < 0:
                raise ValueError("x")

    @dataclasses.dataclass(frozen=True, slots=True)
    class Listy:
        xs: list[int] = dataclasses.field(default_factory=list)

    for bad in (Checked, Listy, int):
        with pytest.raises(TypeError):
            fast_constructor(bad)

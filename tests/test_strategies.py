"""Single-market strategies and the factory: hand-computed expectations (issue 4 §3, issue 8)."""

from __future__ import annotations

import dataclasses
import random
from decimal import Decimal
from fractions import Fraction

import pytest

from protocol.instruments import PairInfo
from protocol.messages import (
    BookEvent,
    BookLevel,
    CandleEvent,
    Fill,
    Side,
    Signal,
    TickerEvent,
    TradeEvent,
)
from trading.strategies import (
    MeanReversion,
    MeanReversionConfig,
    Momentum,
    MomentumConfig,
    SmaCross,
    SmaCrossConfig,
    StrategyConfigError,
    build_strategies,
    event_price,
)

D = Decimal
PAIRS = {
    "BTC/USD": PairInfo(symbol="BTC/USD", base="BTC", quote="USD", lot_decimals=8,
                        ordermin=D("0.0001")),
    "ETH/BTC": PairInfo(symbol="ETH/BTC", base="ETH", quote="BTC", lot_decimals=8),
}


def trade(price: str | Decimal, ts: float = 0.0, symbol: str = "BTC/USD") -> TradeEvent:
    return TradeEvent(symbol=symbol, side=Side.BUY, price=D(price), qty=D(1), ts_recv=ts)


def candle(close: str | Decimal, symbol: str = "BTC/USD", ts: float = 0.0) -> CandleEvent:
    c = D(close)
    return CandleEvent(symbol=symbol, interval_s=60, open=c, high=c, low=c, close=c,
                       volume=D(1), ts_recv=ts)


_fills = 0


def fill_of(sig: Signal, *, fee_ccy: str = "USD", price: Decimal | None = None) -> Fill:
    global _fills
    _fills += 1
    return Fill(fill_id=f"f{_fills}", client_order_id=f"o{_fills}", strategy=sig.strategy,
                symbol=sig.symbol, side=sig.side, price=price or sig.reference_price or D(0),
                qty=sig.qty, fee=D("0.01"), fee_currency=fee_ccy)


# --------------------------------------------------------------------------- prices


def test_event_price_per_kind() -> None:
    book = BookEvent(symbol="X/Y", bids=(BookLevel(D(99), D(1)),), asks=(BookLevel(D(101), D(1)),))
    assert event_price(book) == D(100)
    assert event_price(BookEvent(symbol="X/Y", bids=(), asks=())) is None
    tick = TickerEvent(symbol="X/Y", bid=D(1), bid_qty=D(1), ask=D(3), ask_qty=D(1), last=D(0))
    assert event_price(tick) == D(2)
    assert event_price(candle("7")) == D(7)
    assert event_price(trade("5")) == D(5)


# --------------------------------------------------------------------------- momentum


def test_momentum_enters_strictly_above_threshold_and_exits_strictly_below() -> None:
    s = Momentum(MomentumConfig(symbols=("BTC/USD",)), PAIRS)
    for i in range(20):
        assert s.on_market(trade("100", ts=i)) == ()
    # trend = 100.5/100 - 1 = exactly +0.5 %: not strictly above, no entry.
    assert s.on_market(trade("100.5", ts=20)) == ()
    # lag is sample 1 (100): trend +0.51 % > 0.5 % -> buy 100 USD / 100.51 = 0.99492587 (lot 1e-8).
    (sig,) = s.on_market(trade("100.51", ts=21.5))
    assert (sig.side, sig.qty, sig.symbol, sig.strategy) == (Side.BUY, D("0.99492587"),
                                                             "BTC/USD", "momentum")
    assert sig.reference_price == D("100.51")
    assert sig.ts_recv == 21.5
    assert not sig.reduce_only
    assert "entry" in sig.reason
    # In flight: a stronger trend does not enter twice.
    assert s.on_market(trade("101", ts=22)) == ()
    s.on_fill(fill_of(sig))
    assert s.keeper.position("BTC/USD") == D("0.99492587")
    for i in range(23, 42):
        assert s.on_market(trade("100.51", ts=i)) == ()  # long, trend >= 0: hold
    # history: sample 22 = 101, 23..41 = 100.51. Sample 42: lag = sample 22 (101).
    # 101 * 0.995 = 100.495 exactly: trend is exactly -0.5 %, no exit.
    assert s.on_market(trade("100.495", ts=42)) == ()
    # Sample 43: lag = 100.51; 100.51 * 0.995 = 100.00745; 100.0074 is strictly below.
    (out,) = s.on_market(trade("100.0074", ts=43))
    assert (out.side, out.qty, out.reduce_only) == (Side.SELL, D("0.99492587"), True)
    assert "exit" in out.reason


def test_momentum_rejected_entry_releases_intent() -> None:
    s = Momentum(MomentumConfig(lookback=1), PAIRS)
    s.on_market(trade("100"))
    (first,) = s.on_market(trade("101"))
    assert first.side is Side.BUY
    assert s.on_market(trade("102")) == ()  # pending
    s.on_order_closed("never-seen", D(0))  # rejected before any fill
    (again,) = s.on_market(trade("103"))
    assert again.side is Side.BUY


def _fill_of(sig: Signal, qty: Decimal, cid: str, *, done: bool) -> Fill:
    return Fill(fill_id=f"f-{cid}", client_order_id=cid, strategy=sig.strategy,
                symbol=sig.symbol, side=sig.side, price=sig.reference_price or D(1), qty=qty,
                fee=D(0), fee_currency="USD", order_done=done)


def test_an_exit_risk_cut_short_leaves_the_strategy_flat_and_free() -> None:
    # Risk cut the exit to the base the account still held (others sold the rest): the order
    # filled whole at the smaller size. The strategy must neither keep waiting on the intent
    # (a backtest has no intent timeout) nor keep the phantom rest as a position.
    s = Momentum(MomentumConfig(lookback=1), PAIRS)
    s.on_market(trade("100"))
    (entry,) = s.on_market(trade("101"))
    s.on_fill(_fill_of(entry, entry.qty, "o1", done=True))
    assert s.keeper.is_long("BTC/USD")
    (exit_,) = s.on_market(trade("90"))
    assert exit_.reduce_only and exit_.qty == entry.qty
    s.on_fill(_fill_of(exit_, D("0.0002"), "o2", done=True))  # cut by risk, then done
    assert s.keeper.position("BTC/USD") == 0 and not s.keeper.has_pending("BTC/USD")
    (again,) = s.on_market(trade("95"))
    assert again.side is Side.BUY
    # a fill that does not end its order leaves the rest in flight, as before
    s.on_fill(_fill_of(again, again.qty / 2, "o3", done=False))
    assert s.keeper.has_pending("BTC/USD")


def test_momentum_pending_intent_expires() -> None:
    s = Momentum(MomentumConfig(lookback=1, pending_timeout_s=D(5)), PAIRS)
    s.on_market(trade("100", ts=0))
    assert len(s.on_market(trade("101", ts=1))) == 1
    assert s.on_market(trade("102", ts=5)) == ()
    assert len(s.on_market(trade("103", ts=6.5))) == 1


def test_momentum_auto_source_does_not_mix_kinds() -> None:
    s = Momentum(MomentumConfig(lookback=1), PAIRS)
    s.on_market(trade("100"))
    # A candle at a far higher price is a different kind of sample: ignored.
    assert s.on_market(candle("200")) == ()
    assert len(s.on_market(trade("101"))) == 1


def test_momentum_sizes_non_usd_quote_from_observed_price() -> None:
    s = Momentum(MomentumConfig(lookback=1), PAIRS)
    s.on_market(trade("0.05", symbol="ETH/BTC"))
    assert s.on_market(trade("0.06", symbol="ETH/BTC")) == ()  # no BTC/USD price yet: skipped
    s.on_market(trade("50000"))  # BTC/USD observed (and becomes its first sample)
    (sig,) = s.on_market(trade("0.07", symbol="ETH/BTC"))
    # 100 USD = 0.002 BTC; / 0.07 = 0.02857142 ETH
    assert sig.qty == D("0.02857142")


# --------------------------------------------------------------------------- mean reversion


def _mr_history() -> list[str]:
    # 19 prior samples: nine 101, nine 99, one 100 -> mean 100, squared deviations Q = 18.
    return ["101", "99"] * 9 + ["100"]


def _mr_after(prices: list[str]) -> MeanReversion:
    s = MeanReversion(MeanReversionConfig(), PAIRS)
    for p in prices:
        assert s.on_market(trade(p)) == ()
    return s


def test_mean_reversion_enters_beyond_1_5_sd() -> None:
    # With the current price p = 100 - t in the window of 20:
    #   mean = 100 - t/20, mean - p = 0.95 t, variance = (Q + 0.95 t^2) / 20.
    #   p < mean - 1.5 sd  <=>  0.9025 t^2 > 0.1125 (18 + 0.95 t^2)  <=>  t^2 > 2.54517...
    #   t* = 1.59536...: p = 98.405 (t = 1.595) stays, p = 98.404 (t = 1.596) buys.
    assert _mr_after(_mr_history()).on_market(trade("98.405")) == ()
    s = _mr_after(_mr_history())
    (sig,) = s.on_market(trade("98.404", ts=3.0))
    assert sig.side is Side.BUY and sig.qty == D("1.01621885")  # 100 / 98.404, lot 1e-8
    assert sig.reference_price == D("98.404") and sig.ts_recv == 3.0 and not sig.reduce_only


def _mr_long(last: str) -> tuple[MeanReversion, Signal, tuple[Signal, ...]]:
    s = _mr_after(_mr_history())
    (sig,) = s.on_market(trade("98"))  # t = 2 > 1.595: entry
    s.on_fill(fill_of(sig))
    return s, sig, tuple(s.on_market(trade(last)))


def test_mean_reversion_exits_at_the_mean() -> None:
    # Window after the next price p: 99, (101, 99) x 8, 100, 98, p (the first 101 slid out).
    # p >= mean <=> 20 p >= 1897 + p <=> p >= 99.8421...: 99.84 holds, 99.85 exits.
    assert _mr_long("99.84")[2] == ()
    _, sig, out = _mr_long("99.85")
    (sell,) = out
    assert sell.side is Side.SELL and sell.reduce_only and sell.qty == sig.qty
    assert "exit" in sell.reason


def test_mean_reversion_flat_history_never_trades_on_equal_price() -> None:
    s = MeanReversion(MeanReversionConfig(window=5), PAIRS)
    for _ in range(10):
        assert s.on_market(trade("100")) == ()


# --------------------------------------------------------------------------- sma_cross


def _sma(cfg: SmaCrossConfig | None = None) -> SmaCross:
    return SmaCross(cfg or SmaCrossConfig(fast=2, slow=3), PAIRS)


def test_sma_cross_hand_computed_crossings_and_tie() -> None:
    s = _sma()
    closes = ["10", "10", "10",  # c3: fast 10 = slow 10 (tie)
              "13",  # fast 11.5 > slow 11 but previous was a tie: no cross
              "7",   # fast 10 = slow 10: tie
              "4",   # fast 5.5 < slow 8, previous tie: no cross
              ]
    for c in closes:
        assert s.on_market(candle(c)) == ()
    (buy,) = s.on_market(candle("20", ts=7.0))  # fast 12 > slow 10.33, previous below: cross up
    assert buy.side is Side.BUY and buy.qty == D("5") and buy.reference_price == D(20)
    assert buy.ts_recv == 7.0
    s.on_fill(fill_of(buy))
    assert s.on_market(candle("20")) == ()  # fast 20 > slow 14.67
    (sell,) = s.on_market(candle("5"))  # fast 12.5 < slow 15: slow crosses above
    assert sell.side is Side.SELL and sell.qty == D("5") and sell.reduce_only


def test_sma_cross_exact_tie_where_floats_invent_a_cross() -> None:
    closes = ["0.2", "0.2", "0.1", "0.3", "1.0"]
    # Window of c4 (slow=3): 0.2, 0.1, 0.3 -> fast (0.1+0.3)/2 = 0.2 = slow 0.6/3 exactly.
    ff = [float(c) for c in closes]
    assert (ff[2] + ff[3]) / 2 < (ff[1] + ff[2] + ff[3]) / 3  # float says fast < slow ...
    assert (ff[3] + ff[4]) / 2 > (ff[2] + ff[3] + ff[4]) / 3  # ... then fast > slow: a "cross"
    s = _sma()
    assert [s.on_market(candle(c)) for c in closes] == [()] * 5


def test_sma_cross_no_entry_when_not_flat_and_exit_only_when_long() -> None:
    s = _sma()
    for c in ["10", "9", "8", "12"]:  # cross up at c4
        out = s.on_market(candle(c))
    assert len(out) == 1
    for c in ["1", "12", "13"]:  # down at 1 (nothing: not filled), up again at 13: pending
        assert s.on_market(candle(c)) == ()


def _reference_trades(closes: list[Decimal], fast: int, slow: int) -> list[tuple[int, str]]:
    # Independent exact reference with Fractions, following issue 8's wording literally.
    out: list[tuple[int, str]] = []
    long = False
    f = [None if i + 1 < fast else Fraction(sum(closes[i + 1 - fast:i + 1])) / fast
         for i in range(len(closes))]
    s = [None if i + 1 < slow else Fraction(sum(closes[i + 1 - slow:i + 1])) / slow
         for i in range(len(closes))]
    for i in range(1, len(closes)):
        pf, ps, cf, cs = f[i - 1], s[i - 1], f[i], s[i]
        if pf is None or ps is None or cf is None or cs is None:
            continue
        if not long and pf < ps and cf > cs:
            out.append((i, "buy"))
            long = True
        elif long and ps < pf and cs > cf:
            out.append((i, "sell"))
            long = False
    return out


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_sma_cross_matches_exact_reference_default_windows(seed: int) -> None:
    rng = random.Random(seed)
    # Few distinct prices make exact ties frequent.
    closes = [D(100) + D(rng.randint(-6, 6)) / 4 for _ in range(3000)]
    s = SmaCross(SmaCrossConfig(), PAIRS)
    got: list[tuple[int, str]] = []
    for i, c in enumerate(closes):
        for sig in s.on_market(candle(c)):
            got.append((i, sig.side.value))
            s.on_fill(fill_of(sig))
    want = _reference_trades(closes, 10, 30)
    assert len(want) > 10
    assert got == want


# --------------------------------------------------------------------------- factory


def test_build_strategies_parses_string_params() -> None:
    built = build_strategies(
        ["momentum", "sma_cross", "mean_reversion", "arbitrage"],
        {"momentum": {"lookback": "5", "entry_threshold": "0.01", "symbols": "BTC/USD"},
         "arbitrage": {"pegs": "USDT=USD", "direct": "false"}},
        PAIRS,
    )
    assert [s.name for s in built] == ["momentum", "sma_cross", "mean_reversion", "arbitrage"]
    mom = built[0]
    assert isinstance(mom, Momentum)
    assert mom.config.lookback == 5 and mom.config.entry_threshold == D("0.01")
    assert mom.symbols == ("BTC/USD",)
    assert built[1].symbols == ("BTC/USD", "ETH/BTC")


@pytest.mark.parametrize(
    ("names", "params", "key"),
    [
        (["nope"], {}, ""),
        (["momentum"], {"momentum": {"lookbak": "5"}}, "lookbak"),
        (["momentum"], {"momentum": {"lookback": "five"}}, "lookback"),
        (["momentum"], {"momentum": {"symbols": "DOGE/USD"}}, "symbols"),
        (["momentum"], {"sma_cross": {"fast": "3"}}, ""),
        (["momentum", "momentum"], {}, ""),
        (["sma_cross"], {"sma_cross": {"fast": "30"}}, ""),
    ],
)
def test_build_strategies_errors(names: list[str], params: dict[str, dict[str, str]],
                                 key: str) -> None:
    with pytest.raises(StrategyConfigError) as info:
        build_strategies(names, params, PAIRS)
    assert info.value.key == key


def test_package_surface() -> None:
    import trading.strategies as pkg

    public = {n for n in vars(pkg) if not n.startswith("_")}
    assert {"Strategy", "build_strategies", "plan_unwind", "Momentum", "MeanReversion",
            "Arbitrage", "SmaCross", "REGISTRY", "StrategyConfigError"} <= public
    assert set(pkg.REGISTRY) == {"momentum", "mean_reversion", "arbitrage", "sma_cross"}


# --------------------------------------------------------------------------- explain


@pytest.mark.parametrize("make", [
    lambda: Momentum(MomentumConfig(symbols=("BTC/USD",), lookback=5), PAIRS),
    lambda: MeanReversion(MeanReversionConfig(symbols=("BTC/USD",), window=8), PAIRS),
    lambda: SmaCross(SmaCrossConfig(symbols=("BTC/USD",), fast=2, slow=5), PAIRS),
], ids=["momentum", "mean_reversion", "sma_cross"])
def test_a_quiet_strategy_decides_alike_and_names_only_its_rule(make) -> None:  # type: ignore[no-untyped-def]
    # What the backtest's fast path relies on when it turns ``explain`` off.
    loud, quiet = make(), make()
    quiet.explain = False
    rng = random.Random(7)
    price, seen = D(100), 0
    for i in range(600):
        price = max(D(1), price + D(rng.randint(-150, 150)) / 100)
        a, b = loud.on_market(candle(price, ts=i)), quiet.on_market(candle(price, ts=i))
        assert len(a) == len(b)
        for x, y in zip(a, b, strict=True):
            assert x.reason != y.reason and y.reason in x.reason  # the rule's name, no figures
            assert dataclasses.replace(x, reason="") == dataclasses.replace(y, reason="")
            loud.on_fill(fill_of(x))
            quiet.on_fill(fill_of(y))
            seen += 1
    assert seen >= 4  # entries and exits both happened

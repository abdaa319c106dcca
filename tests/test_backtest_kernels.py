"""The candle-skipping loop against the per-candle loop (backtest/_kernel_loop.py).

The fast path visits only the candles where a strategy said in advance it may act (its candle
kernel, ``trading/strategies/_kernel.py``). That is a speed-up only if it changes nothing: the
kernel run and the per-candle run of the same engine must give byte-identical trade logs,
equity and benchmark curves, warnings and rejections, on real data. The kernels' candidate
rows are also checked against ``on_market`` itself on data built to tie, and the column
store's merge order and integer ticks against their plain definitions.
"""

from __future__ import annotations

import random
from decimal import Decimal
from typing import Any

import pytest

import backtest.cli as cli
from backtest import BacktestResult, trade_log_bytes
from backtest._data import CandleColumns, MergedCandles, PriceTable
from backtest._engine import FastEngine
from backtest._kernel_input import kernel_input
from backtest.cli import add_arguments, prepare, run_prepared
from config import load_settings
from protocol.instruments import PairInfo
from protocol.messages import CandleEvent
from tests.conftest import FIXTURES, SHARED
from trading.portfolio import Portfolio
from trading.risk import RiskLimits
from trading.strategies import SmaCross, SmaCrossConfig

TRIANGLE = sorted(str(p) for p in (FIXTURES / "candles_triangle").glob("*.csv"))
SLICES = FIXTURES / "candles"
BTC = str(SLICES / "binance_BTC_USDT_1m_slice.csv")
ETHBTC = str(SLICES / "binance_ETH_BTC_1m_slice.csv")
KRAKEN = str(SLICES / "kraken_XBTUSD_60_slice.csv")
FULL = sorted(str(p) for p in (SHARED / "data" / "binance-triangle-1m").glob("*.csv"))


class _PerCandle(FastEngine):
    """The fast engine with the candle-skipping loop switched off."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, kernels=False, **kwargs)


def _both(monkeypatch: pytest.MonkeyPatch, *args: str) -> tuple[BacktestResult, BacktestResult]:
    prepared = prepare(load_settings(["--mode", "backtest", *args], {}, extend=add_arguments))
    kernels = run_prepared(prepared)
    with monkeypatch.context() as m:
        m.setattr(cli, "FastEngine", _PerCandle)
        per_candle = run_prepared(prepared)
    return kernels, per_candle


def _assert_same(a: BacktestResult, b: BacktestResult) -> None:
    assert trade_log_bytes(a.fills) == trade_log_bytes(b.fills)
    assert a.fills == b.fills
    assert a.equity == b.equity and a.benchmark == b.benchmark
    assert a.final_equity == b.final_equity and a.final_balances == b.final_balances
    assert a.warnings == b.warnings
    assert a.risk_rejections == b.risk_rejections
    assert a.order_rejections == b.order_rejections
    assert a.trades == b.trades and a.open_trades == b.open_trades


def _spy_kernel_runs(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Count the runs that took the candle-skipping loop (so a test cannot pass vacuously)."""
    import backtest._engine as engine_mod

    calls: list[int] = []
    real = engine_mod.run_kernels  # type: ignore[attr-defined]

    def spy(*args: Any, **kwargs: Any) -> None:
        calls.append(1)
        real(*args, **kwargs)

    monkeypatch.setattr(engine_mod, "run_kernels", spy)
    return calls


@pytest.mark.parametrize("args", [
    ("--data", *TRIANGLE, "--strategy", "sma_cross", "--no-risk-limits"),
    ("--data", *TRIANGLE, "--strategy", "sma_cross", "--no-risk-limits", "--param",
     "sma_cross.fast=2", "--param", "sma_cross.slow=3", "--slippage-bps", "7"),
    ("--data", BTC, ETHBTC, "--strategy", "sma_cross", "--no-risk-limits", "--param",
     "sma_cross.fast=3", "--param", "sma_cross.slow=5"),
    ("--data", KRAKEN, "--symbol", f"{KRAKEN}=BTC/USD", "--strategy", "sma_cross",
     "--no-risk-limits", "--param", "sma_cross.fast=2", "--param", "sma_cross.slow=4"),
    # risk on: stop triggers, probe marks, the equity bound, the breaker
    ("--data", *TRIANGLE, "--param", "arbitrage.min_profit=0"),
    ("--data", *TRIANGLE, "--strategy", "sma_cross", "--strategy", "momentum", "--param",
     "sma_cross.fast=2", "--param", "sma_cross.slow=3", "--param", "momentum.lookback=3",
     "--param", "momentum.entry_threshold=0.001"),
    ("--data", BTC, ETHBTC, "--param", "mean_reversion.window=5", "--param",
     "momentum.lookback=4"),
], ids=["triangle", "triangle-fast-slip", "two-symbols", "kraken-hourly", "triangle-all-risk",
        "triangle-busy-risk", "two-symbols-all-risk"])
def test_kernel_loop_equals_per_candle_loop(monkeypatch: pytest.MonkeyPatch,
                                            args: tuple[str, ...]) -> None:
    calls = _spy_kernel_runs(monkeypatch)
    kernels, per_candle = _both(monkeypatch, *args)
    assert calls == [1]  # the first run skipped candles, the second did not
    assert kernels.fills, "the run must trade for the comparison to mean something"
    _assert_same(kernels, per_candle)


@pytest.mark.skipif(not FULL, reason="needs ../shared/data/binance-triangle-1m (143k real "
                    "1-minute candles), absent on a user's machine")
@pytest.mark.parametrize("args", [("--strategy", "sma_cross", "--no-risk-limits"),
                                  ("--strategy", "sma_cross"),
                                  ("--strategy", "mean_reversion")],
                         ids=["sma-no-risk", "sma-risk", "mean-reversion-risk"])
def test_kernel_loop_equals_per_candle_loop_on_the_full_files(
        monkeypatch: pytest.MonkeyPatch, args: tuple[str, ...]) -> None:
    calls = _spy_kernel_runs(monkeypatch)
    kernels, per_candle = _both(monkeypatch, "--data", *FULL, *args)
    assert calls == [1]
    assert len(kernels.fills) > 1000
    _assert_same(kernels, per_candle)


@pytest.mark.skipif(not FULL, reason="needs ../shared/data/binance-triangle-1m (143k real "
                    "1-minute candles), absent on a user's machine")
def test_every_strategy_with_risk_on_the_full_files(monkeypatch: pytest.MonkeyPatch) -> None:
    # Every strategy, the risk engine (stops, a drawdown breaker trip, 20k rejections after it)
    calls = _spy_kernel_runs(monkeypatch)
    kernels, per_candle = _both(monkeypatch, "--data", *FULL)
    assert calls == [1]
    assert dict(kernels.risk_rejections).get("breaker_open", 0) > 1000
    assert {f.strategy for f in kernels.fills} >= {"sma_cross", "momentum", "mean_reversion",
                                                   "arbitrage", "risk"}
    _assert_same(kernels, per_candle)


# --------------------------------------------------------------------------- kernels


def _candles(symbol: str, closes: list[Decimal]) -> list[CandleEvent]:
    return [CandleEvent(symbol=symbol, interval_s=60, open=c, high=c, low=c, close=c,
                        volume=Decimal(1), ts_event_ns=(i + 1) * 60 * 10**9)
            for i, c in enumerate(closes)]


def _crosses_by_on_market(closes: list[Decimal], fast: int, slow: int
                          ) -> tuple[list[int], list[int]]:
    """Rows where ``on_market`` reaches a cross: entries seen as signals when flat, exits by
    making the strategy long first."""
    pair = PairInfo(symbol="X/USD", base="X", quote="USD", price_decimals=8)
    rows: tuple[list[int], list[int]] = ([], [])
    for long in (False, True):
        s = SmaCross(SmaCrossConfig(fast=fast, slow=slow, notional=Decimal("0.0001")),
                     {"X/USD": pair})
        if long:
            s.keeper.positions["X/USD"] = Decimal(1)
        for i, c in enumerate(_candles("X/USD", closes)):
            if s.on_market(c):
                rows[long].append(i)
                s = _reset_keeper(s, long)
    return rows


def _reset_keeper(s: SmaCross, long: bool) -> SmaCross:
    # the signal left an intent pending: forget it so every later cross is seen too
    s.keeper._intents.clear()
    s.keeper._pending.clear()
    if long:
        s.keeper.positions["X/USD"] = Decimal(1)
    return s


@pytest.mark.parametrize("seed", range(6))
def test_sma_kernel_candidates_are_exactly_on_markets_crosses(seed: int) -> None:
    rng = random.Random(seed)
    fast, slow = rng.choice([(2, 3), (3, 5), (10, 30), (1, 4)])
    # few distinct prices, so the averages tie often (a tie is no cross)
    levels = [Decimal("100.5"), Decimal("100.25"), Decimal("100.75"), Decimal("101")]
    closes = [rng.choice(levels) for _ in range(400)]
    table = PriceTable()
    cols = CandleColumns.from_candles(_candles("X/USD", closes), table, symbol="X/USD",
                                      interval_s=60)
    ticks = cols.close_ticks()
    assert ticks is not None
    pair = PairInfo(symbol="X/USD", base="X", quote="USD", price_decimals=8)
    kernel = SmaCross(SmaCrossConfig(fast=fast, slow=slow), {"X/USD": pair}).candle_kernel()
    assert kernel is not None
    entries, exits = kernel.candidates("X/USD", *ticks)
    found = (entries.tolist(), exits.tolist())
    assert found == _crosses_by_on_market(closes, fast, slow)
    assert found[0] and found[1]  # the data does cross both ways


# --------------------------------------------------------------------------- column store


def test_close_ticks_are_exact_and_refuse_what_int64_cannot_sum() -> None:
    table = PriceTable()
    closes = [Decimal("56813.98"), Decimal("56777.0"), Decimal("0.5"), Decimal("7")]
    cols = CandleColumns.from_candles(_candles("A/USD", closes), table, symbol="A/USD",
                                      interval_s=60)
    got = cols.close_ticks()
    assert got is not None
    ticks, scale = got
    assert scale == 2
    assert [Decimal(int(t)).scaleb(-scale) for t in ticks] == closes
    huge = CandleColumns.from_candles(_candles("B/USD", [Decimal("1.5"), Decimal(2**53)]),
                                      table, symbol="B/USD", interval_s=60)
    assert huge.close_ticks() is None  # the run then takes the per-candle loop
    merged = MergedCandles([cols, huge])
    assert kernel_input(merged) is None


def test_merge_order_is_time_then_input_order() -> None:
    table = PriceTable()
    rng = random.Random(7)
    parts = []
    for k in range(3):
        times = sorted(rng.sample(range(50), 30))
        candles = [CandleEvent(symbol=f"S{k}/USD", interval_s=60, open=Decimal(1),
                               high=Decimal(1), low=Decimal(1), close=Decimal(t),
                               volume=Decimal(1), ts_event_ns=t) for t in times]
        parts.append(CandleColumns.from_candles(candles, table, symbol=f"S{k}/USD",
                                                interval_s=60))
    merged = list(MergedCandles(parts))
    expected = sorted((c for p in parts for c in p), key=lambda c: c.ts_event_ns)  # stable
    assert merged == expected


def test_a_symbol_in_two_parts_takes_the_per_candle_loop() -> None:
    table = PriceTable()
    a = CandleColumns.from_candles(_candles("A/USD", [Decimal(1), Decimal(2)]), table,
                                   symbol="A/USD", interval_s=60)
    assert kernel_input(MergedCandles([a, a])) is None
    assert kernel_input([*a]) is None  # not the column store


# --------------------------------------------------------------------------- first marks in a gap


def _series(sym: str, price: Any, start: int = 0) -> list[CandleEvent]:
    return [CandleEvent(symbol=sym, interval_s=60, open=price(i), high=price(i), low=price(i),
                        close=price(i), volume=Decimal(1), ts_event_ns=i * 60 * 10**9)
            for i in range(start, 30)]


@pytest.mark.parametrize("btc_at_11", [Decimal(32000), Decimal(38000)],
                         ids=["a-rate-path-appears", "the-old-path-peaks"])
def test_a_symbol_first_seen_inside_a_skipped_gap_still_moves_the_high_water(
        btc_at_11: Decimal) -> None:
    # ETH is priced through ETH/BTC x BTC/USD until ETH/USDT's first candle (i = 12) switches
    # it to ETH/USDT x USDT/USD, inside a gap the loop would skip: the high-water mark set by
    # a candle of that gap (USDT/USD 1.2 at i = 15, or BTC/USD 38000 at i = 11) must still
    # trip the drawdown breaker at the sample after it, as in the per-candle loop (a
    # reviewer's finding; the bound only raised the marks read before the first candle).
    data = {
        "BTC/USD": _series("BTC/USD", lambda i: Decimal(35000) if i == 0
                           else btc_at_11 if i == 11 else Decimal(32000)),
        "ETH/BTC": _series("ETH/BTC", lambda i: Decimal("0.1")),
        "USDT/USD": _series("USDT/USD", lambda i: Decimal("1.2")
                            if i == 15 and btc_at_11 == 32000 else Decimal(1)),
        "ETH/USDT": _series("ETH/USDT", lambda i: Decimal(3200), start=12),
    }
    pairs = {s: PairInfo(symbol=s, base=s.split("/")[0], quote=s.split("/")[1]) for s in data}

    def run(kernels: bool) -> tuple[list[str], list[str]]:
        table = PriceTable()
        parts = [CandleColumns.from_candles(c, table, symbol=s, interval_s=60)
                 for s, c in data.items()]
        strat = SmaCross(SmaCrossConfig(fast=2, slow=3, notional=Decimal(10),
                                        symbols=("BTC/USD",)), pairs)
        engine = FastEngine([strat], pairs, Portfolio({"ETH": Decimal(1)}),
                            risk_limits=RiskLimits(), equity_interval_s=600, kernels=kernels)
        out = engine.run(MergedCandles(parts))
        return out.warnings, [str(p.equity) for p in out.equity]

    skipping, per_candle = run(True), run(False)
    assert any("circuit breaker tripped (drawdown)" in w for w in per_candle[0])
    assert skipping == per_candle

"""``--engine actors`` against the fast path: byte-identical trade logs (issue 8, acceptance 3).

The actor engine runs the paper-trading actors (strategies, risk, executor) under
``trio.testing.MockClock`` with the fast loop's candle fill rules; on the same inputs both
engines must write the same trade log, and two actor runs the same hash. The USDT-triangle
slice (2021-05-19 crash) makes every strategy trade, arbitrage included (immediate legs, funds
rejections), and risk exits; the other runs cover the breaker (sample-driven halt + cancel all),
``--no-risk-limits`` (the bypass gate) with slippage, and a two-symbol run without overlap.
"""

from __future__ import annotations

import io
from collections import Counter
from pathlib import Path

import pytest

from backtest import BacktestResult, trade_log_bytes
from backtest.cli import add_arguments, prepare, run_backtest, run_prepared
from config import load_settings
from tests.conftest import FIXTURES

TRIANGLE = sorted(str(p) for p in (FIXTURES / "candles_triangle").glob("*.csv"))
SLICES = FIXTURES / "candles"
BTC = str(SLICES / "binance_BTC_USDT_1m_slice.csv")
ETHBTC = str(SLICES / "binance_ETH_BTC_1m_slice.csv")
KRAKEN = str(SLICES / "kraken_XBTUSD_60_slice.csv")
ALL_ON = ("--param", "arbitrage.min_profit=0")  # default strategy set: all four, risk on


def _run(engine: str, *args: str) -> BacktestResult:
    settings = load_settings(["--mode", "backtest", *args, "--engine", engine], {},
                             extend=add_arguments)
    return run_prepared(prepare(settings))


def _assert_same(fast: BacktestResult, actors: BacktestResult) -> None:
    assert fast.config.engine == "fast" and actors.config.engine == "actors"
    assert trade_log_bytes(actors.fills) == trade_log_bytes(fast.fills)
    assert actors.trade_log_sha256 == fast.trade_log_sha256
    assert actors.fills == fast.fills  # also the fill times, not part of the log
    assert actors.equity == fast.equity and actors.benchmark == fast.benchmark
    assert actors.final_equity == fast.final_equity
    assert actors.final_balances == fast.final_balances
    assert actors.risk_rejections == fast.risk_rejections
    assert actors.order_rejections == fast.order_rejections
    assert actors.trades == fast.trades and actors.open_trades == fast.open_trades


def test_triangle_slice_all_strategies_with_risk_same_trade_log() -> None:
    assert len(TRIANGLE) == 3
    fast = _run("fast", "--data", *TRIANGLE, *ALL_ON)
    actors = _run("actors", "--data", *TRIANGLE, *ALL_ON)
    _assert_same(fast, actors)
    # The slice exercises every path: each strategy and the risk exits trade, arbitrage legs
    # run into the funds check, risk refuses some signals.
    by_strategy = Counter(f.strategy for f in actors.fills)
    assert set(by_strategy) == {"arbitrage", "momentum", "mean_reversion", "sma_cross", "risk"}
    assert dict(actors.order_rejections).get("EOrder:Insufficient funds", 0) > 0
    assert actors.risk_rejections


def test_two_actor_runs_give_the_same_hash() -> None:
    a = _run("actors", "--data", *TRIANGLE, *ALL_ON)
    b = _run("actors", "--data", *TRIANGLE, *ALL_ON)
    assert a.fills
    assert trade_log_bytes(a.fills) == trade_log_bytes(b.fills)
    assert a.trade_log_sha256 == b.trade_log_sha256
    assert a.equity == b.equity


def test_breaker_trip_at_a_sample_same_trade_log() -> None:
    args = ("--data", *TRIANGLE, *ALL_ON, "--max-drawdown", "0.001")
    fast, actors = _run("fast", *args), _run("actors", *args)
    _assert_same(fast, actors)
    trips = [w for w in actors.warnings if "circuit breaker tripped" in w]
    assert trips and trips == [w for w in fast.warnings if "circuit breaker tripped" in w]
    assert dict(actors.risk_rejections).get("breaker_open", 0) > 0


def test_no_risk_limits_with_slippage_same_trade_log() -> None:
    args = ("--data", KRAKEN, "--symbol", f"{KRAKEN}=BTC/USD", "--no-risk-limits",
            "--slippage-bps", "7", "--strategy", "sma_cross", "--strategy", "momentum",
            "--strategy", "mean_reversion")
    fast, actors = _run("fast", *args), _run("actors", *args)
    assert actors.no_risk_limits and len(actors.fills) >= 4
    _assert_same(fast, actors)


def test_two_symbol_slices_same_trade_log() -> None:
    fast = _run("fast", "--data", BTC, ETHBTC)
    actors = _run("actors", "--data", BTC, ETHBTC)
    assert len(fast.fills) > 50
    _assert_same(fast, actors)


@pytest.mark.parametrize("engine", ["fast", "actors"])
def test_cli_prints_the_same_hash_for_both_engines(engine: str) -> None:
    expected = _run("fast", "--data", *TRIANGLE, *ALL_ON).trade_log_sha256
    out, err = io.StringIO(), io.StringIO()
    settings = load_settings(["--mode", "backtest", "--data", *TRIANGLE, *ALL_ON, "--engine",
                              engine], {}, extend=add_arguments)
    assert run_backtest(settings, out=out, err=err) == 0, err.getvalue()
    text = out.getvalue()
    assert f"engine {engine}" in text
    assert f"trade log sha256 {expected}" in text


def test_fixture_provenance_is_documented() -> None:
    readme = (FIXTURES / "candles_triangle" / "README.md").read_text()
    for path in TRIANGLE:
        assert Path(path).name in readme

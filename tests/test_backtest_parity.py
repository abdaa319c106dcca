"""``--engine actors`` against the fast path: byte-identical trade logs (issue 8, acceptance 3).

The actor engine runs the paper-trading actors (strategies, risk, executor) under
``trio.testing.MockClock`` with the fast loop's candle fill rules; on the same inputs both
engines must write the same trade log, and two actor runs the same hash. The USDT-triangle
slice (2021-05-19 crash) makes every strategy trade, arbitrage included (immediate legs, funds
rejections), and risk exits; the other runs cover the breaker (sample-driven halt + cancel all),
``--no-risk-limits`` (the bypass gate) with slippage, and a two-symbol run without overlap.

The last tests pin the shortcuts the actor engine takes for speed: it skips the executor's
delivery of a candle only when :meth:`CandleBroker.has_work` says the candle fills nothing (the
matcher's strict range rule), and it jumps the mock clock instead of sleeping only when no
timer is due before the next candle.
"""

from __future__ import annotations

import io
from collections import Counter
from decimal import Decimal
from functools import partial
from pathlib import Path

import pytest
import trio
import trio.testing

import backtest.cli as cli
from backtest import BacktestResult, trade_log_bytes
from backtest._actor_engine import ActorEngine, _Mailbox
from backtest._candle_broker import CandleBroker
from backtest.cli import add_arguments, prepare, run_backtest, run_prepared
from config import load_settings
from protocol.instruments import PairInfo
from protocol.messages import (
    CandleEvent,
    Fill,
    Liquidity,
    OrderAccepted,
    OrderRequest,
    OrderType,
    Side,
)
from tests.conftest import FIXTURES
from trading import Portfolio

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
    # The slice exercises every strategy and the risk exits.
    by_strategy = Counter(f.strategy for f in actors.fills)
    assert set(by_strategy) == {"arbitrage", "momentum", "mean_reversion", "sma_cross", "risk"}


def test_triangle_slice_with_tight_limits_same_rejections() -> None:
    """Risk refusals and order rejects take the same paths in both engines."""
    tight = ("--max-open-positions", "1", "--max-position-usd", "150")
    fast = _run("fast", "--data", *TRIANGLE, *ALL_ON, *tight)
    actors = _run("actors", "--data", *TRIANGLE, *ALL_ON, *tight)
    _assert_same(fast, actors)
    assert actors.risk_rejections


def test_two_actor_runs_give_the_same_hash() -> None:
    a = _run("actors", "--data", *TRIANGLE, *ALL_ON)
    b = _run("actors", "--data", *TRIANGLE, *ALL_ON)
    assert a.fills
    assert trade_log_bytes(a.fills) == trade_log_bytes(b.fills)
    assert a.trade_log_sha256 == b.trade_log_sha256
    assert a.equity == b.equity


def test_memory_channel_market_lanes_same_trade_log(monkeypatch: pytest.MonkeyPatch) -> None:
    # The lane type is transport only: trio memory channels give the same run as the mailboxes.
    fast = _run("fast", "--data", *TRIANGLE, *ALL_ON)
    monkeypatch.setattr(cli, "ActorEngine", partial(ActorEngine, market_lanes="memory"))
    _assert_same(fast, _run("actors", "--data", *TRIANGLE, *ALL_ON))
    with pytest.raises(ValueError, match="market_lanes"):
        ActorEngine([], {}, Portfolio({"USD": Decimal(1)}), risk_limits=None,
                    market_lanes="fanout")


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


# --------------------------------------------------------------------------- the shortcuts

BTCUSD = PairInfo(symbol="BTC/USD", base="BTC", quote="USD")
ETHUSD = PairInfo(symbol="ETH/USD", base="ETH", quote="USD")


def _candle(symbol: str, minute: int, o: str, h: str, low: str, c: str) -> CandleEvent:
    return CandleEvent(symbol=symbol, interval_s=60, open=Decimal(o), high=Decimal(h),
                       low=Decimal(low), close=Decimal(c), volume=Decimal(5),
                       ts_event_ns=minute * 60_000_000_000)


async def test_has_work_is_exactly_when_a_candle_fills_something() -> None:
    broker = CandleBroker({"BTC/USD": BTCUSD, "ETH/USD": ETHUSD},
                          {"USD": Decimal(10_000)}, immediate=(), halted=lambda: False)
    quiet = _candle("BTC/USD", 0, "100", "101", "99", "100")
    assert not broker.has_work(quiet) and broker.on_market(quiet) == []
    buy = OrderRequest(client_order_id="b1", strategy="s", symbol="BTC/USD", side=Side.BUY,
                       qty=Decimal("0.1"), order_type=OrderType.LIMIT, limit_price=Decimal(90))
    assert await broker.submit(buy) == []  # a candle strategy's order waits for the next open
    nxt = _candle("BTC/USD", 1, "100", "102", "95", "101")
    assert broker.has_work(nxt)  # the next open executes it: the limit rests below
    events = broker.on_market(nxt)
    assert [type(e) for e in events] == [OrderAccepted]
    touch = _candle("BTC/USD", 2, "95", "96", "90", "91")  # low == limit: not strictly beyond
    other = _candle("ETH/USD", 2, "10", "11", "1", "2")  # another symbol's range
    for c in (touch, other):
        assert not broker.has_work(c)
        assert broker.on_market(c) == []
    through = _candle("BTC/USD", 3, "91", "92", "89.9", "90.5")
    assert broker.has_work(through)
    fills = broker.on_market(through)
    assert len(fills) == 1 and isinstance(fills[0], Fill)
    assert fills[0].price == Decimal(90) and fills[0].liquidity is Liquidity.MAKER
    assert not broker.has_work(_candle("BTC/USD", 4, "80", "81", "70", "75"))  # nothing left


async def test_replay_jumps_the_clock_only_when_no_timer_is_due(
        autojump_clock: trio.testing.MockClock) -> None:
    engine = ActorEngine([], {}, Portfolio({"USD": Decimal(1)}), risk_limits=None)
    engine._clock = autojump_clock
    woke: list[float] = []

    async def timer() -> None:
        await trio.sleep_until(5)
        woke.append(trio.current_time())

    async with trio.open_nursery() as nursery:
        nursery.start_soon(timer)
        await trio.testing.wait_all_tasks_blocked()
        assert not engine._jump(10.0)  # the timer is due first: the replay must sleep
        await trio.sleep_until(10.0)
        # The timer fired at its own time, before the replay moved on (a jump would have
        # woken it at 10).
        assert woke == [5.0]
        assert trio.current_time() == 10.0
        assert engine._jump(25.0)  # nothing due: jumped
        assert trio.current_time() == 25.0


async def test_mailbox_is_a_fifo_lane_with_one_parked_receiver() -> None:
    box = _Mailbox()
    a, b, c = (_candle("BTC/USD", m, "1", "1", "1", "1") for m in range(3))
    got: list[object] = []

    async def actor() -> None:
        async for event in box:
            got.append(event)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(actor)
        await trio.testing.wait_all_tasks_blocked()
        box.send_nowait(a)  # wakes the parked receiver with the event
        box.send_nowait(b)  # queued behind it
        await trio.testing.wait_all_tasks_blocked()
        assert got == [a, b]
        with pytest.raises(trio.BusyResourceError):
            await box.receive()  # a second receiver while one is parked
        nursery.cancel_scope.cancel()  # cancel the parked receiver: the lane stays usable
    box.send_nowait(c)
    assert await box.receive() is c
    await box.aclose()
    with pytest.raises(trio.ClosedResourceError):
        await box.receive()
    with pytest.raises(trio.BrokenResourceError):
        box.send_nowait(a)

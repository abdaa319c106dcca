"""The candle kernels of momentum and mean_reversion against their own ``on_market``.

A kernel names in advance the rows where ``on_market`` could signal and then runs the same
decision code there (``trading/strategies/_kernel.py``). Checked here: the candidates are
exactly the rows where ``on_market`` signals, seen both flat and long, on data built to tie at
the thresholds; a kernel driven row by row gives ``on_market``'s signals, reasons included;
and the backtest's candle-skipping loop gives byte-identical results to the per-candle loop on
real data, alone and next to sma_cross.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator, Sequence
from decimal import Decimal
from typing import Any

import numpy as np
import pytest

import backtest.cli as cli
from backtest import BacktestResult
from backtest.cli import add_arguments, prepare, run_prepared
from config import load_settings
from protocol.instruments import PairInfo
from protocol.messages import CandleEvent, Fill, Side, Signal
from tests.conftest import FIXTURES, SHARED
from tests.test_backtest_kernels import _assert_same, _PerCandle, _spy_kernel_runs
from trading.strategies import MeanReversion, MeanReversionConfig, Momentum, MomentumConfig

TRIANGLE = sorted(str(p) for p in (FIXTURES / "candles_triangle").glob("*.csv"))
SLICES = sorted(str(p) for p in (FIXTURES / "candles").glob("binance_*_slice.csv"))
FULL = sorted(str(p) for p in (SHARED / "data" / "binance-triangle-1m").glob("*.csv"))

SYM = "X/USD"
PAIRS = {SYM: PairInfo(symbol=SYM, base="X", quote="USD")}
D = Decimal

Strategy = Momentum | MeanReversion
Make = Callable[[], Strategy]


# --------------------------------------------------------------------------- helpers


def _candles(closes: Sequence[Decimal]) -> list[CandleEvent]:
    return [CandleEvent(symbol=SYM, interval_s=60, open=c, high=c, low=c, close=c,
                        volume=D(1), ts_event_ns=(i + 1) * 60 * 10**9)
            for i, c in enumerate(closes)]


def _ticks(closes: Sequence[Decimal]) -> tuple[Any, int]:
    """The column store's integer ticks (``backtest._data.CandleColumns.close_ticks``)."""
    scale = max(0, *(-int(c.as_tuple().exponent) for c in closes))
    return np.array([int(c.scaleb(scale)) for c in closes], dtype=np.int64), scale


def _forget_intents(s: Strategy, long: bool) -> None:
    # the signal left an intent pending: forget it so every later signal is seen too
    s.keeper._intents.clear()
    s.keeper._pending.clear()
    s.keeper.positions[SYM] = D(1) if long else D(0)


def _signal_rows(make: Make, closes: Sequence[Decimal]) -> tuple[list[int], list[int]]:
    """Rows where ``on_market`` signals, seen flat (entries) and long (exits)."""
    found: tuple[list[int], list[int]] = ([], [])
    for long in (False, True):
        s = make()
        _forget_intents(s, long)
        for i, c in enumerate(_candles(closes)):
            if s.on_market(c):
                found[long].append(i)
                _forget_intents(s, long)
    return found


def _candidates(make: Make, closes: Sequence[Decimal]) -> tuple[list[int], list[int]]:
    kernel = make().candle_kernel()
    assert kernel is not None
    entries, exits = kernel.candidates(SYM, *_ticks(closes))
    assert np.all(np.diff(entries) > 0) and np.all(np.diff(exits) > 0)
    return [int(r) for r in entries], [int(r) for r in exits]


class _History:
    """A one-symbol :class:`trading.strategies.History` at ``at``."""

    ts_recv = 0.0

    def __init__(self, closes: Sequence[Decimal]) -> None:
        self._closes = closes
        self.at = 0

    def closes(self, symbol: str, lo: int, hi: int) -> list[Decimal]:
        assert symbol == SYM and 0 <= lo <= hi <= self.at + 1  # strictly causal
        return list(self._closes[lo:hi])

    def latest_closes(self) -> list[tuple[str, Decimal]]:
        return [(SYM, self._closes[self.at])]

    def latest_closes_at(self, position: int) -> list[tuple[str, Decimal]]:
        return [(SYM, self._closes[position])]

    def closes_at(self, positions: Sequence[int]) -> list[Decimal]:
        return [self._closes[r] for r in positions]


def _fill(sig: Signal, n: int) -> Fill:
    return Fill(fill_id=str(n), client_order_id=str(n), strategy=sig.strategy, symbol=sig.symbol,
                side=sig.side, price=sig.reference_price or D(1), qty=sig.qty, fee=D(0),
                fee_currency="USD")


def _decisions(closes: Sequence[Decimal], make: Make, kernel: bool) -> list[tuple[int, Signal]]:
    """Every signal of a run where each one fills at once, by ``on_market`` on every candle or
    by the kernel on its candidates."""
    s = make()
    out: list[tuple[int, Signal]] = []
    steps = _kernel_steps(s, closes) if kernel else (
        (i, s.on_market(c)) for i, c in enumerate(_candles(closes)))
    for row, sigs in steps:
        for sig in sigs:
            out.append((row, sig))
            s.on_fill(_fill(sig, len(out)))
    return out


def _kernel_steps(s: Strategy, closes: Sequence[Decimal]
                  ) -> Iterator[tuple[int, Sequence[Signal]]]:
    kernel = s.candle_kernel()
    assert kernel is not None
    history = _History(closes)
    entries, exits = kernel.candidates(SYM, *_ticks(closes))
    ins, outs = set(entries.tolist()), set(exits.tolist())
    for row in sorted(ins | outs):
        # what the engine does: exits while the strategy holds the symbol, entries otherwise
        if row in (outs if kernel.holds(SYM) else ins):
            history.at = row
            yield row, kernel.act(SYM, row, closes[row], history)


def _walk(rng: random.Random, n: int, start: str, step: str, decimals: Sequence[int]
          ) -> list[Decimal]:
    """A random walk on a grid of ``step`` (so equal prices and exact ties recur), each close
    written with one of ``decimals`` places (the same number spelled differently)."""
    p, unit = D(start), D(step)
    out = []
    for _ in range(n):
        p = max(unit, p + unit * rng.choice((-5, -2, -1, 0, 0, 1, 2, 5)))
        out.append(p.quantize(D(1).scaleb(-rng.choice(decimals))))
    return out


def _levels(rng: random.Random, n: int, levels: Sequence[str]) -> list[Decimal]:
    return [D(rng.choice(levels)) for _ in range(n)]


def _data(seed: int) -> list[Decimal]:
    rng = random.Random(seed)
    kind = seed % 4
    if kind == 0:  # ties: 101 = 100 * 1.01, 99 = 100 * 0.99, and flat runs
        return _levels(rng, 300, ["100", "101", "99", "100.00", "101.0", "102.01", "98.01"])
    if kind == 1:  # flat, then a walk: a flat window ties the mean (exit at exit_sd 0)
        return [D("50.5")] * 40 + _walk(rng, 300, "50.5", "0.5", (1, 2, 3))
    if kind == 2:
        return _walk(rng, 400, "100", "0.25", (2, 4))
    return _walk(rng, 400, "0.0357", "0.0001", (4, 6, 8))


MOMENTUM_CONFIGS: list[dict[str, Any]] = [
    dict(lookback=1, entry_threshold=D("0.01"), exit_threshold=D("0.01")),
    dict(lookback=2, entry_threshold=D(0), exit_threshold=D(0)),
    dict(lookback=5, entry_threshold=D("0.005"), exit_threshold=D("0.0025")),
    dict(lookback=20),
    dict(lookback=3, entry_threshold=D("0.00001234567"), exit_threshold=D("0.3")),
]

MEAN_REVERSION_CONFIGS: list[dict[str, Any]] = [
    dict(window=2, entry_sd=D("0.9")),  # (with 2 samples no price is 1 sd off)
    dict(window=3, entry_sd=D(1), exit_sd=D(1)),
    dict(window=5, entry_sd=D("0.5"), exit_sd=D("0.25")),
    dict(window=20),
    dict(window=7, entry_sd=D(0), exit_sd=D("1.5")),
]


def _momentum(cfg: dict[str, Any], notional: int = 10**6) -> Make:
    return lambda: Momentum(MomentumConfig(notional=D(notional), **cfg), PAIRS)


def _mean_reversion(cfg: dict[str, Any], notional: int = 10**6) -> Make:
    return lambda: MeanReversion(MeanReversionConfig(notional=D(notional), **cfg), PAIRS)


STRATEGIES = ([pytest.param(_momentum(c), id=f"momentum{i}") for i, c in
               enumerate(MOMENTUM_CONFIGS)]
              + [pytest.param(_mean_reversion(c), id=f"mean_reversion{i}") for i, c in
                 enumerate(MEAN_REVERSION_CONFIGS)])


# --------------------------------------------------------------------------- candidates


@pytest.mark.parametrize("make", STRATEGIES)
@pytest.mark.parametrize("seed", range(8))
def test_candidates_are_exactly_the_rows_where_on_market_signals(make: Make, seed: int) -> None:
    closes = _data(seed)
    expected = _signal_rows(make, closes)
    assert _candidates(make, closes) == expected
    assert any(expected) or seed % 4 == 0  # the data does trade (ties alone may not)


@pytest.mark.parametrize("make", STRATEGIES)
def test_a_close_that_is_not_positive_is_no_sample(make: Make) -> None:
    # on_market skips such a close without counting it in its lookback or window
    rng = random.Random(5)
    closes = _walk(rng, 300, "10", "0.125", (3,))
    for i in rng.sample(range(300), 40):
        closes[i] = D(0) if i % 2 else D("-1.5")
    assert _candidates(make, closes) == _signal_rows(make, closes)
    assert _decisions(closes, make, kernel=True) == _decisions(closes, make, kernel=False)


def test_huge_ticks_are_compared_exactly_in_python_ints() -> None:
    # Ticks near 2**52 times the thresholds' ratios overflow int64: the kernels must notice.
    rng = random.Random(3)
    closes = [D(4 * 10**15 + rng.randrange(-5, 5) * 10**14) for _ in range(200)]
    assert max(closes) < 2**52
    for make in (_momentum(MOMENTUM_CONFIGS[4], 10**20), _momentum(MOMENTUM_CONFIGS[0], 10**20),
                 _mean_reversion(dict(window=4, entry_sd=D("0.7")), 10**20)):
        expected = _signal_rows(make, closes)
        assert any(expected)
        assert _candidates(make, closes) == expected


def test_no_kernel_when_every_event_matters() -> None:
    for source in ("book", "ticker", "trade"):
        assert Momentum(MomentumConfig(price_source=source), PAIRS).candle_kernel() is None
        assert MeanReversion(MeanReversionConfig(price_source=source),
                             PAIRS).candle_kernel() is None
    # a threshold whose product with a close could round in the Decimal context
    long_threshold = D("0.0012345678901234")
    assert Momentum(MomentumConfig(entry_threshold=long_threshold),
                    PAIRS).candle_kernel() is None
    for source in ("auto", "candle"):
        assert Momentum(MomentumConfig(price_source=source), PAIRS).candle_kernel() is not None
        assert MeanReversion(MeanReversionConfig(price_source=source),
                             PAIRS).candle_kernel() is not None


@pytest.mark.parametrize("make", STRATEGIES)
@pytest.mark.parametrize("seed", range(1, 4))
def test_kernel_decisions_equal_on_market_reasons_included(make: Make, seed: int) -> None:
    closes = _data(seed)
    expected = _decisions(closes, make, kernel=False)
    assert expected
    assert _decisions(closes, make, kernel=True) == expected


def test_mean_reversion_reason_keeps_the_exponent_of_every_close_so_far() -> None:
    # The reason's mean carries the finest exponent of any close seen so far (display only,
    # but the kernel reproduces it): put the finest spelling early, late, and never.
    base = _walk(random.Random(9), 200, "20", "0.5", (1,))
    for at in (3, 150, None):
        closes = list(base)
        if at is not None:
            closes[at] = closes[at].quantize(D("0.0001"))
        make = _mean_reversion(dict(window=5))
        expected = _decisions(closes, make, kernel=False)
        got = _decisions(closes, make, kernel=True)
        assert [s.reason for _, s in got] == [s.reason for _, s in expected]
        assert got == expected


# --------------------------------------------------------------------------- backtest loops


def _record_decisions(monkeypatch: pytest.MonkeyPatch) -> list[Signal]:
    """Every signal momentum and mean_reversion decide (reasons are in no backtest output)."""
    seen: list[Signal] = []
    for cls in (Momentum, MeanReversion):
        real = cls._decide

        def spy(self: Any, *args: Any, _real: Any = real) -> Sequence[Signal]:
            sigs: Sequence[Signal] = _real(self, *args)
            seen.extend(sigs)
            return sigs

        monkeypatch.setattr(cls, "_decide", spy)
    return seen


def _both(monkeypatch: pytest.MonkeyPatch, *args: str
          ) -> tuple[BacktestResult, BacktestResult]:
    calls = _spy_kernel_runs(monkeypatch)
    seen = _record_decisions(monkeypatch)
    prepared = prepare(load_settings(["--mode", "backtest", *args], {}, extend=add_arguments))
    kernels = run_prepared(prepared)
    kernel_signals = list(seen)
    seen.clear()
    with monkeypatch.context() as m:
        m.setattr(cli, "FastEngine", _PerCandle)
        per_candle = run_prepared(prepared)
    assert calls == [1]  # the first run skipped candles, the second did not
    assert kernel_signals == seen
    return kernels, per_candle


BUSY_PARAMS = {  # settings that trade a lot
    "momentum": ("lookback=2", "entry_threshold=0.0005", "exit_threshold=0.0002"),
    "mean_reversion": ("window=5", "entry_sd=0.5"),
    "sma_cross": ("fast=2", "slow=3"),
}
STRATEGIES_OF = {"momentum": ("momentum",), "mean_reversion": ("mean_reversion",),
                 "three": ("momentum", "mean_reversion", "sma_cross")}


def _args(name: str, busy: bool = False) -> tuple[str, ...]:
    out: list[str] = []
    for strategy in STRATEGIES_OF[name]:
        out += ["--strategy", strategy]
        if busy:
            for param in BUSY_PARAMS[strategy]:
                out += ["--param", f"{strategy}.{param}"]
    return (*out, "--no-risk-limits")


RUNS = [pytest.param(data, _args(name, busy), id=f"{name}-{data_id}{'-busy' if busy else ''}")
        for data_id, data in (("triangle", TRIANGLE), ("slices", SLICES))
        for name in STRATEGIES_OF
        for busy in (False, True)]


@pytest.mark.parametrize(("data", "args"), RUNS)
def test_kernel_loop_equals_per_candle_loop(monkeypatch: pytest.MonkeyPatch,
                                            data: list[str], args: tuple[str, ...]) -> None:
    kernels, per_candle = _both(monkeypatch, "--data", *data, *args)
    assert kernels.fills, "the run must trade for the comparison to mean something"
    _assert_same(kernels, per_candle)


def test_a_pair_quoted_in_another_currency_is_sized_alike(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # In USDT, ETH/BTC is sized through BTC/USDT's latest close, which the kernels read from
    # the history at the decision (on_market observes every close instead).
    usdt = [f"--param={name}.notional_currency=USDT" for name in ("momentum", "mean_reversion")]
    kernels, per_candle = _both(monkeypatch, "--data", *TRIANGLE, *_args("three", busy=True),
                                *usdt)
    assert {f.strategy for f in kernels.fills if f.symbol == "ETH/BTC" and f.side is Side.BUY} \
        >= {"momentum", "mean_reversion"}
    _assert_same(kernels, per_candle)


@pytest.mark.skipif(not FULL, reason="needs ../shared/data/binance-triangle-1m (143k real "
                    "1-minute candles), absent on a user's machine")
@pytest.mark.parametrize("name", list(STRATEGIES_OF))
def test_kernel_loop_equals_per_candle_loop_on_the_full_files(
        monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    kernels, per_candle = _both(monkeypatch, "--data", *FULL, *_args(name))
    assert len(kernels.fills) > 1000
    _assert_same(kernels, per_candle)


# --------------------------------------------------------------------------- counted refusals


def kernel_refusals_commute(s: Strategy) -> bool:
    kernel = s.candle_kernel()
    return kernel is not None and kernel.refusals_commute()  # type: ignore[attr-defined]


@pytest.mark.parametrize("kind", ["momentum", "mean_reversion"])
@pytest.mark.parametrize("seed", range(6))
def test_refusals_counted_at_once_match_the_visits(kind: str, seed: int) -> None:
    # After a backtest's trip the skipping loop counts a run of refused candidates with
    # refused_signals instead of calling act() on each: the same number of signals, flat
    # (sizing at ordermin 1 refuses the entries above 100) and long, and none while an intent
    # is in flight.
    pairs = {SYM: PairInfo(symbol=SYM, base="X", quote="USD", ordermin=D(1))}
    cfg = (MOMENTUM_CONFIGS if kind == "momentum" else MEAN_REVERSION_CONFIGS)[seed % 5]
    closes = _data(seed)
    counted = []
    for state in ("flat", "long", "pending"):
        s: Strategy = (Momentum(MomentumConfig(notional=D(100), **cfg), pairs)
                       if kind == "momentum" else
                       MeanReversion(MeanReversionConfig(notional=D(100), **cfg), pairs))
        if state != "flat":
            s.keeper.positions[SYM] = D(1)
        if state == "pending":  # an exit in flight, bound to its order
            s.keeper.signal(SYM, Side.SELL, D(1), price=D(1), reason="", ts_recv=0.0)
            s.keeper._intents[0].order_id = "o1"
        s.keeper.refuse_everything()
        assert kernel_refusals_commute(s)
        kernel = s.candle_kernel()
        assert kernel is not None
        entries, exits = kernel.candidates(SYM, *_ticks(closes))
        rows = (exits if kernel.holds(SYM) else entries).tolist()
        history = _History(closes)
        n = kernel.refused_signals(SYM, rows, history)  # type: ignore[attr-defined]
        visited = 0
        for r in rows:
            history.at = r
            visited += len(kernel.act(SYM, r, closes[r], history))
        assert n == visited
        counted.append((n, len(rows)))
    (flat, entries_n), (long, exits_n), (pending, _) = counted
    assert pending == 0
    assert long == exits_n  # every exit candidate emits while long
    if seed == 2:  # a walk across 100: sizing passes some entries and refuses others
        assert 0 < flat < entries_n


@pytest.mark.parametrize("kind", ["momentum", "mean_reversion"])
def test_never_sized_where_no_entry_can_be_sized(kind: str) -> None:
    # ETH/BTC with a USD notional and neither BTC/USD nor USD/BTC among the run's symbols:
    # on_market never signals there, and the kernel says so (the backtest then leaves the
    # entry rows out); with BTC/USD in the run the same closes signal.
    closes = _data(2)
    cfg: dict[str, Any] = dict(lookback=1) if kind == "momentum" else dict(window=5)
    pairs = {"ETH/BTC": PairInfo(symbol="ETH/BTC", base="ETH", quote="BTC"),
             "BTC/USD": PairInfo(symbol="BTC/USD", base="BTC", quote="USD")}
    s: Strategy = (Momentum(MomentumConfig(symbols=("ETH/BTC",), **cfg), pairs)
                   if kind == "momentum" else
                   MeanReversion(MeanReversionConfig(symbols=("ETH/BTC",), **cfg), pairs))
    kernel = s.candle_kernel()
    assert kernel is not None
    assert kernel.never_sized("ETH/BTC", {"ETH/BTC"})  # type: ignore[attr-defined]
    assert not kernel.never_sized("ETH/BTC", {"ETH/BTC", "BTC/USD"})  # type: ignore[attr-defined]
    candles = [CandleEvent(symbol="ETH/BTC", interval_s=60, open=c, high=c, low=c, close=c,
                           volume=D(1), ts_event_ns=(i + 1) * 60 * 10**9)
               for i, c in enumerate(closes)]
    assert not any(s.on_market(c) for c in candles)


def test_window_deviations_from_prefix_sums_are_exact_or_declined() -> None:
    # mean_reversion's candidates take the window sums from int64 prefix sums when the
    # column's range keeps every sum below 2**62, else decline (the block path takes over)
    from trading.strategies.mean_reversion import _prefix_deviations

    rng = random.Random(5)
    n = 7
    ticks = np.array([rng.randrange(10**6, 10**6 + 5000) for _ in range(500)], dtype=np.int64)
    got = _prefix_deviations(ticks, n, 9)
    assert got is not None
    q1, q2 = got
    for k in range(len(ticks) - n + 1):
        window = [int(t) for t in ticks[k:k + n]]
        p = window[-1]
        assert (int(q1[k]), int(q2[k])) == (sum(t - p for t in window),
                                            sum((t - p) ** 2 for t in window))
    wide = np.array([0, 2**40, 5, 2**40 - 3] * 30, dtype=np.int64)
    assert _prefix_deviations(wide, n, 9) is None

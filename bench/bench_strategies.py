"""Strategy throughput: candles/s through ``on_market`` for each strategy on real 1m candles.

Prints, for the ETH/BTC 1-minute file of ../shared/data/binance-triangle-1m (synthetic data when
the shared folder is absent): a bare loop over the preloaded events calling a no-op function
(the baseline), then sma_cross, momentum and mean_reversion, each with its ratio to the baseline.
Fills are fed back immediately so the strategies trade the way they would in a backtest.
Run: ``.venv/bin/python bench/bench_strategies.py``.
"""

from __future__ import annotations

import csv
import pathlib
import random
import time
from collections.abc import Callable, Sequence
from decimal import Decimal

from protocol.instruments import PairInfo
from protocol.messages import CandleEvent, Fill, MarketEvent, Signal
from trading.strategies import (
    MeanReversion,
    MeanReversionConfig,
    Momentum,
    MomentumConfig,
    SmaCross,
    SmaCrossConfig,
    Strategy,
)

ROOT = pathlib.Path(__file__).resolve().parent.parent
DATA = (ROOT.parent / "shared/data/binance-triangle-1m"
        / "binance_ETH_BTC_1m_20210410T2013_20210520T2042.csv")
SYMBOL = "ETH/BTC"


def load() -> tuple[list[CandleEvent], str]:
    if DATA.exists():
        with DATA.open() as fh:
            rows = list(csv.DictReader(fh))
        src = DATA.name
    else:
        rng = random.Random(1)
        p = 0.0357
        rows = []
        for i in range(50_000):
            p = round(p * (1 + rng.gauss(0, 0.001)), 6)
            rows.append({"timestamp_ms": str(i * 60000), "open": str(p), "high": str(p),
                         "low": str(p), "close": str(p), "volume": "1"})
        src = "synthetic random walk (shared data absent)"
    events = [
        CandleEvent(symbol=SYMBOL, interval_s=60, open=Decimal(r["open"]), high=Decimal(r["high"]),
                    low=Decimal(r["low"]), close=Decimal(r["close"]), volume=Decimal(r["volume"]),
                    ts_event_ns=int(r["timestamp_ms"]) * 1_000_000, ts_recv=i * 60.0)
        for i, r in enumerate(rows)
    ]
    return events, src


def run(on_market: Callable[[MarketEvent], Sequence[Signal]], on_fill: Callable[[Fill], None],
        events: list[CandleEvent]) -> tuple[float, int]:
    n_sig = 0
    t0 = time.perf_counter()
    for ev in events:
        sigs = on_market(ev)
        if sigs:
            for s in sigs:
                n_sig += 1
                on_fill(Fill(fill_id=str(n_sig), client_order_id=str(n_sig), strategy=s.strategy,
                             symbol=s.symbol, side=s.side, price=ev.close, qty=s.qty,
                             fee=Decimal(0), fee_currency="BTC"))
    return time.perf_counter() - t0, n_sig


def main() -> None:
    events, src = load()
    pairs = {SYMBOL: PairInfo(symbol=SYMBOL, base="ETH", quote="BTC")}
    n = len(events)
    print(f"data: {src}, {n} candles")

    def noop(_ev: MarketEvent) -> Sequence[Signal]:
        return ()

    best_base = min(run(noop, lambda _f: None, events)[0] for _ in range(3))
    print(f"{'bare loop (no-op call)':<24} {n / best_base:>12,.0f} candles/s   ratio 1.00")
    # BTC-quoted pair: value the 100 USD notional with a peg so all three can size orders.
    makers: dict[str, Callable[[], Strategy]] = {
        "sma_cross": lambda: SmaCross(SmaCrossConfig(pegs=("BTC",)), pairs),
        "momentum": lambda: Momentum(MomentumConfig(pegs=("BTC",)), pairs),
        "mean_reversion": lambda: MeanReversion(MeanReversionConfig(pegs=("BTC",)), pairs),
    }
    for name, make in makers.items():
        best = float("inf")
        sigs = 0
        for _ in range(3):
            strat = make()
            dt, sigs = run(strat.on_market, strat.on_fill, events)
            best = min(best, dt)
        print(f"{name:<24} {n / best:>12,.0f} candles/s   ratio {best_base / best:.2f}"
              f"   ({sigs} signals)")


if __name__ == "__main__":
    main()

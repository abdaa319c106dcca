"""The ``backtesting`` package's SMA-cross example made long only: the reference that the
cross-check test (``tests/test_backtest.py``) and the speed bench (``bench/bench_backtest.py``)
both run. ``backtesting`` is AGPL: a bench/test-only extra, never imported by the product.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

from protocol.messages import CandleEvent


def long_sma_cross(candles: Sequence[CandleEvent]) -> Any:
    """A ``backtesting.Backtest`` of SMA(10)/SMA(30) crosses, long only, on ``candles``
    (floats, as the package computes; no commission, unlimited cash).

    Raises:
        ImportError: ``backtesting`` or ``pandas`` is not installed.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import pandas as pd
        from backtesting import Backtest, Strategy
        from backtesting.lib import crossover
        from backtesting.test import SMA

        class LongSmaCross(Strategy):  # type: ignore[misc]
            def init(self) -> None:
                self.sma1 = self.I(SMA, self.data.Close, 10)
                self.sma2 = self.I(SMA, self.data.Close, 30)

            def next(self) -> None:
                if crossover(self.sma1, self.sma2) and not self.position:
                    self.buy()
                elif crossover(self.sma2, self.sma1) and self.position:
                    self.position.close()

        frame = pd.DataFrame(
            {k: [float(getattr(c, a)) for c in candles]
             for k, a in (("Open", "open"), ("High", "high"), ("Low", "low"),
                          ("Close", "close"), ("Volume", "volume"))},
            index=pd.to_datetime([c.ts_event_ns for c in candles], unit="ns"),
        )
        return Backtest(frame, LongSmaCross, cash=1e12, commission=0.0)

"""Fast backtest path throughput on real 1-minute candles, beside the ``backtesting`` package.

Run: ``.venv/bin/python bench/bench_backtest.py [DATA_DIR]`` (default ``../shared/data/
binance-triangle-1m``). Prints, on the same preloaded candles:

* a bare Python loop over the candles (the floor: what "no work" costs);
* ``sma_cross`` alone through the fast path (``--no-risk-limits``), candles/s;
* every strategy with the risk engine, fills and ledger, candles/s;
* the ``backtesting`` package's ``Backtest.run()`` with its SMA-cross example made long only on
  the same candles (when installed; AGPL, bench/test-only), candles/s, and the ratio;
* peak RSS for one year of 1-minute candles, *measured*: a child process loads three files of
  525,600 rows each through the normal loader (``load_inputs`` + ``merged_candles``) and runs
  ``sma_cross`` over them. There is no year of real minute data in ``shared/``, so each file is
  the real minute file of that symbol repeated with its timestamps shifted past the previous
  copy (a synthetic year built from real rows; labelled so in the output). It takes 30-70 s
  on a shared 2-core machine, so it runs only with ``--year`` (the rest stays under a minute).

Loading (CSV -> Decimal candles) is timed separately and excluded from the loop figures. The
machine is shared: run it a few times and compare medians.
"""

from __future__ import annotations

import resource
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from backtest.cli import add_arguments, merged_candles, prepare, run_prepared  # noqa: E402
from config import load_settings  # noqa: E402
from protocol.messages import CandleEvent  # noqa: E402


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _best(fn: object, repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        fn()  # type: ignore[operator]
        best = min(best, time.perf_counter() - t)
    return best


def _backtesting_rate(candles: Sequence[CandleEvent]) -> float | None:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import pandas as pd
            from backtesting import Backtest, Strategy
            from backtesting.lib import crossover
            from backtesting.test import SMA
    except ImportError:
        return None

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
         for k, a in (("Open", "open"), ("High", "high"), ("Low", "low"), ("Close", "close"),
                      ("Volume", "volume"))},
        index=pd.to_datetime([c.ts_event_ns for c in candles], unit="ns"),
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        bt = Backtest(frame, LongSmaCross, cash=1e12, commission=0.0)
        elapsed = _best(bt.run, 1)
    return len(candles) / elapsed


YEAR_ROWS = 525_600


def _write_year(src: str, dst: Path) -> None:
    """``src`` (ohlcv_ms) repeated with shifted timestamps up to YEAR_ROWS rows."""
    with open(src, encoding="utf-8") as fh:
        header = fh.readline()
        rows = [ln.rstrip("\n").split(",", 1) for ln in fh if ln.strip()]
    first, last = int(rows[0][0]), int(rows[-1][0])
    span = last - first + 60_000
    with open(dst, "w", encoding="utf-8") as out:
        out.write(header)
        n = shift = 0
        while n < YEAR_ROWS:
            for ts, rest in rows:
                out.write(f"{int(ts) + shift},{rest}\n")
                n += 1
                if n == YEAR_ROWS:
                    break
            shift += span


_YEAR_CHILD = """
import resource, sys, time
sys.path.insert(0, {root!r})
from backtest.cli import add_arguments, merged_candles, prepare, run_prepared
from config import load_settings
t = time.perf_counter()
p = prepare(load_settings(["--mode", "backtest", "--data", *{files!r}, "--strategy", "sma_cross",
                           "--no-risk-limits"], {{}}, extend=add_arguments))
candles = merged_candles(p.loaded)
load = time.perf_counter() - t
rss_loaded = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
t = time.perf_counter()
r = run_prepared(p, candles)
run = time.perf_counter() - t
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(len(candles), load, run, rss_loaded, peak)
"""


def _year_rss(files: Sequence[str]) -> str:
    with tempfile.TemporaryDirectory() as tmp:
        year = []
        for f in files:
            dst = Path(tmp) / Path(f).name
            _write_year(f, dst)
            year.append(str(dst))
        code = _YEAR_CHILD.format(root=str(ROOT), files=year)
        res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                             check=False)
    if res.returncode != 0:
        return f"year RSS: child failed: {res.stderr.strip().splitlines()[-1:]}"
    n, load, run, loaded, peak = res.stdout.split()
    return (f"peak RSS, one year of 1m candles x {len(files)} symbols ({int(n):,} rows; SYNTHETIC "
            f"year: real minute rows repeated with shifted timestamps), measured in a child: "
            f"{float(peak):.0f} MB (after load {float(loaded):.0f} MB; load {float(load):.1f} s,"
            f" sma_cross run {int(n) / float(run):,.0f} candles/s) (target < 500 MB)")


def main() -> int:
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    data = Path(args[0]) if args else ROOT.parent / "shared" / "data" / (
        "binance-triangle-1m")
    files = sorted(str(p) for p in data.glob("*.csv"))
    if not files:
        print(f"no CSV files in {data}")
        return 1
    rss0 = _rss_mb()
    t = time.perf_counter()
    sma = prepare(load_settings(["--mode", "backtest", "--data", *files, "--strategy",
                                 "sma_cross", "--no-risk-limits"], {}, extend=add_arguments))
    load_s = time.perf_counter() - t
    candles = merged_candles(sma.loaded)
    rss_loaded = _rss_mb()
    n = len(candles)
    print(f"data: {len(files)} files, {n} candles (real 1m Binance), load {load_s:.2f} s "
          f"({n / load_s:,.0f} rows/s)")

    def bare() -> None:
        last = {}
        for c in candles:
            last[c.symbol] = c.close

    bare_rate = n / _best(bare, 3)
    print(f"bare loop (dict store per candle):          {bare_rate:12,.0f} candles/s")
    sma_rate = n / _best(lambda: run_prepared(sma, candles), 3)
    print(f"fast path, sma_cross alone (no risk):       {sma_rate:12,.0f} candles/s")
    every = prepare(load_settings(["--mode", "backtest", "--data", *files], {},
                                  extend=add_arguments))
    all_rate = n / _best(lambda: run_prepared(every, candles), 1)
    print(f"fast path, all strategies + risk + fills:   {all_rate:12,.0f} candles/s")
    # backtesting runs one symbol; use the largest file so the comparison is per candle
    biggest = max(sma.loaded, key=lambda ls: len(ls.candles))
    one = list(biggest.candles)
    one_prep = prepare(load_settings(["--mode", "backtest", "--data", biggest.files[0],
                                      "--strategy", "sma_cross", "--no-risk-limits"], {},
                                     extend=add_arguments))
    ours_one = len(one) / _best(lambda: run_prepared(one_prep, one), 3)
    bt_rate = _backtesting_rate(one)
    print(f"fast path, sma_cross on {biggest.symbol} ({len(one)} candles): "
          f"{ours_one:12,.0f} candles/s")
    if bt_rate is None:
        print("backtesting package: not installed (pip install backtesting; AGPL, bench only)")
    else:
        import backtesting

        print(f"backtesting {backtesting.__version__} Backtest.run(), same candles: "
              f"{bt_rate:12,.0f} candles/s")
        print(f"ratio fast path / backtesting (sma_cross): {ours_one / bt_rate:6.2f}x "
              "(target >= 7x)")
    print(f"ratio sma_cross / bare loop: {sma_rate / bare_rate:.3f}; targets: sma_cross >= "
          f"1,000,000/s ({sma_rate / 1e6:.2f}x), all >= 300,000/s ({all_rate / 3e5:.2f}x)")
    print(f"peak RSS of this process {_rss_mb():.0f} MB (after loading the {n} candles: "
          f"{rss_loaded:.0f} MB, +{rss_loaded - rss0:.0f} MB)")
    if "--year" in sys.argv:
        print(_year_rss(files))
    else:
        print("peak RSS for one year of 1m candles: run with --year (measured in a child, ~1 min)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Backtest throughput on real 1-minute candles: everything of issue 8 acceptance 7 in one run.

Run: ``.venv/bin/python bench/bench_backtest.py [DATA_DIR] [--no-year] [--no-actors]`` (default
``../shared/data/binance-triangle-1m``; about 1.5-2 minutes on a shared 2-core machine, half of
it the year RSS child). Prints, on the same real candles:

* a bare Python loop over the preloaded candles (the floor: what "no work" costs);
* ``sma_cross`` alone through the fast path (``--no-risk-limits``), candles/s, the way the CLI
  runs it: candles in the column store, the candle-skipping loop (``backtest/_kernel_loop.py``)
  visiting only the crosses, the next opens and the equity samples (target >= 1M/s); and, for
  context, the per-candle loop over preloaded candle objects (kernels off);
* every strategy with the risk engine, fills and ledger, candles/s (target >= 300k/s);
* the ``backtesting`` package's ``Backtest.run()`` with its SMA-cross example made long only on
  the largest file (when installed; AGPL, bench/test-only), our fast path on the same candles
  (each with its number of closed trades: the same work), in 5 interleaved rounds, and the
  median of the per-round ratios (target >= 7x);
* the actor path beside a bare 4-hop trio memory-channel chain: ``bench_backtest_actors.py``
  (the actor engine's own bench) run as a child on one day of the same data, 3 rounds, its
  lines passed through (target >= 0.5); ``--no-actors`` skips it;
* peak RSS for one year of 1-minute candles, *measured*: a child process loads three files of
  525,600 rows each through the normal loader into the column store and runs ``sma_cross`` over
  them the way the CLI does (lazily). There is no year of real minute data in ``shared/``, so
  each file is the real minute file of that symbol repeated with its timestamps shifted past
  the previous copy (a synthetic year built from real rows; labelled so in the output).
  ``--no-year`` skips it (it takes 30-60 s).

Loading (CSV -> columns) is timed separately and excluded from the loop figures. Each loop
figure is the median of several runs; the machine is shared, so compare medians across runs.
"""

from __future__ import annotations

import resource
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from backtest.cli import add_arguments, merged_candles, prepare, run_prepared  # noqa: E402
from config import load_settings  # noqa: E402
from protocol.messages import CandleEvent  # noqa: E402
from tests.backtesting_reference import long_sma_cross  # noqa: E402


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _times(fn: Callable[[], object], repeat: int) -> list[float]:
    out = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t)
    return out


def _rate(n: int, times: list[float]) -> str:
    """``median (best)`` candles/s."""
    return f"{n / statistics.median(times):12,.0f}/s (best {n / min(times):,.0f})"


def _backtesting_run(candles: Sequence[CandleEvent]) -> Callable[[], Any] | None:
    """A ``Backtest.run`` of the package's SMA-cross example made long only, or None."""
    try:
        bt = long_sma_cross(candles)
    except ImportError:
        return None

    def run() -> Any:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return bt.run()

    return run


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
from backtest.cli import add_arguments, prepare, run_prepared
from config import load_settings
t = time.perf_counter()
p = prepare(load_settings(["--mode", "backtest", "--data", *{files!r}, "--strategy", "sma_cross",
                           "--no-risk-limits"], {{}}, extend=add_arguments))
n = sum(len(ls.candles) for ls in p.loaded)
load = time.perf_counter() - t
rss_loaded = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
t = time.perf_counter()
r = run_prepared(p)  # the CLI's way: candles built lazily from the column store
run = time.perf_counter() - t
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(n, load, run, rss_loaded, peak)
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
            f" sma_cross run from the column store {int(n) / float(run):,.0f} candles/s) "
            "(target < 500 MB)")


def _actors(data: Path) -> list[str]:
    """The actor path beside the bare chain: the actor engine's bench, one day, 5 rounds."""
    res = subprocess.run([sys.executable, str(ROOT / "bench" / "bench_backtest_actors.py"),
                          str(data), "1", "5"], capture_output=True, text=True, check=False)
    if res.returncode != 0:
        return [f"actor bench failed: {res.stderr.strip().splitlines()[-1:]}"]
    return ["  " + ln for ln in res.stdout.strip().splitlines()]


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
    rss_loaded = _rss_mb()
    candles = merged_candles(sma.loaded)  # preloaded objects: what the loop figures time
    n = len(candles)
    print(f"data: {len(files)} files, {n} candles (real 1m Binance), load into columns "
          f"{load_s:.2f} s ({n / load_s:,.0f} rows/s); medians of several runs (best)")

    def bare() -> None:
        last = {}
        for c in candles:
            last[c.symbol] = c.close

    bare_t = _times(bare, 5)
    print(f"bare loop (dict store per candle):             {_rate(n, bare_t)}")
    sma_t = _times(lambda: run_prepared(sma), 7)
    fills = len(run_prepared(sma).fills)
    print(f"fast path, sma_cross alone (no risk):          {_rate(n, sma_t)} "
          f"[{fills} fills; the CLI's way: column store, candle-skipping loop]")
    per_t = _times(lambda: run_prepared(sma, candles), 3)
    print(f"  same, per-candle loop over preloaded objects:{_rate(n, per_t)} (kernels off: "
          "preloaded candles are not the column store)")
    every = prepare(load_settings(["--mode", "backtest", "--data", *files], {},
                                  extend=add_arguments))
    all_t = _times(lambda: run_prepared(every), 3)
    fills = len(run_prepared(every).fills)
    print(f"fast path, all strategies + risk + fills:      {_rate(n, all_t)} [{fills} fills]")
    sma_rate = n / statistics.median(sma_t)
    all_rate = n / statistics.median(all_t)
    # backtesting runs one symbol; use the largest file so the comparison is per candle
    biggest = max(sma.loaded, key=lambda ls: len(ls.candles))
    one = list(biggest.candles)
    one_prep = prepare(load_settings(["--mode", "backtest", "--data", biggest.files[0],
                                      "--strategy", "sma_cross", "--no-risk-limits"], {},
                                     extend=add_arguments))
    ours_trades = len(run_prepared(one_prep).trades)
    bt_run = _backtesting_run(one)
    if bt_run is None:
        ours_t = _times(lambda: run_prepared(one_prep), 7)
        print(f"fast path, sma_cross on {biggest.symbol} ({len(one)} candles): "
              f"{_rate(len(one), ours_t)} [{ours_trades} closed trades]")
        print("backtesting package: not installed (pip install backtesting; AGPL, bench only)")
    else:
        import backtesting

        bt_trades = len(bt_run()["_trades"])
        # Interleaved rounds (ours x3, theirs x1): a load change hits both sides of a round.
        ours_t, bt_t, ratios = [], [], []
        for _ in range(5):
            mine = statistics.median(_times(lambda: run_prepared(one_prep), 3))
            theirs = _times(bt_run, 1)[0]
            ours_t.append(mine)
            bt_t.append(theirs)
            ratios.append(theirs / mine)
        print(f"fast path, sma_cross on {biggest.symbol} ({len(one)} candles): "
              f"{_rate(len(one), ours_t)} [{ours_trades} closed trades]")
        print(f"backtesting {backtesting.__version__} Backtest.run(), same candles: "
              f"{_rate(len(one), bt_t)} [{bt_trades} closed trades]")
        print(f"ratio fast path / backtesting (sma_cross): {statistics.median(ratios):6.2f}x "
              f"median of 5 interleaved rounds (min {min(ratios):.2f}, max {max(ratios):.2f}) "
              "(target >= 7x)")
    print(f"ratio sma_cross / bare loop: {sma_rate / (n / statistics.median(bare_t)):.3f}; "
          f"targets: sma_cross >= 1,000,000/s ({sma_rate / 1e6:.2f}x), all >= 300,000/s "
          f"({all_rate / 3e5:.2f}x)")
    print(f"peak RSS of this process {_rss_mb():.0f} MB (after loading the {n} candles into "
          f"columns: {rss_loaded:.0f} MB, +{rss_loaded - rss0:.0f} MB; the preloaded objects "
          "for the loop figures come on top)")
    if "--no-actors" not in sys.argv:
        print("actor path (bench_backtest_actors.py, 1 day, 5 rounds; target actor candles/s "
              ">= 0.5 x the free-running chain):")
        for line in _actors(data):
            print(line)
    if "--no-year" not in sys.argv:
        print(_year_rss(files))
    else:
        print("peak RSS for one year of 1m candles: skipped (--no-year)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Parameter sweeps: a grid of strategy parameters run through the fast path on all cores.

``--sweep STRATEGY.KEY=START:STOP:STEP`` (inclusive, exact Decimal steps) or
``--sweep STRATEGY.KEY=A,B,C`` gives one dimension; several ``--sweep`` flags make the cartesian
product, in the order given (the last flag varies fastest). Every grid point is one ordinary
backtest (:func:`backtest.cli.run_prepared`) with the point's values added to the ``--param``
values, so a sweep runs exactly the code a single run does.

Ranking: ``--rank-by METRIC`` (default ``sharpe``) orders the points by the metric of
:func:`trading.performance.compute_performance` on the equity curve and closed trades; higher is
better except for ``max_drawdown`` and ``fees``. Undefined metrics (None) rank last; ties keep
grid order.

Out of sample: ``--oos F`` (0 < F < 1) cuts the time range of the data at ``start + (1 - F) *
span`` (aligned down to the longest candle interval). Each point runs twice on fresh ledgers:
in-sample (before the cut) and out-of-sample (from the cut on). Ranking uses the in-sample
metric only, as the choice would be made; the out-of-sample columns beside it show whether the
choice holds up (a top in-sample row with a poor out-of-sample one is overfitting).

Where the work runs:

* ``--workers 1`` (or a one-point grid): in this process;
* by default a ``concurrent.futures.ProcessPoolExecutor`` with one process per core (``spawn``
  start method: no state inherited by fork); each worker loads the data once in its
  initializer and keeps it for every point it is given;
* ``--dask-scheduler tcp://HOST:PORT``: an existing Dask distributed cluster (optional extra
  ``dask[distributed]``). The job description is scattered to every worker once; each worker
  process loads the data on its first point and caches it. The data files must exist at the same
  paths on the workers (a shared file system or identical copies), and the workers need this
  package importable.

The job sent to workers is the settings with the credentials blanked: nothing secret leaves
the process. Results are independent of the backend: the same grid gives the same table.

Output: a table on stdout (top ``--top`` rows), and with ``--report DIR`` ``sweep.csv`` (one row
per point, every metric, in rank order) and ``sweep.json`` (the same plus the sweep settings).
A progress bar (points, candles/s, ETA) is drawn on stderr on a TTY or with ``--progress``.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import hashlib
import itertools
import json
import multiprocessing
import os
import pickle
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any, TextIO

from config import Secret, Settings
from trading.performance import Performance, compute_performance
from trading.strategies import REGISTRY, standard_params

from ._data import BacktestInputError
from ._progress import Progress

__all__ = [
    "RANK_METRICS",
    "PointResult",
    "SweepDim",
    "SweepJob",
    "add_sweep_arguments",
    "evaluate_point",
    "grid",
    "parse_sweep",
    "run_sweep",
    "split_time",
]

EXIT_OK, EXIT_FAILED, EXIT_INPUT, EXIT_UNSUPPORTED = 0, 1, 2, 3
_MAX_POINTS = 100_000

#: metric name -> True when lower is better.
RANK_METRICS: Mapping[str, bool] = {
    "sharpe": False, "sortino": False, "total_return": False, "cagr": False, "calmar": False,
    "profit_factor": False, "win_rate": False, "net_pnl": False, "trades": False,
    "max_drawdown": True, "fees": True,
}
_COLUMNS = ("total_return", "cagr", "sharpe", "sortino", "max_drawdown", "calmar", "trades",
            "win_rate", "profit_factor", "net_pnl", "fees", "final_equity")

Point = tuple[tuple[str, str, str], ...]  # ((strategy, key, value), ...)


# --------------------------------------------------------------------------- the grid


@dataclasses.dataclass(frozen=True, slots=True)
class SweepDim:
    """One swept parameter and its values (as text, exactly as the strategy will parse them)."""

    strategy: str
    key: str
    values: tuple[str, ...]

    @property
    def name(self) -> str:
        return f"{self.strategy}.{self.key}"


def _num(text: str, spec: str) -> Decimal:
    try:
        value = Decimal(text.strip())
    except InvalidOperation:
        raise BacktestInputError(f"--sweep {spec!r}: {text!r} is not a number") from None
    if not value.is_finite():
        raise BacktestInputError(f"--sweep {spec!r}: {text!r} is not finite")
    return value


def parse_sweep(spec: str) -> SweepDim:
    """``"momentum.entry_threshold=0.003:0.01:0.001"`` or ``"sma_cross.fast=5,10,20"``.

    A range is inclusive of ``STOP`` when it falls on the grid; values are exact Decimals
    (``0.003 + 7 * 0.001 = 0.010``), written without exponent.

    Raises:
        BacktestInputError: malformed spec, empty or too large range, non-positive step.
    """
    key, sep, rhs = spec.partition("=")
    strategy, dot, name = key.strip().partition(".")
    if not sep or not dot or not strategy or not name or not rhs.strip():
        raise BacktestInputError(f"--sweep {spec!r}: expected STRATEGY.KEY=START:STOP:STEP "
                                 "or STRATEGY.KEY=A,B,C")
    rhs = rhs.strip()
    if ":" in rhs:
        parts = rhs.split(":")
        if len(parts) != 3:
            raise BacktestInputError(f"--sweep {spec!r}: a range is START:STOP:STEP")
        start, stop, step = (_num(p, spec) for p in parts)
        if step <= 0:
            raise BacktestInputError(f"--sweep {spec!r}: STEP must be > 0")
        if stop < start:
            raise BacktestInputError(f"--sweep {spec!r}: STOP is below START")
        count = int((stop - start) / step) + 1
        if count > _MAX_POINTS:
            raise BacktestInputError(f"--sweep {spec!r}: {count} values is too many")
        values = tuple(_text(start + i * step) for i in range(count))
    else:
        values = tuple(v.strip() for v in rhs.split(","))
        if any(not v for v in values):
            raise BacktestInputError(f"--sweep {spec!r}: empty value in the list")
    if len(set(values)) != len(values):
        raise BacktestInputError(f"--sweep {spec!r}: duplicate values")
    return SweepDim(strategy.strip(), name.strip(), values)


def _text(value: Decimal) -> str:
    text = format(value, "f")
    return text


def grid(dims: Sequence[SweepDim]) -> list[Point]:
    """The cartesian product of ``dims`` (the last varies fastest); ``[()]`` without dims."""
    names = [d.name for d in dims]
    if len(set(names)) != len(names):
        raise BacktestInputError(f"--sweep: a parameter is swept twice ({', '.join(names)})")
    points = [tuple((d.strategy, d.key, v) for d, v in zip(dims, combo, strict=True))
              for combo in itertools.product(*(d.values for d in dims))]
    if len(points) > _MAX_POINTS:
        raise BacktestInputError(f"--sweep: {len(points)} grid points is too many")
    return points


# --------------------------------------------------------------------------- one point


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class SweepJob:
    """What every worker needs: the run's settings (credentials blanked) and the OOS cut."""

    settings: Settings
    oos: Decimal | None = None

    def key(self) -> str:
        return hashlib.sha256(pickle.dumps(self)).hexdigest()


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class PointResult:
    """The metrics of one grid point: in-sample (the whole range without ``--oos``) and OOS."""

    index: int
    point: Point
    in_sample: dict[str, Any]
    out_of_sample: dict[str, Any] | None
    candles: int
    trade_log_sha256: str


# Per-process cache: a worker loads the data once and keeps it for every point (and every
# job with the same key, which is what the Dask workers see).
_LOADED: dict[str, tuple[Any, Any]] = {}


def split_time(prepared: Any, oos: Decimal) -> tuple[Any, Any]:
    """Cut a prepared run into in-sample and out-of-sample runs; see the module docstring.

    Raises:
        BacktestInputError: a side of the cut would have no candle for some symbol.
    """
    loaded = prepared.loaded
    step = max(ls.interval_s for ls in loaded) * 1_000_000_000
    t0 = min(ls.candles[0].ts_event_ns for ls in loaded)
    t1 = max(ls.candles[-1].ts_event_ns + ls.interval_s * 1_000_000_000 for ls in loaded)
    cut = t0 + int((t1 - t0) * (1 - oos))
    cut -= (cut - t0) % step
    sides = []
    for lo, hi in ((None, cut), (cut, None)):
        part = []
        for ls in loaded:
            cs = tuple(c for c in ls.candles if (lo is None or c.ts_event_ns >= lo)
                       and (hi is None or c.ts_event_ns < hi))
            if not cs:
                raise BacktestInputError(f"--oos {oos}: {ls.symbol} has no candle "
                                         f"{'before' if hi is not None else 'after'} the cut")
            part.append(dataclasses.replace(ls, candles=cs))
        cfg = dataclasses.replace(prepared.config, start_ns=lo if lo is not None else t0,
                                  end_ns=hi if hi is not None else t1)
        sides.append(dataclasses.replace(prepared, loaded=part, config=cfg))
    return sides[0], sides[1]


def _load(job: SweepJob) -> tuple[Any, Any]:
    key = job.key()
    got = _LOADED.get(key)
    if got is None:
        from .cli import prepare  # cli imports this module: import here, not at the top

        p = prepare(job.settings)
        got = split_time(p, job.oos) if job.oos is not None else (p, None)
        _LOADED.clear()  # one job at a time per process: do not keep old data alive
        _LOADED[key] = got
    return got


def _init_worker(job: SweepJob) -> None:
    _load(job)


def _with_point(p: Any, point: Point, notional: Decimal) -> Any:
    cfg = p.config
    user: dict[str, dict[str, str]] = {}
    for s, k, v in cfg.params:
        user.setdefault(s, {})[k] = v
    for s, k, v in point:
        user.setdefault(s, {})[k] = v
    params = standard_params(cfg.strategies, user, cfg.accounting_currency, p.quote_pegs,
                             notional)
    triples = tuple(sorted((s, k, v) for s, kv in user.items() for k, v in kv.items()))
    return dataclasses.replace(p, params=params, config=dataclasses.replace(cfg, params=triples))


def _metrics(perf: Performance, final_equity: Decimal) -> dict[str, Any]:
    def money(v: Decimal | None) -> str | None:
        return None if v is None else str(v)

    return {
        "total_return": perf.total_return, "cagr": perf.cagr, "sharpe": perf.sharpe,
        "sortino": perf.sortino, "max_drawdown": perf.max_drawdown, "calmar": perf.calmar,
        "trades": perf.trades, "win_rate": perf.win_rate, "profit_factor": perf.profit_factor,
        "net_pnl": money(perf.net_pnl), "fees": money(perf.fees),
        "final_equity": money(final_equity),
    }


def _run_one(p: Any, point: Point, notional: Decimal) -> tuple[dict[str, Any], int, str]:
    from .cli import run_prepared

    result = run_prepared(_with_point(p, point, notional))
    perf = compute_performance([(e.ts, e.equity) for e in result.equity], result.trades)
    return _metrics(perf, result.final_equity), result.candles, result.trade_log_sha256


def evaluate_point(job: SweepJob, index: int, point: Point) -> PointResult:
    """Run one grid point (in-sample, and out-of-sample with ``--oos``); used by every backend.

    Raises:
        BacktestInputError: the point's parameters are invalid for the strategy.
    """
    p_in, p_out = _load(job)
    notional = job.settings.order_notional
    m_in, n_in, sha = _run_one(p_in, point, notional)
    m_out: dict[str, Any] | None = None
    n_out = 0
    if p_out is not None:
        m_out, n_out, _ = _run_one(p_out, point, notional)
    return PointResult(index=index, point=point, in_sample=m_in, out_of_sample=m_out,
                       candles=n_in + n_out, trade_log_sha256=sha)


# --------------------------------------------------------------------------- backends

Runner = Callable[[SweepJob, list[Point], Callable[[PointResult], None]], None]


def _run_serial(job: SweepJob, points: list[Point], done: Callable[[PointResult], None]) -> None:
    for i, point in enumerate(points):
        done(evaluate_point(job, i, point))


def _run_pool(workers: int) -> Runner:
    def run(job: SweepJob, points: list[Point], done: Callable[[PointResult], None]) -> None:
        ctx = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(max_workers=workers, mp_context=ctx,
                                 initializer=_init_worker, initargs=(job,)) as pool:
            futures = [pool.submit(evaluate_point, job, i, pt) for i, pt in enumerate(points)]
            try:
                for fut in as_completed(futures):
                    done(fut.result())
            except BaseException:
                for fut in futures:
                    fut.cancel()
                raise
    return run


def _run_dask(address: str) -> Runner:
    from distributed import Client
    from distributed import as_completed as dask_completed

    def run(job: SweepJob, points: list[Point], done: Callable[[PointResult], None]) -> None:
        with Client(address, set_as_default=False) as client:  # type: ignore[no-untyped-call]
            shared = client.scatter(job, broadcast=True)
            futures = [client.submit(evaluate_point, shared, i, pt, pure=False)
                       for i, pt in enumerate(points)]
            try:
                for fut in dask_completed(futures, loop=client.loop):  # type: ignore[no-untyped-call]
                    done(fut.result())
            finally:
                client.cancel(futures)
    return run


# --------------------------------------------------------------------------- ranking & output


def _rank_key(metric: str) -> Callable[[PointResult], tuple[int, float, int]]:
    lower = RANK_METRICS[metric]

    def key(r: PointResult) -> tuple[int, float, int]:
        v = r.in_sample.get(metric)
        if v is None:
            return (1, 0.0, r.index)
        x = float(v)
        return (0, x if lower else -x, r.index)
    return key


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4f}"
    if isinstance(value, str):
        try:
            return f"{Decimal(value):.2f}"
        except InvalidOperation:
            return value
    return str(value)


def _param_names(points: Sequence[PointResult]) -> list[str]:
    return [f"{s}.{k}" for s, k, _ in points[0].point] if points else []


def print_table(ranked: Sequence[PointResult], metric: str, top: int, file: TextIO) -> None:
    """The top ``top`` rows: parameters, then in-sample and out-of-sample metrics side by side."""
    names = _param_names(ranked)
    shown = ("total_return", "sharpe", "max_drawdown", "trades")
    cols = [metric] + [c for c in shown if c != metric]
    oos = any(r.out_of_sample is not None for r in ranked)
    header = ["rank", *names, *(f"IS {c}" for c in cols)]
    if oos:
        header += [f"OOS {c}" for c in cols]
    rows = [header]
    for rank, r in enumerate(ranked[:top], start=1):
        row = [str(rank), *(v for _, _, v in r.point), *(_fmt(r.in_sample.get(c)) for c in cols)]
        if oos:
            o = r.out_of_sample or {}
            row += [_fmt(o.get(c)) for c in cols]
        rows.append(row)
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    for row in rows:
        file.write("  ".join(cell.rjust(widths[i]) for i, cell in enumerate(row)) + "\n")
    if len(ranked) > top:
        file.write(f"... {len(ranked) - top} more point(s) in sweep.csv / sweep.json\n")


def write_outputs(ranked: Sequence[PointResult], directory: Path, meta: Mapping[str, Any]
                  ) -> None:
    """``sweep.csv`` and ``sweep.json`` in rank order (written to a temp name, then renamed)."""
    directory.mkdir(parents=True, exist_ok=True)
    names = _param_names(ranked)
    oos = any(r.out_of_sample is not None for r in ranked)
    header = ["rank", *names, *(f"is_{c}" for c in _COLUMNS)]
    if oos:
        header += [f"oos_{c}" for c in _COLUMNS]
    header.append("trade_log_sha256")
    tmp = directory / "sweep.csv.tmp"
    with tmp.open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh, lineterminator="\n")
        w.writerow(header)
        for rank, r in enumerate(ranked, start=1):
            row: list[Any] = [rank, *(v for _, _, v in r.point)]
            row += ["" if r.in_sample.get(c) is None else r.in_sample[c] for c in _COLUMNS]
            if oos:
                o = r.out_of_sample or {}
                row += ["" if o.get(c) is None else o[c] for c in _COLUMNS]
            row.append(r.trade_log_sha256)
            w.writerow(row)
    tmp.replace(directory / "sweep.csv")
    doc = {
        **meta,
        "points": [
            {"rank": rank, "params": {f"{s}.{k}": v for s, k, v in r.point},
             "in_sample": r.in_sample, "out_of_sample": r.out_of_sample,
             "candles": r.candles, "trade_log_sha256": r.trade_log_sha256}
            for rank, r in enumerate(ranked, start=1)
        ],
    }
    tmp = directory / "sweep.json.tmp"
    tmp.write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
    tmp.replace(directory / "sweep.json")


# --------------------------------------------------------------------------- the command


def add_sweep_arguments(parser: argparse.ArgumentParser) -> list[str]:
    """The sweep-only flags (``--sweep``/``--oos`` live with the backtest flags)."""
    g = parser.add_argument_group("parameter sweeps (--sweep, --oos)")
    g.add_argument("--rank-by", dest="rank_by", choices=sorted(RANK_METRICS), default="sharpe",
                   help="metric that ranks the grid points (default sharpe)")
    g.add_argument("--workers", dest="workers", type=int, default=0, metavar="N",
                   help="worker processes (default: one per core; 1 runs in this process)")
    g.add_argument("--dask-scheduler", dest="dask_scheduler", default=None, metavar="ADDRESS",
                   help="run on a Dask distributed cluster (tcp://host:port; extra dask)")
    g.add_argument("--top", dest="top", type=int, default=20, metavar="N",
                   help="rows shown in the terminal table (default 20)")
    g.add_argument("--progress", dest="progress", action="store_true", default=None,
                   help="draw the progress bar even when stderr is not a terminal")
    return ["rank_by", "workers", "dask_scheduler", "top", "progress"]


def _oos(text: Any) -> Decimal | None:
    if text in (None, ""):
        return None
    try:
        value = Decimal(str(text))
    except InvalidOperation:
        raise BacktestInputError(f"--oos {text!r}: not a number") from None
    if not (value.is_finite() and 0 < value < 1):
        raise BacktestInputError(f"--oos {text!r}: must be a fraction between 0 and 1")
    return value


def _validate(points: list[Point], settings: Settings) -> None:
    names = list(settings.extras.get("strategy") or ())
    from .cli import DEFAULT_STRATEGIES

    names = names or list(DEFAULT_STRATEGIES)
    for s, k, _ in points[0]:
        if s not in REGISTRY:
            raise BacktestInputError(f"--sweep {s}.{k}: unknown strategy {s!r}")
        if s not in names:
            raise BacktestInputError(f"--sweep {s}.{k}: strategy {s!r} is not among {names}")
        fields = {f.name for f in dataclasses.fields(REGISTRY[s][0])}
        if k not in fields:
            raise BacktestInputError(f"--sweep {s}.{k}: {s} has no parameter {k!r} (known: "
                                     f"{', '.join(sorted(fields))})")


def _runner(x: Mapping[str, Any], npoints: int) -> Runner:
    address = x.get("dask_scheduler")
    if address:
        return _run_dask(str(address))
    workers = int(x.get("workers") or 0) or (os.cpu_count() or 1)
    workers = min(workers, npoints)
    return _run_serial if workers <= 1 else _run_pool(workers)


def _iter_specs(x: Mapping[str, Any]) -> Iterator[SweepDim]:
    for spec in x.get("sweep") or ():
        yield parse_sweep(str(spec))


def run_sweep(settings: Settings, *, out: TextIO | None = None,
              err: TextIO | None = None) -> int:
    """Run ``--sweep``/``--oos`` and return the exit status (0 ok, 1 failed, 2 bad input,
    3 Dask asked for but not installed)."""
    out = sys.stdout if out is None else out
    err = sys.stderr if err is None else err
    x = settings.extras
    metric = str(x.get("rank_by") or "sharpe")
    try:
        if metric not in RANK_METRICS:
            raise BacktestInputError(f"--rank-by {metric!r}: one of {', '.join(RANK_METRICS)}")
        oos = _oos(x.get("oos"))
        points = grid(list(_iter_specs(x)))
        _validate(points, settings)
        job = SweepJob(settings=dataclasses.replace(settings, api_key=Secret(""),
                                                    api_secret=Secret("")), oos=oos)
        _load(job)  # validates the data here, once, before any worker starts
        runner = _runner(x, len(points))
    except BacktestInputError as exc:
        err.write(f"backtest: error: {exc}\n")
        return EXIT_INPUT
    except ImportError as exc:
        err.write(f"backtest: --dask-scheduler needs the optional extra dask[distributed] "
                  f"({exc})\n")
        return EXIT_UNSUPPORTED
    results: list[PointResult] = []
    bar = Progress(len(points), label="sweep", unit="candles", stream=err,
                   enabled=x.get("progress"))

    def done(r: PointResult) -> None:
        results.append(r)
        bar.update(advance=1, events=r.candles, note=f"{len(results)}/{len(points)} points")

    started = time.perf_counter()  # wall clock only for the speed figure shown to the user
    try:
        runner(job, points, done)
    except BacktestInputError as exc:
        bar.close()
        err.write(f"backtest: error: {exc}\n")
        return EXIT_INPUT
    bar.close()
    elapsed = time.perf_counter() - started
    ranked = sorted(results, key=_rank_key(metric))
    candles = sum(r.candles for r in results)
    out.write(f"sweep: {len(points)} point(s), ranked by in-sample {metric}"
              f"{f', out of sample: last {oos}' if oos is not None else ''}; {candles:,} "
              f"candles in {elapsed:.2f} s ({candles / elapsed if elapsed > 0 else 0:,.0f}"
              " candles/s)\n")
    print_table(ranked, metric, max(1, int(x.get("top") or 20)), out)
    report = x.get("report")
    if report:
        meta = {"rank_by": metric, "oos": None if oos is None else str(oos),
                "sweep": list(x.get("sweep") or ()), "params": list(x.get("param") or ()),
                "data": list(x.get("data") or ()),
                "strategies": list(x.get("strategy") or ())}
        write_outputs(ranked, Path(report), meta)
        out.write(f"sweep written to {report}/sweep.csv and sweep.json\n")
    return EXIT_OK

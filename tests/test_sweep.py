"""Parameter sweeps: grid parsing, ranking, in-sample/out-of-sample, and backend parity
(in-process, process pool, Dask LocalCluster on loopback)."""

from __future__ import annotations

import io
import json
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from backtest._data import BacktestInputError
from backtest._sweep import SweepDim, grid, parse_sweep, run_sweep
from backtest.cli import add_arguments, prepare, run_prepared
from config import load_settings
from tests.conftest import FIXTURES

DATA = str(FIXTURES / "candles" / "binance_BTC_USDT_1m_slice.csv")
BASE = ["--mode", "backtest", "--data", DATA, "--strategy", "momentum",
        "--sweep", "momentum.entry_threshold=0.001:0.003:0.001",
        "--sweep", "momentum.lookback=5,10"]


def _sweep(tmp_path: Path, *extra: str, base: list[str] = BASE) -> tuple[int, dict[str, Any],
                                                                         str, str]:
    report = tmp_path / "report"
    settings = load_settings([*base, "--report", str(report), *extra], {},
                             extend=add_arguments)
    out, err = io.StringIO(), io.StringIO()
    code = run_sweep(settings, out=out, err=err)
    doc = json.loads((report / "sweep.json").read_text()) if code == 0 else {}
    return code, doc, out.getvalue(), err.getvalue()


def test_parse_range_is_inclusive_and_exact() -> None:
    d = parse_sweep("momentum.entry_threshold=0.003:0.01:0.001")
    assert d == SweepDim("momentum", "entry_threshold", (
        "0.003", "0.004", "0.005", "0.006", "0.007", "0.008", "0.009", "0.010"))
    assert parse_sweep("sma_cross.fast=5,10, 20").values == ("5", "10", "20")
    assert parse_sweep("a.b=1:2:0.3").values == ("1.0", "1.3", "1.6", "1.9")


@pytest.mark.parametrize("spec", ["momentum=1:2:1", "momentum.x", "m.x=1:2", "m.x=2:1:1",
                                  "m.x=1:2:0", "m.x=1,,2", "m.x=1,1", "m.x=a:2:1"])
def test_bad_specs(spec: str) -> None:
    with pytest.raises(BacktestInputError, match="--sweep"):
        parse_sweep(spec)


def test_grid_is_the_cartesian_product_last_fastest() -> None:
    pts = grid([SweepDim("a", "x", ("1", "2")), SweepDim("b", "y", ("p", "q", "r"))])
    assert len(pts) == 6
    assert pts[0] == (("a", "x", "1"), ("b", "y", "p"))
    assert pts[1] == (("a", "x", "1"), ("b", "y", "q"))
    assert pts[3] == (("a", "x", "2"), ("b", "y", "p"))
    assert grid([]) == [()]


def test_ranked_table_and_files(tmp_path: Path) -> None:
    code, doc, out, _ = _sweep(tmp_path, "--workers", "1", "--rank-by", "total_return")
    assert code == 0
    pts = doc["points"]
    assert len(pts) == 6 and doc["rank_by"] == "total_return"
    rets = [p["in_sample"]["total_return"] for p in pts]
    assert rets == sorted(rets, reverse=True)
    assert {tuple(p["params"].values()) for p in pts} == {
        (t, lb) for t in ("0.001", "0.002", "0.003") for lb in ("5", "10")}
    assert all(p["out_of_sample"] is None for p in pts)
    rows = (tmp_path / "report" / "sweep.csv").read_text().splitlines()
    assert rows[0].startswith("rank,momentum.entry_threshold,momentum.lookback,is_total_return")
    assert len(rows) == 7
    assert "sweep: 6 point(s), ranked by in-sample total_return" in out
    # Each point is an ordinary run: the top row equals a single backtest with those params.
    best = pts[0]["params"]
    single = load_settings(["--mode", "backtest", "--data", DATA, "--strategy", "momentum",
                            *[a for k, v in best.items() for a in ("--param", f"{k}={v}")]],
                           {}, extend=add_arguments)
    r = run_prepared(prepare(single))
    assert pts[0]["in_sample"]["final_equity"] == str(r.final_equity)
    assert pts[0]["trade_log_sha256"] == r.trade_log_sha256


def test_oos_splits_the_range_and_matches_separate_runs(tmp_path: Path) -> None:
    code, doc, out, _ = _sweep(tmp_path, "--workers", "1", "--oos", "0.25")
    assert code == 0 and "OOS total_return" in out
    p0 = doc["points"][0]
    assert p0["out_of_sample"] is not None and p0["candles"] == 2000
    # The cut: 75 % of the span, aligned to the minute.
    full = prepare(load_settings(["--mode", "backtest", "--data", DATA], {},
                                 extend=add_arguments))
    cs = full.loaded[0].candles
    t0, t1 = cs[0].ts_event_ns, cs[-1].ts_event_ns + 60 * 10**9
    cut = t0 + int((t1 - t0) * Decimal("0.75"))
    cut -= (cut - t0) % (60 * 10**9)
    iso = datetime.fromtimestamp(cut // 10**9, tz=UTC).isoformat()
    params = [a for k, v in p0["params"].items() for a in ("--param", f"{k}={v}")]
    for side, window in (("in_sample", ["--to", iso]), ("out_of_sample", ["--from", iso])):
        s = load_settings(["--mode", "backtest", "--data", DATA, "--strategy", "momentum",
                           *params, *window], {}, extend=add_arguments)
        assert p0[side]["final_equity"] == str(run_prepared(prepare(s)).final_equity)


def test_process_pool_gives_the_same_results(tmp_path: Path) -> None:
    code1, serial, _, _ = _sweep(tmp_path / "a", "--workers", "1", "--oos", "0.3")
    code2, pool, _, _ = _sweep(tmp_path / "b", "--workers", "2", "--oos", "0.3")
    assert code1 == code2 == 0
    assert serial["points"] == pool["points"]


@pytest.mark.parametrize(("extra", "message"), [
    (["--sweep", "momentum.nope=1,2"], "has no parameter 'nope'"),
    (["--sweep", "sma_cross.fast=5,6"], "not among"),
    (["--oos", "1.5"], "fraction between 0 and 1"),
])
def test_bad_sweep_input_exit_2(tmp_path: Path, extra: list[str], message: str) -> None:
    code, _, _, err = _sweep(tmp_path, "--workers", "1", *extra)
    assert code == 2
    assert err.count("\n") == 1 and message in err


def test_dask_local_cluster_gives_the_same_results(tmp_path: Path) -> None:
    distributed = pytest.importorskip("distributed", reason="optional extra dask[distributed]"
                                      " not installed")
    code1, serial, _, _ = _sweep(tmp_path / "a", "--workers", "1", "--oos", "0.3")
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  host="127.0.0.1", dashboard_address=None) as cluster:
        address = cluster.scheduler_address
        assert address.startswith("tcp://127.0.0.1:")
        code2, dask, _, _ = _sweep(tmp_path / "b", "--dask-scheduler", address, "--oos", "0.3")
    assert code1 == code2 == 0
    assert serial["points"] == dask["points"]

"""The backtest report files: trades.csv, summary.json, PNG charts, self-contained HTML, table.

The fixture is a hand-built ``BacktestResult`` (no engine involved): ten minutes of a
BTC/USDT + ETH/BTC run with 10 000 USDT, accounted in USD.

    # strategy  symbol        entry (min, px)  exit (min, px)   qty   fees; pnl
    1 sma_cross BTC/USDT      1  50000         3  50500         0.01  1.30 + 1.3130 = 2.6130
                                                                      pnl 5 - 2.613 = 2.387
    2 sma_cross BTC/USDT      5  51000         7  50800         0.02  2.652 + 2.6416 = 5.2936
                                                                      pnl -4 - 5.2936 = -9.2936
    3 sma_cross BTC/USDT open 8  50900         9  51000 (mark)  0.01  1.3234
                                                                      pnl 1 - 1.3234 = -0.3234
    4 arbitrage ETH/BTC       2  0.05          4  0.051         1.5   0.000195 + 0.0001989
                                         pnl 0.0015 - 0.0003939 = 0.0011061 BTC

    fees (fills)     USDT 1.30 + 1.3130 + 2.652 + 2.6416 + 1.3234 = 9.2300; BTC 0.0003939
    turnover (fills) USDT 500 + 505 + 1020 + 1016 + 509 = 3550; BTC 0.075 + 0.0765 = 0.1515
    exposure         overall [1,4] ∪ [5,7] ∪ [8,9] = 6 of 10 min = 0.6;
                     sma_cross [1,3] ∪ [5,7] ∪ [8,9] = 5/10; arbitrage [2,4] = 2/10
    win rate         overall 2 wins of 3 closed; sma_cross 1 of 2
    sma_cross curve  10000 → 10002.387 (min 3) → 9993.0934 (min 7) → 9992.77 (min 9)
                     total return -7.23 / 10000; max DD amount 10002.387 - 9992.77 = 9.617
"""

from __future__ import annotations

import base64
import csv
import json
import re
import struct
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest

pytest.importorskip("matplotlib", reason="the report charts need matplotlib")

from backtest._result import (
    BacktestResult,
    ClosedTrade,
    EquityPoint,
    RunConfig,
    SymbolInfo,
)
from backtest.report import (
    TRADES_CSV_COLUMNS,
    build_summary,
    format_summary_table,
    iso_utc,
    write_report,
)
from protocol.instruments import PairInfo
from protocol.messages import Fill, Side
from trading import performance as pf

D = Decimal
MIN = 60_000_000_000
T0 = int(datetime(2021, 4, 20, 20, 42, tzinfo=UTC).timestamp()) * 1_000_000_000
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"

EQUITY = ["10000", "9998.70", "9998.50", "10001.00", "10002.20", "9999.00", "9997.00",
          "9993.50", "9992.00", "9993.10", "9993.10"]
BENCH = ["10000", "10001", "10003", "10002", "10006", "10008", "10007", "10010", "10012",
         "10015", "10020"]


def _trade(strategy: str, symbol: str, entry: int, px_in: str, exit: int, px_out: str,
           qty: str, fees: str, pnl: str, currency: str, *, is_open: bool = False
           ) -> ClosedTrade:
    return ClosedTrade(strategy=strategy, exit_strategy=strategy, symbol=symbol, side="long",
                       entry_time=T0 + entry * MIN, exit_time=T0 + exit * MIN,
                       entry_price=D(px_in), exit_price=D(px_out), quantity=D(qty),
                       fees=D(fees), pnl=D(pnl), currency=currency, is_open=is_open)


def _fill(n: int, strategy: str, symbol: str, side: Side, minute: int, price: str, qty: str,
          fee: str, fee_ccy: str) -> Fill:
    return Fill(fill_id=f"f{n}", client_order_id=f"o{n}", strategy=strategy, symbol=symbol,
                side=side, price=D(price), qty=D(qty), fee=D(fee), fee_currency=fee_ccy,
                ts_event_ns=T0 + minute * MIN)


def make_result(*, no_risk_limits: bool = True) -> BacktestResult:
    """The fixture described in the module docstring."""
    btc = PairInfo(symbol="BTC/USDT", base="BTC", quote="USDT")
    eth = PairInfo(symbol="ETH/BTC", base="ETH", quote="BTC")
    cfg = RunConfig(engine="fast", strategies=("sma_cross", "arbitrage"), params=(),
                    data_files=("btc.csv", "ethbtc.csv"), start_ns=None, end_ns=None,
                    timeframe="", slippage_bps=D("0"), spread_bps=D("2"),
                    no_risk_limits=no_risk_limits, cash=D("10000"), cash_currency="USDT",
                    accounting_currency="USD", equity_interval_s=60)
    trades = (
        _trade("sma_cross", "BTC/USDT", 1, "50000", 3, "50500", "0.01", "2.6130", "2.387",
               "USDT"),
        _trade("arbitrage", "ETH/BTC", 2, "0.05", 4, "0.051", "1.5", "0.0003939", "0.0011061",
               "BTC"),
        _trade("sma_cross", "BTC/USDT", 5, "51000", 7, "50800", "0.02", "5.2936", "-9.2936",
               "USDT"),
    )
    open_trades = (_trade("sma_cross", "BTC/USDT", 8, "50900", 9, "51000", "0.01", "1.3234",
                          "-0.3234", "USDT", is_open=True),)
    fills = (
        _fill(1, "sma_cross", "BTC/USDT", Side.BUY, 1, "50000", "0.01", "1.30", "USDT"),
        _fill(2, "arbitrage", "ETH/BTC", Side.BUY, 2, "0.05", "1.5", "0.000195", "BTC"),
        _fill(3, "sma_cross", "BTC/USDT", Side.SELL, 3, "50500", "0.01", "1.3130", "USDT"),
        _fill(4, "arbitrage", "ETH/BTC", Side.SELL, 4, "0.051", "1.5", "0.0001989", "BTC"),
        _fill(5, "sma_cross", "BTC/USDT", Side.BUY, 5, "51000", "0.02", "2.652", "USDT"),
        _fill(6, "sma_cross", "BTC/USDT", Side.SELL, 7, "50800", "0.02", "2.6416", "USDT"),
        _fill(7, "sma_cross", "BTC/USDT", Side.BUY, 8, "50900", "0.01", "1.3234", "USDT"),
    )
    symbols = (
        SymbolInfo(symbol="BTC/USDT", files=("btc.csv",), interval_s=60, candles=10,
                   first_ns=T0, last_ns=T0 + 9 * MIN, first_open=D("49990"),
                   last_close=D("51000"), pair=btc),
        SymbolInfo(symbol="ETH/BTC", files=("ethbtc.csv",), interval_s=60, candles=10,
                   first_ns=T0, last_ns=T0 + 9 * MIN, first_open=D("0.0499"),
                   last_close=D("0.0512"), pair=eth),
    )
    return BacktestResult(
        config=cfg, symbols=symbols, trades=trades, open_trades=open_trades,
        equity=tuple(EquityPoint(T0 + i * MIN, D(v)) for i, v in enumerate(EQUITY)),
        benchmark=tuple(EquityPoint(T0 + i * MIN, D(v)) for i, v in enumerate(BENCH)),
        fills=fills, initial_cash=D("10000"), initial_equity=D("10000"),
        final_equity=D("9993.10"), final_balances=(("BTC", D("0.01")), ("USDT", D("9484.2"))),
        warnings=("btc.csv: gap of 2 candles before 2021-04-20T20:50:00Z",),
        no_risk_limits=no_risk_limits, candles=20,
        risk_rejections=(("max_position", 2),), trade_log_sha256="ab" * 32,
    )


@pytest.fixture(scope="module")
def report_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("report")
    assert write_report(make_result(), out) == out / "report.html"
    return out


def test_iso_utc() -> None:
    assert iso_utc(T0) == "2021-04-20T20:42:00Z"
    assert iso_utc(0) == "1970-01-01T00:00:00Z"
    assert iso_utc(1_500_000) == "1970-01-01T00:00:00.001500Z"
    assert iso_utc(7) == "1970-01-01T00:00:00.000000007Z"


def test_trades_csv(report_dir: Path) -> None:
    with (report_dir / "trades.csv").open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    with (report_dir / "trades.csv").open(newline="") as fh:
        assert tuple(next(csv.reader(fh))) == TRADES_CSV_COLUMNS
    result = make_result()
    expected = [*result.trades, *result.open_trades]
    assert len(rows) == 4
    for row, t in zip(rows, expected, strict=True):
        assert row["strategy"] == t.strategy
        assert row["symbol"] == t.symbol
        assert row["side"] == "long"
        for col in ("entry_time", "exit_time"):
            assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", row[col])
        assert datetime.fromisoformat(row["entry_time"]) == datetime.fromtimestamp(
            t.entry_time / 1e9, tz=UTC)
        assert datetime.fromisoformat(row["exit_time"]).tzinfo == UTC
        assert row["is_open"] == ("true" if t.is_open else "false")
    # Decimal text exactly as held: trailing zeros and all digits kept, no exponent.
    assert rows[0]["fees"] == "2.6130"
    assert rows[0]["entry_time"] == "2021-04-20T20:43:00Z"
    assert rows[1]["pnl"] == "0.0011061"
    assert rows[1]["currency"] == "BTC"
    assert rows[2]["pnl"] == "-9.2936"
    # The USDT P&L in the file adds back up to what the fixture's ledger holds, exactly.
    usdt = sum((D(r["pnl"]) for r in rows if r["currency"] == "USDT"), D(0))
    assert usdt == D("2.387") - D("9.2936") - D("0.3234") == D("-7.2300")


def test_trades_csv_never_uses_exponent_notation(tmp_path: Path) -> None:
    import dataclasses

    r = make_result()
    odd = dataclasses.replace(r.trades[0], quantity=D("1E-8"), pnl=D("1E+2"), fees=D("0E-8"))
    write_report(dataclasses.replace(r, trades=(odd,)), tmp_path)
    with (tmp_path / "trades.csv").open(newline="") as fh:
        row = next(csv.DictReader(fh))
    assert (row["quantity"], row["pnl"], row["fees"]) == ("0.00000001", "100", "0.00000000")


def test_summary_json(report_dir: Path) -> None:
    s = json.loads((report_dir / "summary.json").read_text())
    assert s["flags"] == {"no_risk_limits": True, "engine": "fast"}
    assert any("--no-risk-limits" in n for n in s["notes"])
    assert s["final_equity"] == "9993.10"
    assert s["accounting_currency"] == "USD"
    assert s["trade_log_sha256"] == "ab" * 32
    assert s["warnings"] == ["btc.csv: gap of 2 candles before 2021-04-20T20:50:00Z"]
    assert s["risk_rejections"] == {"max_position": 2}

    o = s["overall"]
    curve = [(T0 + i * MIN, D(v)) for i, v in enumerate(EQUITY)]
    assert o["start"] == "2021-04-20T20:42:00Z"
    assert o["end"] == "2021-04-20T20:52:00Z"
    assert o["total_return"] == pytest.approx(-6.9 / 10000)
    assert o["max_drawdown"] == pytest.approx(1 - 9992 / 10002.2)
    assert o["max_drawdown_amount"] == "10.20"
    assert o["max_drawdown_duration_ns"] == 6 * MIN  # peak at min 4, never regained by 10
    assert o["periods_per_year"] == 525_600
    assert o["sharpe"] == pytest.approx(pf.sharpe_ratio(curve))
    assert o["sortino"] == pytest.approx(pf.sortino_ratio(curve))
    assert o["annualized_volatility"] == pytest.approx(pf.annualized_volatility(curve))
    assert o["cagr"] == pytest.approx(pf.cagr(curve))
    assert (o["trades"], o["open_trades"], o["wins"], o["losses"]) == (3, 1, 2, 1)
    assert o["win_rate"] == pytest.approx(2 / 3)
    assert o["fees"] == {"BTC": "0.0003939", "USDT": "9.2300"}
    assert o["turnover"] == {"BTC": "0.1515", "USDT": "3550.00"}
    assert o["profit_factor"]["USDT"] == pytest.approx(2.387 / 9.2936)
    assert o["profit_factor"]["BTC"] is None
    assert o["average_win"] == {"BTC": "0.0011061", "USDT": "2.387"}
    assert o["average_loss"] == {"BTC": None, "USDT": "-9.2936"}
    assert o["exposure_time"] == pytest.approx(0.6)

    sma = s["strategies"]["sma_cross"]
    assert sma["equity_basis"].startswith("realised")
    assert sma["final_equity"] == "9992.7700"
    assert sma["total_return"] == pytest.approx(-7.23 / 10000)
    assert sma["max_drawdown_amount"] == "9.6170"
    assert sma["max_drawdown"] == pytest.approx(9.617 / 10002.387)
    assert (sma["trades"], sma["open_trades"], sma["win_rate"]) == (2, 1, 0.5)
    assert sma["exposure_time"] == pytest.approx(0.5)
    assert sma["fees"] == {"USDT": "9.2300"}

    arb = s["strategies"]["arbitrage"]
    assert arb["equity_basis"] == "unavailable: trades in BTC"  # never add BTC to USD
    assert arb["total_return"] is None
    assert arb["exposure_time"] == pytest.approx(0.2)
    assert arb["turnover"] == {"BTC": "0.1515"}

    b = s["benchmark"]
    assert b["total_return"] == pytest.approx(0.002)
    assert b["max_drawdown"] == pytest.approx(1 - 10002 / 10003)
    assert "buy-and-hold" in b["description"]
    assert s["definitions"]["sharpe"].startswith("mean(r) / stdev(r, ddof=1)")


def test_summary_without_risk_flag_has_no_note() -> None:
    s = build_summary(make_result(no_risk_limits=False))
    assert s["flags"]["no_risk_limits"] is False
    assert s["notes"] == []


def _png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == PNG_MAGIC
    length, kind = struct.unpack(">I4s", data[8:16])
    assert (length, kind) == (13, b"IHDR")
    w, h = struct.unpack(">II", data[16:24])
    return w, h


def test_pngs_are_valid(report_dir: Path) -> None:
    names = ["equity.png", "drawdown.png", "trades_BTC-USDT.png", "trades_ETH-BTC.png"]
    for name in names:
        data = (report_dir / name).read_bytes()
        assert _png_size(data) == (1000, 400), name
        assert data.endswith(b"IEND\xaeB`\x82"), name


def test_html_is_self_contained(report_dir: Path) -> None:
    html = (report_dir / "report.html").read_text()
    assert "http://" not in html and "https://" not in html
    assert "<script" not in html.lower()
    assert "<link" not in html.lower()
    srcs = re.findall(r'\bsrc="([^"]*)"', html)
    assert len(srcs) == 4
    assert all(s.startswith("data:image/png;base64,") for s in srcs)
    m = re.search(r'<img id="equity-chart"[^>]*src="data:image/png;base64,([^"]+)"', html)
    assert m is not None
    assert base64.b64decode(m.group(1)) == (report_dir / "equity.png").read_bytes()
    # The same tables: the metric table, the run, the trades, the flag.
    assert 'id="summary-table"' in html and 'id="trades-table"' in html
    assert "Buy &amp; hold" in html
    assert "--no-risk-limits" in html
    assert "0.0011061" in html


def test_report_is_deterministic(report_dir: Path, tmp_path: Path) -> None:
    write_report(make_result(), tmp_path)
    for f in sorted(report_dir.iterdir()):
        assert (tmp_path / f.name).read_bytes() == f.read_bytes(), f.name


def test_format_summary_table() -> None:
    text = format_summary_table(make_result())
    lines = text.splitlines()
    assert lines[0].split() == ["Metric", "Overall", "sma_cross", "arbitrage", "Buy", "&", "hold"]
    table = {ln.split("  ")[0]: ln for ln in lines[2:]}
    assert "-0.07%" in table["Total return"]  # -6.9 / 10000
    assert "0.20%" in table["Total return"]  # buy & hold
    assert "66.67%" in table["Win rate"]
    assert "9.23 USDT" in table["Fees"]
    assert "0.0003939 BTC" in table["Fees"]
    assert "60.00%" in table["Exposure time"]
    assert "0d 00h06m" in table["Max DD duration"]
    assert "--no-risk-limits" in text
    assert "ab" * 32 in text


def test_long_curves_are_reduced_but_keep_extremes() -> None:
    from backtest._report_plots import _reduce

    ts = list(range(100_000))
    ys = [float(i % 1000) for i in ts]
    ys[54_321] = -5.0
    t2, y2 = _reduce(ts, ys, 4000)
    assert len(t2) <= 4001
    assert min(y2) == -5.0 and max(y2) == 999.0
    assert t2 == sorted(t2) and t2[0] == 0 and t2[-1] == 99_999

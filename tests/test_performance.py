"""Every metric of ``trading.performance`` against values computed by hand in the comments.

Fixture: a 6-point equity curve sampled every 73 days, so the 5 periods span exactly one 24/7
year (365 days) and there are P = 365 / 73 = 5 periods per year.

    t (days)   0      73     146    219     292      365
    equity     1000   1100   1045   1149.5  1034.55  1241.46
    return            +0.10  -0.05  +0.10   -0.10    +0.20

    mean(r)            = (0.10 - 0.05 + 0.10 - 0.10 + 0.20) / 5 = 0.25 / 5 = 0.05
    deviations         = 0.05, -0.10, 0.05, -0.15, 0.15
    sum of squares     = 0.0025 + 0.01 + 0.0025 + 0.0225 + 0.0225 = 0.06
    var (ddof=1)       = 0.06 / 4 = 0.015
    volatility         = sqrt(0.015 * 5) = sqrt(0.075) = 0.27386127875...
    Sharpe             = 0.05 / sqrt(0.015) * sqrt(5) = 0.91287092917...
    downside deviation = sqrt((0.05² + 0.10²) / 5) = sqrt(0.0125 / 5) = sqrt(0.0025) = 0.05
    Sortino            = 0.05 / 0.05 * sqrt(5) = 2.2360679775...
    total return       = 1241.46 / 1000 - 1 = 0.24146
    CAGR               = 1.24146 ** (365 / 365) - 1 = 0.24146 (exactly one year)
    drawdowns          = 1045 vs peak 1100: 0.05; 1034.55 vs peak 1149.5: 0.10 (deepest)
    max DD amount      = 1149.5 - 1034.55 = 114.95
    longest underwater = 1100 (day 73) → 1149.5 (day 219): 146 days;
                         1149.5 (day 219) → 1241.46 (day 365): 146 days → 146 days
    Calmar             = 0.24146 / 0.10 = 2.4146

Four trades (days; pnl is net of fees):

    #  entry  exit  qty  entry_px  exit_px  fees  pnl
    1  0      73    2    100       126      1     50
    2  100    146   1    200       180      2     -20
    3  120    200   3    50        60.5     1.5   30
    4  300    365   0.5  400       382      0.5   -10

    win rate      = 2 / 4 = 0.5
    gross profit  = 50 + 30 = 80; gross loss = -20 - 10 = -30
    profit factor = 80 / 30 = 2.6666...
    average win   = 80 / 2 = 40; average loss = -30 / 2 = -15
    fees          = 1 + 2 + 1.5 + 0.5 = 5.0
    turnover      = 2*(100+126) + 1*(200+180) + 3*(50+60.5) + 0.5*(400+382)
                  = 452 + 380 + 331.5 + 391 = 1554.5
    exposure      = [0,73] ∪ [100,146] ∪ [120,200] ∪ [300,365]
                  = 73 + (200 - 100) + 65 = 238 days of 365 = 0.65205479...
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from decimal import Decimal

import pytest

from trading import performance as pf

D = Decimal
DAY = pf.DAY_NS
T0 = 1_700_000_000 * 1_000_000_000  # an arbitrary epoch offset: nothing may depend on it

EQUITY = [(T0 + i * 73 * DAY, D(v)) for i, v in
          enumerate(["1000", "1100", "1045", "1149.5", "1034.55", "1241.46"])]


@dataclass(frozen=True, slots=True, kw_only=True)
class Trade:
    entry_time: int
    exit_time: int
    entry_price: Decimal
    exit_price: Decimal
    quantity: Decimal
    fees: Decimal
    pnl: Decimal


def _trade(entry: int, exit: int, qty: str, px_in: str, px_out: str, fees: str,
           pnl: str) -> Trade:
    return Trade(entry_time=T0 + entry * DAY, exit_time=T0 + exit * DAY, quantity=D(qty),
                 entry_price=D(px_in), exit_price=D(px_out), fees=D(fees), pnl=D(pnl))


TRADES = [
    _trade(0, 73, "2", "100", "126", "1", "50"),
    _trade(100, 146, "1", "200", "180", "2", "-20"),
    _trade(120, 200, "3", "50", "60.5", "1.5", "30"),
    _trade(300, 365, "0.5", "400", "382", "0.5", "-10"),
]


def test_sampling_and_annualisation_is_24_7() -> None:
    ts = [t for t, _ in EQUITY]
    assert pf.sampling_interval_ns(ts) == 73 * DAY
    assert pf.periods_per_year(ts) == 5.0
    minutes = [i * 60_000_000_000 for i in range(10)]
    assert pf.periods_per_year(minutes) == 525_600.0  # 365 * 24 * 60, no 252-day year
    # One missing candle does not change the interval (median of the gaps).
    assert pf.sampling_interval_ns([0, 60, 120, 240, 300]) == 60
    assert pf.sampling_interval_ns([5]) is None


def test_period_returns() -> None:
    assert pf.period_returns(EQUITY) == pytest.approx([0.10, -0.05, 0.10, -0.10, 0.20],
                                                      abs=1e-15)


def test_total_return_and_cagr() -> None:
    assert pf.total_return(EQUITY) == pytest.approx(0.24146, abs=1e-15)
    assert pf.cagr(EQUITY) == pytest.approx(0.24146, abs=1e-12)
    # Half a year doubling: 2 ** (365 / 182.5) - 1 = 3.
    half = [(0, D(100)), (int(182.5 * DAY), D(200))]
    assert pf.cagr(half) == pytest.approx(3.0)
    assert pf.cagr([(0, D(100)), (DAY, D(0))]) == -1.0
    assert pf.cagr([(0, D(100))]) is None


def test_volatility_sharpe_sortino() -> None:
    assert pf.annualized_volatility(EQUITY) == pytest.approx(math.sqrt(0.075), rel=1e-12)
    assert pf.annualized_volatility(EQUITY) == pytest.approx(0.27386127875, rel=1e-10)
    assert pf.sharpe_ratio(EQUITY) == pytest.approx(0.91287092917, rel=1e-10)
    assert pf.sortino_ratio(EQUITY) == pytest.approx(2.2360679775, rel=1e-10)


def test_undefined_ratios_are_none() -> None:
    flat = [(i * DAY, D(100)) for i in range(4)]
    assert pf.sharpe_ratio(flat) is None
    assert pf.sortino_ratio(flat) is None
    assert pf.calmar_ratio(flat) is None
    rising = [(0, D(100)), (DAY, D(110)), (2 * DAY, D(121))]
    assert pf.sortino_ratio(rising) is None  # no downside at all
    assert pf.sharpe_ratio(rising[:2]) is None  # one return: no ddof=1 deviation


def test_max_drawdown_and_duration() -> None:
    dd = pf.max_drawdown(EQUITY)
    assert dd.max_drawdown == pytest.approx(0.10, abs=1e-15)
    assert dd.max_drawdown_amount == D("114.95")
    assert dd.peak_ts == EQUITY[3][0]
    assert dd.trough_ts == EQUITY[4][0]
    assert dd.max_duration_ns == 146 * DAY
    assert pf.calmar_ratio(EQUITY) == pytest.approx(2.4146, rel=1e-12)


def test_drawdown_duration_runs_to_the_end_when_not_recovered() -> None:
    # Peak 120 on day 1, never regained: under water from day 1 to the last point, day 5.
    curve = [(d * DAY, D(v)) for d, v in enumerate(["100", "120", "90", "110", "119", "60"])]
    dd = pf.max_drawdown(curve)
    assert dd.max_duration_ns == 4 * DAY
    assert dd.max_drawdown == pytest.approx(0.5)  # 1 - 60 / 120
    assert dd.max_drawdown_amount == D(60)
    # Touching the old peak exactly counts as recovered.
    touch = [(d * DAY, D(v)) for d, v in enumerate(["100", "90", "100", "95"])]
    assert pf.max_drawdown(touch).max_duration_ns == 2 * DAY
    assert pf.drawdown_series(touch) == [(0, 0.0), (DAY, pytest.approx(0.1)), (2 * DAY, 0.0),
                                         (3 * DAY, pytest.approx(0.05))]


def test_trade_metrics() -> None:
    assert pf.win_rate(TRADES) == 0.5
    assert pf.gross_profit(TRADES) == D(80)
    assert pf.gross_loss(TRADES) == D(-30)
    assert pf.profit_factor(TRADES) == pytest.approx(80 / 30)
    assert pf.average_win(TRADES) == D(40)
    assert pf.average_loss(TRADES) == D(-15)
    assert pf.total_fees(TRADES) == D("5.0")
    assert pf.turnover(TRADES) == D("1554.5")
    assert pf.exposure_time(TRADES, T0, T0 + 365 * DAY) == pytest.approx(238 / 365)


def test_trade_metrics_without_trades_or_losses() -> None:
    assert pf.win_rate([]) is None
    assert pf.profit_factor(TRADES[:1]) is None
    assert pf.average_loss(TRADES[:1]) is None
    assert pf.average_win([]) is None
    assert pf.total_fees([]) == 0
    assert pf.exposure_time([], 0, 10) == 0.0
    assert pf.exposure_time([], 5, 5) is None


def test_money_sums_are_exact() -> None:
    # 0.1 + 0.2 is 0.3 in Decimal; ten thousand tiny fees lose nothing.
    assert pf.money_sum([D("0.1"), D("0.2")]) == D("0.3")
    tiny = [D("0.000000012345678901")] * 10_000
    assert pf.money_sum(tiny) == D("0.00012345678901")
    big = [D("123456789012.123456789012345678"), D("0.000000000000000001")]
    assert pf.money_sum(big) == D("123456789012.123456789012345679")


def test_compute_performance_gathers_everything() -> None:
    p = pf.compute_performance(EQUITY, TRADES)
    assert (p.start_ns, p.end_ns) == (T0, T0 + 365 * DAY)
    assert p.initial_equity == D(1000)
    assert p.final_equity == D("1241.46")
    assert p.net_pnl == D("241.46")
    assert p.total_return == pytest.approx(0.24146)
    assert p.cagr == pytest.approx(0.24146)
    assert p.sharpe == pytest.approx(0.91287092917)
    assert p.sortino == pytest.approx(2.2360679775)
    assert p.max_drawdown == pytest.approx(0.1)
    assert p.max_drawdown_duration_ns == 146 * DAY
    assert p.calmar == pytest.approx(2.4146)
    assert p.periods_per_year == 5.0
    assert (p.trades, p.wins, p.losses) == (4, 2, 2)
    assert p.trade_pnl == D(50)
    assert p.fees == D("5.0")
    assert p.turnover == D("1554.5")
    assert p.exposure_time == pytest.approx(238 / 365)
    empty = pf.compute_performance([])
    assert empty.total_return is None
    assert empty.trades == 0
    assert empty.exposure_time is None

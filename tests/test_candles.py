"""protocol.candles: the three CSV formats, exact Decimals, typed errors, warnings, resampling."""

from __future__ import annotations

from decimal import Decimal

import pytest

from protocol.candles import CandleDataError, parse_candles, parse_timeframe, resample
from tests.conftest import FIXTURES

HEADER = "timestamp_ms,open,high,low,close,volume"
T0 = 1618951320000  # 2021-04-20T20:42:00Z


def _rows(*rows: str) -> list[str]:
    return [HEADER, *rows]


def test_ohlcv_ms_prices_are_the_text_as_written() -> None:
    s = parse_candles(_rows(f"{T0},56738.76,56840.3,56733.23,56777.0,50.9752"),
                      path="f.csv", symbol="BTC/USDT")
    (c,) = s.candles
    assert c.close == Decimal("56777.0") and str(c.close) == "56777.0"
    assert c.ts_event_ns == T0 * 1_000_000
    assert c.symbol == "BTC/USDT"
    assert s.fmt == "ohlcv_ms"


def test_kraken_ohlcvt_fixture_parses_with_hourly_interval() -> None:
    path = FIXTURES / "candles" / "kraken_XBTUSD_60_slice.csv"
    s = parse_candles(path.read_text().splitlines(), path=str(path), symbol="BTC/USD")
    assert s.fmt == "kraken_ohlcvt"
    assert s.interval_s == 3600
    assert len(s.candles) == 200
    assert s.gaps > 0 and s.warnings  # 2013 Kraken data is sparse: gaps reported
    assert all("not filled" in w or "more warning" in w for w in s.warnings)


def test_kraken_trades_are_aggregated() -> None:
    s = parse_candles(["60,10.5,1", "70,11,2", "110,9.5,0.5", "185,10,1"], path="t.csv",
                      symbol="BTC/USD", interval_s=60)
    assert s.fmt == "kraken_trades"
    a, b = s.candles
    assert (a.open, a.high, a.low, a.close, a.volume) == (
        Decimal("10.5"), Decimal(11), Decimal("9.5"), Decimal("9.5"), Decimal("3.5"))
    assert a.ts_event_ns == 60 * 10**9
    assert b.ts_event_ns == 180 * 10**9 and b.close == Decimal(10)


@pytest.mark.parametrize(
    ("row", "reason"),
    [
        (f"{T0},1,2,0.5", "expected 6 columns"),
        (f"{T0},1,2,x,1,1", "low is not a number"),
        (f"{T0},1,2,0.5,NaN,1", "close is not finite"),
        (f"{T0},1,2,0.5,3,1", "inconsistent candle"),
        (f"{T0},0,2,0,1,1", "prices must be > 0"),
        (f"{T0},1,2,0.5,1,-1", "volume must be >= 0"),
    ],
)
def test_malformed_row_names_file_and_line(row: str, reason: str) -> None:
    good = f"{T0 - 60000},1,2,0.5,1,1"
    with pytest.raises(CandleDataError) as info:
        parse_candles(_rows(good, row), path="data.csv", symbol="X/Y")
    assert info.value.path == "data.csv"
    assert info.value.line == 3
    assert reason in info.value.reason
    assert str(info.value).startswith("data.csv:3: ")


def test_empty_and_header_only_and_unknown_format() -> None:
    with pytest.raises(CandleDataError, match="empty"):
        parse_candles([], path="e.csv", symbol="X/Y")
    with pytest.raises(CandleDataError, match="header only"):
        parse_candles([HEADER], path="e.csv", symbol="X/Y")
    with pytest.raises(CandleDataError, match="unknown format"):
        parse_candles(["a,b,c,d"], path="e.csv", symbol="X/Y")


def test_gaps_duplicates_and_out_of_order_are_reported_never_filled() -> None:
    ms = 60_000
    s = parse_candles(_rows(
        f"{T0},1,1,1,1,1",
        f"{T0 + ms},2,2,2,2,1",
        f"{T0 + ms},9,9,9,9,1",  # duplicate: the first row wins
        f"{T0 + 4 * ms},3,3,3,3,1",  # gap of two candles
        f"{T0 + 2 * ms},4,4,4,4,1",  # out of order
    ), path="g.csv", symbol="X/Y")
    assert [c.close for c in s.candles] == [1, 2, 4, 3]
    assert s.duplicates == 1 and s.out_of_order == 1 and s.gaps == 1
    joined = "\n".join(s.warnings)
    assert "g.csv:4: duplicate" in joined
    assert "g.csv:6: out of order" in joined
    assert "gap of 1 candle(s)" in joined


def test_resample_aggregates_epoch_aligned_buckets() -> None:
    ms = 60_000
    base = 1_620_000_000_000  # divisible by 5 minutes
    rows = [f"{base + i * ms},{10 + i},{20 + i},{5 + i},{11 + i},1" for i in range(7)]
    s = parse_candles(_rows(*rows), path="r.csv", symbol="X/Y")
    five = resample(s.candles, parse_timeframe("5m"))
    assert len(five) == 2
    a, b = five
    assert (a.open, a.high, a.low, a.close, a.volume) == (10, 24, 5, 15, 5)
    assert (b.open, b.close, b.volume, b.interval_s) == (15, 17, 2, 300)
    with pytest.raises(ValueError, match="not a multiple"):
        resample(s.candles, 90)
    with pytest.raises(ValueError, match="unknown timeframe"):
        parse_timeframe("7m")

"""``data download``: pagination, resume after a kill, the rate limit, OHLC, the output format.

Against the Kraken-protocol REST server of ``tests/kraken_rest_server.py``: in-process through
its ``httpx.MockTransport`` under the autojump clock (the limiter's waits are virtual), and over
a real loopback socket for the test that SIGKILLs a ``data download`` subprocess.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
from collections.abc import Sequence
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import trio

from backtest import download as dl
from protocol.candles import parse_candles
from protocol.kraken import KrakenCredentials, KrakenRestClient, RateLimited
from tests.conftest import ROOT
from tests.kraken_rest_server import Fault, FaultSpec, KrakenRestState, open_kraken_rest_server

PAIR_ID = "XXBTZUSD"
SINCE = 1_688_000_000 - 1_688_000_000 % 60 + 60  # a minute boundary
N_TRADES = 2_300


def _trades(n: int = N_TRADES, seed: int = 7) -> list[list[Any]]:
    """Kraken ``Trades`` rows: random walk, bursts, empty minutes, shared seconds."""
    rng = random.Random(seed)
    t = Decimal(SINCE) + Decimal("0.5")
    price = Decimal("30000.0")
    rows: list[list[Any]] = []
    for i in range(n):
        gap = rng.choice([Decimal("0.0001"), Decimal("0.37"), Decimal("2.5"), Decimal("11"),
                          Decimal("75")])
        t += gap
        price += Decimal(rng.randint(-30, 30)) / 10
        qty = Decimal(rng.randint(1, 500_000)) / Decimal(10**7)
        rows.append([format(price, "f"), format(qty, "f"), float(t.quantize(Decimal("0.0001"))),
                     rng.choice("bs"), rng.choice("ml"), "", 61_000_000 + i])
    return rows


def _state(**kw: Any) -> KrakenRestState:
    st = KrakenRestState(credentials=KrakenCredentials("k", "a2V5"), **kw)
    st.trades_data[PAIR_ID] = _trades()
    return st


def _until(st: KrakenRestState) -> int:
    return int(st.trades_data[PAIR_ID][-1][2]) - 600  # the last 10 minutes stay open


def _expected(rows: Sequence[list[Any]], tf: int, until: int) -> str:
    """An independent aggregation: every trade before the last complete candle's end."""
    buckets: dict[int, list[Any]] = {}
    order: list[int] = []
    for price, qty, t, *_ in rows:
        sec = int(Decimal(repr(t)))
        b = sec - sec % tf
        p, q = Decimal(price), Decimal(qty)
        if b not in buckets:
            buckets[b] = [p, p, p, p, q, 1]
            order.append(b)
        else:
            c = buckets[b]
            c[1], c[2], c[3] = max(c[1], p), min(c[2], p), p
            c[4] += q
            c[5] += 1
    return "".join(f"{b},{c[0]},{c[1]},{c[2]},{c[3]},{c[4]},{c[5]}\n"
                   for b in order if b + tf <= until for c in [buckets[b]])


def _client(st: KrakenRestState) -> KrakenRestClient:
    return KrakenRestClient(base_url="http://kraken.test", transport=st.mock_transport(),
                            limiter=dl.public_limiter())


async def _run(st: KrakenRestState, out: Path, **kw: Any) -> dl.DownloadSummary:
    async with _client(st) as client:
        return await dl.download(client, pair="BTC/USD", timeframe_s=kw.pop("tf", 60),
                                 since_s=SINCE, out_dir=out, until_s=kw.pop("until", None)
                                 or _until(st), page_size=kw.pop("page_size", 100), **kw)


async def test_pagination_aggregates_every_trade_once(tmp_path: Path,
                                                      autojump_clock: Any) -> None:
    st = _state()
    summary = await _run(st, tmp_path)
    csv = tmp_path / "kraken_XBTUSD_1.csv"
    assert summary.path == csv and summary.source == "trades"
    assert csv.read_text() == _expected(st.trades_data[PAIR_ID], 60, _until(st))
    calls = st.calls("Trades")
    assert len(calls) == summary.pages >= N_TRADES // 100
    # Each request continues from the previous answer's cursor (Kraken's ``last``).
    assert calls[0].params["since"] == str(SINCE)
    assert all(c.params["since"].isdigit() and len(c.params["since"]) > 15 for c in calls[1:])
    series = parse_candles(csv.read_text().splitlines(), path=str(csv), symbol="BTC/USD",
                           interval_s=60)
    assert series.fmt == "kraken_ohlcvt" and series.duplicates == 0
    assert sum(c.volume for c in series.candles) == sum(
        Decimal(r[1]) for r in st.trades_data[PAIR_ID] if int(r[2]) // 60 * 60 + 60
        <= _until(st))


async def test_inclusive_cursor_never_duplicates_the_boundary_trade(
        tmp_path: Path, autojump_clock: Any) -> None:
    st = _state(trades_since_inclusive=True)
    await _run(st, tmp_path)
    assert (tmp_path / "kraken_XBTUSD_1.csv").read_text() == _expected(
        st.trades_data[PAIR_ID], 60, _until(st))


async def test_resampled_timeframe(tmp_path: Path, autojump_clock: Any) -> None:
    st = _state()
    await _run(st, tmp_path, tf=300)
    assert (tmp_path / "kraken_XBTUSD_5.csv").read_text() == _expected(
        st.trades_data[PAIR_ID], 300, _until(st))


@pytest.mark.parametrize("crash_at", [1, 5, 17])
async def test_resume_after_a_kill_between_append_and_state(
        tmp_path: Path, autojump_clock: Any, monkeypatch: pytest.MonkeyPatch,
        crash_at: int) -> None:
    """The worst moment: candles appended to the CSV, the state not yet renamed."""
    st = _state()
    original = dl._Files.commit
    calls = 0

    def crashing(self: Any, state: Any, rows: Sequence[str]) -> None:
        nonlocal calls
        calls += 1
        if calls == crash_at:
            with self.csv.open("a") as fh:
                fh.write("".join(rows))
            raise RuntimeError("killed")
        original(self, state, rows)

    monkeypatch.setattr(dl._Files, "commit", crashing)
    with pytest.raises(RuntimeError, match="killed"):
        await _run(st, tmp_path)
    monkeypatch.setattr(dl._Files, "commit", original)
    await _run(st, tmp_path)
    assert (tmp_path / "kraken_XBTUSD_1.csv").read_text() == _expected(
        st.trades_data[PAIR_ID], 60, _until(st))


async def test_resume_after_cancellation_mid_page(tmp_path: Path, autojump_clock: Any) -> None:
    st = _state()
    st.inject("Trades", *[FaultSpec(Fault.SLOW, delay=0)] * 6, FaultSpec(Fault.SLOW, delay=60))
    async with trio.open_nursery() as nursery:
        nursery.start_soon(_run, st, tmp_path)
        while len(st.calls("Trades")) < 7:  # noqa: ASYNC110 (polling the server's log)
            await trio.sleep(0.01)
        nursery.cancel_scope.cancel()  # while the 7th page is in flight
    partial = (tmp_path / "kraken_XBTUSD_1.csv").read_text()
    assert partial and partial != _expected(st.trades_data[PAIR_ID], 60, _until(st))
    summary = await _run(st, tmp_path)
    assert summary.pages < len(st.calls("Trades"))
    assert (tmp_path / "kraken_XBTUSD_1.csv").read_text() == _expected(
        st.trades_data[PAIR_ID], 60, _until(st))


async def test_rerun_updates_the_file_up_to_a_later_end(tmp_path: Path,
                                                        autojump_clock: Any) -> None:
    st = _state()
    first_until = SINCE + 3 * 3600
    await _run(st, tmp_path, until=first_until)
    assert (tmp_path / "kraken_XBTUSD_1.csv").read_text() == _expected(
        st.trades_data[PAIR_ID], 60, first_until)
    await _run(st, tmp_path)
    assert (tmp_path / "kraken_XBTUSD_1.csv").read_text() == _expected(
        st.trades_data[PAIR_ID], 60, _until(st))


async def test_stays_inside_the_rate_limit(tmp_path: Path, autojump_clock: Any) -> None:
    # Kraken's public budget as the server enforces it: 20 calls, one more per second.
    st = _state(public_limit=(20.0, 1.0))
    start = trio.current_time()
    summary = await _run(st, tmp_path, page_size=50)
    assert summary.pages > 40
    assert st.rate_limit_errors == 0
    assert trio.current_time() - start >= summary.pages - 20  # the client waited, paced


async def test_without_pacing_the_server_refuses(autojump_clock: Any) -> None:
    """Control for the test above: the server's counter really bites."""
    st = _state(public_limit=(20.0, 1.0))
    async with KrakenRestClient(base_url="http://kraken.test",
                                transport=st.mock_transport()) as client:
        for _ in range(25):
            try:
                await client.recent_trades("XBTUSD", since=str(SINCE), count=10)
            except RateLimited:
                break
    assert st.rate_limit_errors == 1


async def test_recent_range_uses_ohlc(tmp_path: Path, autojump_clock: Any) -> None:
    st = _state()
    base = st.server_time - st.server_time % 60 - 700 * 60
    rows = []
    for i in range(701):
        t = base + i * 60
        count = 0 if i % 50 == 3 else 5 + i % 7
        rows.append([t, "100.5", "101.0", "99.5", f"{100 + i % 3}.0", "100.2", "1.25", count])
    st.ohlc_data[PAIR_ID] = rows
    async with _client(st) as client:
        summary = await dl.download(client, pair="BTC/USD", timeframe_s=60,
                                    since_s=base + 120, out_dir=tmp_path)
    assert summary.source == "ohlc" and not st.calls("Trades")
    lines = (tmp_path / "kraken_XBTUSD_1.csv").read_text().splitlines()
    expect = [f"{r[0]},{r[1]},{r[2]},{r[3]},{r[4]},{r[6]},{r[7]}" for r in rows[2:-1] if r[7]]
    assert lines == expect
    assert lines[-1].startswith(f"{rows[-2][0]},")  # the uncommitted last candle is dropped


def test_usage_errors_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert dl.data_command(["download", "--pair", "BTC/USD", "--since", "yesterday",
                            "--out", str(tmp_path)]) == 2
    assert dl.data_command(["download", "--pair", "BTC/USD", "--since", "2024-01-01",
                            "--timeframe", "7m", "--out", str(tmp_path)]) == 2
    assert dl.data_command(["upload"]) == 2
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 3 and all(ln.startswith("main.py data: error:") for ln in lines)


def test_foreign_state_file_is_refused(tmp_path: Path) -> None:
    st = _state()

    async def main() -> None:
        async with _client(st) as client:
            await dl.download(client, pair="BTC/USD", timeframe_s=60, since_s=SINCE,
                              out_dir=tmp_path, until_s=SINCE + 600, page_size=100)
            with pytest.raises(dl.DownloadError, match="another download"):
                await dl.download(client, pair="BTC/USD", timeframe_s=60, since_s=SINCE + 60,
                                  out_dir=tmp_path, until_s=SINCE + 600)
            with pytest.raises(dl.DownloadError, match="unknown to Kraken"):
                await dl.download(client, pair="NOPE/USD", timeframe_s=60, since_s=SINCE,
                                  out_dir=tmp_path)

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))


@pytest.mark.slow
async def test_sigkill_mid_download_then_resume_matches_uninterrupted(tmp_path: Path) -> None:
    st = _state()
    until = _until(st)
    # Pages 1-3 answer at once; the 4th hangs, so the process is killed with a page in flight.
    st.inject("Trades", *[FaultSpec(Fault.SLOW, delay=0)] * 3, FaultSpec(Fault.SLOW, delay=60))
    out = tmp_path / "killed"
    with trio.fail_after(60):
        async with open_kraken_rest_server(st) as server:
            cmd = [sys.executable, "-c",
                   "import sys; from backtest.download import data_command; "
                   "sys.exit(data_command(sys.argv[1:]))",
                   "download", "--pair", "BTC/USD", "--since", str(SINCE), "--until", str(until),
                   "--out", str(out), "--page-size", "250", "--rest-url", server.url]
            proc = await trio.lowlevel.open_process(cmd, cwd=ROOT, stdout=subprocess.DEVNULL,
                                                    stderr=subprocess.DEVNULL,
                                                    env={**os.environ})
            try:
                # Polling the server's request log (no event to wait on across processes).
                while len(st.calls("Trades")) < 4 and proc.poll() is None:  # noqa: ASYNC110
                    await trio.sleep(0.02)
                assert proc.poll() is None, "the download ended before it could be killed"
                await trio.sleep(0.1)
                proc.send_signal(signal.SIGKILL)
            finally:
                await proc.wait()
            assert proc.returncode == -signal.SIGKILL
            csv = out / "kraken_XBTUSD_1.csv"
            partial = csv.read_text()
            assert 0 < len(partial) < len(_expected(st.trades_data[PAIR_ID], 60, until))
            async with KrakenRestClient(base_url=server.url, limiter=dl.public_limiter()) as c:
                await dl.download(c, pair="BTC/USD", timeframe_s=60, since_s=SINCE,
                                  out_dir=out, until_s=until, page_size=250)
    fresh = tmp_path / "fresh"
    st2 = _state()
    async with KrakenRestClient(base_url="http://kraken.test", transport=st2.mock_transport(),
                                limiter=dl.public_limiter()) as c:
        await dl.download(c, pair="BTC/USD", timeframe_s=60, since_s=SINCE, out_dir=fresh,
                          until_s=until, page_size=250)
    assert csv.read_text() == (fresh / "kraken_XBTUSD_1.csv").read_text() == _expected(
        st.trades_data[PAIR_ID], 60, until)

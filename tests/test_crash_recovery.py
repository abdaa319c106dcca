"""Crash test (issue 5, acceptance 2): SIGKILL a paper run at random points, restart, compare.

A real ``python main.py --mode paper --replay FILE`` process trades a generated stream (our v2
recording format, built with ``tests.test_paper_e2e.book_frame``: quiet rounds, a BTC rally,
an ETH dip, a cheap ETH/BTC triangle, a BTC slide, repeated) and is killed with SIGKILL at a
seeded random moment: after a random number of new fills reached the database, plus a random
delay. Each kill is followed by a restart on the same database; the next run replays again and
is killed again, and a last run replays a short stream to its end and exits cleanly.

After every kill:

* no fill is duplicated (fill ids unique) and every fill's order has a row (write-ahead: an
  order the broker saw is never unknown after the restart);
* the state a restart restores (``actors.journal.restore``, the path ``Application`` takes)
  equals an independent recomputation from the committed ``fills`` rows, queried here with
  plain SQL: balances, net positions, realized P&L (FIFO) and fees, exactly;
* after the restart no order is left open and every order's ``filled_qty`` is the sum of its
  committed fills, never more than its quantity (a reused client order id would break this).

The clean last run must end with the same number of fills in its summary as the database
holds (a fill the process applied but the store dropped, e.g. an id reused across restarts,
would show up here), and its "recovered" log line must show the recomputed balances.

Runs on SQLite and on PostgreSQL (``TEST_DATABASE_URL``; skipped with that reason when unset).
"""

from __future__ import annotations

import ast
import json
import os
import pathlib
import random
import re
import signal
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import Iterator
from decimal import Decimal

import pytest
import sqlalchemy as sa
from sqlalchemy.pool import NullPool

from actors.app import load_pairs
from actors.journal import restore
from persistence import Store
from protocol.messages import Fill, Liquidity, Side
from tests.test_paper_e2e import SYMBOLS, book_frame, recompute_balances, recompute_realized
from tests.test_persistence_support import pg_url, sqlite_url  # noqa: F401

ROOT = pathlib.Path(__file__).resolve().parent.parent
CASH = Decimal("10000")
KILLS = 5
SPEED = "20"  # the long stream lasts ~1.7 s at this speed: kills land while it trades
T0 = 1704153600.0  # 2024-01-02T00:00:00Z

pytestmark = pytest.mark.slow


# --------------------------------------------------------------------------- the stream


def market_rounds(cycles: int) -> Iterator[dict[str, Decimal]]:
    """Mid prices per round: quiet, BTC rally, ETH dip, cheap ETH/BTC, BTC slide; repeated."""
    btc, eth = Decimal("60000"), Decimal("3000")
    wiggle = (Decimal(1), Decimal(-1))
    for _ in range(cycles):
        for i in range(24):
            b, e = btc + 6 * wiggle[i % 2], eth + Decimal("0.3") * wiggle[i % 2]
            yield {"BTC/USD": b, "ETH/USD": e, "ETH/BTC": e / b}
        for step in range(1, 5):  # momentum enters
            b = btc * (1 + Decimal("0.0025") * step)
            yield {"BTC/USD": b, "ETH/USD": eth, "ETH/BTC": eth / b}
        e = eth * Decimal("0.98")  # mean reversion buys the dip
        yield {"BTC/USD": b, "ETH/USD": e, "ETH/BTC": e / b}
        yield {"BTC/USD": b, "ETH/USD": e, "ETH/BTC": e / b * Decimal("0.985")}  # triangle
        for step in range(1, 5):  # momentum exits on the slide
            slid = b * (1 - Decimal("0.0025") * step)
            yield {"BTC/USD": slid, "ETH/USD": eth, "ETH/BTC": eth / slid}


def write_replay(path: pathlib.Path, cycles: int, *, step: float = 0.05) -> pathlib.Path:
    """Write ``cycles`` market cycles as ``{"t", "raw"}`` JSON lines (one frame per symbol)."""
    t = T0
    with path.open("w") as handle:
        for mids in market_rounds(cycles):
            for symbol in SYMBOLS:
                handle.write(json.dumps({"t": round(t, 3), "raw": book_frame(symbol,
                                                                              mids[symbol])}))
                handle.write("\n")
            t += step
    return path


# --------------------------------------------------------------------------- the process


def start_paper(url: str, replay: pathlib.Path, log: pathlib.Path, *, speed: str,
                exit_at_end: bool) -> subprocess.Popen[bytes]:
    args = [sys.executable, str(ROOT / "main.py"), "--mode", "paper", "--replay", str(replay),
            "--speed", speed, "--db", url, "--metrics-addr", "127.0.0.1:0",
            "--pairs", ",".join(SYMBOLS), "--strategies", "momentum,mean_reversion,arbitrage"]
    if exit_at_end:
        args.append("--exit-at-end")
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRADING_")}
    with log.open("wb") as err:
        return subprocess.Popen(args, cwd=ROOT, stdout=subprocess.PIPE, stderr=err, env=env)


def count_fills(engine: sa.Engine) -> int:
    try:
        with engine.connect() as conn:
            return int(conn.execute(sa.text("select count(*) from fills")).scalar_one())
    except sa.exc.SQLAlchemyError:  # the schema is not there yet (first start)
        return 0


def kill_at_random_point(proc: subprocess.Popen[bytes], engine: sa.Engine,
                         rng: random.Random) -> int:
    """SIGKILL ``proc`` after a random number of new fills committed, plus a random delay."""
    start = count_fills(engine)
    wanted = start + rng.randint(1, 10)
    deadline = time.monotonic() + 8.0
    while time.monotonic() < deadline and proc.poll() is None:
        if count_fills(engine) >= wanted:
            break
        time.sleep(0.02)
    time.sleep(rng.uniform(0.0, 0.15))
    assert proc.poll() is None, "the paper run ended by itself before it was killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)
    assert proc.stdout is not None
    proc.stdout.close()
    return count_fills(engine) - start


# --------------------------------------------------------------------------- the checks


def committed_fills(engine: sa.Engine) -> list[Fill]:
    """Every committed fill in commit order, read with plain SQL (not through the store)."""
    with engine.connect() as conn:
        rows = conn.execute(sa.text(
            "select fill_id, client_order_id, strategy, symbol, side, price, qty, fee, "
            "fee_currency, liquidity from fills order by id")).all()
    return [Fill(fill_id=r[0], client_order_id=r[1], strategy=r[2], symbol=r[3],
                 side=Side(r[4]), price=Decimal(str(r[5])), qty=Decimal(str(r[6])),
                 fee=Decimal(str(r[7])), fee_currency=r[8], liquidity=Liquidity(r[9]))
            for r in rows]


def orders(engine: sa.Engine) -> dict[str, tuple[str, Decimal, Decimal]]:
    with engine.connect() as conn:
        rows = conn.execute(sa.text(
            "select client_order_id, status, quantity, filled_qty from orders")).all()
    return {r[0]: (r[1], Decimal(str(r[2])), Decimal(str(r[3]))) for r in rows}


def nonzero(amounts: dict[str, Decimal]) -> dict[str, Decimal]:
    return {k: v for k, v in amounts.items() if v != 0}


def check_fills_and_orders(engine: sa.Engine, *, all_closed: bool) -> list[Fill]:
    fills = committed_fills(engine)
    ids = [f.fill_id for f in fills]
    assert len(ids) == len(set(ids)), "a fill was stored twice"
    known = orders(engine)
    unknown = {f.client_order_id for f in fills} - set(known)
    assert not unknown, f"fills of orders the store never saw: {sorted(unknown)}"
    filled: dict[str, Decimal] = defaultdict(Decimal)
    for f in fills:
        filled[f.client_order_id] += f.qty
    for cid, (status, quantity, filled_qty) in known.items():
        assert filled_qty == filled[cid], (cid, status, filled_qty, filled[cid])
        assert filled_qty <= quantity, (cid, quantity, filled_qty)
        if all_closed:
            assert status in ("filled", "cancelled", "rejected"), (cid, status)
    return fills


def check_restore_equals_recomputation(url: str, engine: sa.Engine) -> None:
    fills = committed_fills(engine)
    store = Store(url)
    try:
        restored = restore(store, mode="paper", config={}, version="crash-test",
                           cash={"USD": CASH}, pairs=load_pairs(SYMBOLS), reset_breaker=False)
    finally:
        store.close()
    portfolio = restored.portfolio
    assert portfolio.fill_count == len(fills)
    assert nonzero(portfolio.balances()) == recompute_balances(fills, {"USD": CASH})
    assert nonzero(portfolio.realized_pnl()) == nonzero(recompute_realized(fills))
    net: dict[str, Decimal] = defaultdict(Decimal)
    fees: dict[str, Decimal] = defaultdict(Decimal)
    for f in fills:
        net[f.symbol] += f.qty * f.side.sign
        fees[f.fee_currency] += f.fee
    for symbol in SYMBOLS:
        assert portfolio.position_qty(symbol) == net[symbol], symbol
    assert nonzero(portfolio.fees()) == nonzero(fees)
    # the restart closed what the dead process left open (its paper exchange died with it)
    check_fills_and_orders(engine, all_closed=True)


def recovered_balances(log: str) -> dict[str, Decimal]:
    match = re.search(r"recovered from run \w+: \d+ fills replayed, balances (\{[^}]*\})", log)
    assert match, "the restart did not log what it recovered"
    # A currency traded down to exactly zero is still listed by the ledger; zero is no balance.
    return {k: Decimal(v) for k, v in ast.literal_eval(match.group(1)).items() if Decimal(v)}


# --------------------------------------------------------------------------- the test


def crash_and_restart(url: str, tmp_path: pathlib.Path, seed: int) -> None:
    rng = random.Random(seed)
    long_replay = write_replay(tmp_path / "long.jsonl", cycles=20)
    short_replay = write_replay(tmp_path / "short.jsonl", cycles=3)
    engine = sa.create_engine(url, poolclass=NullPool)
    try:
        killed_with_fills = 0
        for run in range(KILLS):
            proc = start_paper(url, long_replay, tmp_path / f"run{run}.log", speed=SPEED,
                               exit_at_end=False)
            new = kill_at_random_point(proc, engine, rng)
            killed_with_fills += new > 0
            check_fills_and_orders(engine, all_closed=False)
            check_restore_equals_recomputation(url, engine)
        assert killed_with_fills >= KILLS - 1, "the kills did not land while trading"
        before = committed_fills(engine)
        assert len(before) >= 10

        # the last restart runs to the end of a short replay and exits cleanly
        log = tmp_path / "final.log"
        proc = start_paper(url, short_replay, log, speed="0", exit_at_end=True)
        out, _ = proc.communicate(timeout=60)
        text = log.read_text()
        assert proc.returncode == 0, text[-3000:]
        assert recovered_balances(text) == recompute_balances(before, {"USD": CASH})
        fills = check_fills_and_orders(engine, all_closed=False)
        match = re.search(rb"^fills\s+(\d+)$", out, re.M)
        assert match, out
        assert int(match.group(1)) == len(fills), "the process saw fills the store did not keep"
        assert len(fills) > len(before), "the clean run did not trade"
    finally:
        engine.dispose()


def test_sigkill_at_random_points_sqlite(sqlite_url: str,  # noqa: F811
                                         tmp_path: pathlib.Path) -> None:
    crash_and_restart(sqlite_url, tmp_path, seed=5)


def test_sigkill_at_random_points_postgresql(pg_url: str,  # noqa: F811
                                             tmp_path: pathlib.Path) -> None:
    crash_and_restart(pg_url, tmp_path, seed=55)

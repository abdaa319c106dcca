"""Events a stop could not commit are spilled to disk and committed at the next start.

The rule under test: when the database is away as the process stops, the recorder's unwritten
backlog and the executor's stranded fills are not lost: they are appended to a spill file
(exact decimals), and the next start commits them, each under the run that produced it,
before recovery reads the store, then removes the file. A torn last line is skipped; any other
bad line stops the start with the file and line named. Real SQLite files in ``tmp_path``; the
whole-application test renames the database's directory away, as ``test_db_outage`` does.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import pathlib
import types
from decimal import Decimal

import pytest
import sqlalchemy as sa
import trio
import trio.testing

from actors.app import Application
from actors.journal import persist_stranded
from actors.recorder import Recorder
from config import load_settings
from persistence import (
    BalanceSnapshot,
    EquitySnapshot,
    PositionSnapshot,
    Recordable,
    Store,
    StoreError,
    StoreUnavailable,
)
from persistence._spill import read_spill, spill_paths, write_spill
from protocol.messages import (
    Fill,
    Liquidity,
    OrderAccepted,
    OrderCancelled,
    OrderRejected,
    OrderRequest,
    OrderType,
    RiskRejection,
    Side,
    SystemEvent,
)
from tests.test_crash_recovery import write_replay
from tests.test_db_outage import wait_for
from tests.test_paper_e2e import SYMBOLS

T = dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.UTC)


def fill(n: int, cid: str = "c1") -> Fill:
    return Fill(fill_id=f"F{n}", client_order_id=cid, strategy="momentum", symbol="BTC/USD",
                side=Side.BUY, price=Decimal("65000.12345678"), qty=Decimal("0.00000001"),
                fee=Decimal("0.0000169"), fee_currency="USD", liquidity=Liquidity.MAKER,
                ts=12.5, ts_event_ns=1_700_000_000_123_456_789)


EVERY_KIND: list[Recordable] = [
    OrderRequest(client_order_id="c1", strategy="momentum", symbol="BTC/USD", side=Side.BUY,
                 qty=Decimal("0.0020"), order_type=OrderType.LIMIT,
                 limit_price=Decimal("64999.9"), group_id="g", group_size=3, reduce_only=True),
    OrderAccepted(client_order_id="c1", exchange_order_id="OX-1", ts=1.0),
    fill(1),
    OrderRejected(client_order_id="c2", strategy="arb", symbol="ETH/BTC", reason="EOrder:x"),
    OrderCancelled(client_order_id="c1", reason="breaker"),
    SystemEvent(kind="breaker_trip", source="risk", detail="d", attrs={"a": "1"}),
    SystemEvent(kind="read_only_attrs", source="app",
                attrs=types.MappingProxyType({"b": "2"})),  # type: ignore[arg-type]
    RiskRejection(strategy="momentum", symbol="BTC/USD", reason="max_exposure", detail="x"),
    EquitySnapshot(equity=Decimal("10000.01"), realized=Decimal("-1.5"), unrealized=Decimal(0),
                   drawdown=Decimal("0.0001"), high_water=Decimal("10001"), ts=T),
    PositionSnapshot(symbol="BTC/USD", qty=Decimal("0.002"), avg_price=Decimal("65000"),
                     realized_pnl=Decimal("0"), ts=T),
    BalanceSnapshot(balances={"USD": Decimal("9870.5"), "BTC": Decimal("0.002")}, ts=T),
]


def stored(db: pathlib.Path, sql: str) -> list[tuple[object, ...]]:
    engine = sa.create_engine(f"sqlite:///{db}")
    try:
        with engine.connect() as conn:
            return [tuple(r) for r in conn.execute(sa.text(sql))]
    finally:
        engine.dispose()


def test_every_recordable_kind_round_trips_exactly(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "s.jsonl"
    assert write_spill([path], EVERY_KIND, "run-1") == path
    assert read_spill(path) == [("run-1", e) for e in EVERY_KIND]
    # exact decimals: the same digits, not a float's
    back = read_spill(path)[2][1]
    assert isinstance(back, Fill) and str(back.qty) == str(Decimal("0.00000001"))


def test_torn_last_line_is_skipped_and_a_bad_middle_line_is_an_error(
        tmp_path: pathlib.Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "s.jsonl"
    write_spill([path], [fill(1), fill(2)], "r")
    with path.open("ab") as f:  # killed here, right after an inner object closed
        f.write(b'{"type":"SystemEvent","run_id":"r","event":{"kind":"k","source":"s",'
                b'"attrs":{"a":"b"}')
    assert [e.fill_id for _, e in read_spill(path)] == ["F1", "F2"]  # type: ignore[union-attr]
    assert "torn last line" in caplog.text
    # the next append cuts the torn tail off first, so it never becomes a middle line
    write_spill([path], [fill(3)], "r")
    assert [e.fill_id for _, e in read_spill(path)] == [  # type: ignore[union-attr]
        "F1", "F2", "F3"]
    lines = path.read_bytes().split(b"\n")
    path.write_bytes(b"\n".join([lines[0], b'{"type":"Nope","event":{}}', lines[1]]) + b"\n")
    with pytest.raises(StoreError, match=r"s\.jsonl:2"):
        read_spill(path)


def test_a_failed_append_leaves_the_file_as_it_was_and_uses_the_fallback(
        tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> None:
    first, fallback = tmp_path / "first.jsonl", tmp_path / "fallback.jsonl"
    write_spill([first], [fill(1)], "r")
    before = first.read_bytes()
    real_fsync, calls = os.fsync, []

    def failing_once(fd: int) -> None:  # the disk fills up during the first file's append
        calls.append(fd)
        if len(calls) == 1:
            raise OSError(28, "No space left on device")
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", failing_once)
    assert write_spill([first, fallback], [fill(2), fill(3)], "r") == fallback
    assert first.read_bytes() == before  # no half line, no copy of what the fallback holds
    assert [e.fill_id for _, e in read_spill(fallback)] == [  # type: ignore[union-attr]
        "F2", "F3"]


def test_spill_paths() -> None:
    beside, fallback = spill_paths("sqlite:////data/trading.db")
    assert beside == pathlib.Path("/data/trading.db.spill.jsonl")
    assert fallback.parent == pathlib.Path.cwd() and fallback.name.startswith("trading-spill-")
    (pg,) = spill_paths("postgresql+psycopg://u:secret@db/prod", None)[:1]
    assert pg.parent == pathlib.Path.cwd() and "secret" not in str(pg)
    other = spill_paths("postgresql+psycopg://u:secret@db/test")[0]
    assert other != pg  # two databases never share a spill file
    chosen = spill_paths("postgresql+psycopg://u@db/prod", "/var/spill")[0]
    assert chosen.parent == pathlib.Path("/var/spill")


def test_replay_commits_under_each_run_removes_the_file_and_is_idempotent(
        tmp_path: pathlib.Path) -> None:
    db = tmp_path / "trading.db"
    store = Store(f"sqlite:///{db}")
    try:
        first = store.start_run(mode="paper")
        order = OrderRequest(client_order_id="c1", strategy="momentum", symbol="BTC/USD",
                             side=Side.BUY, qty=Decimal("0.00000002"))
        store.write_batch([order, fill(1)])  # F1 made it before the outage
        where = store.spill([fill(1), fill(2)])
        assert where == tmp_path / "trading.db.spill.jsonl"
        second = store.start_run(mode="paper")
        store.spill([SystemEvent(kind="restart", source="app")])
        assert store.replay_spill() == 3
        assert not where.exists()
        assert store.replay_spill() == 0
    finally:
        store.close()
    # F1 once (it was committed before and spilled too), both under the run that made them;
    # the order's filled quantity counts F1 once: exactly its 2E-8
    assert stored(db, "select fill_id, run_id, qty from fills order by id") == [
        ("F1", first, "1E-8"), ("F2", first, "1E-8")]
    assert stored(db, "select run_id from system_events where kind = 'restart'") == [(second,)]
    assert stored(db, "select status, filled_qty from orders") == [("filled", "2E-8")]


def test_a_spill_this_database_cannot_take_is_kept_and_named(tmp_path: pathlib.Path) -> None:
    db = tmp_path / "trading.db"
    store = Store(f"sqlite:///{db}")
    try:
        store.start_run(mode="paper")
        store.spill([fill(1)])  # a run of this database...
        where = store.spill([fill(2, cid="c2")], run_id="run-of-a-replaced-database")
        with pytest.raises(StoreError, match="move the file aside") as info:
            store.replay_spill()
        assert str(where) in str(info.value)
        assert where.exists()
    finally:
        store.close()
    # one transaction: the good run's fill was not committed either (no half replay)
    assert stored(db, "select fill_id from fills") == []


def test_unwritable_first_choice_falls_back_to_the_working_directory(
        tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    gone = tmp_path / "gone" / "trading.db"
    paths = spill_paths(f"sqlite:///{gone}")
    assert write_spill(paths, [fill(1)], "r") == paths[1]
    assert paths[1].parent == tmp_path


def test_stranded_fills_go_to_the_spill_when_the_database_is_away(
        tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    live, away = tmp_path / "db", tmp_path / "away"
    live.mkdir()
    store = Store(f"sqlite:///{live / 'trading.db'}")
    try:
        store.start_run(mode="paper")
        live.rename(away)
        store.engine.dispose()
        persist_stranded(store, [fill(7)])
        spilled = store.spill_paths[1]  # beside the database is gone with it
        assert [e.fill_id for _, e in read_spill(spilled)] == ["F7"]  # type: ignore[union-attr]
        away.rename(live)
        store.engine.dispose()
        assert store.replay_spill() == 1
    finally:
        store.close()
    assert stored(live / "trading.db", "select fill_id from fills") == [("F7",)]


class DownStore:
    """Every write fails, as a database that went away (a stand-in: only the recorder's hook
    is under test here; the real store's failure is the whole-application test below)."""

    def write_batch(self, events: object) -> None:
        raise StoreUnavailable("database is away")


async def test_recorder_hands_the_unwritten_backlog_to_on_unwritten(
        autojump_clock: trio.testing.MockClock) -> None:
    handed: list[list[Recordable]] = []
    send, receive = trio.open_memory_channel[Recordable](10)
    recorder = Recorder(DownStore(), receive, batch_size=2, shutdown_timeout=1.0,
                        in_thread=False, on_unwritten=handed.append)
    with trio.move_on_after(3):
        async with trio.open_nursery() as nursery:
            await nursery.start(recorder.run)
            await send.send(fill(1))
            await send.send(fill(2))
            await send.send(fill(3))
            await trio.sleep(2)
            nursery.cancel_scope.cancel()
    assert [[e.fill_id for e in batch] for batch in handed] == [  # type: ignore[union-attr]
        ["F1", "F2", "F3"]]


async def test_unwritten_events_still_in_the_channel_are_handed_over_too(
        autojump_clock: trio.testing.MockClock) -> None:
    handed: list[list[Recordable]] = []
    send, receive = trio.open_memory_channel[Recordable](10)
    recorder = Recorder(DownStore(), receive, batch_size=2, max_backlog=2, shutdown_timeout=1.0,
                        in_thread=False, on_unwritten=handed.append)
    with trio.move_on_after(3):
        async with trio.open_nursery() as nursery:
            await nursery.start(recorder.run)
            for n in range(5):  # the backlog holds 2; 3 wait in the channel
                send.send_nowait(fill(n))
            await trio.sleep(2)
            nursery.cancel_scope.cancel()
    assert [[e.fill_id for e in batch] for batch in handed] == [  # type: ignore[union-attr]
        ["F0", "F1", "F2", "F3", "F4"]]


async def test_application_stopped_during_an_outage_loses_no_fill(
        tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.chdir(tmp_path)
    live, away = tmp_path / "db", tmp_path / "away"
    live.mkdir()
    url = f"sqlite:///{live / 'trading.db'}"
    replay = write_replay(tmp_path / "stream.jsonl", cycles=30)
    settings = load_settings([
        "--mode", "paper", "--replay", str(replay), "--speed", "4", "--db", url,
        "--metrics-addr", "127.0.0.1:0", "--pairs", ",".join(SYMBOLS),
    ], {})
    caplog.set_level(logging.WARNING)
    store = await trio.to_thread.run_sync(Store, url)
    app = await trio.to_thread.run_sync(lambda: Application(settings, store=store,
                                                            run_tag="spill"))
    try:
        with trio.fail_after(45):
            async with trio.open_nursery() as nursery:
                await nursery.start(app.run)
                await wait_for(lambda: len(app.fills) >= 2, "the first fills")
                os.rename(live, away)
                store.engine.dispose()  # as the application's outage handling does
                await wait_for(lambda: app.breaker.is_open, "the breaker to trip")
                app.request_stop()  # stopped while the database is still away
    finally:
        store.close()
    seen = {f.fill_id for f in app.fills}
    assert "spilled to" in caplog.text
    os.rename(away, live)

    store = Store(url)
    try:
        Application(settings, store=store, run_tag="spill2")  # start-up commits the spill
        assert not any(p.exists() for p in store.spill_paths)
    finally:
        store.close()
    in_db = {r[0] for r in stored(live / "trading.db", "select fill_id from fills")}
    assert seen <= in_db, f"fills lost: {sorted(seen - in_db)}"

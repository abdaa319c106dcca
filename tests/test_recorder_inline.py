"""The recorder's small batches written on the event loop (``Store.try_write_batch_now``).

The rules under test: the store writes on the calling thread only when nothing has to be
waited for (a SQLite file that does not sync its commits, its write lock free, no other
connection writing) and otherwise answers False with nothing written; the busy timeout it
lowers for that transaction is restored; and the recorder sends small batches that way and
full ones (a burst) to the worker thread, losing nothing either way. Real SQLite files in
``tmp_path``.
"""

from __future__ import annotations

import pathlib
import sqlite3
import threading
from decimal import Decimal

import pytest
import trio

from actors.recorder import Recorder
from persistence import Store, StoreUnavailable
from persistence._engine import BUSY_TIMEOUT_S
from protocol.messages import Fill, Side
from tests.conftest import open_store


def fill(i: int) -> Fill:
    return Fill(fill_id=f"f{i}", client_order_id=f"c{i}", strategy="mom", symbol="BTC/USD",
                side=Side.BUY, price=Decimal("65000.5") + i, qty=Decimal("0.001"),
                fee=Decimal("0.1690013"), fee_currency="USD",
                ts_event_ns=1_700_000_000_000_000_000 + i)


def stored_fills(db: pathlib.Path) -> list[tuple[str, str]]:
    """(fill_id, price) as a separate connection sees them."""
    conn = sqlite3.connect(db)
    try:
        return [(r[0], str(r[1])) for r in conn.execute(
            "select fill_id, price from fills order by id")]
    finally:
        conn.close()


def test_writes_now_when_nothing_waits(store: Store, db: pathlib.Path) -> None:
    assert store.writes_without_waiting
    assert store.try_write_batch_now([fill(1), fill(2)]) is True
    assert stored_fills(db) == [("f1", "65001.5"), ("f2", "65002.5")]
    # idempotent like write_batch: the same fills again are stored once
    assert store.try_write_batch_now([fill(2)]) is True
    assert len(stored_fills(db)) == 2


def test_full_synchronous_declines(tmp_path: pathlib.Path) -> None:
    # FULL syncs the log at every commit: never on the event loop
    store = open_store(tmp_path / "full.db", sync="FULL")
    try:
        assert not store.writes_without_waiting
        assert store.try_write_batch_now([fill(1)]) is False
        assert stored_fills(tmp_path / "full.db") == []
    finally:
        store.close()


def test_declines_while_another_connection_writes_and_restores_the_timeout(
        store: Store, db: pathlib.Path) -> None:
    other = sqlite3.connect(db, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    try:
        # with the store's 10 s busy timeout this would block, then raise StoreUnavailable
        assert store.try_write_batch_now([fill(1)]) is False
    finally:
        other.execute("ROLLBACK")
        other.close()
    assert stored_fills(db) == []
    # the pooled connection got its busy timeout back (waiting writes still wait)
    with store.engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() == int(
            BUSY_TIMEOUT_S * 1000)
    assert store.try_write_batch_now([fill(1)]) is True
    assert stored_fills(db) == [("f1", "65001.5")]


def test_declines_while_the_store_lock_is_held(store: Store, db: pathlib.Path) -> None:
    held, release = threading.Event(), threading.Event()

    def writer_in_thread() -> None:  # stands in for a batch committing in the worker thread
        with store._write_lock:
            held.set()
            release.wait(10)

    thread = threading.Thread(target=writer_in_thread)
    thread.start()
    try:
        held.wait(10)
        assert store.try_write_batch_now([fill(1)]) is False
    finally:
        release.set()
        thread.join()
    assert stored_fills(db) == []


def test_unavailable_database_raises(tmp_path: pathlib.Path) -> None:
    live, away = tmp_path / "db", tmp_path / "away"
    live.mkdir()
    store = open_store(live / "trading.db")
    try:
        assert store.writes_without_waiting
        live.rename(away)
        store.engine.dispose()  # as the application's outage handling does
        with pytest.raises(StoreUnavailable):
            store.try_write_batch_now([fill(1)])
    finally:
        store.close()


async def test_recorder_writes_small_batches_inline_and_full_ones_in_the_thread(
        store: Store, db: pathlib.Path) -> None:
    send, receive = trio.open_memory_channel[Fill](1000)
    recorder = Recorder(store, receive, batch_size=10, flush_interval=0.01, inline_max=9)
    async with trio.open_nursery() as nursery:
        await nursery.start(recorder.run)
        async with send:
            for i in range(3):  # light load: each flush-interval batch holds one fill
                await send.send(fill(i))
                await trio.sleep(0.05)
            stats = recorder.statistics()
            assert (stats.batches, stats.inline_batches) == (3, 3)
            for i in range(3, 53):  # a burst: full batches of 10 go to the worker thread
                send.send_nowait(fill(i))
    stats = recorder.statistics()
    assert stats.written == 53
    assert stats.batches - stats.inline_batches >= 5
    assert [f for f, _ in stored_fills(db)] == [f"f{i}" for i in range(53)]


async def test_recorder_without_inline_max_always_uses_the_thread(store: Store) -> None:
    send, receive = trio.open_memory_channel[Fill](10)
    recorder = Recorder(store, receive, batch_size=10, flush_interval=0.01)
    async with trio.open_nursery() as nursery:
        await nursery.start(recorder.run)
        async with send:
            await send.send(fill(1))
    assert (recorder.statistics().written, recorder.statistics().inline_batches) == (1, 0)

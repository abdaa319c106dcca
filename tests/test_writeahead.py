"""The order write-ahead on the event loop (``persistence._writeahead`` via ``StoreJournal``).

The rule under test: ``StoreJournal.record_ahead`` returns only once the order row is
committed (another connection sees it), it is idempotent, a reused client order id raises
``DuplicateOrderId``, a failure raises, recovery sees the pending order, and a busy database
is waited for (polling, then the worker thread) instead of being skipped. Real SQLite files in
``tmp_path``; real time for the tests with threads (short waits, no timed asserts).
"""

from __future__ import annotations

import os
import pathlib
import sqlite3
import threading
from decimal import Decimal

import pytest
import sqlalchemy as sa
import trio

from actors.journal import INLINE_WAIT, DuplicateOrderId, StoreJournal
from persistence import Store, StoreUnavailable
from protocol.messages import OrderRequest, OrderType, Side
from tests.conftest import open_store


def order(cid: str, *, limit: str | None = None) -> OrderRequest:
    return OrderRequest(client_order_id=cid, strategy="mom", symbol="BTC/USD", side=Side.BUY,
                        qty=Decimal("0.00012345"),
                        order_type=OrderType.LIMIT if limit else OrderType.MARKET,
                        limit_price=Decimal(limit) if limit else None, group_id="g1")


def committed(db: pathlib.Path, cid: str) -> tuple[tuple[object, ...] | None, list[str]]:
    """The order row and its history as a separate, fresh connection sees them."""
    conn = sqlite3.connect(db)
    try:
        row = conn.execute("select status, run_id, quantity, filled_qty from orders "
                           "where client_order_id = ?", (cid,)).fetchone()
        history = [r[0] for r in conn.execute(
            "select status || ':' || detail from order_status_history "
            "where client_order_id = ? order by id", (cid,))]
    finally:
        conn.close()
    return row, history


async def test_committed_and_visible_to_another_connection_on_return(
        store: Store, db: pathlib.Path) -> None:
    journal = StoreJournal(store)
    await journal.record_ahead(order("a1"))
    # nothing ran between the return and this read: the commit happened before the return
    row, history = committed(db, "a1")
    assert row == ("pending", store.current_run_id, "0.00012345", "0")
    assert history == ["pending:written ahead"]
    assert (journal.inline_writes, journal.thread_writes) == (1, 0)
    journal.close()


async def test_same_row_as_the_store_path(store: Store) -> None:
    journal = StoreJournal(store)
    await journal.record_ahead(order("inline", limit="65000.5"))
    assert store.record_order_ahead(order("stored", limit="65000.5"))
    with store.engine.connect() as conn:
        rows = {r.client_order_id: r._asdict() for r in conn.execute(sa.text(
            "select * from orders where client_order_id in ('inline', 'stored')"))}
    for r in rows.values():
        del r["id"], r["client_order_id"]
    assert rows["inline"] == rows["stored"]
    assert rows["inline"]["limit_price"] == "65000.5"
    journal.close()


async def test_duplicate_id_raises_and_writes_nothing(store: Store, db: pathlib.Path) -> None:
    journal = StoreJournal(store)
    await journal.record_ahead(order("d1"))
    with pytest.raises(DuplicateOrderId):
        await journal.record_ahead(order("d1"))
    assert store.record_order_ahead(order("d2"))  # known through the store's own path too
    with pytest.raises(DuplicateOrderId):
        await journal.record_ahead(order("d2"))
    assert committed(db, "d1")[1] == ["pending:written ahead"]
    assert committed(db, "d2")[1] == ["pending:written ahead"]
    journal.close()


async def test_recovery_sees_the_pending_order(db: pathlib.Path) -> None:
    store = open_store(db)
    journal = StoreJournal(store)
    await journal.record_ahead(order("r1"))
    journal.close()
    store.close()
    again = Store(f"sqlite:///{db}")
    try:
        assert [o.client_order_id for o in again.recover().open_orders] == ["r1"]
    finally:
        again.close()


async def test_waits_for_the_store_lock_then_writes_inline(store: Store,
                                                           db: pathlib.Path) -> None:
    journal = StoreJournal(store)
    held, release = threading.Event(), threading.Event()

    def recorder_batch() -> None:  # stands in for the recorder holding the lock
        with store._write_lock:
            held.set()
            release.wait(10)

    thread = threading.Thread(target=recorder_batch)
    thread.start()
    try:
        held.wait(10)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(journal.record_ahead, order("w1"))
            await trio.sleep(0.005)
            assert committed(db, "w1")[0] is None  # not written while the lock is held
            release.set()
    finally:
        release.set()
        thread.join()
    assert committed(db, "w1")[0] is not None
    assert (journal.inline_writes, journal.thread_writes) == (1, 0)
    journal.close()


async def test_long_busy_database_goes_to_the_worker_thread(store: Store,
                                                            db: pathlib.Path) -> None:
    # another connection (another process, say) holds SQLite's write lock past INLINE_WAIT:
    # the inline path never waits inside SQLite, the worker thread does
    journal = StoreJournal(store)
    other = sqlite3.connect(db, isolation_level=None, check_same_thread=False)
    other.execute("BEGIN IMMEDIATE")
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(journal.record_ahead, order("b1"))
            await trio.sleep(INLINE_WAIT * 2)
            assert journal.thread_writes == 1
            assert committed(db, "b1")[0] is None
            other.execute("COMMIT")
    finally:
        if other.in_transaction:
            other.execute("ROLLBACK")
        other.close()
    assert committed(db, "b1")[0] is not None
    journal.close()


async def test_full_synchronous_never_commits_on_the_event_loop(db: pathlib.Path) -> None:
    store = open_store(db, sync="FULL")
    journal = StoreJournal(store)
    await journal.record_ahead(order("f1"))
    assert (journal.inline_writes, journal.thread_writes) == (0, 1)
    assert committed(db, "f1")[0] is not None
    journal.close()
    store.close()


async def test_vanished_database_raises(tmp_path: pathlib.Path) -> None:
    live, away = tmp_path / "db", tmp_path / "away"
    live.mkdir()
    store = open_store(live / "trading.db")
    journal = StoreJournal(store)
    await journal.record_ahead(order("v1"))
    os.rename(live, away)
    store.engine.dispose()  # as the application's outage handling does
    try:
        with pytest.raises(StoreUnavailable):
            await journal.record_ahead(order("v2"))
        os.rename(away, live)
        await journal.record_ahead(order("v3"))  # reopens once the file is back
        assert committed(live / "trading.db", "v3")[0] is not None
        assert committed(live / "trading.db", "v2")[0] is None
    finally:
        journal.close()
        store.close()


async def test_dispose_closes_the_connection(store: Store) -> None:
    ahead = store.open_write_ahead()
    assert ahead is not None
    assert ahead.try_now(order("c1")) is True
    assert ahead._conn is not None
    store.engine.dispose()
    assert ahead._conn is None
    assert ahead.try_now(order("c1")) is False  # reopened; still idempotent
    ahead.close()


def test_not_for_in_memory_sqlite() -> None:
    store = Store("sqlite://")
    try:
        assert store.open_write_ahead() is None
    finally:
        store.close()

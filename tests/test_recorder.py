"""Recorder actor: batching, backoff while the database is away, backpressure, shutdown flush.

Logic tests use a fake store called inline (``in_thread=False``) under MockClock, so virtual
times are exact. Integration tests use a real SQLite file and real PostgreSQL (through a
loopback proxy that can be stopped) on the real clock with ``trio.fail_after``.
"""

from __future__ import annotations

import os
import pathlib
import threading
from collections.abc import Sequence
from decimal import Decimal

import pytest
import sqlalchemy as sa
import trio
from sqlalchemy.engine import make_url

from actors.recorder import Recorder
from persistence import Store, StoreUnavailable
from protocol.messages import Fill, Side, SystemEvent
from tests.test_persistence_support import TcpProxy, pg_base_url, pg_url, sqlite_url  # noqa: F401

D = Decimal


def ev(i: int) -> SystemEvent:
    return SystemEvent(kind="test", source="t", detail=str(i))


class FakeStore:
    def __init__(self) -> None:
        self.batches: list[tuple[float, list[str]]] = []
        self.fail = 0  # fail this many more attempts
        self.down = False  # fail until cleared
        self.attempts: list[float] = []

    def write_batch(self, events: Sequence[object]) -> None:
        self.attempts.append(trio.current_time())
        if self.down or self.fail > 0:
            self.fail -= 1
            raise StoreUnavailable("write_batch: connection refused", operation="write_batch")
        self.batches.append((trio.current_time(), [e.detail for e in events]))  # type: ignore[attr-defined]

    def details(self) -> list[str]:
        return [d for _, b in self.batches for d in b]


async def test_batches_by_size_then_by_interval(autojump_clock: trio.testing.MockClock) -> None:
    store = FakeStore()
    send, recv = trio.open_memory_channel[SystemEvent](100)
    rec = Recorder(store, recv, batch_size=3, flush_interval=0.2, in_thread=False)
    async with trio.open_nursery() as nursery:
        await nursery.start(rec.run)
        with send:
            for i in range(7):
                await send.send(ev(i))
            await trio.sleep(1)
            assert [(t, b) for t, b in store.batches] == [
                (0.0, ["0", "1", "2"]),
                (0.0, ["3", "4", "5"]),
                (0.2, ["6"]),
            ]
            await send.send(ev(7))
            await trio.sleep(0.1)
            assert len(store.batches) == 3  # not before flush_interval
            await trio.sleep(0.1)
            assert store.batches[-1] == (pytest.approx(1.2), ["7"])
    # channel closed: run() returned by itself after writing everything
    assert store.details() == [str(i) for i in range(8)]
    s = rec.statistics()
    assert (s.written, s.batches, s.backlog, s.failed_writes) == (8, 4, 0, 0)


async def test_db_down_keeps_batch_backs_off_and_loses_nothing(
    autojump_clock: trio.testing.MockClock,
) -> None:
    store = FakeStore()
    store.fail = 4
    errors: list[str] = []
    recovered: list[str] = []
    send, recv = trio.open_memory_channel[SystemEvent](100)
    rec = Recorder(
        store,
        recv,
        batch_size=10,
        flush_interval=0.2,
        in_thread=False,
        retry_initial=1.0,
        retry_max=4.0,
        on_write_error=errors.append,
        on_write_recovered=recovered.append,
    )
    async with trio.open_nursery() as nursery:
        await nursery.start(rec.run)
        with send:
            for i in range(5):
                await send.send(ev(i))
            await trio.sleep(5)
            assert not rec.statistics().db_available
            for i in range(5, 8):
                await send.send(ev(i))
    # attempts at 0.2, then backoff 1, 2, 4, 4 (capped)
    assert store.attempts == pytest.approx([0.2, 1.2, 3.2, 7.2, 11.2, 11.2])
    assert (
        len(errors) == 4 and "connection refused" in errors[0] and "holding 5 events" in errors[0]
    )
    assert len(recovered) == 1
    assert store.details() == [str(i) for i in range(8)]  # in order, exactly once
    assert rec.statistics().db_available


async def test_backlog_full_signals_and_backpressures_without_dropping(
    autojump_clock: trio.testing.MockClock,
) -> None:
    store = FakeStore()
    store.down = True
    full: list[str] = []
    sent = 0
    send, recv = trio.open_memory_channel[SystemEvent](0)
    rec = Recorder(
        store,
        recv,
        batch_size=2,
        max_backlog=4,
        flush_interval=0.1,
        in_thread=False,
        retry_initial=0.5,
        retry_max=0.5,
        on_backlog_full=full.append,
    )

    async def producer() -> None:
        nonlocal sent
        with send:
            for i in range(20):
                await send.send(ev(i))
                sent += 1

    async with trio.open_nursery() as nursery:
        await nursery.start(rec.run)
        nursery.start_soon(producer)
        await trio.sleep(10)
        assert sent == 4  # the producer is blocked, nothing was dropped
        assert len(full) == 1 and "backlog full" in full[0]
        assert rec.statistics().backlog == 4
        store.down = False
    assert store.details() == [str(i) for i in range(20)]
    # trio runs ready tasks in a random order: after the outage the pump may refill the tiny
    # backlog before the writer drains it, a legitimate second episode; each one is signalled
    assert rec.statistics().backlog_full_episodes == len(full) >= 1


async def test_shutdown_flushes_backlog_and_channel(autojump_clock: trio.testing.MockClock) -> None:
    store = FakeStore()
    send, recv = trio.open_memory_channel[SystemEvent](100)
    rec = Recorder(store, recv, batch_size=100, flush_interval=60, in_thread=False)
    with send:
        async with trio.open_nursery() as nursery:
            await nursery.start(rec.run)
            for i in range(5):
                await send.send(ev(i))
            await trio.sleep(1)
            for i in range(5, 9):
                send.send_nowait(ev(i))  # still in the channel when the cancel comes
            nursery.cancel_scope.cancel()
    assert store.details() == [str(i) for i in range(9)]


class _Sub(SystemEvent):
    """A subclass of a recordable type: recorded like its base."""


class GatedStore(FakeStore):
    """The first write blocks (in the worker thread) until ``gate`` is set."""

    def __init__(self) -> None:
        super().__init__()
        self.started = threading.Event()
        self.gate = threading.Event()

    def write_batch(self, events: Sequence[object]) -> None:
        self.started.set()
        assert self.gate.wait(10)
        self.batches.append((0.0, [e.detail for e in events]))  # type: ignore[attr-defined]


async def test_burst_drain_during_a_write_keeps_order_and_drops_unrecordables(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # While a write is in flight the pump takes the channel's contents in bursts (``_drain``)
    # and checks them once per burst; the result must match the per-event path: order kept,
    # subclasses kept, anything unrecordable dropped with an error, gauges and peak updated.
    store = GatedStore()
    observed: list[int] = []
    send, recv = trio.open_memory_channel[object](100)
    rec = Recorder(store, recv, batch_size=2, flush_interval=0.01, observe_backlog=observed.append)  # type: ignore[arg-type]
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            await nursery.start(rec.run)
            with send:
                await send.send(ev(0))
                await send.send(ev(1))
                await trio.to_thread.run_sync(store.started.wait)  # [0, 1] is being written
                for item in (ev(2), _Sub(kind="test", source="t", detail="3"), object(), ev(4),
                             ev(5)):
                    send.send_nowait(item)
                while rec.statistics().backlog < 6:  # noqa: ASYNC110 - polling a counter
                    await trio.sleep(0.001)
                assert rec.statistics().backlog == 6  # the object was dropped, not queued
                assert rec.statistics().peak_backlog == 6
                assert 6 in observed  # crossed batch boundaries: the gauge saw the burst
                store.gate.set()
    assert store.details() == ["0", "1", "2", "3", "4", "5"]
    assert [len(b) for _, b in store.batches] == [2, 2, 2]
    assert "dropping unrecordable object" in caplog.text
    assert rec.statistics().written == 6



class ThreadStore(FakeStore):
    """Records batches from the worker thread (no trio clock there)."""

    def write_batch(self, events: Sequence[object]) -> None:
        self.batches.append((0.0, [e.detail for e in events]))  # type: ignore[attr-defined]


async def test_gathering_a_batch_takes_a_burst_at_once() -> None:
    # While the writer waits for a full batch, the pump lets a burst gather in the channel and
    # takes it in one go instead of one wake-up per event; full batches are still written at
    # once (not after flush_interval) and the rest when the channel ends.
    store = ThreadStore()
    observed: list[int] = []
    send, recv = trio.open_memory_channel[SystemEvent](100)
    rec = Recorder(store, recv, batch_size=10, flush_interval=60, drain_interval=0.2,
                   observe_backlog=observed.append)
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            await nursery.start(rec.run)
            with send:
                for i in range(25):
                    await send.send(ev(i))
                while rec.statistics().written < 20:  # noqa: ASYNC110 - polling a counter
                    await trio.sleep(0.01)
    assert observed[0] == 25  # one burst: no per-event hand-over, so no stop at 10 or 20
    assert [len(b) for _, b in store.batches] == [10, 10, 5]
    assert store.details() == [str(i) for i in range(25)]

# --------------------------------------------------------------------------- real databases


def fills(start: int, n: int) -> list[Fill]:
    return [
        Fill(
            fill_id=f"f{i}",
            client_order_id=f"c{i}",
            strategy="s",
            symbol="BTC/USD",
            side=Side.BUY,
            price=D("100.5"),
            qty=D("0.001"),
            fee=D("0.0001"),
            fee_currency="USD",
        )
        for i in range(start, start + n)
    ]


def fill_ids(store: Store) -> list[str]:
    with store.engine.connect() as conn:
        return [r[0] for r in conn.execute(sa.text("select fill_id from fills order by id"))]


async def run_outage(store: Store, go_down, come_back) -> tuple[list[str], list[str]]:  # type: ignore[no-untyped-def]
    """Write, take the database away, write more, bring it back; return (ids, errors)."""
    errors: list[str] = []
    failed = trio.Event()

    def on_error(reason: str) -> None:
        errors.append(reason)
        failed.set()

    send, recv = trio.open_memory_channel[Fill](1000)
    rec = Recorder(
        store,
        recv,
        batch_size=50,
        flush_interval=0.01,
        retry_initial=0.01,
        retry_max=0.05,
        on_write_error=on_error,
    )
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            await nursery.start(rec.run)
            with send:
                # store calls block: run them in a thread so the loopback proxy keeps serving
                await trio.to_thread.run_sync(lambda: store.start_run(mode="paper"))
                for f in fills(0, 120):
                    await send.send(f)
                while rec.statistics().written < 120:  # noqa: ASYNC110 - polling a counter
                    await trio.sleep(0.01)
                await go_down()
                for f in fills(120, 80):
                    await send.send(f)
                await failed.wait()
                assert rec.statistics().backlog > 0
                await come_back()
    return await trio.to_thread.run_sync(fill_ids, store), errors


async def test_sqlite_unavailable_then_back_loses_nothing(tmp_path: pathlib.Path) -> None:
    live, away = tmp_path / "db", tmp_path / "db-away"
    live.mkdir()
    store = Store(f"sqlite:///{live / 'trading.db'}", sqlite_synchronous="NORMAL")

    async def go_down() -> None:
        # the directory disappears (unmounted volume): new connections cannot open the file
        os.rename(live, away)
        store.engine.dispose()

    async def come_back() -> None:
        os.rename(away, live)

    try:
        ids, errors = await run_outage(store, go_down, come_back)
    finally:
        store.close()
    assert ids == [f"f{i}" for i in range(200)]
    assert errors and "unable to open database file" in errors[0]


async def test_postgresql_unavailable_then_back_loses_nothing(pg_url: str) -> None:  # noqa: F811
    target = make_url(pg_base_url())
    proxy = TcpProxy(target.host or "127.0.0.1", target.port or 5432)
    async with trio.open_nursery() as nursery:
        await proxy.start(nursery)
        url = make_url(pg_url).set(host="127.0.0.1", port=proxy.port)
        store = await trio.to_thread.run_sync(Store, url.render_as_string(hide_password=False))

        async def go_down() -> None:
            proxy.stop()  # refuses new connections and cuts the pooled ones
            await trio.sleep(0.05)

        async def come_back() -> None:
            await proxy.start(nursery)

        try:
            ids, errors = await run_outage(store, go_down, come_back)
        finally:
            store.close()
            proxy.stop()
    assert ids == [f"f{i}" for i in range(200)]
    assert errors and "StoreUnavailable" in errors[0]

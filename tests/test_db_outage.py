"""The database goes away mid-run (issue 5, acceptance 3).

The whole paper system runs in-process (``Application``) on a replayed stream that keeps
trading (``tests.test_crash_recovery.write_replay``). Once fills are committed the database
disappears: the SQLite file's directory is renamed away (tests run as root, so ``chmod`` would
not stop writes; an unmounted volume looks like this), or the loopback TCP proxy in front of
PostgreSQL stops (connections refused, live ones cut). Then:

* trading halts through the breaker (reason ``database_unavailable``) with a clear log line;
* while it is down no new order reaches the broker (the breaker, or the write-ahead refusing);
* when the database returns the breaker closes by itself and trading resumes;
* nothing accepted is lost: every fill the process saw is in the database, with its order, and
  the ``breaker_trip``/``breaker_reset`` system events were persisted;
* a restart on the same database restores the recomputation of the committed fills, with the
  breaker clear (an outage is not a latched risk trip).
"""

from __future__ import annotations

import logging
import os
import pathlib
import socket
import threading
from collections.abc import Awaitable, Callable
from decimal import Decimal

import pytest
import sqlalchemy as sa
import trio
from sqlalchemy.engine import make_url
from sqlalchemy.pool import NullPool

from actors._breaker import BreakerState
from actors.app import Application
from config import load_settings
from persistence import Store
from tests.test_crash_recovery import (
    CASH,
    check_fills_and_orders,
    committed_fills,
    nonzero,
    write_replay,
)
from tests.test_paper_e2e import SYMBOLS, recompute_balances
from tests.test_persistence_support import pg_base_url, pg_url  # noqa: F401

pytestmark = pytest.mark.slow


class ThreadedTcpProxy:
    """A loopback TCP proxy on threads (stoppable, restartable on the same port).

    Threads rather than trio tasks: the application makes some store calls synchronously on
    the trio thread (start-up recovery, the breaker latch), which would deadlock a proxy that
    needs the same event loop to forward them.
    """

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.port = 0
        self._listener: socket.socket | None = None
        self._conns: list[socket.socket] = []
        self._lock = threading.Lock()

    def start(self) -> None:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        self.port = listener.getsockname()[1]
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            if self._listener is not listener:  # stopped while this one was accepted
                client.close()
                return
            try:
                upstream = socket.create_connection(self.target)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._conns += [client, upstream]
            for src, dst in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(src, dst), daemon=True).start()

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        for s in (src, dst):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def stop(self) -> None:
        """Refuse new connections and cut the live ones (the server went away)."""
        if self._listener is not None:
            # shutdown first: close() alone does not wake a thread blocked in accept(), and
            # the kernel would keep accepting on the old socket until it returns
            try:
                self._listener.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            self._listener.close()
            self._listener = None
        with self._lock:
            conns, self._conns = self._conns, []
        for s in conns:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()


async def wait_for(predicate: Callable[[], bool], what: str, limit: float = 15.0) -> None:
    with trio.move_on_after(limit):
        while not predicate():  # noqa: ASYNC110 - polling the app's state, bounded
            await trio.sleep(0.02)
        return
    raise AssertionError(f"timed out waiting for {what}")


async def run_outage(url: str, tmp_path: pathlib.Path, caplog: pytest.LogCaptureFixture,
                     go_down: Callable[[Store], Awaitable[None]],
                     come_back: Callable[[], Awaitable[None]]) -> None:
    replay = write_replay(tmp_path / "stream.jsonl", cycles=30)
    settings = load_settings([
        "--mode", "paper", "--replay", str(replay), "--speed", "4", "--db", url,
        "--metrics-addr", "127.0.0.1:0", "--pairs", ",".join(SYMBOLS),
    ], {})
    engine = sa.create_engine(url, poolclass=NullPool)

    def db_fill_count() -> int:
        with engine.connect() as conn:
            return int(conn.execute(sa.text("select count(*) from fills")).scalar_one())

    caplog.set_level(logging.WARNING)
    store = await trio.to_thread.run_sync(Store, url)
    app = await trio.to_thread.run_sync(lambda: Application(settings, store=store,
                                                            run_tag="outage"))
    try:
        with trio.fail_after(45):
            async with trio.open_nursery() as nursery:
                await nursery.start(app.run)
                await wait_for(lambda: len(app.fills) >= 2, "the first fills")
                await wait_for(lambda: db_fill_count() >= 2, "the first fills to commit")

                await go_down(store)
                await wait_for(lambda: app.breaker.state is BreakerState.OPEN,
                               "the breaker to trip")
                assert app.breaker.reason == "database_unavailable"
                assert "DATABASE UNAVAILABLE" in caplog.text
                # Trading is halted: the broker gets no new order while the database is down.
                submitted = app.broker.matcher._n_orders
                await trio.sleep(1.0)
                assert app.breaker.state is BreakerState.OPEN
                assert app.broker.matcher._n_orders == submitted
                fills_at_return = len(app.fills)

                await come_back()
                await wait_for(lambda: app.breaker.state is BreakerState.CLOSED,
                               "the breaker to close when the database is back")
                await wait_for(lambda: len(app.fills) > fills_at_return,
                               "trading to resume", limit=20)
                app.request_stop()
    finally:
        store.close()

    seen = [f.fill_id for f in app.fills]
    fills = check_fills_and_orders(engine, all_closed=False)
    stored = {f.fill_id for f in fills}
    assert set(seen) <= stored, f"accepted fills lost: {sorted(set(seen) - stored)}"
    with engine.connect() as conn:
        events = conn.execute(sa.text("select kind, detail from system_events")).all()
    assert ("breaker_trip", "database_unavailable") in {(k, d) for k, d in events}
    assert "breaker_reset" in {k for k, _ in events}

    # ... and a restart restores exactly the committed fills, with the breaker clear
    store = Store(url)
    try:
        restarted = Application(settings, store=store, run_tag="outage2")
        assert restarted.breaker.state is BreakerState.CLOSED
        assert restarted.portfolio.fill_count == len(fills)
        assert nonzero(restarted.portfolio.balances()) == recompute_balances(
            committed_fills(engine), {"USD": CASH})
        assert restarted.portfolio.balance("USD") != Decimal(CASH)
    finally:
        store.close()
        engine.dispose()


async def test_sqlite_file_gone_halts_and_resumes(tmp_path: pathlib.Path,
                                                  caplog: pytest.LogCaptureFixture) -> None:
    live, away = tmp_path / "db", tmp_path / "db-away"
    live.mkdir()

    async def go_down(store: Store) -> None:
        os.rename(live, away)
        store.engine.dispose()  # pooled connections still hold the old file open

    async def come_back() -> None:
        os.rename(away, live)

    await run_outage(f"sqlite:///{live / 'trading.db'}", tmp_path, caplog, go_down, come_back)


async def test_postgresql_refused_halts_and_resumes(pg_url: str,  # noqa: F811
                                                    tmp_path: pathlib.Path,
                                                    caplog: pytest.LogCaptureFixture) -> None:
    target = make_url(pg_base_url())
    proxy = ThreadedTcpProxy((target.host or "127.0.0.1", target.port or 5432))
    proxy.start()
    url = make_url(pg_url).set(host="127.0.0.1", port=proxy.port)

    async def go_down(store: Store) -> None:
        proxy.stop()

    async def come_back() -> None:
        proxy.start()

    try:
        await run_outage(url.render_as_string(hide_password=False), tmp_path, caplog, go_down,
                         come_back)
    finally:
        proxy.stop()

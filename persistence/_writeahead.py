"""The order write-ahead on SQLite without a thread hop: one long-lived DB-API connection.

Why: every order is committed before it is sent, so the write-ahead sits on the tick-to-order
path. Through ``Store.record_order_ahead`` in a worker thread, one order costs a thread-pool
hop, a pool checkout, SQLAlchemy's per-call machinery and, worst, a GIL convoy: the worker
releases the GIL around every SQLite step and then waits up to the switch interval (5 ms)
for the busy event-loop thread to give it back (``bench/bench_tick_to_order.py``: p99 2.5-7 ms
at 1,000 market messages/s, against 0.6 ms without the store).

With ``synchronous`` at ``NORMAL`` or ``OFF`` (paper mode, benchmarks) a WAL commit does not
wait for the disk: ``BEGIN IMMEDIATE``, two prepared INSERTs and ``COMMIT`` cost about
50 us (p99 0.4 ms; ``record_order_ahead`` alone: 160 us, p99 1.3 ms), less than the hop.
So :meth:`SQLiteWriteAhead.try_now` runs them on the *calling* thread (the event loop), but
only when nothing has to be waited for: the store's write lock is taken without blocking and
the connection's busy timeout is zero. Otherwise it
answers ``None`` and the caller takes the ordinary path (``record_order_ahead`` in a thread),
which waits as long as it must. With ``FULL``/``EXTRA`` every commit syncs the log, which must
never block the event loop: ``inline`` is False and callers always take the ordinary path.

The rule is unchanged: the row is committed (as durably as the store's ``synchronous``
setting makes any commit) before ``try_now`` returns True; the same statements as
``Store._insert_orders`` (``ON CONFLICT DO NOTHING``, then a "written ahead" history row only
for a new order) keep it idempotent, and False means the id was already stored. Errors come
out as ``StoreError``/``StoreUnavailable`` like the store's own.

``transaction_now`` is the same idea for the recorder's small batches
(``Store.try_write_batch_now``): a transaction through the engine's own connections that takes
the store's lock and SQLite's without waiting, or writes nothing.

The connection follows the engine's life: ``Engine.dispose()`` (which the store's owner calls
when the database went away, e.g. a renamed directory) drops it, and so does any error, so a
vanished file is noticed at the next order instead of being written through an old handle.
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from sqlalchemy import Engine, event
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import Connection

from protocol.messages import OrderRequest, OrderStatus

from ._engine import BUSY_TIMEOUT_S
from ._errors import StoreError, translate
from ._ledger import ZERO

if TYPE_CHECKING:
    from ._store import Store

_INSERT_ORDER = (
    "INSERT INTO orders (client_order_id, exchange_order_id, run_id, strategy, symbol, side, "
    "type, quantity, limit_price, status, filled_qty, group_id, reduce_only, created_at, "
    "updated_at) VALUES (?, NULL, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
    "ON CONFLICT (client_order_id) DO NOTHING"
)
_INSERT_HISTORY = (
    "INSERT INTO order_status_history (client_order_id, status, ts, detail) "
    "VALUES (?, ?, ?, 'written ahead')"
)
_PENDING = OrderStatus.PENDING.value
_INLINE_SYNCHRONOUS = (0, 1)  # PRAGMA synchronous: OFF, NORMAL (no fsync per WAL commit)
_OPERATION = "record_order_ahead"


class SQLiteWriteAhead:
    """Commits order write-aheads of one store on the calling thread when that is free.

    Build it with :meth:`Store.open_write_ahead` (``None`` where it does not apply). All use
    of the connection happens under the store's write lock, so any thread may call
    :meth:`try_now`; it never waits for a lock or for the disk (see the module docstring).
    """

    def __init__(self, store: Store, database: str) -> None:
        self._store = store
        self._database = database
        self._lock: Any = store._write_lock
        self._conn: sqlite3.Connection | None = None
        self._stale = False  # set (from any thread) by Engine.dispose(): reopen before use
        self._guard = threading.Lock()  # connection open/close
        self.synchronous = synchronous_level(store.engine)
        self.inline = self.synchronous in _INLINE_SYNCHRONOUS
        self.written = 0  # orders committed here
        self.declined = 0  # calls answered None (lock or database busy)
        event.listen(store.engine, "engine_disposed", self._on_dispose)

    def _on_dispose(self, _engine: Any) -> None:
        # close at once when no write is running (``Store.close`` releases the file); else
        # the running write finishes and the next one reopens
        self._stale = True
        if self._lock.acquire(blocking=False):
            try:
                self._stale = False
                self._drop()
            finally:
                self._lock.release()

    def _connect(self) -> sqlite3.Connection:
        # isolation_level=None: no implicit transactions, BEGIN IMMEDIATE/COMMIT are ours.
        # timeout=0: a lock held by another connection is answered at once (declined), never
        # waited for on the event loop. check_same_thread=False: the store's lock serialises.
        conn = sqlite3.connect(self._database, timeout=0, isolation_level=None,
                               check_same_thread=False, cached_statements=16)
        try:
            # the settings of the engine's connections (persistence._engine), above all no
            # automatic checkpoint inside an order's commit
            conn.execute(f"PRAGMA synchronous={self.synchronous}")
            conn.execute("PRAGMA foreign_keys=ON")
            conn.execute("PRAGMA wal_autocheckpoint=0")
        except BaseException:
            conn.close()
            raise
        return conn

    def _drop(self) -> None:
        with self._guard:
            conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()

    def close(self) -> None:
        """Close the connection (the next call reopens it) and stop following the engine."""
        with self._lock:
            self._drop()
        if event.contains(self._store.engine, "engine_disposed", self._on_dispose):
            event.remove(self._store.engine, "engine_disposed", self._on_dispose)

    def try_now(self, order: OrderRequest, run_id: str | None = None) -> bool | None:
        """Commit ``order`` as ``PENDING`` now if nothing must be waited for.

        Returns:
            True when the order row was committed by this call, False when its
            ``client_order_id`` was already stored (nothing written), ``None`` when the write
            would have to wait (the store's write lock is held, another connection holds the
            database's write lock, or ``synchronous`` syncs every commit): nothing was
            written, use ``Store.record_order_ahead``.

        Raises:
            StoreUnavailable: the database cannot be opened or written.
            StoreError: any other database failure; nothing was committed.
        """
        if not self.inline or not self._lock.acquire(blocking=False):
            self.declined += 1
            return None
        try:
            return self._write(order, run_id or self._store.current_run_id)
        finally:
            self._lock.release()

    def _write(self, order: OrderRequest, run_id: str | None) -> bool | None:
        if self._stale:
            self._stale = False
            self._drop()
        store = self._store
        bulk = store._bulk
        now = bulk.ts(store._clock())
        try:
            conn = self._conn
            if conn is None:
                conn = self._conn = self._connect()
            try:
                conn.execute("BEGIN IMMEDIATE")
            except sqlite3.OperationalError as exc:
                if exc.sqlite_errorcode == sqlite3.SQLITE_BUSY:
                    self.declined += 1  # another connection is writing: do not wait here
                    return None
                raise
            try:
                cur = conn.execute(_INSERT_ORDER, (
                    order.client_order_id, run_id, order.strategy, order.symbol,
                    order.side.value, order.order_type.value, bulk.money(order.qty),
                    bulk.money(order.limit_price), _PENDING, bulk.money(ZERO), order.group_id,
                    order.reduce_only, now, now))
                inserted = cur.rowcount == 1
                if inserted:
                    conn.execute(_INSERT_HISTORY, (order.client_order_id, _PENDING, now))
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.rollback()
                raise
        except sqlite3.Error as exc:
            self._drop()  # an unknown state or a vanished file: reopen on the next call
            raise _translate(exc) from exc
        if inserted:
            self.written += 1
        return inserted


def _translate(exc: sqlite3.Error, operation: str = _OPERATION) -> StoreError:
    # the same classification as the store's own errors (``_errors.translate`` reads the
    # SQLAlchemy wrapper's text, "(sqlite3.OperationalError) unable to open ...")
    wrapped = sa_exc.DBAPIError.instance(None, None, exc, sqlite3.Error)
    return translate(wrapped, operation)


def synchronous_level(engine: Engine) -> int:
    """``PRAGMA synchronous`` of the engine's SQLite connections (2, FULL, if unreadable)."""
    with engine.connect() as conn:
        level = conn.exec_driver_sql("PRAGMA synchronous").scalar()
    return int(level if level is not None else 2)


def commits_without_waiting(engine: Engine) -> bool:
    """True for a SQLite file whose commits do not wait for the disk (OFF or NORMAL)."""
    url = engine.url
    return (url.get_backend_name() == "sqlite" and url.database not in (None, "", ":memory:")
            and synchronous_level(engine) in _INLINE_SYNCHRONOUS)


class WouldWait(Exception):
    """A ``transaction_now`` would have had to wait for a lock: nothing was written."""


@contextlib.contextmanager
def transaction_now(engine: Engine, lock: Any, operation: str) -> Iterator[Connection]:
    """A write transaction on the calling thread that waits for nothing.

    Raises ``WouldWait`` (nothing written) when ``lock`` (the store's write lock) is held or
    another connection holds SQLite's write lock; other failures come out translated, as the
    store's own (``StoreUnavailable``/``StoreError``).
    """
    if not lock.acquire(blocking=False):
        raise WouldWait
    try:
        with engine.connect() as conn:
            # SQLite's busy handler would sleep (up to BUSY_TIMEOUT_S) on a lock another
            # connection holds: answer at once instead, for this transaction only (on the
            # driver's connection: through SQLAlchemy the PRAGMA would open a transaction)
            raw: Any = conn.connection.driver_connection
            try:
                raw.execute("PRAGMA busy_timeout=0")
            except sqlite3.Error as exc:
                conn.invalidate()
                raise _translate(exc, operation) from exc
            try:
                with conn.begin():
                    yield conn
            finally:
                try:
                    raw.execute(f"PRAGMA busy_timeout={int(BUSY_TIMEOUT_S * 1000)}")
                except sqlite3.Error:
                    conn.invalidate()  # never pool a connection left without its timeout
    except sa_exc.SQLAlchemyError as exc:
        code = getattr(getattr(exc, "orig", None), "sqlite_errorcode", None)
        if code is not None and code & 0xFF == sqlite3.SQLITE_BUSY:
            raise WouldWait from exc
        raise translate(exc, operation) from exc
    finally:
        lock.release()


def open_write_ahead(store: Store) -> SQLiteWriteAhead | None:
    """A :class:`SQLiteWriteAhead` for ``store``, or ``None`` unless it is a SQLite file."""
    url = store.engine.url
    if url.get_backend_name() != "sqlite" or url.database in (None, "", ":memory:"):
        return None
    if url.database.startswith("file:"):
        return None  # URI filenames: keep to the engine's own connections
    return SQLiteWriteAhead(store, url.database)

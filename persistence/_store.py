"""The store: synchronous, thread-safe API over one SQLAlchemy engine.

Actors call it through ``trio.to_thread.run_sync`` (the recorder does this for batches; the
executor for the write-ahead of each order). Every public method is one transaction: it either
commits completely or not at all, and database errors come out as ``StoreError`` subclasses
(``StoreUnavailable`` when retrying later can help).

Writes are idempotent so a batch may be replayed after an ambiguous failure: fills are keyed by
``fill_id`` and orders by ``client_order_id`` (``INSERT ... ON CONFLICT DO NOTHING`` on both
SQLite and PostgreSQL), and order status changes are applied only when they change something.
Status events (accepted, cancelled, rejected) and system events have no natural key; replaying
a batch that *did* commit would duplicate system-event rows (never money).

The store assumes one writer per database (the recorder, plus the executor's write-ahead of
new orders): ``filled_qty`` is advanced in Python from the fills a batch newly inserts.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import logging
import re
import threading
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from decimal import Decimal
from typing import Any

from sqlalchemy import (
    Engine,
    Table,
    func,
    insert,
    select,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection
from sqlalchemy.exc import SQLAlchemyError

from protocol.messages import (
    Fill,
    OrderAccepted,
    OrderCancelled,
    OrderRejected,
    OrderRequest,
    OrderStatus,
    RiskRejection,
    SystemEvent,
)

from ._bulk import BulkSql
from ._engine import SQLiteSynchronous, make_engine, upgrade_to_head
from ._errors import translate
from ._ledger import ZERO
from ._models import (
    Balance,
    EquitySnapshotRow,
    FillRow,
    Order,
    OrderStatusHistory,
    PositionRow,
    RiskRejectionRow,
    Run,
    SystemEventRow,
)
from ._records import (
    BalanceSnapshot,
    EquitySnapshot,
    PositionSnapshot,
    Recordable,
    RecoveredState,
)
from ._recovery import DEFAULT_BREAKER as DEFAULT_BREAKER
from ._recovery import TERMINAL_STATUSES, StoreRecovery
from ._reports import StoreReports
from ._spill import StoreSpill
from ._writeahead import (
    SQLiteWriteAhead,
    WouldWait,
    commits_without_waiting,
    open_write_ahead,
    transaction_now,
)

log = logging.getLogger("persistence")

_ORDERS: Table = Order.__table__  # type: ignore[assignment]
_FILLS: Table = FillRow.__table__  # type: ignore[assignment]
_HISTORY: Table = OrderStatusHistory.__table__  # type: ignore[assignment]
_TERMINAL = TERMINAL_STATUSES
_SECRET_KEY = re.compile(r"secret|passw|passphrase|token|api_?key|private|credential|otp", re.I)
_URL_PASSWORD = re.compile(r"(://[^:/@\s]+:)[^@\s]+@")
# column orders of the bulk statements (``_bulk``); the tuples built below follow them
_ORDER_COLUMNS = (
    "client_order_id", "exchange_order_id", "run_id", "strategy", "symbol", "side", "type",
    "quantity", "limit_price", "status", "filled_qty", "group_id", "reduce_only", "created_at",
    "updated_at",
)
_ORDER_UPDATE_COLUMNS = ("status", "filled_qty", "exchange_order_id", "updated_at")
_ORDER_STATE_COLUMNS = (
    "client_order_id", "run_id", "status", "quantity", "filled_qty", "exchange_order_id",
)
_HISTORY_COLUMNS = ("client_order_id", "status", "ts", "detail")
_FILL_COLUMNS = (
    "fill_id", "client_order_id", "run_id", "strategy", "symbol", "side", "price", "qty", "fee",
    "fee_currency", "liquidity", "ts",
)


def utc_now() -> dt.datetime:
    """The default wall clock of the store (row timestamps only, never trading logic)."""
    return dt.datetime.now(dt.UTC)


def redact_config(config: Mapping[str, Any]) -> dict[str, Any]:
    """Return ``config`` with secrets replaced by ``"***"``, recursively.

    A key that looks like a secret (``secret``, ``password``, ``token``, ``api_key``, ...) has
    its value replaced; passwords inside URLs (``postgresql://u:pw@host``) are masked wherever
    they appear.
    """

    def walk(value: Any, key: str = "") -> Any:
        if isinstance(value, Mapping):
            return {str(k): walk(v, str(k)) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [walk(v, key) for v in value]
        if key and _SECRET_KEY.search(key) and value not in (None, "", False):
            return "***"
        if isinstance(value, str):
            return _URL_PASSWORD.sub(r"\1***@", value)
        return value

    return walk(config)  # type: ignore[no-any-return]


def _decimal(value: Any) -> Decimal:
    return value if isinstance(value, Decimal) else Decimal(str(value))


class Store(StoreRecovery, StoreReports, StoreSpill):
    """Orders, fills, balances, equity, system events and the breaker latch, in one database.

    Args:
        url: SQLAlchemy URL; ``None`` is ``sqlite:///trading.db``. PostgreSQL URLs are pointed
            at psycopg 3.
        engine: use this engine instead of creating one from ``url``.
        upgrade: run the Alembic migrations to head on construction (idempotent).
        sqlite_synchronous: SQLite ``PRAGMA synchronous`` (see ``persistence._engine``).
        clock: wall clock for row timestamps (aware UTC); tests inject a fixed one.
        spill_dir: where events a stop cannot commit are kept (``persistence._spill``).

    Raises:
        StoreUnavailable: ``upgrade`` is set and the database cannot be reached.
    """

    def __init__(
        self,
        url: str | None = None,
        *,
        engine: Engine | None = None,
        upgrade: bool = True,
        sqlite_synchronous: SQLiteSynchronous = "FULL",
        clock: Callable[[], dt.datetime] = utc_now,
        spill_dir: str | None = None,
    ) -> None:
        self._spill_dir = spill_dir
        self._engine = engine or make_engine(url, sqlite_synchronous=sqlite_synchronous)
        self._owns_engine = engine is None
        self._clock = clock
        self._bulk = BulkSql(self._engine.dialect)
        # SQLite has one writer: the recorder's batch and the executor's write-ahead colliding
        # inside this process would wait in SQLite's busy handler (sleeps of up to 100 ms); a
        # lock hands the database over at once (bench/bench_tick_to_order.py: p99 157-457 ms
        # -> 29-38 ms at 100 orders/s).
        self._write_lock: contextlib.AbstractContextManager[Any] = (
            threading.RLock() if self._engine.dialect.name == "sqlite"
            else contextlib.nullcontext())
        self.current_run_id: str | None = None
        self._inline_ok: bool | None = None  # writes_without_waiting, read once
        if upgrade:
            upgrade_to_head(self._engine)

    @property
    def engine(self) -> Engine:
        return self._engine

    def close(self) -> None:
        """Release pooled connections (only if this store created the engine)."""
        if self._owns_engine:
            self._engine.dispose()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextlib.contextmanager
    def _tx(self, operation: str) -> Iterator[Connection]:
        try:
            with self._write_lock, self._engine.begin() as conn:
                yield conn
        except SQLAlchemyError as exc:
            raise translate(exc, operation) from exc

    @property
    def writes_without_waiting(self) -> bool:
        """True when a commit here never waits for the disk (a SQLite file with
        ``synchronous`` OFF or NORMAL): only then may a write run on the event loop."""
        if self._inline_ok is None:
            self._inline_ok = commits_without_waiting(self._engine)
        return self._inline_ok

    def _tx_now(self, operation: str) -> contextlib.AbstractContextManager[Connection]:
        return transaction_now(self._engine, self._write_lock, operation)

    def _insert(self, conn: Connection, table: Table) -> Any:
        # dialect-specific INSERT so ON CONFLICT is available on both backends
        if conn.dialect.name == "postgresql":
            return postgresql.insert(table)
        if conn.dialect.name == "sqlite":
            return sqlite.insert(table)
        return insert(table)  # pragma: no cover - other backends: plain insert

    # ------------------------------------------------------------------ runs

    def start_run(
        self,
        *,
        mode: str,
        config: Mapping[str, Any] | None = None,
        version: str = "",
        initial_balances: Mapping[str, Decimal] | None = None,
        resume: RecoveredState | None = None,
        run_id: str | None = None,
    ) -> str:
        """Create a run, make it the store's current run and return its id.

        With ``resume`` (from ``recover()``), the new run continues the recovered one: its
        initial balances are the recovered balances, its high-water mark carries over, and the
        recovered run's open orders move to the new run so their later fills count there.
        ``initial_balances`` overrides the resumed balances (e.g. after an exchange
        reconciliation). Secrets in ``config`` are never stored (``redact_config``).
        """
        run_id = run_id or uuid.uuid4().hex
        now = self._clock()
        balances = dict(resume.balances) if resume is not None else {}
        if initial_balances is not None:
            balances = dict(initial_balances)
        with self._tx("start_run") as conn:
            seq = conn.execute(select(func.coalesce(func.max(Run.seq), 0))).scalar_one() + 1
            conn.execute(
                insert(Run),
                {
                    "id": run_id,
                    "seq": seq,
                    "mode": mode,
                    "config": json.dumps(redact_config(config or {}), sort_keys=True, default=str),
                    "version": version,
                    "started_at": now,
                    "resumed_from": resume.run_id if resume else None,
                    "high_water_start": resume.high_water if resume else None,
                },
            )
            self._put_balances(conn, run_id, "initial", balances, now)
            if resume is not None and resume.run_id is not None:
                conn.execute(
                    update(Order)
                    .where(Order.run_id == resume.run_id, Order.status.not_in(_TERMINAL))
                    .values(run_id=run_id, updated_at=now)
                )
        self.current_run_id = run_id
        log.info(
            "run %s started (mode=%s, resumed_from=%s)", run_id, mode, resume and resume.run_id
        )
        return run_id

    def checkpoint(self) -> None:
        """SQLite: fold the write-ahead log into the database file (PASSIVE: never waits for
        or blocks other connections). A no-op on other databases."""
        if self._engine.dialect.name != "sqlite":
            return
        with self._engine.connect() as conn:
            conn.exec_driver_sql("PRAGMA wal_checkpoint(PASSIVE)")

    def end_run(self, run_id: str | None = None) -> None:
        """Stamp ``ended_at`` on ``run_id`` (default: the current run)."""
        run_id = run_id or self.current_run_id
        if run_id is None:
            return
        with self._tx("end_run") as conn:
            conn.execute(update(Run).where(Run.id == run_id).values(ended_at=self._clock()))

    def latest_run_id(self) -> str | None:
        with self._tx("latest_run") as conn:
            return conn.execute(select(Run.id).order_by(Run.seq.desc()).limit(1)).scalar()

    def _put_balances(
        self, conn: Connection, run_id: str, kind: str, balances: Mapping[str, Decimal], now: Any
    ) -> None:
        if not balances:
            return
        stmt = self._insert(conn, Balance.__table__)  # type: ignore[arg-type]
        stmt = stmt.on_conflict_do_update(
            index_elements=["run_id", "kind", "currency"],
            set_={"amount": stmt.excluded.amount, "ts": stmt.excluded.ts},
        )
        conn.execute(
            stmt,
            [
                {"run_id": run_id, "kind": kind, "currency": c, "amount": a, "ts": now}
                for c, a in sorted(balances.items())
            ],
        )

    # ------------------------------------------------------------------ orders

    def record_order_ahead(self, order: OrderRequest, run_id: str | None = None) -> bool:
        """Commit ``order`` as ``PENDING`` *before* it is sent; return False if already known.

        The write-ahead makes a crash between sending and hearing back recoverable: the order
        shows up in ``recover().open_orders`` and the executor reconciles it by its
        ``client_order_id``. Idempotent: recording the same ``client_order_id`` again changes
        nothing.
        """
        with self._tx("record_order_ahead") as conn:
            inserted = self._insert_orders(conn, [order], run_id or self.current_run_id)
        return inserted == 1

    def open_write_ahead(self) -> SQLiteWriteAhead | None:
        """A write-ahead that commits on the calling thread when nothing must be waited for.

        SQLite files only (``None`` otherwise); see ``persistence._writeahead``. Its
        ``try_now(order)`` answers like ``record_order_ahead`` or ``None`` ("use
        ``record_order_ahead``"). The caller owns it and should ``close()`` it.
        """
        return open_write_ahead(self)

    def _insert_orders(
        self, conn: Connection, orders: Sequence[OrderRequest], run_id: str | None
    ) -> int:
        bulk = self._bulk
        now = bulk.ts(self._clock())
        zero = bulk.money(ZERO)
        rows: dict[str, tuple[Any, ...]] = {}
        for o in orders:
            if o.client_order_id in rows:
                continue  # the same order twice in one batch: once
            rows[o.client_order_id] = (
                o.client_order_id, None, run_id, o.strategy, o.symbol, o.side.value,
                o.order_type.value, bulk.money(o.qty), bulk.money(o.limit_price),
                OrderStatus.PENDING.value, zero, o.group_id, o.reduce_only, now, now,
            )
        # ON CONFLICT DO NOTHING ... RETURNING: the orders already known are skipped and only
        # the new ones get a "written ahead" history row
        new = set(bulk.insert(conn, _ORDERS, _ORDER_COLUMNS, list(rows.values()),
                              conflict="client_order_id", returning="client_order_id"))
        bulk.insert(conn, _HISTORY, _HISTORY_COLUMNS,
                    [(k, "pending", now, "written ahead") for k in rows if k in new])
        return len(new)

    # ------------------------------------------------------------------ batches

    def write_batch(self, events: Sequence[Recordable], *, run_id: str | None = None) -> None:
        """Write ``events`` in ONE transaction (all or nothing), idempotently.

        Events are applied in the order given. Rows are written with executemany-style bulk
        statements, a handful per batch whatever its size. Unknown event types raise
        ``TypeError`` before anything is written.

        Raises:
            StoreUnavailable: the database is unreachable; nothing was committed.
            StoreError: any other database failure; nothing was committed.
        """
        self._write_batch(events, run_id, self._tx)

    def try_write_batch_now(self, events: Sequence[Recordable], *,
                            run_id: str | None = None) -> bool:
        """``write_batch`` on the calling thread, but only if nothing must be waited for.

        For the recorder's small batches in paper mode: written on the event loop they skip
        the worker thread's GIL hand-overs, which stall the loop (and the order write-ahead
        waiting for the same SQLite lock) for milliseconds. Returns False, with nothing
        written, when ``writes_without_waiting`` is False, this store's write lock is held or
        another connection is writing; the caller then uses ``write_batch`` in a thread.

        Raises:
            StoreUnavailable, StoreError: as ``write_batch``; nothing was committed.
        """
        if not events:
            return True
        if not self.writes_without_waiting:
            return False
        try:
            self._write_batch(events, run_id, self._tx_now)
        except WouldWait:
            return False
        return True

    def _write_batch(self, events: Sequence[Recordable], run_id: str | None,
                     tx: Callable[[str], contextlib.AbstractContextManager[Connection]]) -> None:
        apply = self._batch(events, run_id)
        if apply is not None:
            with tx("write_batch") as conn:
                apply(conn)

    def _batch(self, events: Sequence[Recordable], run_id: str | None
               ) -> Callable[[Connection], None] | None:
        """The rows of ``events`` built now; the returned function writes them on a
        connection inside a transaction (None: nothing to write)."""
        if not events:
            return None
        run = run_id or self.current_run_id
        now = self._clock()
        new_orders: list[OrderRequest] = []
        status_events: list[OrderAccepted | OrderRejected | OrderCancelled | Fill] = []
        fills: dict[str, Fill] = {}
        sys_rows: list[dict[str, Any]] = []
        risk_rows: list[dict[str, Any]] = []
        equity_rows: list[dict[str, Any]] = []
        positions: dict[str, dict[str, Any]] = {}
        balances: dict[str, Decimal] = {}
        for ev in events:
            if isinstance(ev, Fill):
                if ev.fill_id not in fills:  # a duplicate inside one batch is still one fill
                    fills[ev.fill_id] = ev
                    status_events.append(ev)
            elif isinstance(ev, OrderAccepted | OrderRejected | OrderCancelled):
                status_events.append(ev)
            elif isinstance(ev, OrderRequest):
                new_orders.append(ev)
            elif isinstance(ev, SystemEvent):
                sys_rows.append(
                    {
                        "run_id": run,
                        "kind": ev.kind,
                        "source": ev.source,
                        "detail": ev.detail,
                        "attrs": json.dumps(dict(ev.attrs), sort_keys=True),
                        "ts": now,
                    }
                )
            elif isinstance(ev, RiskRejection):
                risk_rows.append(
                    {
                        "run_id": run,
                        "strategy": ev.strategy,
                        "symbol": ev.symbol,
                        "reason": ev.reason,
                        "detail": ev.detail,
                        "ts": now,
                    }
                )
            elif isinstance(ev, EquitySnapshot):
                equity_rows.append(
                    {
                        "run_id": run,
                        "ts": ev.ts or now,
                        "equity": ev.equity,
                        "realized": ev.realized,
                        "unrealized": ev.unrealized,
                        "drawdown": ev.drawdown,
                        "high_water": ev.high_water,
                    }
                )
            elif isinstance(ev, PositionSnapshot):
                positions[ev.symbol] = {
                    "run_id": run,
                    "symbol": ev.symbol,
                    "qty": ev.qty,
                    "avg_price": ev.avg_price,
                    "realized_pnl": ev.realized_pnl,
                    "ts": ev.ts or now,
                }
            elif isinstance(ev, BalanceSnapshot):
                balances.update(ev.balances)
            else:
                raise TypeError(f"the store cannot record {type(ev).__name__}")
        def apply(conn: Connection) -> None:
            if new_orders:
                self._insert_orders(conn, new_orders, run)
            if status_events:
                self._apply_order_events(conn, status_events, fills, run, now)
            if sys_rows:
                conn.execute(insert(SystemEventRow), sys_rows)
            if risk_rows:
                conn.execute(insert(RiskRejectionRow), risk_rows)
            if equity_rows:
                conn.execute(insert(EquitySnapshotRow), equity_rows)
            if positions and run is not None:
                stmt = self._insert(conn, PositionRow.__table__)  # type: ignore[arg-type]
                stmt = stmt.on_conflict_do_update(
                    index_elements=["run_id", "symbol"],
                    set_={
                        c: getattr(stmt.excluded, c)
                        for c in ("qty", "avg_price", "realized_pnl", "ts")
                    },
                )
                conn.execute(stmt, list(positions.values()))
            if balances and run is not None:
                self._put_balances(conn, run, "latest", balances, now)

        return apply

    def _apply_order_events(
        self,
        conn: Connection,
        events: Sequence[OrderAccepted | OrderRejected | OrderCancelled | Fill],
        fills: Mapping[str, Fill],
        run: str | None,
        now: dt.datetime,
    ) -> None:
        # One SELECT loads every affected order; the events are then applied in Python in batch
        # order and only real changes are written back, so a replayed batch is a no-op.
        bulk = self._bulk
        ids = sorted({e.client_order_id for e in events})
        state: dict[str, dict[str, Any]] = {}
        for row in bulk.select_in(conn, _ORDERS, "client_order_id", ids,
                                  columns=_ORDER_STATE_COLUMNS):
            # driver-level rows: money comes back as text on SQLite, Decimal on PostgreSQL
            state[row[0]] = {
                "client_order_id": row[0],
                "run_id": row[1],
                "status": row[2],
                "quantity": _decimal(row[3]),
                "filled_qty": _decimal(row[4]),
                "exchange_order_id": row[5],
            }
        before = {k: dict(v) for k, v in state.items()}
        now_db = bulk.ts(now)
        inserted: set[str] = set()
        if fills:
            money, ts_ns = bulk.money, bulk.ts_ns
            fill_rows = []
            tracked = False  # some fill belongs to a known order: we must learn which are new
            for f in fills.values():
                o = state.get(f.client_order_id)
                if o is not None:
                    tracked = True
                fill_rows.append((
                    f.fill_id,
                    f.client_order_id,
                    o["run_id"] if o is not None and o["run_id"] else run,
                    f.strategy,
                    f.symbol,
                    f.side._value_,  # the enum's plain attribute: ``.value`` is a property
                    money(f.price),
                    money(f.qty),
                    money(f.fee),
                    f.fee_currency,
                    f.liquidity._value_,
                    ts_ns(f.ts_event_ns) if f.ts_event_ns else now_db,
                ))
            # ON CONFLICT DO NOTHING skips fills already stored (a replay); RETURNING names the
            # new ones, whose quantities advance their orders (only needed when we know one)
            inserted.update(bulk.insert(conn, _FILLS, _FILL_COLUMNS, fill_rows,
                                        conflict="fill_id",
                                        returning="fill_id" if tracked else None))
        history: list[tuple[Any, ...]] = []

        def move(o: dict[str, Any], status: str, detail: str) -> None:
            if o["status"] != status:
                o["status"] = status
                history.append((o["client_order_id"], status, now_db, detail))

        for ev in events:
            o = state.get(ev.client_order_id)
            if isinstance(ev, Fill):
                if o is None or ev.fill_id not in inserted:
                    continue
                o["filled_qty"] += ev.qty
                detail = f"fill {ev.fill_id} {ev.qty}@{ev.price}"
                if o["filled_qty"] >= o["quantity"]:
                    move(o, OrderStatus.FILLED.value, detail)
                elif o["status"] in ("pending", "open"):
                    move(o, OrderStatus.PARTIALLY_FILLED.value, detail)
            elif o is None:
                log.debug("%s for unknown order %s", type(ev).__name__, ev.client_order_id)
            elif isinstance(ev, OrderAccepted):
                o["exchange_order_id"] = ev.exchange_order_id
                if o["status"] == "pending":
                    move(o, OrderStatus.OPEN.value, f"accepted as {ev.exchange_order_id}")
            elif o["status"] not in _TERMINAL:
                if isinstance(ev, OrderRejected):
                    move(o, OrderStatus.REJECTED.value, ev.reason)
                else:
                    move(o, OrderStatus.CANCELLED.value, ev.reason)
        changed = [
            (o["status"], bulk.money(o["filled_qty"]), o["exchange_order_id"], now_db, k)
            for k, o in state.items()
            if o != before[k]
        ]
        bulk.update(conn, _ORDERS, _ORDER_UPDATE_COLUMNS, "client_order_id", changed)
        bulk.insert(conn, _HISTORY, _HISTORY_COLUMNS, history)

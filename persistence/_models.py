"""SQLAlchemy 2 typed models: the schema the Alembic migrations create.

Conventions:

* Money (prices, quantities, fees, balances, P&L) is ``Money``: exact ``Decimal`` on both
  dialects (see ``_types``). Times are ``UTCDateTime``: timezone-aware UTC.
* Enums (side, order type, status, liquidity) are stored as their ``.value`` strings, not
  database enum types: adding a status must not need an ``ALTER TYPE`` on PostgreSQL.
* ``fills.fill_id`` and ``orders.client_order_id`` are unique: they are the idempotency keys
  that make a replayed batch harmless (``INSERT ... ON CONFLICT DO NOTHING``).
* Fills and status history have no foreign key to ``orders``: a fill for an order we did not
  place through this store (reconciled from the exchange, placed by hand) must still be kept.
* Changing a model means adding an Alembic revision; ``tests/test_persistence_migrations.py``
  fails when the models and the migration head disagree.
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

from sqlalchemy import Boolean, ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from ._types import Money, UTCDateTime


class Base(DeclarativeBase):
    pass


class Run(Base):
    """One start of the system. ``config`` is JSON text with every secret removed."""

    __tablename__ = "runs"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    # start order (max + 1 in the inserting transaction): "the latest run" must not depend on
    # clock resolution or on two runs starting within the same microsecond
    seq: Mapped[int] = mapped_column(Integer, unique=True)
    mode: Mapped[str] = mapped_column(String(16))
    config: Mapped[str] = mapped_column(Text, default="{}")
    version: Mapped[str] = mapped_column(String(32), default="")
    started_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    ended_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    # the run this one continued after a restart (its balances became our initial balances)
    resumed_from: Mapped[str | None] = mapped_column(
        String(40), ForeignKey("runs.id"), nullable=True
    )
    # equity high-water mark carried over from ``resumed_from`` (drawdown survives restarts)
    high_water_start: Mapped[Decimal | None] = mapped_column(Money(), nullable=True)


class Order(Base):
    __tablename__ = "orders"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    client_order_id: Mapped[str] = mapped_column(String(64), unique=True)
    exchange_order_id: Mapped[str | None] = mapped_column(String(64), nullable=True, index=True)
    run_id: Mapped[str | None] = mapped_column(
        String(40), ForeignKey("runs.id"), nullable=True, index=True
    )
    strategy: Mapped[str] = mapped_column(String(64))
    symbol: Mapped[str] = mapped_column(String(32))
    side: Mapped[str] = mapped_column(String(4))
    type: Mapped[str] = mapped_column(String(8))
    quantity: Mapped[Decimal] = mapped_column(Money())
    limit_price: Mapped[Decimal | None] = mapped_column(Money(), nullable=True)
    status: Mapped[str] = mapped_column(String(20), index=True)
    filled_qty: Mapped[Decimal] = mapped_column(Money())
    group_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    reduce_only: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())


class OrderStatusHistory(Base):
    __tablename__ = "order_status_history"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    client_order_id: Mapped[str] = mapped_column(String(64), index=True)
    status: Mapped[str] = mapped_column(String(20))
    ts: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    detail: Mapped[str] = mapped_column(Text, default="")


class FillRow(Base):
    __tablename__ = "fills"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    fill_id: Mapped[str] = mapped_column(String(128), unique=True)
    client_order_id: Mapped[str] = mapped_column(String(64), index=True)
    run_id: Mapped[str | None] = mapped_column(
        String(40), ForeignKey("runs.id"), nullable=True, index=True
    )
    strategy: Mapped[str] = mapped_column(String(64), index=True)
    symbol: Mapped[str] = mapped_column(String(32))
    side: Mapped[str] = mapped_column(String(4))
    price: Mapped[Decimal] = mapped_column(Money())
    qty: Mapped[Decimal] = mapped_column(Money())
    fee: Mapped[Decimal] = mapped_column(Money())
    fee_currency: Mapped[str] = mapped_column(String(16))
    liquidity: Mapped[str] = mapped_column(String(8))
    ts: Mapped[dt.datetime] = mapped_column(UTCDateTime())


class Balance(Base):
    """Balances per run: ``kind`` is ``initial`` (the start of the run) or ``latest``."""

    __tablename__ = "balances"
    __table_args__ = (UniqueConstraint("run_id", "kind", "currency", name="uq_balances_run"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    run_id: Mapped[str] = mapped_column(String(40), ForeignKey("runs.id"))
    kind: Mapped[str] = mapped_column(String(16))
    currency: Mapped[str] = mapped_column(String(16))
    amount: Mapped[Decimal] = mapped_column(Money())
    ts: Mapped[dt.datetime] = mapped_column(UTCDateTime())


class PositionRow(Base):
    """Latest position per run and symbol, as reported by the portfolio (for reports).

    Recovery does not read this table: it recomputes positions from committed fills, which are
    the source of truth.
    """

    __tablename__ = "positions"
    __table_args__ = (UniqueConstraint("run_id", "symbol", name="uq_positions_run_symbol"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    run_id: Mapped[str] = mapped_column(String(40), ForeignKey("runs.id"))
    symbol: Mapped[str] = mapped_column(String(32))
    qty: Mapped[Decimal] = mapped_column(Money())
    avg_price: Mapped[Decimal] = mapped_column(Money())
    realized_pnl: Mapped[Decimal] = mapped_column(Money())
    ts: Mapped[dt.datetime] = mapped_column(UTCDateTime())


class EquitySnapshotRow(Base):
    __tablename__ = "equity_snapshots"
    __table_args__ = (Index("ix_equity_snapshots_run_ts", "run_id", "ts"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    run_id: Mapped[str | None] = mapped_column(String(40), ForeignKey("runs.id"), nullable=True)
    ts: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    equity: Mapped[Decimal] = mapped_column(Money())
    realized: Mapped[Decimal] = mapped_column(Money())
    unrealized: Mapped[Decimal] = mapped_column(Money())
    drawdown: Mapped[Decimal] = mapped_column(Money())
    high_water: Mapped[Decimal] = mapped_column(Money())


class SystemEventRow(Base):
    """Restarts, breaker trips and resets, reconnects, checksum mismatches."""

    __tablename__ = "system_events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    run_id: Mapped[str | None] = mapped_column(
        String(40), ForeignKey("runs.id"), nullable=True, index=True
    )
    kind: Mapped[str] = mapped_column(String(64), index=True)
    source: Mapped[str] = mapped_column(String(64))
    detail: Mapped[str] = mapped_column(Text, default="")
    attrs: Mapped[str] = mapped_column(Text, default="{}")  # JSON object of str -> str
    ts: Mapped[dt.datetime] = mapped_column(UTCDateTime())


class RiskRejectionRow(Base):
    __tablename__ = "risk_rejections"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    run_id: Mapped[str | None] = mapped_column(
        String(40), ForeignKey("runs.id"), nullable=True, index=True
    )
    strategy: Mapped[str] = mapped_column(String(64))
    symbol: Mapped[str] = mapped_column(String(32))
    reason: Mapped[str] = mapped_column(String(64))
    detail: Mapped[str] = mapped_column(Text, default="")
    ts: Mapped[dt.datetime] = mapped_column(UTCDateTime())


class BreakerStateRow(Base):
    """The latched trading breaker. Global, not per run: a latch must survive restarts."""

    __tablename__ = "breaker_state"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    latched: Mapped[bool] = mapped_column(Boolean)
    reason: Mapped[str] = mapped_column(Text, default="")
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())

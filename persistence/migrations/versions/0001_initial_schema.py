"""Initial schema: every table of ``persistence._models`` at its first version.

Revision ID: 0001
Revises: (none)
Create Date: 2026-11-28 07:49:33.066434
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from persistence._types import Money, UTCDateTime

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "breaker_state",
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("latched", sa.Boolean(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("name"),
    )
    op.create_table(
        "order_status_history",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("client_order_id", sa.String(length=64), nullable=False),
        sa.Column("status", sa.String(length=20), nullable=False),
        sa.Column("ts", UTCDateTime(), nullable=False),
        sa.Column("detail", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("order_status_history", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_order_status_history_client_order_id"), ["client_order_id"], unique=False
        )

    op.create_table(
        "runs",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("mode", sa.String(length=16), nullable=False),
        sa.Column("config", sa.Text(), nullable=False),
        sa.Column("version", sa.String(length=32), nullable=False),
        sa.Column("started_at", UTCDateTime(), nullable=False),
        sa.Column("ended_at", UTCDateTime(), nullable=True),
        sa.Column("resumed_from", sa.String(length=40), nullable=True),
        sa.Column("high_water_start", Money(), nullable=True),
        sa.ForeignKeyConstraint(
            ["resumed_from"],
            ["runs.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("seq"),
    )
    op.create_table(
        "balances",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("run_id", sa.String(length=40), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("currency", sa.String(length=16), nullable=False),
        sa.Column("amount", Money(), nullable=False),
        sa.Column("ts", UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["run_id"],
            ["runs.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("run_id", "kind", "currency", name="uq_balances_run"),
    )
    op.create_table(
        "equity_snapshots",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("run_id", sa.String(length=40), nullable=True),
        sa.Column("ts", UTCDateTime(), nullable=False),
        sa.Column("equity", Money(), nullable=False),
        sa.Column("realized", Money(), nullable=False),
        sa.Column("unrealized", Money(), nullable=False),
        sa.Column("drawdown", Money(), nullable=False),
        sa.Column("high_water", Money(), nullable=False),
        sa.ForeignKeyConstraint(
            ["run_id"],
            ["runs.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("equity_snapshots", schema=None) as batch_op:
        batch_op.create_index("ix_equity_snapshots_run_ts", ["run_id", "ts"], unique=False)

    op.create_table(
        "fills",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("fill_id", sa.String(length=128), nullable=False),
        sa.Column("client_order_id", sa.String(length=64), nullable=False),
        sa.Column("run_id", sa.String(length=40), nullable=True),
        sa.Column("strategy", sa.String(length=64), nullable=False),
        sa.Column("symbol", sa.String(length=32), nullable=False),
        sa.Column("side", sa.String(length=4), nullable=False),
        sa.Column("price", Money(), nullable=False),
        sa.Column("qty", Money(), nullable=False),
        sa.Column("fee", Money(), nullable=False),
        sa.Column("fee_currency", sa.String(length=16), nullable=False),
        sa.Column("liquidity", sa.String(length=8), nullable=False),
        sa.Column("ts", UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["run_id"],
            ["runs.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("fill_id"),
    )
    with op.batch_alter_table("fills", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_fills_client_order_id"), ["client_order_id"], unique=False
        )
        batch_op.create_index(batch_op.f("ix_fills_run_id"), ["run_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_fills_strategy"), ["strategy"], unique=False)

    op.create_table(
        "orders",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("client_order_id", sa.String(length=64), nullable=False),
        sa.Column("exchange_order_id", sa.String(length=64), nullable=True),
        sa.Column("run_id", sa.String(length=40), nullable=True),
        sa.Column("strategy", sa.String(length=64), nullable=False),
        sa.Column("symbol", sa.String(length=32), nullable=False),
        sa.Column("side", sa.String(length=4), nullable=False),
        sa.Column("type", sa.String(length=8), nullable=False),
        sa.Column("quantity", Money(), nullable=False),
        sa.Column("limit_price", Money(), nullable=True),
        sa.Column("status", sa.String(length=20), nullable=False),
        sa.Column("filled_qty", Money(), nullable=False),
        sa.Column("group_id", sa.String(length=64), nullable=True),
        sa.Column("reduce_only", sa.Boolean(), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["run_id"],
            ["runs.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("client_order_id"),
    )
    with op.batch_alter_table("orders", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_orders_exchange_order_id"), ["exchange_order_id"], unique=False
        )
        batch_op.create_index(batch_op.f("ix_orders_run_id"), ["run_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_orders_status"), ["status"], unique=False)

    op.create_table(
        "positions",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("run_id", sa.String(length=40), nullable=False),
        sa.Column("symbol", sa.String(length=32), nullable=False),
        sa.Column("qty", Money(), nullable=False),
        sa.Column("avg_price", Money(), nullable=False),
        sa.Column("realized_pnl", Money(), nullable=False),
        sa.Column("ts", UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["run_id"],
            ["runs.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("run_id", "symbol", name="uq_positions_run_symbol"),
    )
    op.create_table(
        "risk_rejections",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("run_id", sa.String(length=40), nullable=True),
        sa.Column("strategy", sa.String(length=64), nullable=False),
        sa.Column("symbol", sa.String(length=32), nullable=False),
        sa.Column("reason", sa.String(length=64), nullable=False),
        sa.Column("detail", sa.Text(), nullable=False),
        sa.Column("ts", UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["run_id"],
            ["runs.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("risk_rejections", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_risk_rejections_run_id"), ["run_id"], unique=False)

    op.create_table(
        "system_events",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("run_id", sa.String(length=40), nullable=True),
        sa.Column("kind", sa.String(length=64), nullable=False),
        sa.Column("source", sa.String(length=64), nullable=False),
        sa.Column("detail", sa.Text(), nullable=False),
        sa.Column("attrs", sa.Text(), nullable=False),
        sa.Column("ts", UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["run_id"],
            ["runs.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("system_events", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_system_events_kind"), ["kind"], unique=False)
        batch_op.create_index(batch_op.f("ix_system_events_run_id"), ["run_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("system_events", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_system_events_run_id"))
        batch_op.drop_index(batch_op.f("ix_system_events_kind"))

    op.drop_table("system_events")
    with op.batch_alter_table("risk_rejections", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_risk_rejections_run_id"))

    op.drop_table("risk_rejections")
    op.drop_table("positions")
    with op.batch_alter_table("orders", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_orders_status"))
        batch_op.drop_index(batch_op.f("ix_orders_run_id"))
        batch_op.drop_index(batch_op.f("ix_orders_exchange_order_id"))

    op.drop_table("orders")
    with op.batch_alter_table("fills", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_fills_strategy"))
        batch_op.drop_index(batch_op.f("ix_fills_run_id"))
        batch_op.drop_index(batch_op.f("ix_fills_client_order_id"))

    op.drop_table("fills")
    with op.batch_alter_table("equity_snapshots", schema=None) as batch_op:
        batch_op.drop_index("ix_equity_snapshots_run_ts")

    op.drop_table("equity_snapshots")
    op.drop_table("balances")
    op.drop_table("runs")
    with op.batch_alter_table("order_status_history", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_order_status_history_client_order_id"))

    op.drop_table("order_status_history")
    op.drop_table("breaker_state")

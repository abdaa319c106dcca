"""Records the store accepts besides ``protocol.messages`` events, and the records it returns.

All are frozen, slotted, keyword-only dataclasses; money is ``Decimal``; times are aware UTC
``datetime``.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal

from protocol.messages import (
    Fill,
    OrderAccepted,
    OrderCancelled,
    OrderRejected,
    OrderRequest,
    OrderStatus,
    OrderType,
    RiskRejection,
    Side,
    SystemEvent,
)

# --------------------------------------------------------------------------- written


@dataclass(frozen=True, slots=True, kw_only=True)
class EquitySnapshot:
    """The portfolio's equity at one moment. ``ts`` defaults to the store's clock at write."""

    equity: Decimal
    realized: Decimal
    unrealized: Decimal
    drawdown: Decimal
    high_water: Decimal
    ts: dt.datetime | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class PositionSnapshot:
    """The portfolio's latest position in one symbol (upserted per run and symbol)."""

    symbol: str
    qty: Decimal
    avg_price: Decimal
    realized_pnl: Decimal
    ts: dt.datetime | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class BalanceSnapshot:
    """The latest balances (e.g. reconciled from the exchange), upserted per run."""

    balances: Mapping[str, Decimal]
    ts: dt.datetime | None = None


#: Everything ``Store.write_batch`` accepts. ``OrderRequest`` in a batch is inserted if absent,
#: which suits paper and backtest runs; live orders go through ``Store.record_order_ahead``.
Recordable = (
    OrderRequest
    | OrderAccepted
    | OrderRejected
    | OrderCancelled
    | Fill
    | SystemEvent
    | RiskRejection
    | EquitySnapshot
    | PositionSnapshot
    | BalanceSnapshot
)

# --------------------------------------------------------------------------- returned


@dataclass(frozen=True, slots=True, kw_only=True)
class Position:
    """Net position in one symbol at average cost; ``realized_pnl`` is in the quote currency."""

    symbol: str
    qty: Decimal
    avg_price: Decimal
    realized_pnl: Decimal


@dataclass(frozen=True, slots=True, kw_only=True)
class OpenOrder:
    """An order whose last known status is not terminal (pending, open, partially filled).

    ``PENDING`` orders were written ahead and may or may not have reached the exchange: the
    executor must reconcile them by ``client_order_id`` before trading.
    """

    client_order_id: str
    exchange_order_id: str | None
    run_id: str | None
    strategy: str
    symbol: str
    side: Side
    order_type: OrderType
    quantity: Decimal
    limit_price: Decimal | None
    status: OrderStatus
    filled_qty: Decimal


@dataclass(frozen=True, slots=True, kw_only=True)
class RecoveredState:
    """What a restart needs, recomputed from committed rows (see ``Store.recover``)."""

    run_id: str | None
    initial_balances: Mapping[str, Decimal] = field(default_factory=dict)
    balances: Mapping[str, Decimal] = field(default_factory=dict)
    positions: Mapping[str, Position] = field(default_factory=dict)
    open_orders: tuple[OpenOrder, ...] = ()
    high_water: Decimal | None = None
    last_equity: Decimal | None = None
    breaker_latched: bool = False
    breaker_reason: str = ""
    fills_applied: int = 0


@dataclass(frozen=True, slots=True, kw_only=True)
class TradeRow:
    """One fill with the P&L it realized (average cost per strategy and symbol)."""

    fill_id: str
    client_order_id: str
    strategy: str
    symbol: str
    side: Side
    price: Decimal
    qty: Decimal
    fee: Decimal
    fee_currency: str
    liquidity: str
    ts: dt.datetime
    realized_pnl: Decimal


@dataclass(frozen=True, slots=True, kw_only=True)
class StrategyPnl:
    """Per-strategy totals. ``win_rate`` is wins / closing trades (``None`` with none).

    A closing trade is a fill that reduced a position; it is a win when the P&L it realized
    (gross, in the quote currency) is positive. ``fees`` are per currency.
    """

    strategy: str
    realized_pnl: Decimal
    fees: Mapping[str, Decimal]
    fills: int
    closing_trades: int
    wins: int
    win_rate: Decimal | None
    volume: Decimal  # sum of price × qty in quote currency


@dataclass(frozen=True, slots=True, kw_only=True)
class EquityPoint:
    ts: dt.datetime
    equity: Decimal
    drawdown: Decimal
    high_water: Decimal


@dataclass(frozen=True, slots=True, kw_only=True)
class BreakerLatch:
    name: str
    latched: bool
    reason: str
    updated_at: dt.datetime

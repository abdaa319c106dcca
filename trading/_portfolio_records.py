"""The portfolio's public records: frozen views and the snapshot :meth:`Portfolio.restore` reads.

Re-exported from :mod:`trading.portfolio`; see there for the ledger rules behind the figures.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

__all__ = [
    "Amounts",
    "LotRecord",
    "PortfolioSnapshot",
    "Position",
    "PositionRecord",
    "StrategyRecord",
    "StrategyStats",
]

Amounts = tuple[tuple[str, Decimal], ...]
"""Per-currency amounts, sorted by currency, as stored in frozen records."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Position:
    """A read-only view of one symbol's position. Money fields are in the quote currency."""

    symbol: str
    base: str
    quote: str
    qty: Decimal  # signed: > 0 long, < 0 short
    avg_entry_price: Decimal | None  # cost / qty of the open lots; None when flat
    cost: Decimal  # signed Σ lot qty × lot price
    realized: Decimal  # gross of fees
    fees: Amounts
    trades: int
    mark: Decimal | None
    unrealized: Decimal | None  # qty × mark − cost; None without a mark


@dataclass(frozen=True, slots=True, kw_only=True)
class StrategyStats:
    """Per-strategy results. ``realized``/``fees`` by currency; ``*_usd`` at current rates.

    ``wins``/``losses`` count closing fills by their net result: gross realized P&L minus the
    closing fee minus the share of the entry fees of the lots it closed (quote-currency fees).
    """

    strategy: str
    trades: int
    wins: int
    losses: int
    realized: Amounts
    fees: Amounts
    realized_usd: Decimal
    fees_usd: Decimal


@dataclass(frozen=True, slots=True, kw_only=True)
class LotRecord:
    qty: Decimal  # signed
    price: Decimal
    fee: Decimal  # entry fee (quote currency) not yet allocated to a close


@dataclass(frozen=True, slots=True, kw_only=True)
class PositionRecord:
    symbol: str
    base: str
    quote: str
    lots: tuple[LotRecord, ...]
    realized: Decimal
    fees: Amounts
    trades: int


@dataclass(frozen=True, slots=True, kw_only=True)
class StrategyRecord:
    strategy: str
    trades: int
    wins: int
    losses: int
    realized: Amounts
    fees: Amounts


@dataclass(frozen=True, slots=True, kw_only=True)
class PortfolioSnapshot:
    """Everything :meth:`Portfolio.restore` needs; plain frozen data for persistence/reports."""

    balances: Amounts
    positions: tuple[PositionRecord, ...]
    strategies: tuple[StrategyRecord, ...]
    marks: Amounts
    high_water: Decimal | None
    max_drawdown: Decimal
    fills: int

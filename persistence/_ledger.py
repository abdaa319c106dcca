"""Pure ``Decimal`` bookkeeping used by recovery and reports: balances and average-cost positions.

Kept here rather than imported from ``trading/`` because ``persistence`` may import only
``protocol`` (DESIGN.md rooms). It is deliberately small: the recomputation a restart trusts has
to be easy to check by hand.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal

from protocol.messages import Side

from ._records import Position

ZERO = Decimal(0)


def split_symbol(symbol: str) -> tuple[str, str]:
    """``"BTC/USD"`` → ``("BTC", "USD")`` (Kraken WS v2 symbols are always ``BASE/QUOTE``)."""
    base, sep, quote = symbol.partition("/")
    if not sep or not base or not quote:
        raise ValueError(f"symbol {symbol!r} is not BASE/QUOTE")
    return base, quote


@dataclass(slots=True)
class _Pos:
    qty: Decimal = ZERO
    avg_price: Decimal = ZERO
    realized: Decimal = ZERO

    def apply(self, side: Side, price: Decimal, qty: Decimal) -> Decimal:
        """Apply one fill at average cost and return the P&L it realized."""
        signed = qty * side.sign
        if self.qty == 0 or (self.qty > 0) == (signed > 0):
            total = abs(self.qty) + qty
            self.avg_price = (abs(self.qty) * self.avg_price + qty * price) / total
            self.qty += signed
            return ZERO
        closed = min(qty, abs(self.qty))
        direction = 1 if self.qty > 0 else -1
        pnl = closed * (price - self.avg_price) * direction
        self.realized += pnl
        self.qty += signed
        if self.qty == 0:
            self.avg_price = ZERO
        elif (self.qty > 0) != (direction > 0):
            self.avg_price = price  # flipped through zero: the remainder opened at this price
        return pnl


class Ledger:
    """Balances per currency plus average-cost positions per key (symbol, or strategy+symbol)."""

    def __init__(self, balances: Mapping[str, Decimal] | None = None) -> None:
        self.balances: dict[str, Decimal] = dict(balances or {})
        self._positions: dict[str, _Pos] = {}

    def apply_fill(
        self,
        *,
        key: str,
        symbol: str,
        side: Side,
        price: Decimal,
        qty: Decimal,
        fee: Decimal,
        fee_currency: str,
    ) -> Decimal:
        """Apply one fill to balances and the position under ``key``; return realized P&L."""
        base, quote = split_symbol(symbol)
        notional = price * qty
        b = self.balances
        b[base] = b.get(base, ZERO) + qty * side.sign
        b[quote] = b.get(quote, ZERO) - notional * side.sign
        b[fee_currency] = b.get(fee_currency, ZERO) - fee
        return self._positions.setdefault(key, _Pos()).apply(side, price, qty)

    def positions(self) -> dict[str, Position]:
        return {
            key: Position(symbol=key, qty=p.qty, avg_price=p.avg_price, realized_pnl=p.realized)
            for key, p in self._positions.items()
        }

"""The portfolio's mutable books: FIFO lots per position and per-strategy tallies.

Private to :mod:`trading.portfolio` (``Portfolio`` owns every instance); the FIFO matching
rule and why it keeps the ledger exact are described there.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping
from decimal import Decimal

from ._portfolio_records import Amounts

ZERO = Decimal(0)


class _Lot:
    __slots__ = ("fee", "price", "qty")

    def __init__(self, qty: Decimal, price: Decimal, fee: Decimal) -> None:
        self.qty = qty
        self.price = price
        self.fee = fee


class _Position:
    __slots__ = ("avg", "base", "cost", "fees", "lots", "qty", "quote", "realized", "symbol",
                 "trades")

    def __init__(self, symbol: str, base: str, quote: str) -> None:
        self.symbol = symbol
        self.base = base
        self.quote = quote
        self.lots: deque[_Lot] = deque()
        self.qty = ZERO
        self.cost = ZERO
        self.avg: Decimal | None = None
        self.realized = ZERO
        self.fees: dict[str, Decimal] = {}
        self.trades = 0

    def apply(self, signed: Decimal, price: Decimal, fee_quote: Decimal
              ) -> tuple[Decimal, Decimal | None]:
        """Book a signed quantity; return (realized, net result of the closing part or None)."""
        qty = self.qty
        if not qty or (qty > 0) == (signed > 0):
            self.lots.append(_Lot(signed, price, fee_quote))
            self.qty = qty + signed
            self.cost += signed * price
            self.avg = self.cost / self.qty
            return ZERO, None
        total = abs(signed)
        remaining = total
        realized = ZERO
        entry_fees = ZERO
        lots = self.lots
        cost = self.cost
        while remaining and lots:
            lot = lots[0]
            lq = abs(lot.qty)
            take = lq if lq <= remaining else remaining
            if lot.qty > 0:
                realized += (price - lot.price) * take
            else:
                realized += (lot.price - price) * take
            if take == lq:
                lots.popleft()
                entry_fees += lot.fee
                cost -= lot.qty * lot.price
            else:
                share = lot.fee * take / lq  # classification only, never enters the ledger
                lot.fee -= share
                entry_fees += share
                step = take if lot.qty > 0 else -take
                lot.qty -= step
                cost -= step * lot.price
            remaining -= take
        closing_fee = fee_quote
        if remaining:  # flipped through zero: the rest opens a position on the other side
            opening_fee = fee_quote * remaining / total
            closing_fee = fee_quote - opening_fee
            rest = remaining if signed > 0 else -remaining
            lots.append(_Lot(rest, price, opening_fee))
            cost += rest * price
        self.cost = cost
        self.qty = qty + signed
        self.avg = cost / self.qty if self.qty else None
        self.realized += realized
        return realized, realized - closing_fee - entry_fees


class _Strategy:
    __slots__ = ("fees", "losses", "realized", "trades", "wins")

    def __init__(self) -> None:
        self.trades = 0
        self.wins = 0
        self.losses = 0
        self.realized: dict[str, Decimal] = {}
        self.fees: dict[str, Decimal] = {}


def _add(book: dict[str, Decimal], ccy: str, amount: Decimal) -> None:
    book[ccy] = book.get(ccy, ZERO) + amount


def _amounts(book: Mapping[str, Decimal]) -> Amounts:
    return tuple(sorted(book.items()))

"""What the system knows about a tradable pair: precisions, minimums and fees.

Built from Kraken's REST ``AssetPairs`` (see ``protocol.kraken``) or the WS v2 ``instrument``
channel, or from configuration for backtests. Fees are fractions (``Decimal("0.0026")`` is
0.26 %), read from the exchange, never hard-coded in trading logic.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import ROUND_DOWN, Decimal

# 10**-d for the usual precisions: ``lot`` and ``tick`` sit on every order's hot path.
_UNIT = {d: Decimal(1).scaleb(-d) for d in range(0, 19)}


@dataclass(frozen=True, slots=True, kw_only=True)
class PairInfo:
    symbol: str  # WS v2 name, e.g. "BTC/USD"
    base: str  # "BTC"
    quote: str  # "USD"
    rest_name: str = ""  # Kraken's pair id, e.g. "XXBTZUSD"
    altname: str = ""  # e.g. "XBTUSD"
    price_decimals: int = 8
    lot_decimals: int = 8
    ordermin: Decimal = Decimal(0)
    costmin: Decimal = Decimal(0)
    fee_taker: Decimal = Decimal("0.0026")  # first tier of Kraken's schedule when unknown
    fee_maker: Decimal = Decimal("0.0016")

    @property
    def tick(self) -> Decimal:
        unit = _UNIT.get(self.price_decimals)
        return unit if unit is not None else Decimal(1).scaleb(-self.price_decimals)

    @property
    def lot(self) -> Decimal:
        unit = _UNIT.get(self.lot_decimals)
        return unit if unit is not None else Decimal(1).scaleb(-self.lot_decimals)

    def round_qty(self, qty: Decimal) -> Decimal:
        """Round a quantity down to the pair's lot precision (never up: no accidental size)."""
        unit = _UNIT.get(self.lot_decimals)
        if unit is None:
            unit = Decimal(1).scaleb(-self.lot_decimals)
        return qty.quantize(unit, rounding=ROUND_DOWN)

    def round_price(self, price: Decimal) -> Decimal:
        return price.quantize(self.tick)

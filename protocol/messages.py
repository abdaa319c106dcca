"""Inter-actor message types: the only things that travel on channels.

Every message is an immutable, keyword-only, slotted record (Nautilus "message integrity": a
component that needs a different message builds a new one). Prices, quantities, fees and money
are ``Decimal`` end to end; floats never appear here.

Time fields:

* ``ts_event_ns`` is the exchange's event time in UTC nanoseconds (0 when the source has none).
* ``ts_recv`` is the receiving process's ``trio.current_time()`` in seconds when the frame
  arrived. It is virtual in backtests and only meaningful as a difference inside one process;
  orders carry the ``ts_recv`` of the market event that caused them, so tick-to-order latency is
  ``trio.current_time() - order.ts_recv`` at submission.

The three families follow Nautilus: market data (``MarketEvent``), commands (``Signal``,
``OrderRequest``, ``CancelAllOrders``) and events (``OrderAccepted`` ... ``Fill``).
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass, field
from decimal import Decimal


class Side(enum.Enum):
    BUY = "buy"
    SELL = "sell"

    @property
    def sign(self) -> int:
        return 1 if self is Side.BUY else -1

    @property
    def opposite(self) -> Side:
        return Side.SELL if self is Side.BUY else Side.BUY


class OrderType(enum.Enum):
    MARKET = "market"
    LIMIT = "limit"


class OrderStatus(enum.Enum):
    PENDING = "pending"  # written ahead, not yet acknowledged by the broker
    OPEN = "open"  # accepted and resting (or working)
    PARTIALLY_FILLED = "partially_filled"
    FILLED = "filled"
    CANCELLED = "cancelled"
    REJECTED = "rejected"

    @property
    def is_terminal(self) -> bool:
        return self in (OrderStatus.FILLED, OrderStatus.CANCELLED, OrderStatus.REJECTED)


class Liquidity(enum.Enum):
    MAKER = "maker"
    TAKER = "taker"


# --------------------------------------------------------------------------- market data


@dataclass(frozen=True, slots=True)
class BookLevel:
    price: Decimal
    qty: Decimal


@dataclass(frozen=True, slots=True, kw_only=True)
class BookEvent:
    """A consistent view of the top of one symbol's book after a verified update.

    ``bids`` are best (highest) first, ``asks`` best (lowest) first. ``synthetic`` marks books
    made up around candle closes during candle replay, so nobody mistakes them for real depth.
    """

    symbol: str
    bids: tuple[BookLevel, ...]
    asks: tuple[BookLevel, ...]
    ts_event_ns: int = 0
    ts_recv: float = 0.0
    synthetic: bool = False

    @property
    def best_bid(self) -> BookLevel | None:
        return self.bids[0] if self.bids else None

    @property
    def best_ask(self) -> BookLevel | None:
        return self.asks[0] if self.asks else None

    @property
    def mid(self) -> Decimal | None:
        if not self.bids or not self.asks:
            return None
        return (self.bids[0].price + self.asks[0].price) / 2


@dataclass(frozen=True, slots=True, kw_only=True)
class TickerEvent:
    symbol: str
    bid: Decimal
    bid_qty: Decimal
    ask: Decimal
    ask_qty: Decimal
    last: Decimal
    ts_event_ns: int = 0
    ts_recv: float = 0.0


@dataclass(frozen=True, slots=True, kw_only=True)
class TradeEvent:
    symbol: str
    side: Side  # taker side
    price: Decimal
    qty: Decimal
    trade_id: int = 0
    ts_event_ns: int = 0
    ts_recv: float = 0.0


@dataclass(frozen=True, slots=True, kw_only=True)
class CandleEvent:
    """A closed candle. ``ts_event_ns`` is the candle's open time."""

    symbol: str
    interval_s: int
    open: Decimal
    high: Decimal
    low: Decimal
    close: Decimal
    volume: Decimal
    ts_event_ns: int = 0
    ts_recv: float = 0.0


MarketEvent = BookEvent | TickerEvent | TradeEvent | CandleEvent


# --------------------------------------------------------------------------- commands


@dataclass(frozen=True, slots=True, kw_only=True)
class Signal:
    """A strategy's wish to trade; risk turns it into an ``OrderRequest`` or rejects it.

    ``group_id`` ties the legs of one arbitrage together: risk approves or rejects the group as a
    whole, and the executor unwinds the residue of a group whose legs did not all fill.
    ``reduce_only`` marks exits (stop-loss, take-profit, strategy exit) that lower exposure and
    so pass even when new exposure would be refused (but never when the breaker is open).
    """

    strategy: str
    symbol: str
    side: Side
    qty: Decimal
    order_type: OrderType = OrderType.MARKET
    limit_price: Decimal | None = None
    reason: str = ""
    ts_recv: float = 0.0
    group_id: str | None = None
    group_size: int = 1
    reduce_only: bool = False
    reference_price: Decimal | None = None  # the price the strategy saw, for exposure checks


def signal_groups(signals: Sequence[Signal]) -> list[list[Signal]]:
    """Split one strategy call's signals into approval units: one per ``group_id``, else one
    each. Risk approves or rejects a unit as a whole (the legs of an arbitrage together)."""
    if len(signals) == 1:
        return [list(signals)]
    groups: dict[object, list[Signal]] = {}
    for i, signal in enumerate(signals):
        groups.setdefault(signal.group_id if signal.group_id is not None else i, []).append(signal)
    return list(groups.values())


@dataclass(frozen=True, slots=True, kw_only=True)
class OrderRequest:
    """An order risk has approved. ``client_order_id`` is unique and is the idempotency key."""

    client_order_id: str
    strategy: str
    symbol: str
    side: Side
    qty: Decimal
    order_type: OrderType = OrderType.MARKET
    limit_price: Decimal | None = None
    ts_recv: float = 0.0
    group_id: str | None = None
    group_size: int = 1
    reduce_only: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class CancelAllOrders:
    reason: str


# --------------------------------------------------------------------------- events


@dataclass(frozen=True, slots=True, kw_only=True)
class OrderAccepted:
    client_order_id: str
    exchange_order_id: str
    ts: float = 0.0


@dataclass(frozen=True, slots=True, kw_only=True)
class OrderRejected:
    client_order_id: str
    strategy: str
    symbol: str
    reason: str
    ts: float = 0.0


@dataclass(frozen=True, slots=True, kw_only=True)
class OrderCancelled:
    client_order_id: str
    reason: str
    ts: float = 0.0


@dataclass(frozen=True, slots=True, kw_only=True)
class Fill:
    """One execution. ``fill_id`` is unique (exchange trade id or paper fill id)."""

    fill_id: str
    client_order_id: str
    strategy: str
    symbol: str
    side: Side
    price: Decimal
    qty: Decimal
    fee: Decimal
    fee_currency: str
    liquidity: Liquidity = Liquidity.TAKER
    ts: float = 0.0
    ts_event_ns: int = 0
    # This fill completes its order: nothing more will fill (an order risk cut short of the
    # signal's quantity ends here too). False: more may come, or not known.
    order_done: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class RiskRejection:
    """A signal risk refused, with the rule that refused it (``reason`` is a metric label)."""

    strategy: str
    symbol: str
    reason: str
    detail: str = ""
    ts: float = 0.0


@dataclass(frozen=True, slots=True, kw_only=True)
class SystemEvent:
    """Restarts, escalations, breaker trips and resets, reconnects, checksum mismatches."""

    kind: str
    source: str
    detail: str = ""
    ts: float = 0.0
    attrs: dict[str, str] = field(default_factory=dict)


OrderEvent = OrderAccepted | OrderRejected | OrderCancelled | Fill

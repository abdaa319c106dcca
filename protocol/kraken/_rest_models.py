"""Typed results of Kraken REST calls and their parsers (PROTOCOL.md §1).

Responses are decoded with ``json.loads(..., parse_float=Decimal)``, and every price, volume,
cost, fee and balance becomes a ``Decimal`` built from Kraken's string (never through a float).
Timestamps with fractional seconds (``opentm``, trade ``time``) stay ``Decimal`` seconds too; ccxt's
fixtures show some of them as strings, so parsers accept both.

A field we cannot parse raises :class:`DecodeError` with the endpoint, never a bare
``KeyError``/``ValueError``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any, TypeVar

from ..messages import Side
from ._errors import DecodeError

__all__ = [
    "AddOrderResult",
    "CancelAfterResult",
    "CancelResult",
    "Candle",
    "ClosedOrdersPage",
    "DepthLevel",
    "OHLCSeries",
    "OrderBookSnapshot",
    "OrderInfo",
    "PublicTrade",
    "RecentTrades",
    "ServerTime",
    "SystemStatus",
    "Ticker",
    "TradeRecord",
    "TradesHistoryPage",
    "WebSocketsToken",
]

T = TypeVar("T")


def dec(value: Any) -> Decimal:
    """A Decimal from a Kraken number/string (``ValueError`` on garbage, floats refused)."""
    if isinstance(value, Decimal):
        return value
    if isinstance(value, bool | float):
        raise ValueError("float money")
    try:
        return Decimal(value if isinstance(value, int) else str(value))
    except InvalidOperation:
        raise ValueError("not a number") from None


def _opt_dec(value: Any) -> Decimal | None:
    return None if value in (None, "", "None") else dec(value)


def _side(value: Any) -> Side:
    return Side.BUY if str(value) in ("buy", "b") else Side.SELL


def guarded(endpoint: str, parse: Callable[[], T]) -> T:
    """Run ``parse`` and turn any shape error into :class:`DecodeError` for ``endpoint``."""
    try:
        return parse()
    except (KeyError, IndexError, TypeError, ValueError, AttributeError) as exc:
        raise DecodeError(
            f"unexpected {endpoint} result shape ({type(exc).__name__})",
            kind="schema",
            endpoint=endpoint,
        ) from None


# --------------------------------------------------------------------------- public


@dataclass(frozen=True, slots=True, kw_only=True)
class ServerTime:
    unixtime: int
    rfc1123: str


@dataclass(frozen=True, slots=True, kw_only=True)
class SystemStatus:
    status: str  # online | maintenance | cancel_only | post_only
    timestamp: str


@dataclass(frozen=True, slots=True, kw_only=True)
class Ticker:
    """``GET /0/public/Ticker`` for one pair ("today" starts 00:00 UTC)."""

    pair: str
    ask: Decimal
    ask_volume: Decimal
    bid: Decimal
    bid_volume: Decimal
    last: Decimal
    last_volume: Decimal
    volume_today: Decimal
    volume_24h: Decimal
    vwap_today: Decimal
    vwap_24h: Decimal
    trades_today: int
    trades_24h: int
    low_today: Decimal
    low_24h: Decimal
    high_today: Decimal
    high_24h: Decimal
    open: Decimal

    @classmethod
    def parse(cls, pair: str, d: Mapping[str, Any]) -> Ticker:
        return cls(
            pair=pair,
            ask=dec(d["a"][0]), ask_volume=dec(d["a"][2]),
            bid=dec(d["b"][0]), bid_volume=dec(d["b"][2]),
            last=dec(d["c"][0]), last_volume=dec(d["c"][1]),
            volume_today=dec(d["v"][0]), volume_24h=dec(d["v"][1]),
            vwap_today=dec(d["p"][0]), vwap_24h=dec(d["p"][1]),
            trades_today=int(d["t"][0]), trades_24h=int(d["t"][1]),
            low_today=dec(d["l"][0]), low_24h=dec(d["l"][1]),
            high_today=dec(d["h"][0]), high_24h=dec(d["h"][1]),
            open=dec(d["o"]),
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class DepthLevel:
    price: Decimal
    volume: Decimal
    timestamp: int


@dataclass(frozen=True, slots=True, kw_only=True)
class OrderBookSnapshot:
    """``GET /0/public/Depth``: asks best (lowest) first, bids best (highest) first."""

    pair: str
    asks: tuple[DepthLevel, ...]
    bids: tuple[DepthLevel, ...]

    @classmethod
    def parse(cls, pair: str, d: Mapping[str, Any]) -> OrderBookSnapshot:
        def side(rows: Any) -> tuple[DepthLevel, ...]:
            return tuple(DepthLevel(price=dec(r[0]), volume=dec(r[1]), timestamp=int(r[2]))
                         for r in rows)

        return cls(pair=pair, asks=side(d["asks"]), bids=side(d["bids"]))


@dataclass(frozen=True, slots=True, kw_only=True)
class Candle:
    time: int  # start of the interval, unix seconds
    open: Decimal
    high: Decimal
    low: Decimal
    close: Decimal
    vwap: Decimal
    volume: Decimal
    count: int


@dataclass(frozen=True, slots=True, kw_only=True)
class OHLCSeries:
    """``GET /0/public/OHLC``; the last candle is the current, uncommitted one."""

    pair: str
    candles: tuple[Candle, ...]
    last: int

    @classmethod
    def parse(cls, pair: str, rows: Any, last: Any) -> OHLCSeries:
        candles = tuple(
            Candle(time=int(r[0]), open=dec(r[1]), high=dec(r[2]), low=dec(r[3]),
                   close=dec(r[4]), vwap=dec(r[5]), volume=dec(r[6]), count=int(r[7]))
            for r in rows
        )
        return cls(pair=pair, candles=candles, last=int(last))


@dataclass(frozen=True, slots=True, kw_only=True)
class PublicTrade:
    price: Decimal
    volume: Decimal
    time: Decimal  # unix seconds with fraction
    side: Side
    order_type: str  # "market" | "limit"
    misc: str
    trade_id: int | None


@dataclass(frozen=True, slots=True, kw_only=True)
class RecentTrades:
    """``GET /0/public/Trades``; ``last`` is the id to pass as ``since`` next time."""

    pair: str
    trades: tuple[PublicTrade, ...]
    last: str

    @classmethod
    def parse(cls, pair: str, rows: Any, last: Any) -> RecentTrades:
        trades = tuple(
            PublicTrade(
                price=dec(r[0]), volume=dec(r[1]), time=dec(r[2]), side=_side(r[3]),
                order_type="market" if r[4] == "m" else "limit", misc=str(r[5]),
                trade_id=int(r[6]) if len(r) > 6 else None,
            )
            for r in rows
        )
        return cls(pair=pair, trades=trades, last=str(last))


# --------------------------------------------------------------------------- private


@dataclass(frozen=True, slots=True, kw_only=True)
class OrderInfo:
    """One order from OpenOrders / ClosedOrders / QueryOrders.

    ``price`` is the limit price from ``descr`` (0 for market orders); ``avg_price`` is the
    average execution price (Kraken's top-level ``price``).
    """

    txid: str
    status: str  # pending | open | closed | canceled | expired
    pair: str
    side: Side
    ordertype: str
    price: Decimal
    price2: Decimal
    volume: Decimal
    volume_exec: Decimal
    cost: Decimal
    fee: Decimal
    avg_price: Decimal
    userref: int | None
    cl_ord_id: str | None
    opentm: Decimal
    closetm: Decimal | None
    reason: str | None
    oflags: tuple[str, ...]
    misc: str
    trades: tuple[str, ...]
    description: str

    @classmethod
    def parse(cls, txid: str, d: Mapping[str, Any]) -> OrderInfo:
        descr = d.get("descr") or {}
        userref = d.get("userref")
        return cls(
            txid=txid,
            status=str(d["status"]),
            pair=str(descr.get("pair", "")),
            side=_side(descr.get("type", "")),
            ordertype=str(descr.get("ordertype", "")),
            price=dec(descr.get("price") or 0),
            price2=dec(descr.get("price2") or 0),
            volume=dec(d["vol"]),
            volume_exec=dec(d.get("vol_exec") or 0),
            cost=dec(d.get("cost") or 0),
            fee=dec(d.get("fee") or 0),
            avg_price=dec(d.get("price") or 0),
            userref=int(userref) if userref not in (None, "", "None") else None,
            cl_ord_id=str(d["cl_ord_id"]) if d.get("cl_ord_id") else None,
            opentm=dec(d.get("opentm") or 0),
            closetm=_opt_dec(d.get("closetm")),
            reason=str(d["reason"]) if d.get("reason") else None,
            oflags=tuple(f for f in str(d.get("oflags") or "").split(",") if f),
            misc=str(d.get("misc") or ""),
            trades=tuple(str(t) for t in d.get("trades") or ()),
            description=str(descr.get("order", "")),
        )


def parse_orders(d: Mapping[str, Any]) -> dict[str, OrderInfo]:
    return {txid: OrderInfo.parse(txid, o) for txid, o in d.items()}


@dataclass(frozen=True, slots=True, kw_only=True)
class ClosedOrdersPage:
    orders: Mapping[str, OrderInfo]
    count: int  # total matching, for paging with ``ofs``


@dataclass(frozen=True, slots=True, kw_only=True)
class TradeRecord:
    """One of the account's trades (TradesHistory)."""

    txid: str
    ordertxid: str
    postxid: str
    pair: str
    time: Decimal
    side: Side
    ordertype: str
    price: Decimal
    cost: Decimal
    fee: Decimal
    volume: Decimal
    margin: Decimal
    misc: str
    trade_id: int | None
    maker: bool | None

    @classmethod
    def parse(cls, txid: str, d: Mapping[str, Any]) -> TradeRecord:
        return cls(
            txid=txid, ordertxid=str(d.get("ordertxid", "")), postxid=str(d.get("postxid", "")),
            pair=str(d["pair"]), time=dec(d["time"]), side=_side(d["type"]),
            ordertype=str(d.get("ordertype", "")), price=dec(d["price"]), cost=dec(d["cost"]),
            fee=dec(d["fee"]), volume=dec(d["vol"]), margin=dec(d.get("margin") or 0),
            misc=str(d.get("misc") or ""),
            trade_id=int(d["trade_id"]) if d.get("trade_id") is not None else None,
            maker=bool(d["maker"]) if "maker" in d else None,
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class TradesHistoryPage:
    trades: Mapping[str, TradeRecord]
    count: int


@dataclass(frozen=True, slots=True, kw_only=True)
class AddOrderResult:
    """AddOrder's answer.

    ``recovered`` is true when the response was lost and the order was found afterwards by its
    ``cl_ord_id`` (so ``description`` is the order's, not AddOrder's). ``validated`` is true for
    ``validate=True`` calls, which create nothing (``txid`` may be empty).
    """

    txid: tuple[str, ...]
    description: str
    close: str = ""
    cl_ord_id: str | None = None
    validated: bool = False
    recovered: bool = False

    @classmethod
    def parse(cls, d: Mapping[str, Any], *, cl_ord_id: str | None, validated: bool
              ) -> AddOrderResult:
        descr = d.get("descr") or {}
        return cls(
            txid=tuple(str(t) for t in d.get("txid") or ()),
            description=str(descr.get("order", "")),
            close=str(descr.get("close", "") or ""),
            cl_ord_id=cl_ord_id,
            validated=validated,
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class CancelResult:
    count: int
    pending: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class CancelAfterResult:
    current_time: str  # RFC 3339, Kraken's clock
    trigger_time: str  # RFC 3339; "0" style values when disabled


@dataclass(frozen=True, slots=True, kw_only=True)
class WebSocketsToken:
    """A WS v2 auth token; ``repr`` hides it (it grants account access for ``expires`` s)."""

    token: str = field(repr=False)
    expires: int

"""Kraken WebSocket v2 codec: raw frames in, typed frames out; requests out as exact JSON.

Decoding rules (``shared/kraken/PROTOCOL.md`` §5-§8):

* Prices and quantities are decoded as ``Decimal`` and never pass through ``float``: JSON
  numbers are parsed with ``parse_float=Decimal`` (or by msgspec straight from the number's
  text, below) and strings with ``Decimal(text)``. A float that reaches a money field (e.g. a
  pre-parsed object built with plain ``json.loads``) is refused as ``bad_field`` rather than
  silently rounded.
* Big integers (v2 ``connection_id`` 13834774380200032777 > 2**63) stay exact Python ints.
* RFC3339 timestamps with up to 9 fractional digits become integer UTC nanoseconds.
* Anything we cannot understand raises ``DecodeError`` with a short ``kind`` label, never a
  bare ``KeyError``/``TypeError``. Kinds: ``invalid_json``, ``bad_shape`` (not an object, or
  neither ``channel`` nor ``method``), ``unknown_channel``, ``unknown_event`` (v1),
  ``missing_field``, ``bad_field``.

Market data decodes straight into ``protocol.messages`` events (``TickerEvent``,
``TradeEvent``, ``CandleEvent``); book messages become ``BookFrame`` (the deltas the
``OrderBook`` applies), not ``BookEvent`` (the consistent view the book publishes).

Layout: primitives (``loads``, field readers, RFC3339, ``dumps``) live in ``_codec_base``,
the private channels (``ExecutionReport``, ``BalanceUpdate``) in ``_codec_private``, the
legacy v1 decoder (recorded data) in ``_codec_v1``; the names tests and callers use are
re-exported here.

Speed (the feed decodes every frame; bench/bench_ws.py, bench/bench_book.py): the hot
channels (``book``, ``ticker``, ``trade``) first go through a typed msgspec decoder (see
``_decode_fast``), which parses and validates in C and builds ``Decimal``s from the numbers'
text, exactly as ``parse_float=Decimal`` does (0.5660 stays ``Decimal('0.5660')``). That path
accepts a subset of what the generic decoder accepts and yields equal frames; anything it does
not accept (other channels, method responses, malformed frames) goes through the generic
decoder, which alone decides the ``DecodeError`` kind. So a malformed hot frame costs two
parses, a good one about half of one.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from decimal import Decimal
from types import MappingProxyType
from typing import Any, Literal

import msgspec

from protocol.kraken._codec_base import _CACHE_MAX as _CACHE_MAX
from protocol.kraken._codec_base import _HOUR_EPOCH as _HOUR_EPOCH
from protocol.kraken._codec_base import _SECOND_EPOCH as _SECOND_EPOCH
from protocol.kraken._codec_base import (
    _STRAY,
    _data_items,
    _fail,
    _guarded,
    _int,
    _list,
    _opt_dec,
    _opt_int,
    _opt_str,
    _opt_ts,
    _side,
    _snapshot_flag,
    _str,
    _translate,
)
from protocol.kraken._codec_base import _parse_rfc3339_full as _parse_rfc3339_full
from protocol.kraken._codec_base import dumps as dumps
from protocol.kraken._codec_base import loads as loads
from protocol.kraken._codec_base import parse_rfc3339_ns as parse_rfc3339_ns
from protocol.kraken._codec_base import to_decimal as to_decimal
from protocol.kraken._codec_private import BalanceUpdate as BalanceUpdate
from protocol.kraken._codec_private import ExecutionReport as ExecutionReport
from protocol.kraken._codec_private import FeeAmount as FeeAmount
from protocol.kraken._codec_private import decode_balances, decode_executions
from protocol.kraken._errors import DecodeError
from protocol.messages import (
    BookLevel,
    CandleEvent,
    Side,
    TickerEvent,
    TradeEvent,
)

# --------------------------------------------------------------------------- frame types


@dataclass(frozen=True, slots=True, kw_only=True)
class BookFrame:
    """One symbol's book message: a snapshot or a batch of deltas.

    ``bids``/``asks`` keep message order (PROTOCOL.md §6: the same price may appear twice and
    must be applied in order); ``qty == 0`` deletes a level. ``checksum`` is the CRC32 Kraken
    sent with this message (v1 sends none on snapshots).
    """

    symbol: str
    is_snapshot: bool
    bids: tuple[BookLevel, ...]
    asks: tuple[BookLevel, ...]
    checksum: int | None
    ts_event_ns: int
    ts_recv: float


@dataclass(frozen=True, slots=True, kw_only=True)
class InstrumentPair:
    """A pair's precisions and minimums from the v2 ``instrument`` channel."""

    symbol: str
    base: str
    quote: str
    price_precision: int
    qty_precision: int
    price_increment: Decimal
    qty_increment: Decimal
    qty_min: Decimal
    cost_min: Decimal | None
    status: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class InstrumentFrame:
    """The ``instrument`` channel. Asset records are not decoded (nothing uses them yet)."""

    pairs: tuple[InstrumentPair, ...]
    ts_recv: float
    is_snapshot: bool = True


@dataclass(frozen=True, slots=True, kw_only=True)
class Heartbeat:
    ts_recv: float


@dataclass(frozen=True, slots=True, kw_only=True)
class StatusFrame:
    """Engine status (v2 ``status`` channel, v1 ``systemStatus`` event)."""

    system: str
    api_version: str
    connection_id: int
    ts_recv: float
    version: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class MethodResponse:
    """An ack: subscribe/unsubscribe (one per symbol), pong, add_order, cancel_*, ...

    ``result`` is read-only. ``symbol`` comes from ``result.symbol`` or, on subscribe errors,
    the top-level ``symbol`` Kraken adds, so a session can match the ack to its request.
    """

    method: str
    req_id: int | None
    success: bool
    error: str | None
    result: Mapping[str, Any]
    ts_recv: float
    symbol: str | None = None
    warnings: tuple[str, ...] = ()


Frame = (
    BookFrame
    | InstrumentFrame
    | Heartbeat
    | StatusFrame
    | MethodResponse
    | TickerEvent
    | TradeEvent
    | CandleEvent
    | ExecutionReport
    | BalanceUpdate
)

# --------------------------------------------------------------------------- v2 channels


_ZERO = Decimal(0)


def _levels_v2(raw: object, name: str) -> tuple[BookLevel, ...]:
    if raw is None:
        return ()
    if type(raw) is not list:
        _fail(f"{name} is not an array")
    out = []
    for lvl in raw:
        price = lvl["price"]
        qty = lvl["qty"]
        # Fast path: parse_float already made Decimals; ints/strings go through to_decimal.
        if type(price) is not Decimal or not price.is_finite():
            price = to_decimal(price, "price")
        if type(qty) is not Decimal or not qty.is_finite():
            qty = to_decimal(qty, "qty")
        if price <= _ZERO or qty < _ZERO:  # Decimal to Decimal: no int conversion per compare
            _fail(f"{name} level out of range")
        out.append(BookLevel(price, qty))
    return tuple(out)


def _book(msg: Mapping[str, Any], ts_recv: float) -> tuple[Frame, ...]:
    # The hot path of the feed: the same checks as the generic helpers, inlined.
    kind = msg.get("type")
    is_snapshot = kind == "snapshot"
    if not is_snapshot and kind != "update":
        _fail(f"bad message type {kind!r:.20}")
    items = msg["data"]
    if type(items) is not list:
        _fail("data is not an array")
    frames: list[Frame] = []
    for item in items:
        if type(item) is not dict:
            _fail("data entry is not an object")
        checksum = item.get("checksum")
        if checksum is not None and (type(checksum) is not int or not 0 <= checksum < 2**32):
            _fail("checksum is not a uint32")
        symbol = item["symbol"]
        if type(symbol) is not str:
            _fail("symbol is not a string")
        ts = item.get("timestamp")
        bids = item.get("bids")
        asks = item.get("asks")
        frames.append(
            BookFrame(
                symbol=symbol,
                is_snapshot=is_snapshot,
                # An update usually leaves one side empty: skip the call for it.
                bids=() if bids is None or bids == [] else _levels_v2(bids, "bids"),
                asks=() if asks is None or asks == [] else _levels_v2(asks, "asks"),
                checksum=checksum,
                ts_event_ns=0 if ts is None else parse_rfc3339_ns(ts),
                ts_recv=ts_recv,
            )
        )
    return tuple(frames)


def _ticker(msg: Mapping[str, Any], ts_recv: float) -> tuple[Frame, ...]:
    _snapshot_flag(msg)
    return tuple(
        TickerEvent(
            symbol=_str(item, "symbol"),
            bid=to_decimal(item["bid"], "bid"),
            bid_qty=to_decimal(item["bid_qty"], "bid_qty"),
            ask=to_decimal(item["ask"], "ask"),
            ask_qty=to_decimal(item["ask_qty"], "ask_qty"),
            last=to_decimal(item["last"], "last"),
            ts_event_ns=_opt_ts(item),
            ts_recv=ts_recv,
        )
        for item in _data_items(msg)
    )


def _trade(msg: Mapping[str, Any], ts_recv: float) -> tuple[Frame, ...]:
    _snapshot_flag(msg)
    return tuple(
        TradeEvent(
            symbol=_str(item, "symbol"),
            side=_side(item["side"]),
            price=to_decimal(item["price"], "price"),
            qty=to_decimal(item["qty"], "qty"),
            trade_id=_int(item.get("trade_id", 0), "trade_id"),
            ts_event_ns=_opt_ts(item),
            ts_recv=ts_recv,
        )
        for item in _data_items(msg)
    )


def _ohlc(msg: Mapping[str, Any], ts_recv: float) -> tuple[Frame, ...]:
    # Kraken streams the candle in progress: an update with the same interval_begin replaces
    # the previous one, and the candle is closed once a later interval_begin arrives.
    _snapshot_flag(msg)
    return tuple(
        CandleEvent(
            symbol=_str(item, "symbol"),
            interval_s=_int(item["interval"], "interval") * 60,
            open=to_decimal(item["open"], "open"),
            high=to_decimal(item["high"], "high"),
            low=to_decimal(item["low"], "low"),
            close=to_decimal(item["close"], "close"),
            volume=to_decimal(item["volume"], "volume"),
            ts_event_ns=parse_rfc3339_ns(item["interval_begin"]),
            ts_recv=ts_recv,
        )
        for item in _data_items(msg)
    )


def _instrument(msg: Mapping[str, Any], ts_recv: float) -> tuple[Frame, ...]:
    is_snapshot = _snapshot_flag(msg)
    data = msg["data"]
    if type(data) is not dict:
        _fail("instrument data is not an object")
    pairs = []
    for item in _list(data.get("pairs", []), "pairs"):
        pairs.append(
            InstrumentPair(
                symbol=_str(item, "symbol"),
                base=_str(item, "base"),
                quote=_str(item, "quote"),
                price_precision=_int(item["price_precision"], "price_precision"),
                qty_precision=_int(item["qty_precision"], "qty_precision"),
                price_increment=to_decimal(item["price_increment"], "price_increment"),
                qty_increment=to_decimal(item["qty_increment"], "qty_increment"),
                qty_min=to_decimal(item["qty_min"], "qty_min"),
                cost_min=_opt_dec(item, "cost_min"),
                status=_opt_str(item, "status") or "",
            )
        )
    return (InstrumentFrame(pairs=tuple(pairs), ts_recv=ts_recv, is_snapshot=is_snapshot),)


def _heartbeat(msg: Mapping[str, Any], ts_recv: float) -> tuple[Frame, ...]:
    return (Heartbeat(ts_recv=ts_recv),)


def _status(msg: Mapping[str, Any], ts_recv: float) -> tuple[Frame, ...]:
    return tuple(
        StatusFrame(
            system=_str(item, "system"),
            api_version=_str(item, "api_version"),
            connection_id=_int(item["connection_id"], "connection_id"),
            version=_opt_str(item, "version") or "",
            ts_recv=ts_recv,
        )
        for item in _data_items(msg)
    )

_CHANNELS: dict[str, Callable[[Mapping[str, Any], float], tuple[Frame, ...]]] = {
    "book": _book,
    "ticker": _ticker,
    "trade": _trade,
    "ohlc": _ohlc,
    "instrument": _instrument,
    "heartbeat": _heartbeat,
    "status": _status,
    "executions": decode_executions,
    "balances": decode_balances,
}


def _method_response(msg: Mapping[str, Any], ts_recv: float) -> MethodResponse:
    result = msg.get("result", {})
    if type(result) is not dict:
        _fail("result is not an object")
    success = msg.get("success", True)  # pong carries no success flag
    if type(success) is not bool:
        _fail("success is not a boolean")
    error = _opt_str(msg, "error")
    symbol = result.get("symbol", msg.get("symbol"))
    warnings = result.get("warnings", [])
    if not all(type(w) is str for w in _list(warnings, "warnings")):
        _fail("warnings are not strings")
    return MethodResponse(
        method=_str(msg, "method"),
        req_id=_opt_int(msg, "req_id"),
        success=success and error is None,
        error=error,
        result=MappingProxyType(result),
        ts_recv=ts_recv,
        symbol=symbol if type(symbol) is str else None,
        warnings=tuple(warnings),
    )



# --------------------------------------------------------------------------- msgspec fast path
# Typed shapes of the hot channels. msgspec checks field types (an int is not a bool, a str is
# not a number) and builds each ``BookLevel`` directly; unknown fields are ignored, as the
# generic decoder ignores them. The extra rules it cannot express (finite, positive, uint32)
# are checked in ``_decode_fast``.


class _BookItem(msgspec.Struct, gc=False):
    symbol: str
    bids: tuple[BookLevel, ...] | None = None
    asks: tuple[BookLevel, ...] | None = None
    checksum: int | None = None
    timestamp: str | None = None


class _BookMsg(msgspec.Struct, tag_field="channel", tag="book"):
    type: Literal["snapshot", "update"]
    data: list[_BookItem]


class _TickerItem(msgspec.Struct, gc=False):
    symbol: str
    bid: Decimal
    bid_qty: Decimal
    ask: Decimal
    ask_qty: Decimal
    last: Decimal
    timestamp: str | None = None


class _TickerMsg(msgspec.Struct, tag_field="channel", tag="ticker"):
    type: Literal["snapshot", "update"]
    data: list[_TickerItem]


class _TradeItem(msgspec.Struct, gc=False):
    symbol: str
    side: Literal["buy", "sell"]
    price: Decimal
    qty: Decimal
    trade_id: int = 0
    timestamp: str | None = None


class _TradeMsg(msgspec.Struct, tag_field="channel", tag="trade"):
    type: Literal["snapshot", "update"]
    data: list[_TradeItem]


_FAST = msgspec.json.Decoder(_BookMsg | _TickerMsg | _TradeMsg)


def _book_frame_setters() -> tuple[Callable[[BookFrame, Any], None], ...] | None:
    names = ("symbol", "is_snapshot", "bids", "asks", "checksum", "ts_event_ns", "ts_recv")
    if tuple(f.name for f in fields(BookFrame)) != names or hasattr(BookFrame, "__post_init__"):
        return None  # the class changed: use its constructor
    return tuple(getattr(BookFrame, name).__set__ for name in names)


_BF_SETTERS = _book_frame_setters()


def _new_book_frame(
    symbol: str, is_snapshot: bool, bids: tuple[BookLevel, ...], asks: tuple[BookLevel, ...],
    checksum: int | None, ts_event_ns: int, ts_recv: float,
) -> BookFrame:
    """``BookFrame(...)`` filled through its slot descriptors, for the hot path.

    A frozen dataclass's ``__init__`` goes through ``object.__setattr__`` per field, which is
    about 60% of the cost of building one (1.5 us of ~2.5 us here); writing the slots directly
    builds the same object (tests compare both ways). Falls back to the constructor if
    ``BookFrame`` ever gains a field or a ``__post_init__``.
    """
    setters = _BF_SETTERS
    if setters is None:
        return BookFrame(symbol=symbol, is_snapshot=is_snapshot, bids=bids, asks=asks,
                         checksum=checksum, ts_event_ns=ts_event_ns, ts_recv=ts_recv)
    s0, s1, s2, s3, s4, s5, s6 = setters
    frame: BookFrame = _object_new(BookFrame)
    s0(frame, symbol)
    s1(frame, is_snapshot)
    s2(frame, bids)
    s3(frame, asks)
    s4(frame, checksum)
    s5(frame, ts_event_ns)
    s6(frame, ts_recv)
    return frame


_object_new = object.__new__
_fast_decode = _FAST.decode
_SIDES = {"buy": Side.BUY, "sell": Side.SELL}
_UINT32_MAX = 2**32 - 1


class _NotFast(Exception):
    """Internal: the fast path does not take this frame; the generic decoder decides."""


def _fast_levels(levels: tuple[BookLevel, ...] | None) -> tuple[BookLevel, ...]:
    if not levels:
        return ()
    for lvl in levels:
        price, qty = lvl.price, lvl.qty
        # A string field may hold "NaN"/"Infinity"; is_finite first, since comparing a NaN
        # Decimal raises.
        if not (price.is_finite() and qty.is_finite()) or price <= _ZERO or qty < _ZERO:
            raise _NotFast
    return levels


def _finite(*values: Decimal) -> None:
    for value in values:
        if not value.is_finite():
            raise _NotFast


def _ts(text: str | None) -> int:
    if text is None:
        return 0
    try:
        return parse_rfc3339_ns(text)
    except DecodeError:
        raise _NotFast from None


def _decode_fast(raw: str | bytes, ts_recv: float) -> tuple[Frame, ...] | None:
    """The hot channels through msgspec; ``None`` when the generic decoder must decide.

    Returns frames equal to what the generic decoder returns for the same text, or ``None``
    for anything it would refuse or this path does not cover.
    """
    try:
        msg = _fast_decode(raw)
    except Exception:
        # Any refusal (malformed JSON, another channel, a field of the wrong type, a bad
        # argument type) only means "not here": the generic decoder sees the same frame and
        # raises the typed DecodeError, so no error text or kind depends on msgspec.
        return None
    try:
        cls = type(msg)
        if cls is _BookMsg:
            is_snapshot = msg.type == "snapshot"
            frames: list[Frame] = []
            for item in msg.data:
                checksum = item.checksum
                if checksum is not None and not 0 <= checksum <= _UINT32_MAX:
                    return None
                frames.append(
                    _new_book_frame(item.symbol, is_snapshot, _fast_levels(item.bids),
                                    _fast_levels(item.asks), checksum, _ts(item.timestamp),
                                    ts_recv)
                )
            return tuple(frames)
        if cls is _TickerMsg:
            tickers: list[Frame] = []
            for t in msg.data:
                _finite(t.bid, t.bid_qty, t.ask, t.ask_qty, t.last)
                tickers.append(
                    TickerEvent(symbol=t.symbol, bid=t.bid, bid_qty=t.bid_qty, ask=t.ask,
                                ask_qty=t.ask_qty, last=t.last, ts_event_ns=_ts(t.timestamp),
                                ts_recv=ts_recv)
                )
            return tuple(tickers)
        trades: list[Frame] = []
        for tr in msg.data:
            _finite(tr.price, tr.qty)
            trades.append(
                TradeEvent(symbol=tr.symbol, side=_SIDES[tr.side], price=tr.price, qty=tr.qty,
                           trade_id=tr.trade_id, ts_event_ns=_ts(tr.timestamp),
                           ts_recv=ts_recv)
            )
        return tuple(trades)
    except _NotFast:
        return None


# --------------------------------------------------------------------------- entry points


def decode_v2(raw: str | bytes, *, ts_recv: float) -> tuple[Frame, ...]:
    """Decode one WS v2 frame into typed frames (one per ``data`` entry for lists).

    Args:
        raw: the frame text as received.
        ts_recv: receive time (``trio.current_time()``) stamped on every frame.

    Raises:
        DecodeError: malformed JSON, unknown channel, missing or ill-typed field (``.kind``).
    """
    fast = _decode_fast(raw, ts_recv)
    if fast is not None:
        return fast
    return decode_v2_generic(raw, ts_recv=ts_recv)


def decode_v2_generic(raw: str | bytes, *, ts_recv: float) -> tuple[Frame, ...]:
    """``decode_v2`` without the msgspec fast path (the reference the fast path must match)."""
    msg = loads(raw)
    if type(msg) is not dict:
        _fail("frame is not a JSON object", "bad_shape")
    channel = msg.get("channel")
    if channel is not None:
        handler = _CHANNELS.get(channel) if type(channel) is str else None
        if handler is None:
            _fail(f"unknown channel {channel!r:.40}", "unknown_channel")
        try:  # _guarded inlined: one closure and call less per frame
            return handler(msg, ts_recv)
        except DecodeError:
            raise
        except (KeyError, *_STRAY) as exc:
            raise _translate(exc, f"channel {channel}") from exc
    if "method" in msg:
        return _guarded(lambda: (_method_response(msg, ts_recv),), "method response")
    _fail("frame has neither channel nor method", "bad_shape")


def encode_request(
    method: str, params: Mapping[str, Any] | None = None, req_id: int | None = None
) -> str:
    """A v2 request ``{"method", "params"?, "req_id"?}`` as compact JSON text.

    Decimals are written as exact JSON numbers; floats raise ``TypeError`` (never on the wire).
    """
    body: dict[str, object] = {"method": method}
    if params is not None:
        body["params"] = params
    if req_id is not None:
        body["req_id"] = req_id
    return dumps(body)

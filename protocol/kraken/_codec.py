"""Kraken WebSocket codec: raw frames in, typed frames out (v2, and v1 for recorded data).

Decoding rules (``shared/kraken/PROTOCOL.md`` §5-§8):

* Prices and quantities are decoded as ``Decimal`` and never pass through ``float``: JSON
  numbers are parsed with ``parse_float=Decimal`` and strings with ``Decimal(text)``. A float
  that reaches a money field (e.g. a pre-parsed object built with plain ``json.loads``) is
  refused as ``bad_field`` rather than silently rounded.
* Big integers (v2 ``connection_id`` 13834774380200032777 > 2**63) stay exact Python ints.
* RFC3339 timestamps with up to 9 fractional digits become integer UTC nanoseconds.
* Anything we cannot understand raises ``DecodeError`` with a short ``kind`` label, never a
  bare ``KeyError``/``TypeError``. Kinds: ``invalid_json``, ``bad_shape`` (not an object, or
  neither ``channel`` nor ``method``), ``unknown_channel``, ``unknown_event`` (v1),
  ``missing_field``, ``bad_field``.

Market data decodes straight into ``protocol.messages`` events (``TickerEvent``,
``TradeEvent``, ``CandleEvent``); book messages become ``BookFrame`` (the deltas the
``OrderBook`` applies), not ``BookEvent`` (the consistent view the book publishes).

Module size: this module is over the 600-line guideline because it holds the frame types, the
v2 decoders and the legacy v1 decoder together; the v1 part (bottom) is the natural split
(``_codec_v1.py``) once the file list allows it.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from enum import Enum
from types import MappingProxyType
from typing import Any, NoReturn

from protocol.kraken._errors import DecodeError
from protocol.messages import (
    BookLevel,
    CandleEvent,
    Liquidity,
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


@dataclass(frozen=True, slots=True, kw_only=True)
class FeeAmount:
    asset: str
    qty: Decimal


@dataclass(frozen=True, slots=True, kw_only=True)
class ExecutionReport:
    """One entry of the private ``executions`` channel.

    Kraken sends only the fields that changed (a ``new`` report carries a handful), so all but
    ``exec_type`` and ``order_id`` are optional. ``liquidity`` is set on trade reports.
    """

    exec_type: str
    order_id: str
    ts_recv: float
    ts_event_ns: int = 0
    is_snapshot: bool = False
    sequence: int | None = None
    order_status: str | None = None
    cl_ord_id: str | None = None
    order_userref: int | None = None
    symbol: str | None = None
    side: Side | None = None
    order_type: str | None = None
    order_qty: Decimal | None = None
    limit_price: Decimal | None = None
    exec_id: str | None = None
    trade_id: int | None = None
    last_qty: Decimal | None = None
    last_price: Decimal | None = None
    liquidity: Liquidity | None = None
    cost: Decimal | None = None
    cum_qty: Decimal | None = None
    cum_cost: Decimal | None = None
    avg_price: Decimal | None = None
    fees: tuple[FeeAmount, ...] = ()
    fee_usd_equiv: Decimal | None = None
    reason: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class BalanceUpdate:
    """One entry of the private ``balances`` channel.

    Snapshot entries give an asset's total ``balance`` (and its ``wallets``); update entries are
    ledger transactions with ``amount``/``fee`` and the wallet's ``balance`` afterwards.
    """

    asset: str
    balance: Decimal
    ts_recv: float
    is_snapshot: bool = False
    sequence: int | None = None
    ts_event_ns: int = 0
    amount: Decimal | None = None
    fee: Decimal | None = None
    ledger_id: str | None = None
    ref_id: str | None = None
    ledger_type: str | None = None
    wallet_type: str | None = None
    wallet_id: str | None = None
    wallets: tuple[tuple[str, str, Decimal], ...] = ()  # (type, id, balance) on snapshots


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

# --------------------------------------------------------------------------- primitives


def _fail(message: str, kind: str = "bad_field") -> NoReturn:
    raise DecodeError(message, kind=kind)


def _reject_constant(name: str) -> NoReturn:
    # json accepts NaN/Infinity by default and would hand us floats.
    raise ValueError(f"non-finite JSON constant {name}")


_JSON = json.JSONDecoder(parse_float=Decimal, parse_constant=_reject_constant)


def loads(raw: str | bytes | bytearray) -> Any:
    """Parse one JSON frame with Decimal floats and exact ints; ``DecodeError`` on junk."""
    try:
        text = raw.decode("utf-8") if isinstance(raw, bytes | bytearray) else raw
        if not isinstance(text, str):
            _fail(f"frame is {type(raw).__name__}, not text", "invalid_json")
        return _JSON.decode(text)
    except DecodeError:
        raise
    except (ValueError, RecursionError) as exc:  # JSONDecodeError/UnicodeDecodeError are ValueError
        raise DecodeError(f"invalid JSON frame: {exc}", kind="invalid_json") from exc


def to_decimal(value: object, name: str = "value") -> Decimal:
    """A finite Decimal from a JSON number (already Decimal/int) or a numeric string."""
    t = type(value)
    if t is Decimal:
        d: Decimal = value  # type: ignore[assignment]
    elif t is str or t is int:
        d = Decimal(value)  # type: ignore[arg-type]
    else:
        _fail(f"{name} is {t.__name__}, expected a decimal number")
    if not d.is_finite():
        _fail(f"{name} is not finite")
    return d


def _opt_dec(item: Mapping[str, Any], key: str) -> Decimal | None:
    value = item.get(key)
    return None if value is None else to_decimal(value, key)


def _str(item: Mapping[str, Any], key: str) -> str:
    value = item[key]
    if type(value) is not str:
        _fail(f"{key} is not a string")
    return value


def _opt_str(item: Mapping[str, Any], key: str) -> str | None:
    value = item.get(key)
    if value is not None and type(value) is not str:
        _fail(f"{key} is not a string")
    return value


def _int(value: object, name: str) -> int:
    if type(value) is not int:
        _fail(f"{name} is not an integer")
    return value


def _opt_int(item: Mapping[str, Any], key: str) -> int | None:
    value = item.get(key)
    return None if value is None else _int(value, key)


_RFC3339 = re.compile(
    r"(\d{4})-(\d\d)-(\d\d)[Tt ](\d\d):(\d\d):(\d\d)(?:\.(\d{1,9}))?(Z|z|[+-]\d\d:\d\d)\Z"
)
_HOUR_EPOCH: dict[str, int] = {}


def parse_rfc3339_ns(text: object) -> int:
    """RFC3339 (``2023-10-04T16:26:30.524394914Z``) to integer UTC nanoseconds, exactly."""
    if type(text) is not str or (m := _RFC3339.match(text)) is None:
        _fail(f"bad RFC3339 timestamp {text!r:.40}")
    # Messages arrive in time order, so the date-and-hour prefix repeats: cache its epoch.
    prefix = text[:13]
    hour = _HOUR_EPOCH.get(prefix)
    if hour is None:
        try:
            dt = datetime(int(m[1]), int(m[2]), int(m[3]), int(m[4]), tzinfo=UTC)
        except ValueError as exc:
            raise DecodeError(f"bad RFC3339 timestamp {text!r:.40}", kind="bad_field") from exc
        hour = int(dt.timestamp())
        if len(_HOUR_EPOCH) > 4096:
            _HOUR_EPOCH.clear()
        _HOUR_EPOCH[prefix] = hour
    minute, second = int(m[5]), int(m[6])
    if minute > 59 or second > 60:
        _fail(f"bad RFC3339 timestamp {text!r:.40}")
    offset = 0
    zone = m[8]
    if zone not in ("Z", "z"):
        offset = (int(zone[1:3]) * 60 + int(zone[4:6])) * 60
        if zone[0] == "-":
            offset = -offset
    frac = m[7]
    frac_ns = int(frac.ljust(9, "0")) if frac else 0
    return (hour + minute * 60 + second - offset) * 1_000_000_000 + frac_ns


_EPOCH_DECIMAL = re.compile(r"(\d{1,12})(?:\.(\d{1,9}))?\Z")


def parse_epoch_ns(text: object) -> int:
    """v1 epoch seconds text (``"1617666423.606671"``) to integer nanoseconds, exactly."""
    if type(text) is not str or (m := _EPOCH_DECIMAL.match(text)) is None:
        _fail(f"bad epoch timestamp {text!r:.40}")
    frac = m[2]
    return int(m[1]) * 1_000_000_000 + (int(frac.ljust(9, "0")) if frac else 0)


def _opt_ts(item: Mapping[str, Any], key: str = "timestamp") -> int:
    value = item.get(key)
    return 0 if value is None else parse_rfc3339_ns(value)


def _side(value: object) -> Side:
    if value == "buy":
        return Side.BUY
    if value == "sell":
        return Side.SELL
    _fail(f"bad side {value!r:.20}")


def _snapshot_flag(msg: Mapping[str, Any]) -> bool:
    kind = msg.get("type")
    if kind == "snapshot":
        return True
    if kind == "update":
        return False
    _fail(f"bad message type {kind!r:.20}")


def _list(value: object, name: str) -> list[Any]:
    if type(value) is not list:
        _fail(f"{name} is not an array")
    return value


def _data_items(msg: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    items = _list(msg["data"], "data")
    for item in items:
        if type(item) is not dict:
            _fail("data entry is not an object")
    return items


# --------------------------------------------------------------------------- v2 channels


def _levels_v2(raw: object, name: str) -> tuple[BookLevel, ...]:
    if raw is None:
        return ()
    out = []
    for lvl in _list(raw, name):
        price = lvl["price"]
        qty = lvl["qty"]
        # Fast path: parse_float already made Decimals; ints/strings go through to_decimal.
        if type(price) is not Decimal or not price.is_finite():
            price = to_decimal(price, "price")
        if type(qty) is not Decimal or not qty.is_finite():
            qty = to_decimal(qty, "qty")
        if price <= 0 or qty < 0:
            _fail(f"{name} level out of range")
        out.append(BookLevel(price, qty))
    return tuple(out)


def _book(msg: Mapping[str, Any], ts_recv: float) -> tuple[Frame, ...]:
    is_snapshot = _snapshot_flag(msg)
    frames: list[Frame] = []
    for item in _data_items(msg):
        checksum = item.get("checksum")
        if checksum is not None and (type(checksum) is not int or not 0 <= checksum < 2**32):
            _fail("checksum is not a uint32")
        frames.append(
            BookFrame(
                symbol=_str(item, "symbol"),
                is_snapshot=is_snapshot,
                bids=_levels_v2(item.get("bids"), "bids"),
                asks=_levels_v2(item.get("asks"), "asks"),
                checksum=checksum,
                ts_event_ns=_opt_ts(item),
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


def _fees(raw: object) -> tuple[FeeAmount, ...]:
    if raw is None:
        return ()
    return tuple(
        FeeAmount(asset=_str(fee, "asset"), qty=to_decimal(fee["qty"], "fee qty"))
        for fee in _list(raw, "fees")
    )


_LIQUIDITY = {"m": Liquidity.MAKER, "t": Liquidity.TAKER}


def _executions(msg: Mapping[str, Any], ts_recv: float) -> tuple[Frame, ...]:
    is_snapshot = _snapshot_flag(msg)
    sequence = _opt_int(msg, "sequence")
    out: list[Frame] = []
    for item in _data_items(msg):
        liq = item.get("liquidity_ind")
        if liq is not None and liq not in _LIQUIDITY:
            _fail(f"bad liquidity_ind {liq!r:.10}")
        side = item.get("side")
        out.append(
            ExecutionReport(
                exec_type=_str(item, "exec_type"),
                order_id=_str(item, "order_id"),
                ts_recv=ts_recv,
                ts_event_ns=_opt_ts(item),
                is_snapshot=is_snapshot,
                sequence=sequence,
                order_status=_opt_str(item, "order_status"),
                cl_ord_id=_opt_str(item, "cl_ord_id"),
                order_userref=_opt_int(item, "order_userref"),
                symbol=_opt_str(item, "symbol"),
                side=None if side is None else _side(side),
                order_type=_opt_str(item, "order_type"),
                order_qty=_opt_dec(item, "order_qty"),
                limit_price=_opt_dec(item, "limit_price"),
                exec_id=_opt_str(item, "exec_id"),
                trade_id=_opt_int(item, "trade_id"),
                last_qty=_opt_dec(item, "last_qty"),
                last_price=_opt_dec(item, "last_price"),
                liquidity=None if liq is None else _LIQUIDITY[liq],
                cost=_opt_dec(item, "cost"),
                cum_qty=_opt_dec(item, "cum_qty"),
                cum_cost=_opt_dec(item, "cum_cost"),
                avg_price=_opt_dec(item, "avg_price"),
                fees=_fees(item.get("fees")),
                fee_usd_equiv=_opt_dec(item, "fee_usd_equiv"),
                reason=_opt_str(item, "reason"),
            )
        )
    return tuple(out)


def _balances(msg: Mapping[str, Any], ts_recv: float) -> tuple[Frame, ...]:
    is_snapshot = _snapshot_flag(msg)
    sequence = _opt_int(msg, "sequence")
    out: list[Frame] = []
    for item in _data_items(msg):
        wallets = tuple(
            (_str(w, "type"), _str(w, "id"), to_decimal(w["balance"], "wallet balance"))
            for w in _list(item.get("wallets", []), "wallets")
        )
        out.append(
            BalanceUpdate(
                asset=_str(item, "asset"),
                balance=to_decimal(item["balance"], "balance"),
                ts_recv=ts_recv,
                is_snapshot=is_snapshot,
                sequence=sequence,
                ts_event_ns=_opt_ts(item),
                amount=_opt_dec(item, "amount"),
                fee=_opt_dec(item, "fee"),
                ledger_id=_opt_str(item, "ledger_id"),
                ref_id=_opt_str(item, "ref_id"),
                ledger_type=_opt_str(item, "type"),
                wallet_type=_opt_str(item, "wallet_type"),
                wallet_id=_opt_str(item, "wallet_id"),
                wallets=wallets,
            )
        )
    return tuple(out)


_CHANNELS: dict[str, Callable[[Mapping[str, Any], float], tuple[Frame, ...]]] = {
    "book": _book,
    "ticker": _ticker,
    "trade": _trade,
    "ohlc": _ohlc,
    "instrument": _instrument,
    "heartbeat": _heartbeat,
    "status": _status,
    "executions": _executions,
    "balances": _balances,
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


def _guarded(fn: Callable[[], tuple[Frame, ...]], what: str) -> tuple[Frame, ...]:
    """Run a decoder and translate stray lookup/type errors into ``DecodeError``."""
    try:
        return fn()
    except DecodeError:
        raise
    except KeyError as exc:
        raise DecodeError(f"{what}: missing field {exc}", kind="missing_field") from exc
    except (TypeError, ValueError, ArithmeticError, AttributeError, IndexError) as exc:
        raise DecodeError(f"{what}: {type(exc).__name__}", kind="bad_field") from exc


def decode_v2(raw: str | bytes, *, ts_recv: float) -> tuple[Frame, ...]:
    """Decode one WS v2 frame into typed frames (one per ``data`` entry for lists).

    Args:
        raw: the frame text as received.
        ts_recv: receive time (``trio.current_time()``) stamped on every frame.

    Raises:
        DecodeError: malformed JSON, unknown channel, missing or ill-typed field (``.kind``).
    """
    msg = loads(raw)
    if type(msg) is not dict:
        _fail("frame is not a JSON object", "bad_shape")
    channel = msg.get("channel")
    if channel is not None:
        handler = _CHANNELS.get(channel) if type(channel) is str else None
        if handler is None:
            _fail(f"unknown channel {channel!r:.40}", "unknown_channel")
        return _guarded(lambda: handler(msg, ts_recv), f"channel {channel}")
    if "method" in msg:
        return _guarded(lambda: (_method_response(msg, ts_recv),), "method response")
    _fail("frame has neither channel nor method", "bad_shape")


# --------------------------------------------------------------------------- encoding


def dumps(value: object) -> str:
    """Compact JSON text with ``Decimal`` written as an exact JSON number.

    The stdlib cannot write a Decimal as a number without passing it through float, and Kraken
    wants numbers (PROTOCOL.md §5.5 examples). Floats raise ``TypeError`` on purpose. Test
    servers can use this to send frames whose numbers keep every digit.
    """
    if value is None:
        return "null"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, Enum):
        return dumps(value.value)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, Decimal):
        if not value.is_finite():
            raise ValueError(f"cannot encode non-finite Decimal {value}")
        return format(value, "f")
    if isinstance(value, Mapping):
        return "{" + ",".join(f"{json.dumps(str(k))}:{dumps(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list | tuple):
        return "[" + ",".join(dumps(v) for v in value) + "]"
    raise TypeError(f"cannot encode {type(value).__name__} (floats are refused on purpose)")


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


# --------------------------------------------------------------------------- v1 (legacy)
# Only for recorded data and tests: v1 data frames are arrays
# ``[channelID, payload..., channelName, pair]`` with fixed-decimal strings (PROTOCOL.md §7).

_V1_ASSETS = {"XBT": "BTC", "XDG": "DOGE"}


def normalize_v1_symbol(pair: str) -> str:
    """v1/REST ``wsname`` to the v2 symbol: ``"XBT/USD"`` -> ``"BTC/USD"``."""
    base, sep, quote = pair.partition("/")
    if not sep or not base or not quote:
        _fail(f"bad v1 pair {pair!r:.20}")
    return f"{_V1_ASSETS.get(base, base)}/{_V1_ASSETS.get(quote, quote)}"


@dataclass(frozen=True, slots=True, kw_only=True)
class V1Subscription:
    channel_id: int
    name: str  # "book", "trade", "ticker", ...
    symbol: str  # normalised (BTC/USD)
    depth: int | None = None


_V1_SIDES = {"b": Side.BUY, "s": Side.SELL}


def _levels_v1(raw: object, out: list[BookLevel]) -> int:
    """Append ``[price, volume, timestamp, ("r")]`` levels; return the latest timestamp."""
    latest = 0
    for lvl in _list(raw, "levels"):
        if type(lvl) is not list or len(lvl) < 3:
            _fail("v1 level is not [price, volume, timestamp, ...]")
        price = to_decimal(lvl[0], "price")
        qty = to_decimal(lvl[1], "volume")
        if price <= 0 or qty < 0:
            _fail("v1 level out of range")
        out.append(BookLevel(price, qty))
        ts = parse_epoch_ns(lvl[2])
        if ts > latest:
            latest = ts
    return latest


class V1Decoder:
    """Stateful v1 decoder: remembers ``channelID`` subscriptions from ``subscriptionStatus``.

    Book, trade and ticker frames decode into the same ``BookFrame``/``TradeEvent``/
    ``TickerEvent`` as v2, with symbols normalised (``XBT/USD`` -> ``BTC/USD``). Republished
    levels (4th element ``"r"``) are ordinary levels for the book. Not thread-safe; one per
    connection.
    """

    def __init__(self) -> None:
        self._subs: dict[int, V1Subscription] = {}
        self._symbols: dict[str, str] = {}

    @property
    def subscriptions(self) -> Mapping[int, V1Subscription]:
        return MappingProxyType(self._subs)

    def depth(self, symbol: str) -> int | None:
        """The subscribed book depth of ``symbol`` (v2 naming), if known."""
        for sub in self._subs.values():
            if sub.name == "book" and sub.symbol == symbol:
                return sub.depth
        return None

    def decode(self, raw: str | bytes | object, *, ts_recv: float) -> tuple[Frame, ...]:
        """Decode one v1 frame (text, or a JSON value parsed without floats).

        Raises:
            DecodeError: malformed frame, unknown event or channel (``.kind``).
        """
        msg = loads(raw) if isinstance(raw, str | bytes | bytearray) else raw
        if type(msg) is dict:
            return _guarded(lambda: self._event(msg, ts_recv), "v1 event")
        if type(msg) is list:
            return _guarded(lambda: self._data(msg, ts_recv), "v1 data")
        _fail("v1 frame is neither an object nor an array", "bad_shape")

    def _symbol(self, pair: object) -> str:
        if type(pair) is not str:
            _fail("v1 pair is not a string")
        symbol = self._symbols.get(pair)
        if symbol is None:
            symbol = self._symbols[pair] = normalize_v1_symbol(pair)
        return symbol

    def _event(self, msg: dict[str, Any], ts_recv: float) -> tuple[Frame, ...]:
        event = msg.get("event")
        if event == "heartbeat":
            return (Heartbeat(ts_recv=ts_recv),)
        if event == "systemStatus":
            return (
                StatusFrame(
                    system=_str(msg, "status"),
                    api_version="v1",
                    connection_id=_int(msg["connectionID"], "connectionID"),
                    version=_opt_str(msg, "version") or "",
                    ts_recv=ts_recv,
                ),
            )
        if event == "subscriptionStatus":
            return (self._subscription_status(msg, ts_recv),)
        if event in ("pong", "error"):
            error = _opt_str(msg, "errorMessage")
            return (
                MethodResponse(
                    method=event,
                    req_id=_opt_int(msg, "reqid"),
                    success=error is None,
                    error=error,
                    result=MappingProxyType({}),
                    ts_recv=ts_recv,
                ),
            )
        _fail(f"unknown v1 event {event!r:.40}", "unknown_event")

    def _subscription_status(self, msg: dict[str, Any], ts_recv: float) -> MethodResponse:
        status = _str(msg, "status")
        pair = msg.get("pair")
        symbol = None if pair is None else self._symbol(pair)
        sub = msg.get("subscription", {})
        if type(sub) is not dict:
            _fail("subscription is not an object")
        if status == "subscribed":
            channel_id = _int(msg["channelID"], "channelID")
            self._subs[channel_id] = V1Subscription(
                channel_id=channel_id,
                name=_str(sub, "name"),
                symbol=symbol or "",
                depth=_opt_int(sub, "depth"),
            )
        elif status == "unsubscribed" and "channelID" in msg:
            self._subs.pop(_int(msg["channelID"], "channelID"), None)
        error = _opt_str(msg, "errorMessage")
        return MethodResponse(
            method="unsubscribe" if status == "unsubscribed" else "subscribe",
            req_id=_opt_int(msg, "reqid"),
            success=status != "error" and error is None,
            error=error,
            result=MappingProxyType(msg),
            ts_recv=ts_recv,
            symbol=symbol,
        )

    def _data(self, msg: list[Any], ts_recv: float) -> tuple[Frame, ...]:
        if len(msg) < 4:
            _fail("v1 data frame shorter than [channelID, payload, name, pair]", "bad_shape")
        _int(msg[0], "channelID")
        name = msg[-2]
        symbol = self._symbol(msg[-1])
        if type(name) is not str:
            _fail("v1 channel name is not a string")
        if name.startswith("book-"):
            return (self._book(symbol, msg[1:-2], ts_recv),)
        if name == "trade":
            return self._trades(symbol, msg[1], ts_recv)
        if name == "ticker":
            return (self._ticker(symbol, msg[1], ts_recv),)
        _fail(f"unknown v1 channel {name!r:.40}", "unknown_channel")

    @staticmethod
    def _book(symbol: str, payloads: list[Any], ts_recv: float) -> BookFrame:
        asks: list[BookLevel] = []
        bids: list[BookLevel] = []
        checksum: int | None = None
        is_snapshot = False
        latest = 0
        for part in payloads:
            if type(part) is not dict:
                _fail("v1 book payload is not an object")
            for key, value in part.items():
                if key == "c":
                    if type(value) is not str or not value.isdigit() or int(value) >= 2**32:
                        _fail("v1 checksum is not a uint32 string")
                    checksum = int(value)
                    continue
                if key in ("as", "bs"):
                    is_snapshot = True
                elif key not in ("a", "b"):
                    continue  # forward compatibility: unknown keys carry no levels
                ts = _levels_v1(value, asks if key[0] == "a" else bids)
                latest = max(latest, ts)
        return BookFrame(
            symbol=symbol,
            is_snapshot=is_snapshot,
            bids=tuple(bids),
            asks=tuple(asks),
            checksum=checksum,
            ts_event_ns=latest,
            ts_recv=ts_recv,
        )

    @staticmethod
    def _trades(symbol: str, payload: object, ts_recv: float) -> tuple[Frame, ...]:
        out: list[Frame] = []
        for row in _list(payload, "trades"):
            if type(row) is not list or len(row) < 4 or row[3] not in _V1_SIDES:
                _fail("v1 trade is not [price, volume, time, side, ...]")
            trade_id = row[6] if len(row) > 6 and type(row[6]) is int else 0
            out.append(
                TradeEvent(
                    symbol=symbol,
                    side=_V1_SIDES[row[3]],
                    price=to_decimal(row[0], "price"),
                    qty=to_decimal(row[1], "volume"),
                    trade_id=trade_id,
                    ts_event_ns=parse_epoch_ns(row[2]),
                    ts_recv=ts_recv,
                )
            )
        return tuple(out)

    @staticmethod
    def _ticker(symbol: str, payload: object, ts_recv: float) -> TickerEvent:
        if type(payload) is not dict:
            _fail("v1 ticker payload is not an object")
        ask, bid, last = payload["a"], payload["b"], payload["c"]
        return TickerEvent(
            symbol=symbol,
            bid=to_decimal(bid[0], "bid"),
            bid_qty=to_decimal(bid[2], "bid lot volume"),
            ask=to_decimal(ask[0], "ask"),
            ask_qty=to_decimal(ask[2], "ask lot volume"),
            last=to_decimal(last[0], "last"),
            ts_recv=ts_recv,  # v1 tickers carry no event time
        )

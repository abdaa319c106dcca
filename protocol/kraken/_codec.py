"""Kraken WebSocket v2 codec: raw frames in, typed frames out; requests out as exact JSON.

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

The legacy v1 decoder (recorded data) lives in ``_codec_v1`` and shares the frame types and
primitives defined here. Module size: still over the 600-line guideline; the next natural
split is the private channels (``ExecutionReport``, ``BalanceUpdate``, ``FeeAmount`` and their
decoders, about 200 lines) into their own module.

Speed (the feed decodes every frame; bench/bench_ws.py, bench/bench_book.py): ``loads`` calls
``raw_decode`` rather than ``decode`` (one regex less per frame), ``book`` frames are decoded by
a dedicated loop without intermediate lists, and Kraken's fixed timestamp shape is parsed from a
per-second cache (see ``parse_rfc3339_ns``). ``parse_float=Decimal`` itself is cheap: the C
scanner hands each number's text to ``Decimal``, which costs about what ``float`` does.
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


_raw_decode = _JSON.raw_decode


def loads(raw: str | bytes | bytearray) -> Any:
    """Parse one JSON frame with Decimal floats and exact ints; ``DecodeError`` on junk."""
    try:
        if type(raw) is str:
            # ``decode`` = two whitespace regex matches around ``raw_decode``; Kraken sends no
            # padding, so try without and fall back to ``decode`` for its exact rules/errors.
            try:
                value, end = _raw_decode(raw)
                if end == len(raw):
                    return value
            except ValueError:
                pass
            return _JSON.decode(raw)
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
# "YYYY-MM-DDTHH:MM:SS" (exact text, already validated by the full parser) -> epoch seconds
# (UTC, before any zone offset). Messages arrive in time order, so a second's prefix repeats
# for every message of that second and the fast path skips the regex and the datetime maths.
_SECOND_EPOCH: dict[str, int] = {}
_FRAC_SCALE = (0, 10**8, 10**7, 10**6, 10**5, 10**4, 10**3, 10**2, 10, 1)  # by digit count
_CACHE_MAX = 4096  # entries per cache; cleared when full (a pure memo, so always safe)


def parse_rfc3339_ns(text: object) -> int:
    """RFC3339 (``2023-10-04T16:26:30.524394914Z``) to integer UTC nanoseconds, exactly.

    Kraken's shape (``Z`` zone, 1-9 fractional digits) of an already seen second takes a fast
    path; anything else goes through the full parser, which also fills that cache.
    """
    if type(text) is str and len(text) > 21 and text[-1] == "Z" and text[19] == ".":
        second = _SECOND_EPOCH.get(text[:19])
        if second is not None:
            frac = text[20:-1]
            # isdigit alone accepts non-ASCII digits; those (valid for the regex too) take the
            # full parser, so the fast path accepts a subset of the same texts, same results.
            if len(frac) <= 9 and frac.isdigit() and frac.isascii():
                return second * 1_000_000_000 + int(frac) * _FRAC_SCALE[len(frac)]
    return _parse_rfc3339_full(text)


def _parse_rfc3339_full(text: object) -> int:
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
        if len(_HOUR_EPOCH) >= _CACHE_MAX:
            _HOUR_EPOCH.clear()
        _HOUR_EPOCH[prefix] = hour
    minute, second = int(m[5]), int(m[6])
    if minute > 59 or second > 60:
        _fail(f"bad RFC3339 timestamp {text!r:.40}")
    if len(_SECOND_EPOCH) >= _CACHE_MAX:
        _SECOND_EPOCH.clear()
    _SECOND_EPOCH[text[:19]] = hour + minute * 60 + second
    offset = 0
    zone = m[8]
    if zone not in ("Z", "z"):
        offset = (int(zone[1:3]) * 60 + int(zone[4:6])) * 60
        if zone[0] == "-":
            offset = -offset
    frac = m[7]
    frac_ns = int(frac.ljust(9, "0")) if frac else 0
    return (hour + minute * 60 + second - offset) * 1_000_000_000 + frac_ns


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


_STRAY = (TypeError, ValueError, ArithmeticError, AttributeError, IndexError)


def _translate(exc: Exception, what: str) -> DecodeError:
    """The ``DecodeError`` for a stray lookup/type error raised while decoding ``what``."""
    if isinstance(exc, KeyError):
        return DecodeError(f"{what}: missing field {exc}", kind="missing_field")
    return DecodeError(f"{what}: {type(exc).__name__}", kind="bad_field")


def _guarded(fn: Callable[[], tuple[Frame, ...]], what: str) -> tuple[Frame, ...]:
    """Run a decoder and translate stray lookup/type errors into ``DecodeError``."""
    try:
        return fn()
    except DecodeError:
        raise
    except (KeyError, *_STRAY) as exc:
        raise _translate(exc, what) from exc


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
        try:  # _guarded inlined: one closure and call less per frame
            return handler(msg, ts_recv)
        except DecodeError:
            raise
        except (KeyError, *_STRAY) as exc:
            raise _translate(exc, f"channel {channel}") from exc
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

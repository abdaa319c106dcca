"""Kraken WebSocket v1 (legacy) decoder, for recorded data and tests (PROTOCOL.md §7).

v1 data frames are arrays ``[channelID, payload..., channelName, pair]`` with fixed-decimal
strings; events are objects keyed by ``event``. Frames decode into the same types as v2
(``BookFrame``, ``TradeEvent``, ``TickerEvent``, ``MethodResponse``, ...) with symbols
normalised to v2 naming, so the book and everything downstream never see the difference.
The decoding rules (Decimal only, typed ``DecodeError``) are those of ``_codec``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from protocol.kraken._codec import BookFrame, Frame, Heartbeat, MethodResponse, StatusFrame
from protocol.kraken._codec_base import (
    _fail,
    _guarded,
    _int,
    _list,
    _opt_int,
    _opt_str,
    _str,
    loads,
    to_decimal,
)
from protocol.messages import BookLevel, Side, TickerEvent, TradeEvent

_V1_ASSETS = {"XBT": "BTC", "XDG": "DOGE"}
_EPOCH_DECIMAL = re.compile(r"(\d{1,12})(?:\.(\d{1,9}))?\Z")


def parse_epoch_ns(text: object) -> int:
    """v1 epoch seconds text (``"1617666423.606671"``) to integer nanoseconds, exactly."""
    if type(text) is not str or (m := _EPOCH_DECIMAL.match(text)) is None:
        _fail(f"bad epoch timestamp {text!r:.40}")
    frac = m[2]
    return int(m[1]) * 1_000_000_000 + (int(frac.ljust(9, "0")) if frac else 0)


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

"""Kraken WS v2 session plumbing: subscriptions, counters, one connection's state, the socket.

The pieces of ``KrakenWsSession`` (``_ws``) that hold no session logic: the public
``Subscription`` and ``WsStatistics`` records, the per-connection state (``_Connection``,
request/response correlation by ``req_id`` in ``_Pending``, and ``guard``, which turns a
connection task's failure into a reconnect or a fatal error), opening TCP (+TLS) and the
WebSocket handshake, and the non-blocking publisher the read loop uses.
"""

from __future__ import annotations

import ssl
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final
from urllib.parse import urlsplit

import trio
import trio_websocket

from ..messages import CandleEvent, MarketEvent, TickerEvent, TradeEvent
from ._codec import (
    BookFrame,
    Heartbeat,
    InstrumentFrame,
    MethodResponse,
    StatusFrame,
)
from ._errors import TransportError

PUBLIC_CHANNELS: Final = frozenset({"book", "ticker", "trade", "ohlc"})
BOOK_DEPTHS: Final = frozenset({10, 25, 100, 500, 1000})
OHLC_INTERVALS: Final = frozenset({1, 5, 15, 30, 60, 240, 1440, 10080, 21600})
# Methods that act on the account; they get the session token added to their params.
PRIVATE_METHODS: Final = frozenset(
    {"add_order", "amend_order", "edit_order", "cancel_order", "cancel_all",
     "cancel_all_orders_after", "batch_add", "batch_cancel"}
)

EventHook = Callable[[str, str], None]
StatusHook = Callable[[StatusFrame], None]
TokenProvider = Callable[[], Awaitable[str]]
RawFrameHook = Callable[[str], None]


@dataclass(frozen=True, slots=True, kw_only=True)
class Subscription:
    """One public channel for a set of symbols (PROTOCOL.md §5.3).

    Args:
        channel: ``book``, ``ticker``, ``trade`` or ``ohlc``.
        symbols: v2 symbols such as ``"BTC/USD"``.
        depth: book depth, one of 10, 25, 100, 500, 1000 (``book`` only).
        interval: candle interval in minutes (``ohlc`` only).
        snapshot: ask for a snapshot; ``None`` keeps Kraken's per-channel default.
    """

    channel: str
    symbols: tuple[str, ...]
    depth: int = 10
    interval: int = 1
    snapshot: bool | None = None

    def __post_init__(self) -> None:
        if self.channel not in PUBLIC_CHANNELS:
            raise ValueError(f"unsupported channel {self.channel!r}")
        if not self.symbols:
            raise ValueError("a subscription needs at least one symbol")
        if self.channel == "book" and self.depth not in BOOK_DEPTHS:
            raise ValueError(f"book depth must be one of {sorted(BOOK_DEPTHS)}")
        if self.channel == "ohlc" and self.interval not in OHLC_INTERVALS:
            raise ValueError(f"ohlc interval must be one of {sorted(OHLC_INTERVALS)}")

    def params(self, symbols: Sequence[str] | None = None) -> dict[str, Any]:
        """The ``params`` object of a subscribe/unsubscribe request."""
        params: dict[str, Any] = {"channel": self.channel, "symbol": list(symbols or self.symbols)}
        if self.channel == "book":
            params["depth"] = self.depth
        elif self.channel == "ohlc":
            params["interval"] = self.interval
        if self.snapshot is not None:
            params["snapshot"] = self.snapshot
        return params


@dataclass(frozen=True, slots=True, kw_only=True)
class WsStatistics:
    """A snapshot of a session's counters (``KrakenWsSession.statistics()``).

    ``last_message_time`` is ``trio.current_time()`` of the last frame received (``None``
    before the first one); messages are counted per frame channel, once per WebSocket message.
    """

    connected: bool
    connections: int
    reconnects: int
    stale_disconnects: int
    checksum_mismatches: int
    book_resubscribes: int
    ignored_book_updates: int
    messages_total: int
    messages_by_channel: Mapping[str, int]
    decode_errors: Mapping[str, int]
    last_message_time: float | None


class _ConnectionLost(Exception):
    """Internal: the current connection is unusable; reconnect."""


class _Pending:
    """Responses gathered for one ``req_id`` until ``expected`` have arrived."""

    __slots__ = ("done", "expected", "responses")

    def __init__(self, expected: int) -> None:
        self.expected = expected
        self.responses: list[MethodResponse] = []
        self.done = trio.Event()


class _Connection:
    """State that lives and dies with one WebSocket connection."""

    def __init__(self, ws: trio_websocket.WebSocketConnection, nursery: trio.Nursery) -> None:
        self.ws = ws
        self.nursery = nursery
        self.token: str | None = None
        self.lost: str | None = None
        self.fatal: BaseException | None = None
        self.closed = False
        self.last_rx = trio.current_time()
        self.pending: dict[int, _Pending] = {}
        self.instruments_ready = trio.Event()

    def lose(self, reason: str) -> None:
        if self.lost is None and self.fatal is None:
            self.lost = reason
        self.nursery.cancel_scope.cancel()

    def fail(self, exc: BaseException) -> None:
        if self.fatal is None:
            self.fatal = exc
        self.nursery.cancel_scope.cancel()

    async def guard(self, fn: Callable[..., Awaitable[None]], *args: Any) -> None:
        """Run a connection task; turn its failure into a reconnect or a fatal error."""
        try:
            await fn(*args)
        except trio_websocket.ConnectionClosed as exc:
            reason = exc.reason
            self.lose(f"closed ({reason.code} {reason.name})" if reason else "closed")
        except _ConnectionLost as exc:
            self.lose(str(exc))
        except Exception as exc:
            self.fail(exc)

    async def finish_call(
        self, method: str, req_id: int, pending: _Pending, *, request_timeout: float
    ) -> tuple[MethodResponse, ...]:
        """Wait up to ``request_timeout`` seconds for the responses to ``req_id``.

        Raises:
            TransportError: the connection went away or a method got no response in time.
            _ConnectionLost: a ``subscribe``/``unsubscribe`` got no ack in time (reconnect).
        """
        try:
            with trio.move_on_after(request_timeout):
                await pending.done.wait()
        finally:
            self.pending.pop(req_id, None)
        if len(pending.responses) >= pending.expected:
            return tuple(pending.responses)
        if self.closed or self.lost is not None or self.fatal is not None:
            raise TransportError("connection lost before the response", endpoint=method)
        if method in ("subscribe", "unsubscribe"):
            raise _ConnectionLost(f"no {method} ack in time")
        raise TransportError("no response in time", endpoint=method)



async def open_ws(
    url: str,
    nursery: trio.Nursery,
    *,
    connect_timeout: float,
    ssl_context: ssl.SSLContext | None,
    message_queue_size: int,
    max_message_size: int,
) -> tuple[trio.abc.Stream, trio_websocket.WebSocketConnection]:
    """Open TCP (+TLS) and the WebSocket handshake; the caller keeps the stream to close it.

    trio-websocket's reader task runs in ``nursery``.
    """
    parts = urlsplit(url)
    secure = parts.scheme == "wss"
    host = parts.hostname or ""
    port = parts.port or (443 if secure else 80)
    resource = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    host_header = host if port in (80, 443) else f"{host}:{port}"
    with trio.fail_after(connect_timeout):
        stream: trio.SocketStream | trio.SSLStream[trio.SocketStream]
        if secure:
            context = ssl_context or ssl.create_default_context()
            stream = await trio.open_ssl_over_tcp_stream(
                host, port, ssl_context=context, https_compatible=True)
        else:
            stream = await trio.open_tcp_stream(host, port)
        try:
            ws = await trio_websocket.wrap_client_stream(
                nursery, stream, host_header, resource,
                message_queue_size=message_queue_size,
                max_message_size=max_message_size,
            )
        except BaseException:
            await trio.aclose_forcefully(stream)
            raise
    return stream, ws


def publisher(send: trio.abc.SendChannel[MarketEvent]) -> Callable[[MarketEvent], bool]:
    """A non-blocking first try at ``send``: True if the event was taken, False to ``await``.

    ``MemorySendChannel.send`` ends with a checkpoint even when its buffer has room, which
    costs a full pass of trio's run loop per event: as much as receiving the frame itself
    (bench/bench_ws.py). The read loop already checkpoints once per frame in ``get_message``,
    so for a memory channel we try ``send_nowait`` and only ``await send.send`` when the
    buffer is full: backpressure is unchanged (a full channel still blocks the feed, nothing
    is dropped). Other channel types always take the awaiting path.
    """
    if isinstance(send, trio.MemorySendChannel):
        send_nowait = send.send_nowait

        def publish(event: MarketEvent) -> bool:
            try:
                send_nowait(event)
            except trio.WouldBlock:
                return False
            return True

        return publish
    return _never


def _never(event: MarketEvent) -> bool:
    return False


CHANNEL_OF: Final[Mapping[type, str]] = {
    BookFrame: "book",
    TickerEvent: "ticker",
    TradeEvent: "trade",
    CandleEvent: "ohlc",
    Heartbeat: "heartbeat",
    MethodResponse: "method",
    InstrumentFrame: "instrument",
    StatusFrame: "status",
}

"""Kraken WebSocket v2 session: connect, subscribe, keep books verified, reconnect.

One ``KrakenWsSession`` owns one WebSocket connection at a time (public ``wss://ws.kraken.com/v2``
or, with a token, private ``wss://ws-auth.kraken.com/v2``) and turns Kraken's frames into
``protocol.messages`` market events on a trio channel. The rules it follows come from
``shared/kraken/PROTOCOL.md`` §5-6:

* the ``instrument`` channel is subscribed first, because the book checksum needs each pair's
  ``price_precision``/``qty_precision``; then ``book``/``ticker``/``trade``/``ohlc``, each request
  carrying a ``req_id`` and each acknowledged once **per symbol**; a failed ack is a
  configuration error (unknown pair, bad depth) and ends ``run`` with a typed ``KrakenError``;
* every book message is applied and its CRC32 verified on the message itself; a mismatch marks
  that symbol's book invalid, ignores its updates, and re-subscribes that one book (unsubscribe +
  subscribe) for a fresh snapshot;
* a connection that says nothing (not even a heartbeat or a pong) for ``stale_after`` seconds is
  dead; any loss reconnects with capped exponential backoff and jitter, re-subscribes everything,
  and rebuilds every book from the new snapshot;
* a frame that does not decode is counted per kind, logged once per kind and skipped.

Why no separate relay task: trio-websocket's own reader task already copies frames into a
bounded queue and answers WebSocket pings while that queue has room (MODELS.md §2.5: a full
queue stops pongs). We give that queue ``message_queue_size`` slots (default 1024) instead of
the library's 1 and read from it in a tight loop, which keeps pongs flowing through bursts
without paying for a second channel hop per frame. For the same reason events go out with
``send_nowait`` while the consumer's memory channel has room and with ``await send`` only once
it is full (``_publisher``): same backpressure, one pass of trio's run loop less per frame.

Errors inside a connection are recorded on the connection and cancel its nursery instead of
escaping as exception groups: a transport loss leads to a reconnect, anything else ends ``run``
with that one exception (DESIGN: a library raises its own typed error, not a group).
The token is never logged, never put in an exception and never kept in ``repr``.
"""

from __future__ import annotations

import logging
import random
import ssl
from collections.abc import Callable, Mapping, Sequence
from types import MappingProxyType
from typing import Any

import trio
import trio_websocket

from ..messages import BookEvent, CandleEvent, MarketEvent, TickerEvent, TradeEvent
from ._book import ChecksumMismatch, OrderBook
from ._codec import (
    BookFrame,
    Heartbeat,
    InstrumentFrame,
    MethodResponse,
    StatusFrame,
    decode_v2,
    encode_request,
)
from ._errors import DecodeError, KrakenError, PermissionDenied, TransportError, error_from_strings
from ._ws_conn import BOOK_DEPTHS as BOOK_DEPTHS
from ._ws_conn import (
    CHANNEL_OF,
    PRIVATE_METHODS,
    _Connection,
    _ConnectionLost,
    _Pending,
    open_ws,
    publisher,
)
from ._ws_conn import OHLC_INTERVALS as OHLC_INTERVALS
from ._ws_conn import PUBLIC_CHANNELS as PUBLIC_CHANNELS
from ._ws_conn import EventHook as EventHook
from ._ws_conn import RawFrameHook as RawFrameHook
from ._ws_conn import StatusHook as StatusHook
from ._ws_conn import Subscription as Subscription
from ._ws_conn import TokenProvider as TokenProvider
from ._ws_conn import WsStatistics as WsStatistics

log = logging.getLogger(__name__)


class KrakenWsSession:
    """A self-healing Kraken WS v2 connection that publishes verified market events.

    Args:
        url: endpoint, e.g. ``wss://ws.kraken.com/v2`` (any ``ws://`` URL for tests).
        subscriptions: public channels to subscribe on every connection.
        stale_after: seconds without any frame after which the connection is declared dead.
        ping_interval: seconds between application-level ``ping`` requests (``None``: never).
        backoff_initial: first reconnect delay in seconds.
        backoff_max: cap on the reconnect delay.
        backoff_jitter: relative jitter; the delay is multiplied by a uniform factor in
            ``[1 - jitter, 1 + jitter]`` (then capped).
        book_levels_out: levels per side in each published ``BookEvent``.
        token_provider: async callable returning a fresh WebSocket token (REST
            ``GetWebSocketsToken``); enables ``executions``/``balances`` and ``request``.
        seed: seed of the jitter RNG, for reproducible backoff.
        on_status: called with every ``status`` frame.
        on_event: observer hook ``(kind, detail)`` for ``connected``, ``reconnecting``,
            ``stale``, ``checksum_mismatch``, ``decode_error``.
        on_raw_frame: called with every received text frame right after it is read, before
            it is decoded (undecodable frames included), e.g. to record a live session for
            replay. It runs inside the read loop, so it must be quick and must not block;
            an exception it raises is logged (the first one) and the frame is processed as
            usual.
        request_timeout: seconds to wait for a method response (subscribe acks included).
        connect_timeout: seconds for the TCP + WebSocket handshake.
        message_queue_size: trio-websocket's receive queue (see module docstring).
        ssl_context: TLS context for ``wss://``; default is the system one.
    """

    def __init__(
        self,
        url: str,
        *,
        subscriptions: Sequence[Subscription],
        stale_after: float = 10.0,
        ping_interval: float | None = 5.0,
        backoff_initial: float = 0.5,
        backoff_max: float = 30.0,
        backoff_jitter: float = 0.2,
        book_levels_out: int = 10,
        token_provider: TokenProvider | None = None,
        seed: int | None = None,
        on_status: StatusHook | None = None,
        on_event: EventHook | None = None,
        on_raw_frame: RawFrameHook | None = None,
        request_timeout: float = 10.0,
        connect_timeout: float = 10.0,
        message_queue_size: int = 1024,
        max_message_size: int = 8 * 1024 * 1024,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        if stale_after <= 0 or backoff_initial < 0 or backoff_max < backoff_initial:
            raise ValueError("invalid stale/backoff settings")
        if not 0 <= backoff_jitter < 1:
            raise ValueError("backoff_jitter must be in [0, 1)")
        self._url = url
        self._subscriptions = tuple(subscriptions)
        self._stale_after = stale_after
        self._ping_interval = ping_interval
        self._backoff_initial = backoff_initial
        self._backoff_max = backoff_max
        self._backoff_jitter = backoff_jitter
        self._levels_out = book_levels_out
        self._token_provider = token_provider
        self._rng = random.Random(seed)
        self._on_status = on_status
        self._on_event = on_event
        self._on_raw_frame = on_raw_frame
        self._raw_hook_failed = False
        self._request_timeout = request_timeout
        self._connect_timeout = connect_timeout
        self._queue_size = message_queue_size
        self._max_message_size = max_message_size
        self._ssl_context = ssl_context

        self._book_depth: dict[str, int] = {}
        for sub in self._subscriptions:
            if sub.channel == "book":
                for symbol in sub.symbols:
                    self._book_depth[symbol] = sub.depth
        self._precisions: dict[str, tuple[int, int]] = {}
        self._books: dict[str, OrderBook] = {}
        self._resyncing: set[str] = set()
        self._conn: _Connection | None = None
        self._next_req_id = 1
        self._logged_kinds: set[str] = set()
        # counters
        self._connections = 0
        self._reconnects = 0
        self._stale = 0
        self._mismatches = 0
        self._resubscribes = 0
        self._ignored = 0
        self._messages = 0
        self._by_channel: dict[str, int] = {}
        self._decode_errors: dict[str, int] = {}
        self._last_message: float | None = None

    def __repr__(self) -> str:
        return f"KrakenWsSession(url={self._url!r}, connected={self.connected})"

    # ------------------------------------------------------------------ public surface

    @property
    def connected(self) -> bool:
        """True between a completed subscription and the loss of that connection."""
        return self._conn is not None

    def statistics(self) -> WsStatistics:
        """Counters since construction, as a frozen record."""
        return WsStatistics(
            connected=self.connected,
            connections=self._connections,
            reconnects=self._reconnects,
            stale_disconnects=self._stale,
            checksum_mismatches=self._mismatches,
            book_resubscribes=self._resubscribes,
            ignored_book_updates=self._ignored,
            messages_total=self._messages,
            messages_by_channel=MappingProxyType(dict(self._by_channel)),
            decode_errors=MappingProxyType(dict(self._decode_errors)),
            last_message_time=self._last_message,
        )

    def book(self, symbol: str) -> OrderBook | None:
        """The live, verified book of ``symbol`` (``None`` while waiting for a snapshot)."""
        if symbol in self._resyncing:
            return None
        return self._books.get(symbol)

    async def run(
        self,
        send: trio.abc.SendChannel[MarketEvent],
        *,
        private_send: trio.abc.SendChannel[object] | None = None,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Connect, subscribe and publish events to ``send`` until cancelled.

        ``task_status.started()`` is called once, after the first connection is fully
        subscribed. Connection losses (closed, reset, stale, handshake failure, ack timeout)
        reconnect with backoff and never end ``run``; before the first start it keeps trying
        too, so bound startup with a timeout around ``nursery.start``. Frames the session does
        not handle itself (private ``executions``/``balances`` data) go to ``private_send``.
        Cancellation closes the TCP connection at once (no WebSocket close handshake).

        Raises:
            KrakenError: a subscription was refused (e.g. ``Currency pair not supported``)
                or the endpoint's ``instrument`` snapshot lacks a subscribed book symbol.
            trio.BrokenResourceError: ``send`` was closed by its receiver.
        """
        started = False

        def on_subscribed() -> None:
            nonlocal started
            if not started:
                started = True
                task_status.started()

        attempt = 0
        while True:
            subscribed, reason, fatal = await self._one_connection(
                send, private_send, on_subscribed
            )
            if fatal is not None:
                raise fatal
            if subscribed:
                attempt = 0
            self._reconnects += 1
            delay = self._backoff(attempt)
            attempt += 1
            log.warning("kraken ws %s: connection lost (%s); reconnecting in %.2fs",
                        self._url, reason, delay)
            self._emit("reconnecting", f"{reason}; retry in {delay:.3f}s")
            await trio.sleep(delay)

    async def request(
        self, method: str, params: Mapping[str, Any] | None = None
    ) -> MethodResponse:
        """Send one method (``add_order``, ``cancel_all``, ...) and wait for its response.

        The response is matched by ``req_id``. Private methods get the session token added.
        ``success=False`` responses are returned, not raised: map them with
        ``error_from_strings`` where needed. Cancelling the caller abandons the wait, not the
        request (it may still reach Kraken).

        Raises:
            TransportError: not connected, connection lost, or no response within
                ``request_timeout``; the request may or may not have reached Kraken.
            PermissionDenied: a private method on a session without a token provider.
        """
        responses = await self.request_all(method, params, expected=1)
        return responses[0]

    async def request_all(
        self,
        method: str,
        params: Mapping[str, Any] | None = None,
        *,
        expected: int,
    ) -> tuple[MethodResponse, ...]:
        """Like ``request`` for methods answered several times (``cancel_order`` with n ids)."""
        conn = self._conn
        if conn is None:
            raise TransportError("not connected", endpoint=method)
        body = dict(params or {})
        if method in PRIVATE_METHODS:
            if conn.token is None:
                raise PermissionDenied("private method needs a token provider", endpoint=method)
            body["token"] = conn.token
        req_id, pending = await self._start_call(conn, method, body or None, expected)
        return await conn.finish_call(method, req_id, pending,
                                      request_timeout=self._request_timeout)

    # ------------------------------------------------------------------ one connection

    async def _one_connection(
        self,
        send: trio.abc.SendChannel[MarketEvent],
        private_send: trio.abc.SendChannel[object] | None,
        on_subscribed: Callable[[], None],
    ) -> tuple[bool, str, BaseException | None]:
        """Run one connection to its end: (reached subscribed, loss reason, fatal error)."""
        subscribed = False
        conn: _Connection | None = None
        try:
            async with trio.open_nursery() as ws_nursery:  # trio-websocket's reader task
                try:
                    stream, ws = await open_ws(
                        self._url, ws_nursery, connect_timeout=self._connect_timeout,
                        ssl_context=self._ssl_context, message_queue_size=self._queue_size,
                        max_message_size=self._max_message_size)
                except (trio_websocket.HandshakeError, trio_websocket.ConnectionClosed,
                        OSError, trio.TooSlowError) as exc:
                    ws_nursery.cancel_scope.cancel()
                    return False, f"connect failed: {type(exc).__name__}", None
                try:
                    async with trio.open_nursery() as nursery:  # our tasks; lose() cancels it
                        conn = _Connection(ws, nursery)
                        self._connections += 1
                        nursery.start_soon(conn.guard, self._read_loop, conn, send,
                                           private_send)
                        nursery.start_soon(conn.guard, self._watchdog, conn)
                        await conn.guard(self._subscribe_all, conn)
                        if conn.lost is None and conn.fatal is None:
                            subscribed = True
                            self._conn = conn
                            log.info("kraken ws %s: connected and subscribed", self._url)
                            self._emit("connected", self._url)
                            on_subscribed()
                            if self._ping_interval is not None:
                                nursery.start_soon(conn.guard, self._ping_loop, conn)
                finally:
                    # No close handshake: the peer is usually gone or stalled, and waiting for
                    # its reply would delay the reconnect (Kraken keeps no state we need).
                    # Closing the stream ourselves also avoids trio-websocket leaving the
                    # socket open after an abnormal closure (aclose() returns early then).
                    await trio.aclose_forcefully(stream)
                    ws_nursery.cancel_scope.cancel()
        finally:
            self._conn = None
            self._books.clear()
            self._resyncing.clear()
            if conn is not None:
                conn.closed = True
                for pending in conn.pending.values():
                    pending.done.set()  # outside waiters see too few responses
        assert conn is not None
        return subscribed, conn.lost or "closed", conn.fatal

    async def _subscribe_all(self, conn: _Connection) -> None:
        if self._token_provider is not None:
            conn.token = await self._token_provider()
        await self._subscribe(conn, [({"channel": "instrument"}, 1)])
        with trio.move_on_after(self._request_timeout) as scope:
            await conn.instruments_ready.wait()
        if scope.cancelled_caught:
            raise _ConnectionLost("no instrument snapshot")
        missing = sorted(s for s in self._book_depth if s not in self._precisions)
        if missing:
            raise KrakenError(f"instrument channel does not list {missing}", endpoint="instrument")
        requests: list[tuple[dict[str, Any], int]] = [
            (sub.params(), len(sub.symbols)) for sub in self._subscriptions
        ]
        if conn.token is not None:
            requests.append(({"channel": "executions", "snap_orders": True,
                              "token": conn.token}, 1))
            requests.append(({"channel": "balances", "token": conn.token}, 1))
        await self._subscribe(conn, requests)

    async def _subscribe(
        self,
        conn: _Connection,
        requests: Sequence[tuple[dict[str, Any], int]],
        method: str = "subscribe",
    ) -> None:
        """Send every request, then check every ack (one per symbol); one round trip for all."""
        calls = [await self._start_call(conn, method, params, expected)
                 for params, expected in requests]
        for req_id, pending in calls:
            for response in await conn.finish_call(method, req_id, pending,
                                                   request_timeout=self._request_timeout):
                if not response.success:
                    raise error_from_strings(method, [response.error or "unknown error"])

    async def _start_call(
        self, conn: _Connection, method: str, params: Mapping[str, Any] | None, expected: int
    ) -> tuple[int, _Pending]:
        req_id = self._next_req_id
        self._next_req_id += 1
        pending = _Pending(expected)
        conn.pending[req_id] = pending
        try:
            await conn.ws.send_message(encode_request(method, params, req_id))
        except BaseException:
            del conn.pending[req_id]
            raise
        return req_id, pending

    async def _ping_loop(self, conn: _Connection) -> None:
        assert self._ping_interval is not None
        while True:
            await trio.sleep(self._ping_interval)
            req_id = self._next_req_id
            self._next_req_id += 1
            await conn.ws.send_message(encode_request("ping", None, req_id))

    async def _resubscribe_book(self, conn: _Connection, symbol: str) -> None:
        """Unsubscribe + subscribe one book to get a fresh snapshot (PROTOCOL.md §6, step 5)."""
        params: dict[str, Any] = {"channel": "book", "symbol": [symbol],
                                  "depth": self._book_depth[symbol]}
        req_id, pending = await self._start_call(conn, "unsubscribe", params, 1)
        # Queue the subscribe right behind the unsubscribe; the acks are checked after.
        calls = await self._start_call(conn, "subscribe", params, 1)
        unsub = await conn.finish_call("unsubscribe", req_id, pending,
                                       request_timeout=self._request_timeout)
        if not unsub[0].success:
            # Not fatal: the subscribe that follows still yields a snapshot.
            log.warning("kraken ws: unsubscribe book %s refused: %s", symbol, unsub[0].error)
        for response in await conn.finish_call("subscribe", *calls,
                                               request_timeout=self._request_timeout):
            if not response.success:
                raise _ConnectionLost(f"book resubscribe refused: {response.error}")
        self._resubscribes += 1

    # ------------------------------------------------------------------ reading

    async def _read_loop(
        self,
        conn: _Connection,
        send: trio.abc.SendChannel[MarketEvent],
        private_send: trio.abc.SendChannel[object] | None,
    ) -> None:
        ws = conn.ws
        by_channel = self._by_channel
        publish = publisher(send)
        on_raw = self._on_raw_frame
        while True:
            # The one checkpoint per frame: get_message yields to trio even when a frame is
            # already queued, so cancellation and other tasks stay prompt.
            raw = await ws.get_message()
            if on_raw is not None and type(raw) is str:
                try:
                    on_raw(raw)
                except Exception:
                    # A recorder's bug must not take the feed down with it; log it once, not
                    # once per frame (a full disk would flood the log at the feed's rate).
                    if not self._raw_hook_failed:
                        self._raw_hook_failed = True
                        log.exception("kraken ws: on_raw_frame hook failed (logged once)")
            now = trio.current_time()
            conn.last_rx = now
            self._last_message = now
            self._messages += 1
            try:
                frames = decode_v2(raw, ts_recv=now)
            except DecodeError as exc:
                self._count_decode_error(exc)
                continue
            channel = CHANNEL_OF.get(type(frames[0]), "other") if frames else "empty"
            by_channel[channel] = by_channel.get(channel, 0) + 1
            for frame in frames:
                # Book frames are nearly all the traffic: handled inline, no coroutine per frame.
                if type(frame) is BookFrame:
                    event = self._apply_book(conn, frame)
                    if event is not None and not publish(event):
                        await send.send(event)
                else:
                    await self._handle(conn, frame, send, private_send, publish)

    async def _watchdog(self, conn: _Connection) -> None:
        """Declare the connection dead after ``stale_after`` seconds without any frame.

        A separate task rather than a deadline re-armed per frame: moving a cancel scope's
        deadline costs a heap update per message, this wakes about once per ``stale_after``.
        Reception time is what counts, so a slow consumer of ``send`` never looks stale.
        """
        while True:
            deadline = conn.last_rx + self._stale_after
            if trio.current_time() >= deadline:
                break
            await trio.sleep_until(deadline)
        self._stale += 1
        self._emit("stale", f"no message for {self._stale_after}s")
        raise _ConnectionLost("stale")

    async def _handle(
        self,
        conn: _Connection,
        frame: object,
        send: trio.abc.SendChannel[MarketEvent],
        private_send: trio.abc.SendChannel[object] | None,
        publish: Callable[[MarketEvent], bool],
    ) -> None:
        if isinstance(frame, BookFrame):
            event = self._apply_book(conn, frame)
            if event is not None and not publish(event):
                await send.send(event)
        elif isinstance(frame, TickerEvent | TradeEvent | CandleEvent):
            if not publish(frame):
                await send.send(frame)
        elif isinstance(frame, MethodResponse):
            self._on_response(conn, frame)
        elif isinstance(frame, Heartbeat):
            pass  # liveness only: the read loop already re-armed the stale deadline
        elif isinstance(frame, InstrumentFrame):
            for pair in frame.pairs:
                self._precisions[pair.symbol] = (pair.price_precision, pair.qty_precision)
            conn.instruments_ready.set()
        elif isinstance(frame, StatusFrame):
            if frame.system != "online":
                log.warning("kraken ws: engine status %s", frame.system)
            if self._on_status is not None:
                self._call_hook(self._on_status, frame)
        elif private_send is not None:
            await private_send.send(frame)

    def _apply_book(self, conn: _Connection, frame: BookFrame) -> BookEvent | None:
        symbol = frame.symbol
        if frame.is_snapshot:
            depth = self._book_depth.get(symbol)
            if depth is None:
                return None  # not a book we asked for
            price_precision, qty_precision = self._precisions[symbol]
            book = OrderBook(symbol, depth=depth, price_precision=price_precision,
                             qty_precision=qty_precision)
            self._books[symbol] = book
            self._resyncing.discard(symbol)
        else:
            found = self._books.get(symbol)
            if found is None or symbol in self._resyncing:
                self._ignored += 1
                return None
            book = found
        try:
            book.apply(frame)
        except ChecksumMismatch as exc:
            self._mismatches += 1
            self._resyncing.add(symbol)
            log.warning("kraken ws: book checksum mismatch on %s (expected %s, got %s); "
                        "resubscribing", symbol, exc.expected, exc.actual)
            self._emit("checksum_mismatch", symbol)
            conn.nursery.start_soon(conn.guard, self._resubscribe_book, conn, symbol)
            return None
        return book.to_event(levels=self._levels_out, ts_event_ns=frame.ts_event_ns,
                             ts_recv=frame.ts_recv)

    def _on_response(self, conn: _Connection, response: MethodResponse) -> None:
        req_id = response.req_id
        pending = conn.pending.get(req_id) if req_id is not None else None
        if pending is not None:
            pending.responses.append(response)
            if len(pending.responses) >= pending.expected:
                pending.done.set()
        elif response.method != "pong" and not response.success:
            # Kraken's error strings carry no secrets; the request (with its token) is not logged.
            log.warning("kraken ws: unsolicited %s failure: %s", response.method, response.error)

    # ------------------------------------------------------------------ helpers

    def _count_decode_error(self, exc: DecodeError) -> None:
        kind = exc.kind
        self._decode_errors[kind] = self._decode_errors.get(kind, 0) + 1
        if kind not in self._logged_kinds:
            self._logged_kinds.add(kind)
            log.warning("kraken ws: skipped an undecodable frame (%s): %s; further %r errors "
                        "are only counted", kind, exc, kind)
        self._emit("decode_error", kind)

    def _backoff(self, attempt: int) -> float:
        base = min(self._backoff_max, self._backoff_initial * 2.0 ** min(attempt, 60))
        factor = 1.0 + self._backoff_jitter * (2.0 * self._rng.random() - 1.0)
        return min(self._backoff_max, base * factor)

    def _emit(self, kind: str, detail: str) -> None:
        if self._on_event is not None:
            self._call_hook(self._on_event, kind, detail)

    def _call_hook(self, hook: Callable[..., None], *args: Any) -> None:
        # An observer's bug must not take the market-data feed down with it.
        try:
            hook(*args)
        except Exception:
            log.exception("kraken ws: observer hook %r failed", hook)

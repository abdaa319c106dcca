"""A Kraken WebSocket v2 test server on loopback, with fault injection.

Speaks enough of PROTOCOL.md §5-6 for the session, end-to-end tests and benchmarks: ``ping``,
per-symbol ``subscribe``/``unsubscribe`` acks echoing ``req_id``, an ``instrument`` snapshot
with precisions, ``status`` on connect, ``heartbeat`` when idle, ``book`` snapshots and updates
carrying **valid** CRC32 checksums (computed with ``protocol.kraken._book.checksum_v2``), ticker
and trade frames, and the private methods (``add_order``, ``cancel_order``, ``cancel_all``,
``cancel_all_orders_after``) plus ``executions``/``balances`` acks when a token is configured.

Market data come from one seeded random walk per symbol, shared by every connection, so a
test can compare a client's book with ``server.book_levels(symbol)``. Each subscribed depth gets
its own update stream (levels entering/leaving its top-N), as Kraken does.

Faults, callable from tests: ``corrupt_next_checksum(symbol)``, ``await drop_connections()``
(TCP reset, no close handshake), ``inject_malformed()``, ``stall(seconds)`` (nothing at all is
sent, not even heartbeats or pongs), ``pause()``/``resume()`` of the market, and ``scripted=True``
where only acks/instrument are automatic and the test pushes exact frames with ``push``.

Why not ``serve_websocket``: it never hands out the TCP stream, and an abrupt disconnect needs
it. The server runs ``trio.serve_listeners`` and ``trio_websocket.wrap_server_stream`` (both
public API) instead, which is what ``serve_websocket`` does internally.
"""

from __future__ import annotations

import json
import random
import socket
import struct
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import trio
import trio_websocket

from protocol.kraken._book import checksum_v2
from protocol.messages import BookLevel

# symbol -> (price_precision, qty_precision, start mid)
DEFAULT_PAIRS: dict[str, tuple[int, int, Decimal]] = {
    "BTC/USD": (1, 8, Decimal("60000.0")),
    "ETH/USD": (2, 8, Decimal("3000.00")),
    "ETH/BTC": (5, 8, Decimal("0.05000")),
    "MATIC/USD": (4, 8, Decimal("0.5660")),
    "ALGO/USD": (5, 8, Decimal("0.10030")),
}
_EPOCH = datetime(2024, 1, 2, tzinfo=UTC)
_TRUNCATED = '{"channel":"book","type":"update","data":[{"sym'
_CONNECTION_ID = 13834774380200032777  # > 2**63, as in the docs example


def _num(value: Decimal) -> str:
    """JSON number text as Kraken writes it: trailing zeros lost (0.5660 -> 0.566)."""
    text = format(value, "f")
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return text or "0"


def _levels_json(levels: Iterable[tuple[Decimal, Decimal]]) -> str:
    return "[" + ",".join(f'{{"price":{_num(p)},"qty":{_num(q)}}}' for p, q in levels) + "]"


class _Market:
    """One symbol's full book (more levels than any view) driven by a seeded random walk."""

    def __init__(self, symbol: str, pp: int, qp: int, mid: Decimal, rng: random.Random,
                 levels: int) -> None:
        self.symbol, self.pp, self.qp, self.rng, self.levels = symbol, pp, qp, rng, levels
        self.tick = Decimal(1).scaleb(-pp)
        self.lot = Decimal(1).scaleb(-qp)
        mid = mid.quantize(self.tick)
        self.bids: dict[Decimal, Decimal] = {mid - k * self.tick: self._qty() for k in
                                             range(1, levels + 1)}
        self.asks: dict[Decimal, Decimal] = {mid + k * self.tick: self._qty() for k in
                                             range(1, levels + 1)}
        self.trade_id = 1000

    def _qty(self) -> Decimal:
        return (Decimal(self.rng.randint(1, 5_000_000)) * self.lot * 1000).quantize(self.lot)

    def top(self, side: str, n: int) -> list[tuple[Decimal, Decimal]]:
        book = self.bids if side == "bids" else self.asks
        prices = sorted(book, reverse=side == "bids")[:n]
        return [(p, book[p]) for p in prices]

    def step(self) -> None:
        """One random change near the top: new qty, a deletion, or an insertion."""
        rng = self.rng
        side = "bids" if rng.random() < 0.5 else "asks"
        book = self.bids if side == "bids" else self.asks
        prices = sorted(book, reverse=side == "bids")
        roll = rng.random()
        if roll < 0.6 or len(prices) < 3:
            book[prices[min(int(rng.expovariate(0.3)), len(prices) - 1)]] = self._qty()
        elif roll < 0.8:
            del book[prices[min(int(rng.expovariate(0.5)), len(prices) - 1)]]
            far = prices[-1] + (-self.tick if side == "bids" else self.tick)
            book[far] = self._qty()  # replenish the far end so the side never runs dry
        else:
            best_bid, best_ask = max(self.bids), min(self.asks)
            if best_ask - best_bid > self.tick:  # improve inside the spread
                price = best_bid + self.tick if side == "bids" else best_ask - self.tick
            else:  # shift the whole market by one tick
                price = best_bid + self.tick if side == "bids" else best_ask - self.tick
                other = self.asks if side == "bids" else self.bids
                other.pop(price, None)
                far = max(other) + self.tick if side == "bids" else min(other) - self.tick
                other[far] = self._qty()
            book[price] = self._qty()
        for name, bk in (("bids", self.bids), ("asks", self.asks)):
            while len(bk) > self.levels:
                del bk[min(bk) if name == "bids" else max(bk)]

    def checksum(self) -> int:
        asks = [BookLevel(p, q) for p, q in self.top("asks", 10)]
        bids = [BookLevel(p, q) for p, q in self.top("bids", 10)]
        return checksum_v2(asks, bids, price_precision=self.pp, qty_precision=self.qp)


@dataclass(eq=False)  # identity hashing: clients live in a set
class _Client:
    ws: trio_websocket.WebSocketConnection
    stream: trio.SocketStream
    out: trio.MemorySendChannel[str]
    books: dict[str, int] = field(default_factory=dict)  # symbol -> depth
    tickers: set[str] = field(default_factory=set)
    trades: set[str] = field(default_factory=set)
    last_sent: float = 0.0
    burst_started: bool = False


class KrakenWsTestServer:
    """See the module docstring; build it with ``open_kraken_ws_server``."""

    def __init__(
        self,
        *,
        symbols: Sequence[str],
        seed: int = 1,
        updates_per_second: float = 100.0,
        heartbeat_interval: float | None = 1.0,
        scripted: bool = False,
        trade_every: int = 7,
        ticker_every: int = 11,
        token: str | None = None,
        reject_symbols: Mapping[str, str] | None = None,
        burst: int = 0,
        pairs: Mapping[str, tuple[int, int, Decimal]] | None = None,
        market_levels: int = 40,
    ) -> None:
        self.symbols = tuple(symbols)
        self.scripted = scripted
        self.updates_per_second = updates_per_second
        self.heartbeat_interval = heartbeat_interval
        self.trade_every = trade_every
        self.ticker_every = ticker_every
        self.token = token
        self.reject_symbols = dict(reject_symbols or {})
        self.pairs = {**DEFAULT_PAIRS, **(pairs or {})}
        rng = random.Random(seed)
        self.markets: dict[str, _Market] = {}
        for symbol in self.symbols:
            pp, qp, mid = self.pairs.get(symbol, (4, 8, Decimal(1)))
            self.markets[symbol] = _Market(symbol, pp, qp, mid, random.Random(rng.random()),
                                           market_levels)
        self.clients: set[_Client] = set()
        self.requests: list[dict[str, Any]] = []
        self.connections_accepted = 0
        self.frames_sent = 0
        self.url = ""
        self.port = 0
        self._views: dict[tuple[str, int], dict[str, list[tuple[Decimal, Decimal]]]] = {}
        self._corrupt: set[str] = set()
        self._stall_until = 0.0
        self._paused = False
        self._steps = 0
        self._order_seq = 0
        self._new_connection = trio.Event()
        self._burst_frames: list[str] = []
        self._burst_snapshots: list[str] = []
        if burst:
            self._prepare_burst(burst)

    # ------------------------------------------------------------------ fault injection

    def corrupt_next_checksum(self, symbol: str) -> None:
        """The next book update for ``symbol`` carries a wrong checksum (to every client)."""
        self._corrupt.add(symbol)

    async def drop_connections(self) -> None:
        """Abrupt disconnect: RST the TCP connections, no WebSocket close handshake."""
        for client in list(self.clients):
            try:
                # SO_LINGER 0 makes close() send a reset, like a network drop.
                client.stream.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                         struct.pack("ii", 1, 0))
            except OSError:
                pass
            await client.stream.aclose()

    def inject_malformed(self, raw: str = _TRUNCATED) -> None:
        """Send a frame that is not valid JSON (or any ``raw`` text) to every client."""
        self.push(raw)

    def stall(self, seconds: float) -> None:
        """Send nothing at all (no data, heartbeat or pong) for ``seconds``."""
        self._stall_until = trio.current_time() + seconds

    def pause(self) -> None:
        """Stop the market random walk (heartbeats and request answers continue)."""
        self._paused = True

    def resume(self) -> None:
        self._paused = False

    def push(self, frame: str | Mapping[str, Any]) -> None:
        """Scripted mode (or any mode): send exactly ``frame`` to every connected client."""
        raw = frame if isinstance(frame, str) else json.dumps(frame)
        for client in list(self.clients):
            self._send(client, raw)

    async def wait_connections(self, count: int) -> None:
        """Wait until ``count`` connections have been accepted in total."""
        while self.connections_accepted < count:
            await self._new_connection.wait()

    def book_levels(self, symbol: str, depth: int = 10) -> tuple[list[BookLevel], list[BookLevel]]:
        """The server's current (bids, asks) top ``depth``, best first."""
        market = self.markets[symbol]
        return ([BookLevel(p, q) for p, q in market.top("bids", depth)],
                [BookLevel(p, q) for p, q in market.top("asks", depth)])

    # ------------------------------------------------------------------ frames

    def _timestamp(self) -> str:
        elapsed = timedelta(seconds=self._steps / 1000)
        return (_EPOCH + elapsed).strftime("%Y-%m-%dT%H:%M:%S.%fZ")

    def _book_snapshot(self, symbol: str, depth: int) -> str:
        market = self.markets[symbol]
        bids, asks = market.top("bids", depth), market.top("asks", depth)
        self._views[(symbol, depth)] = {"bids": bids, "asks": asks}
        return ('{"channel":"book","type":"snapshot","data":[{"symbol":"' + symbol
                + '","bids":' + _levels_json(bids) + ',"asks":' + _levels_json(asks)
                + f',"checksum":{market.checksum()},"timestamp":"{self._timestamp()}"}}]}}')

    def _book_update(self, symbol: str, depth: int, checksum: int) -> str | None:
        """The update that moves the (symbol, depth) view to the market's current top."""
        market = self.markets[symbol]
        view = self._views[(symbol, depth)]
        parts: dict[str, list[tuple[Decimal, Decimal]]] = {}
        for side in ("bids", "asks"):
            new = market.top(side, depth)
            old = dict(view[side])
            new_map = dict(new)
            changed = [(p, Decimal(0)) for p in old if p not in new_map]
            changed += [(p, q) for p, q in new if old.get(p) != q]
            parts[side] = changed
            view[side] = new
        if not parts["bids"] and not parts["asks"]:
            return None
        return ('{"channel":"book","type":"update","data":[{"symbol":"' + symbol
                + '","bids":' + _levels_json(parts["bids"]) + ',"asks":'
                + _levels_json(parts["asks"])
                + f',"checksum":{checksum},"timestamp":"{self._timestamp()}"}}]}}')

    def _ticker(self, symbol: str, kind: str = "update") -> str:
        market = self.markets[symbol]
        (bid, bid_qty), (ask, ask_qty) = market.top("bids", 1)[0], market.top("asks", 1)[0]
        return ('{"channel":"ticker","type":"' + kind + '","data":[{"symbol":"' + symbol
                + f'","bid":{_num(bid)},"bid_qty":{_num(bid_qty)},"ask":{_num(ask)},'
                f'"ask_qty":{_num(ask_qty)},"last":{_num(bid)},"volume":1234.5,"vwap":'
                f'{_num(bid)},"low":{_num(bid)},"high":{_num(ask)},"change":0.0,'
                f'"change_pct":0.0,"timestamp":"{self._timestamp()}"}}]}}')

    def _trade(self, symbol: str) -> str:
        market = self.markets[symbol]
        market.trade_id += 1
        buy = market.rng.random() < 0.5
        price = market.top("asks" if buy else "bids", 1)[0][0]
        return ('{"channel":"trade","type":"update","data":[{"symbol":"' + symbol
                + f'","side":"{"buy" if buy else "sell"}","price":{_num(price)},"qty":'
                f'{_num(market.lot * 1000)},"ord_type":"market","trade_id":{market.trade_id},'
                f'"timestamp":"{self._timestamp()}"}}]}}')

    def _instrument_snapshot(self) -> str:
        pairs = []
        for symbol in sorted(set(self.symbols) | set(self.pairs)):
            pp, qp, _ = self.pairs.get(symbol, (4, 8, Decimal(1)))
            base, _, quote = symbol.partition("/")
            pairs.append({"symbol": symbol, "base": base, "quote": quote, "status": "online",
                          "qty_precision": qp, "qty_increment": float(Decimal(1).scaleb(-qp)),
                          "price_precision": pp,
                          "price_increment": float(Decimal(1).scaleb(-pp)),
                          "qty_min": 0.0001, "cost_min": 0.5, "cost_precision": 5,
                          "marginable": False, "has_index": True})
        return json.dumps({"channel": "instrument", "type": "snapshot",
                           "data": {"assets": [], "pairs": pairs}})

    # ------------------------------------------------------------------ market driver

    def _tick(self, symbol: str) -> None:
        market = self.markets[symbol]
        market.step()
        self._steps += 1
        checksum = market.checksum()
        if symbol in self._corrupt:
            self._corrupt.discard(symbol)
            checksum ^= 0x5A5A5A5A
        frames: dict[int, str | None] = {}
        for client in list(self.clients):
            depth = client.books.get(symbol)
            if depth is None:
                continue
            if depth not in frames:
                frames[depth] = self._book_update(symbol, depth, checksum)
            frame = frames[depth]
            if frame is not None:
                self._send(client, frame)
        # Views of depths no client holds any more still follow the market.
        for key in list(self._views):
            if key[0] == symbol and key[1] not in frames:
                del self._views[key]
        if self.trade_every and self._steps % self.trade_every == 0:
            trade = self._trade(symbol)
            for client in list(self.clients):
                if symbol in client.trades:
                    self._send(client, trade)
        if self.ticker_every and self._steps % self.ticker_every == 0:
            ticker = self._ticker(symbol)
            for client in list(self.clients):
                if symbol in client.tickers:
                    self._send(client, ticker)

    async def _drive(self) -> None:
        if self.scripted or self._burst_frames or not self.updates_per_second:
            return
        interval = 1.0 / self.updates_per_second
        while True:
            for symbol in self.symbols:
                await trio.sleep(interval)
                if not self._paused:
                    self._tick(symbol)

    def _prepare_burst(self, count: int) -> None:
        """Pre-render snapshots and ``count`` depth-10 updates (benchmarks: same frames)."""
        self._burst_snapshots = [self._book_snapshot(s, 10) for s in self.symbols]
        frames: list[str] = []
        while len(frames) < count:
            for symbol in self.symbols:
                market = self.markets[symbol]
                market.step()
                self._steps += 1
                frame = self._book_update(symbol, 10, market.checksum())
                if frame is not None:
                    frames.append(frame)
        self._burst_frames = frames[:count]

    @property
    def burst_message_count(self) -> int:
        """Book messages a burst client receives (snapshots + updates)."""
        return len(self._burst_snapshots) + len(self._burst_frames)

    # ------------------------------------------------------------------ connections

    def _send(self, client: _Client, raw: str) -> None:
        try:
            client.out.send_nowait(raw)
        except (trio.WouldBlock, trio.ClosedResourceError, trio.BrokenResourceError):
            # A client that cannot keep up is dropped, as an exchange would.
            client.out.close()

    async def _handle_tcp(self, stream: trio.SocketStream) -> None:
        async with trio.open_nursery() as nursery:
            ws: trio_websocket.WebSocketConnection | None = None
            with trio.move_on_after(5):
                request = await trio_websocket.wrap_server_stream(nursery, stream)
                ws = await request.accept()
            if ws is None or ws.closed:  # handshake timed out or failed
                nursery.cancel_scope.cancel()
                return
            buffer = max(100_000, self.burst_message_count + 1000)
            out_send, out_recv = trio.open_memory_channel[str](buffer)
            client = _Client(ws=ws, stream=stream, out=out_send)
            self.clients.add(client)
            self.connections_accepted += 1
            self._new_connection.set()
            self._new_connection = trio.Event()
            self._send(client, json.dumps({"channel": "status", "type": "update", "data": [
                {"api_version": "v2", "connection_id": _CONNECTION_ID + self.connections_accepted,
                 "system": "online", "version": "2.0.0"}]}))
            try:
                nursery.start_soon(self._writer, client, out_recv)
                if self.heartbeat_interval:
                    nursery.start_soon(self._heartbeats, client)
                await self._reader(client)
            except (trio_websocket.ConnectionClosed, trio.BrokenResourceError,
                    trio.ClosedResourceError):
                pass
            finally:
                self.clients.discard(client)
                nursery.cancel_scope.cancel()
                with trio.CancelScope(shield=True), trio.move_on_after(0.5):
                    await stream.aclose()

    async def _writer(self, client: _Client, out: trio.MemoryReceiveChannel[str]) -> None:
        try:
            async for raw in out:
                # A stall may be extended while we sleep, hence the re-check.
                while trio.current_time() < self._stall_until:  # noqa: ASYNC110
                    await trio.sleep_until(self._stall_until)
                await client.ws.send_message(raw)
                self.frames_sent += 1
                client.last_sent = trio.current_time()
        except (trio_websocket.ConnectionClosed, trio.BrokenResourceError,
                trio.ClosedResourceError):
            pass
        # Queue overflow or a dead socket: end the connection.
        await client.stream.aclose()

    async def _heartbeats(self, client: _Client) -> None:
        assert self.heartbeat_interval is not None
        while True:
            await trio.sleep(self.heartbeat_interval)
            if trio.current_time() - client.last_sent >= self.heartbeat_interval:
                self._send(client, '{"channel":"heartbeat"}')

    async def _reader(self, client: _Client) -> None:
        while True:
            raw = await client.ws.get_message()
            try:
                msg = json.loads(raw)
            except ValueError:
                continue
            self.requests.append(msg)
            self._answer(client, msg)

    # ------------------------------------------------------------------ requests

    def _response(self, msg: Mapping[str, Any], *, result: Mapping[str, Any] | None = None,
                  error: str | None = None, method: str | None = None) -> str:
        body: dict[str, Any] = {"method": method or msg.get("method")}
        if error is None:
            body["result"] = dict(result or {})
            body["success"] = True
        else:
            body["error"] = error
            body["success"] = False
        if "req_id" in msg:
            body["req_id"] = msg["req_id"]
        body["time_in"] = body["time_out"] = self._timestamp()
        return json.dumps(body)

    def _answer(self, client: _Client, msg: Mapping[str, Any]) -> None:
        method = msg.get("method")
        params = msg.get("params") or {}
        if method == "ping":
            body = {"method": "pong", "time_in": self._timestamp(), "time_out": self._timestamp()}
            if "req_id" in msg:
                body["req_id"] = msg["req_id"]
            self._send(client, json.dumps(body))
        elif method in ("subscribe", "unsubscribe"):
            self._subscription(client, msg, method, params)
        elif method in ("add_order", "cancel_order", "cancel_all", "cancel_all_orders_after"):
            self._trading(client, msg, method, params)
        else:
            self._send(client, self._response(msg, error=f"EGeneral:Unknown method {method}"))

    def _subscription(self, client: _Client, msg: Mapping[str, Any], method: str,
                      params: Mapping[str, Any]) -> None:
        channel = params.get("channel")
        subscribe = method == "subscribe"
        if channel == "instrument":
            self._send(client, self._response(msg, result={"channel": "instrument",
                                                           "snapshot": True}))
            if subscribe:
                self._send(client, self._instrument_snapshot())
            return
        if channel in ("executions", "balances"):
            if self.token is None or params.get("token") != self.token:
                self._send(client, self._response(msg, error="EAPI:Invalid token"))
                return
            self._send(client, self._response(msg, result={"channel": channel}))
            if subscribe:
                self._send(client, json.dumps({"channel": channel, "type": "snapshot",
                                               "data": [], "sequence": 1}))
            return
        for symbol in params.get("symbol") or []:
            result: dict[str, Any] = {"channel": channel, "symbol": symbol}
            if channel == "book":
                result["depth"] = params.get("depth", 10)
            if symbol in self.reject_symbols or symbol not in self.markets:
                error = self.reject_symbols.get(symbol, f"Currency pair not supported {symbol}")
                self._send(client, self._response(msg, error=error))
                continue
            self._send(client, self._response(msg, result=result))
            if channel == "book":
                if subscribe:
                    depth = int(params.get("depth", 10))
                    client.books[symbol] = depth
                    if self._burst_frames:
                        self._maybe_burst(client)
                    elif not self.scripted:
                        self._send(client, self._book_snapshot(symbol, depth))
                else:
                    client.books.pop(symbol, None)
            elif channel == "ticker":
                (client.tickers.add if subscribe else client.tickers.discard)(symbol)
                if subscribe and not self.scripted and params.get("snapshot", True):
                    self._send(client, self._ticker(symbol, "snapshot"))
            elif channel == "trade":
                (client.trades.add if subscribe else client.trades.discard)(symbol)

    def _maybe_burst(self, client: _Client) -> None:
        if client.burst_started or any(s not in client.books for s in self.symbols):
            return
        client.burst_started = True
        for raw in self._burst_snapshots:
            self._send(client, raw)
        for raw in self._burst_frames:
            self._send(client, raw)

    def _trading(self, client: _Client, msg: Mapping[str, Any], method: str,
                 params: Mapping[str, Any]) -> None:
        if self.token is None or params.get("token") != self.token:
            self._send(client, self._response(msg, error="EAPI:Invalid token"))
            return
        if method == "add_order":
            self._order_seq += 1
            result: dict[str, Any] = {"order_id": f"OTEST{self._order_seq:05d}-AAAAA-BBBBBB"}
            for key in ("cl_ord_id", "order_userref"):
                if key in params:
                    result[key] = params[key]
            self._send(client, self._response(msg, result=result))
        elif method == "cancel_order":
            for order_id in params.get("order_id") or []:
                self._send(client, self._response(msg, result={"order_id": order_id}))
        elif method == "cancel_all":
            self._send(client, self._response(msg, result={"count": 0}))
        else:
            now = self._timestamp()
            self._send(client, self._response(msg, result={"currentTime": now,
                                                           "triggerTime": now}))


@asynccontextmanager
async def open_kraken_ws_server(
    *, symbols: Sequence[str] = ("BTC/USD", "ETH/USD", "ETH/BTC"), **options: Any
) -> AsyncIterator[KrakenWsTestServer]:
    """Run a ``KrakenWsTestServer`` on 127.0.0.1 (free port); ``server.url`` is ``ws://.../v2``.

    ``options`` are ``KrakenWsTestServer`` keyword arguments (seed, updates_per_second,
    heartbeat_interval, scripted, token, reject_symbols, burst, ...). Leaving the block stops
    the server and drops every connection.
    """
    server = KrakenWsTestServer(symbols=symbols, **options)
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    server.port = listeners[0].socket.getsockname()[1]
    server.url = f"ws://127.0.0.1:{server.port}/v2"
    async with trio.open_nursery() as nursery:
        nursery.start_soon(trio.serve_listeners, server._handle_tcp, listeners)
        nursery.start_soon(server._drive)
        try:
            yield server
        finally:
            nursery.cancel_scope.cancel()

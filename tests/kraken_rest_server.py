"""A Kraken-protocol REST server for tests: real HTTP on 127.0.0.1, port 0 (trio + h11).

:class:`KrakenRestState` holds Kraken's semantics without any transport: it verifies ``API-Key``
and ``API-Sign`` (the documented algorithm, over the received body bytes), enforces strictly
increasing nonces (with an optional Kraken-style nonce window), keeps an order book of accepted
orders keyed by txid and ``cl_ord_id``, and answers in Kraken's shapes (docs example responses
for the market-data endpoints).

Fault injection, per endpoint and consumed in order (``state.inject("AddOrder", Fault(...))``):

* before processing: ``RATE_LIMIT``, ``HTTP_503``, ``INVALID_NONCE``, ``UNAVAILABLE``, ``BUSY``,
  ``ERROR`` (any Kraken error strings), ``SLOW`` (sleep ``delay`` s, then process normally);
* after processing (the state has changed): ``LOSE_RESPONSE`` (close the connection without an
  answer) and ``HTTP_503_AFTER`` (answer 503).

Market-data history (for ``data download`` tests): ``trades_data[pair_id]`` holds Kraken
``Trades`` rows ``[price, volume, time, b/s, m/l, misc, trade_id]`` in time order, served in pages
of ``trades_page`` (or the request's smaller ``count``) after the ``since`` cursor (seconds, or
nanoseconds as Kraken's ``last``), exclusive, or inclusive with ``trades_since_inclusive`` (to
check a client's de-duplication); ``last`` is the nanosecond time of the page's last row.
``ohlc_data[pair_id]`` holds ``OHLC`` rows (the last one is the uncommitted candle).
``server_time`` is what ``Time`` answers. ``public_limit = (max, decay per second)`` enforces a
call counter on the public endpoints (``EAPI:Rate limit exceeded`` past it, counted in
``rate_limit_errors``). Pairs without data keep the docs example answers.

Two ways to reach it: :func:`open_kraken_rest_server` (a real socket, for real-clock tests) and
:meth:`KrakenRestState.mock_transport` (an ``httpx.MockTransport`` calling the same handler, for
MockClock tests, because real sockets and autojump do not mix).
"""

from __future__ import annotations

import enum
import itertools
import json
import pathlib
from collections import defaultdict, deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import h11
import httpx
import trio

from protocol.kraken._pairs import PairRegistry, UnknownPair
from protocol.kraken._signing import KrakenCredentials

FIXTURES = pathlib.Path(__file__).resolve().parent / "fixtures" / "kraken_rest"
DOCS = json.loads((FIXTURES / "docs_examples.json").read_text())["responses"]

#: The API secret of Kraken's documented signature example (vectors.json), not a real one:
#: tests and benches sign with it so the published vector doubles as a fixture.
DOCS_EXAMPLE_SECRET = (
    "kQH5HW/8p1uGOVjbgWA7FunAmGO8lsSUXNsu3eow76sz84Q18fWxnyRzBHCd3pd5nE9qa99HAZtuZuj6F1huXg==")


class Fault(enum.Enum):
    RATE_LIMIT = "rate_limit"
    HTTP_503 = "http_503"
    INVALID_NONCE = "invalid_nonce"
    UNAVAILABLE = "unavailable"
    BUSY = "busy"
    ERROR = "error"
    SLOW = "slow"
    LOSE_RESPONSE = "lose_response"
    HTTP_503_AFTER = "http_503_after"


_AFTER = {Fault.LOSE_RESPONSE, Fault.HTTP_503_AFTER}


@dataclass(frozen=True)
class FaultSpec:
    kind: Fault
    errors: tuple[str, ...] = ()
    delay: float = 0.0


class _Lost:
    """Sentinel: drop the connection without answering."""


LOST = _Lost()


@dataclass
class Received:
    endpoint: str
    params: dict[str, str]
    at: float  # trio.current_time() on arrival
    nonce: int | None = None


@dataclass
class KrakenRestState:
    credentials: KrakenCredentials
    nonce_window: int = 0
    requests: list[Received] = field(default_factory=list)
    orders: dict[str, dict[str, Any]] = field(default_factory=dict)
    balances: dict[str, str] = field(default_factory=lambda: dict(DOCS["Balance"]["result"]))
    cancel_after: int | None = None
    trades_data: dict[str, list[list[Any]]] = field(default_factory=dict)
    trades_page: int = 1000
    trades_since_inclusive: bool = False
    ohlc_data: dict[str, list[list[Any]]] = field(default_factory=dict)
    server_time: int = 1688669448
    public_limit: tuple[float, float] | None = None
    rate_limit_errors: int = 0
    _public_level: float = 0.0
    _public_at: float | None = None
    _faults: dict[str, deque[FaultSpec]] = field(default_factory=lambda: defaultdict(deque))
    _max_nonce: int = 0
    _seen_nonces: set[int] = field(default_factory=set)
    _txids: itertools.count[int] = field(default_factory=lambda: itertools.count(1))

    def __post_init__(self) -> None:
        pairs = json.loads((FIXTURES / "asset_pairs_20210417_subset.json").read_text())
        self.asset_pairs: dict[str, Any] = pairs["response"]["result"]
        self.registry = PairRegistry.from_asset_pairs(self.asset_pairs)

    # ------------------------------------------------------------------ test helpers

    def inject(self, endpoint: str, *faults: Fault | FaultSpec) -> None:
        for f in faults:
            self._faults[endpoint].append(f if isinstance(f, FaultSpec) else FaultSpec(f))

    def calls(self, endpoint: str) -> list[Received]:
        return [r for r in self.requests if r.endpoint == endpoint]

    def orders_with(self, cl_ord_id: str) -> list[dict[str, Any]]:
        return [o for o in self.orders.values() if o.get("cl_ord_id") == cl_ord_id]

    def mock_transport(self) -> httpx.MockTransport:
        async def handler(request: httpx.Request) -> httpx.Response:
            answer = await self.handle(request.method, request.url.raw_path.decode(),
                                       dict(request.headers), request.content)
            if isinstance(answer, _Lost):
                raise httpx.RemoteProtocolError("Server disconnected without sending a response.",
                                                request=request)
            return httpx.Response(answer[0], content=answer[1],
                                  headers={"content-type": "application/json"})

        return httpx.MockTransport(handler)

    # ------------------------------------------------------------------ Kraken semantics

    async def handle(self, method: str, target: str, headers: dict[str, str], body: bytes
                     ) -> tuple[int, bytes] | _Lost:
        url = urlsplit(target)
        parts = url.path.split("/")
        if len(parts) != 4 or parts[1] != "0" or parts[2] not in ("public", "private"):
            return 404, b"not found"
        endpoint, private = parts[3], parts[2] == "private"
        query = url.query if not private else body.decode("ascii")
        params = dict(parse_qsl(query, keep_blank_values=True))
        rec = Received(endpoint=endpoint, params=params, at=trio.current_time())
        self.requests.append(rec)
        fault = self._faults[endpoint].popleft() if self._faults[endpoint] else None
        if private:
            error = self._authenticate(url.path, headers, body, params, rec)
            if error:
                return self._err(error)
        elif self.public_limit is not None and not self._public_call_fits():
            self.rate_limit_errors += 1
            return self._err("EAPI:Rate limit exceeded")
        if fault is not None and fault.kind not in _AFTER:
            if fault.kind is Fault.SLOW:
                await trio.sleep(fault.delay)
            else:
                return self._fault_answer(fault)
        try:
            handler = getattr(self, f"_do_{endpoint}")
        except AttributeError:
            return self._err("EGeneral:Unknown method")
        result = handler(params)
        answer = self._err(*result.errors) if isinstance(result, _Errors) else (
            200, json.dumps({"error": [], "result": result}).encode())
        if fault is not None and fault.kind is Fault.LOSE_RESPONSE:
            return LOST
        if fault is not None and fault.kind is Fault.HTTP_503_AFTER:
            return 503, b"<html>503 Service Temporarily Unavailable</html>"
        return answer

    def _authenticate(self, path: str, headers: dict[str, str], body: bytes,
                      params: dict[str, str], rec: Received) -> str | None:
        lower = {k.lower(): v for k, v in headers.items()}
        if lower.get("api-key") != self.credentials.api_key:
            return "EAPI:Invalid key"
        try:
            nonce = int(params["nonce"])
        except (KeyError, ValueError):
            return "EAPI:Invalid nonce"
        rec.nonce = nonce
        if lower.get("api-sign") != self.credentials.sign(path, nonce, body):
            return "EAPI:Invalid signature"
        if nonce in self._seen_nonces or nonce <= self._max_nonce - self.nonce_window:
            return "EAPI:Invalid nonce"
        self._seen_nonces.add(nonce)
        self._max_nonce = max(self._max_nonce, nonce)
        return None

    def _public_call_fits(self) -> bool:
        assert self.public_limit is not None
        limit, decay = self.public_limit
        now = trio.current_time()
        if self._public_at is not None:
            self._public_level = max(0.0, self._public_level - (now - self._public_at) * decay)
        self._public_at = now
        if self._public_level + 1 > limit:
            return False
        self._public_level += 1
        return True

    @staticmethod
    def _err(*errors: str) -> tuple[int, bytes]:
        return 200, json.dumps({"error": list(errors)}).encode()

    def _fault_answer(self, fault: FaultSpec) -> tuple[int, bytes]:
        if fault.kind is Fault.HTTP_503:
            return 503, b"<html>503 Service Temporarily Unavailable</html>"
        strings = {
            Fault.RATE_LIMIT: ("EAPI:Rate limit exceeded",),
            Fault.INVALID_NONCE: ("EAPI:Invalid nonce",),
            Fault.UNAVAILABLE: ("EService:Unavailable",),
            Fault.BUSY: ("EService:Busy",),
        }.get(fault.kind, fault.errors)
        return self._err(*strings)

    # public ------------------------------------------------------------

    def _pair_id(self, name: str) -> str | None:
        try:
            return self.registry.rest_name(name)
        except UnknownPair:
            return None

    def _market(self, example: str, params: dict[str, str]) -> Any:
        pair_id = self._pair_id(params.get("pair", ""))
        if pair_id != "XXBTZUSD":  # the docs examples are all XBT/USD
            return _Errors(("EQuery:Unknown asset pair",))
        return DOCS[example]["result"]

    def _do_Time(self, params: dict[str, str]) -> Any:
        return {"unixtime": self.server_time, "rfc1123": "Thu, 06 Jul 23 18:50:48 +0000"}

    def _do_SystemStatus(self, params: dict[str, str]) -> Any:
        return DOCS["SystemStatus"]["result"]

    def _do_AssetPairs(self, params: dict[str, str]) -> Any:
        wanted = [p for p in params.get("pair", "").split(",") if p]
        if not wanted:
            return self.asset_pairs
        ids = [self._pair_id(p) for p in wanted]
        if None in ids:
            return _Errors(("EQuery:Unknown asset pair",))
        return {i: self.asset_pairs[i] for i in ids if i is not None}

    def _do_Ticker(self, params: dict[str, str]) -> Any:
        return self._market("Ticker", params)

    def _do_Depth(self, params: dict[str, str]) -> Any:
        return self._market("Depth", params)

    def _do_OHLC(self, params: dict[str, str]) -> Any:
        pair_id = self._pair_id(params.get("pair", ""))
        if pair_id is not None and pair_id in self.ohlc_data:
            rows = self.ohlc_data[pair_id]
            since = int(params["since"]) if params.get("since") else None
            if since is not None:
                rows = [r for r in rows if int(r[0]) > since]
            rows = rows[-720:]
            last = int(rows[-2][0]) if len(rows) > 1 else (since or 0)
            return {pair_id: rows, "last": last}
        return self._market("OHLC", params)

    def _do_Trades(self, params: dict[str, str]) -> Any:
        pair_id = self._pair_id(params.get("pair", ""))
        if pair_id is None or pair_id not in self.trades_data:
            return self._market("Trades", params)
        since_text = params.get("since") or "0"
        if not since_text.isdigit():
            return _Errors(("EGeneral:Invalid arguments:since",))
        since = int(since_text)
        since_ns = since if since >= 10**14 else since * 10**9
        count = min(self.trades_page, int(params.get("count") or 1000))
        out: list[list[Any]] = []
        for row in self.trades_data[pair_id]:
            ts_ns = _ns(row[2])
            if ts_ns > since_ns or (self.trades_since_inclusive and ts_ns == since_ns):
                out.append(row)
                if len(out) == count:
                    break
        last = _ns(out[-1][2]) if out else since_ns
        return {pair_id: out, "last": str(last)}

    # private -----------------------------------------------------------

    def _do_Balance(self, params: dict[str, str]) -> Any:
        return self.balances

    def _filtered(self, statuses: tuple[str, ...], params: dict[str, str]) -> dict[str, Any]:
        out = {}
        for txid, order in self.orders.items():
            if order["status"] not in statuses:
                continue
            if "cl_ord_id" in params and order.get("cl_ord_id") != params["cl_ord_id"]:
                continue
            if "userref" in params and str(order.get("userref")) != params["userref"]:
                continue
            out[txid] = order
        return out

    def _do_OpenOrders(self, params: dict[str, str]) -> Any:
        return {"open": self._filtered(("pending", "open"), params)}

    def _do_ClosedOrders(self, params: dict[str, str]) -> Any:
        closed = self._filtered(("closed", "canceled", "expired"), params)
        return {"closed": closed, "count": len(closed)}

    def _do_QueryOrders(self, params: dict[str, str]) -> Any:
        return {t: self.orders[t] for t in params.get("txid", "").split(",") if t in self.orders}

    def _do_TradesHistory(self, params: dict[str, str]) -> Any:
        return DOCS["TradesHistory"]["result"] | {"count": 2}

    def _do_AddOrder(self, params: dict[str, str]) -> Any:
        for key in ("ordertype", "type", "volume", "pair"):
            if key not in params:
                return _Errors((f"EGeneral:Invalid arguments:{key}",))
        if params["type"] not in ("buy", "sell"):
            return _Errors(("EGeneral:Invalid arguments:type",))
        if "cl_ord_id" in params and "userref" in params:
            return _Errors(("EGeneral:Invalid arguments:cl_ord_id",))
        pair_id = self._pair_id(params["pair"])
        if pair_id is None:
            return _Errors(("EQuery:Unknown asset pair",))
        info = self.registry.get(pair_id)
        volume = Decimal(params["volume"])
        if volume < info.ordermin:
            return _Errors(("EOrder:Order minimum not met",))
        cl = params.get("cl_ord_id")
        if cl and self._filtered(("pending", "open"), {"cl_ord_id": cl}):
            # Kraken's exact string for a duplicate cl_ord_id is not documented (PROTOCOL §9).
            return _Errors(("EOrder:Duplicate cl_ord_id",))
        price = params.get("price", "0")
        descr = f"{params['type']} {volume:.8f} {info.altname} @ {params['ordertype']}" + (
            f" {price}" if params["ordertype"] != "market" else "")
        if params.get("validate") == "true":
            return {"descr": {"order": descr}}
        txid = f"O{next(self._txids):05d}-TEST-ORDER"
        market = params["ordertype"] == "market"
        self.orders[txid] = {
            "refid": None, "userref": int(params.get("userref", 0)), "cl_ord_id": cl,
            "status": "closed" if market else "open", "opentm": 1688666559.8974,
            "closetm": 1688666559.9 if market else None, "starttm": 0, "expiretm": 0,
            "descr": {"pair": info.altname, "type": params["type"],
                      "ordertype": params["ordertype"], "price": price, "price2": "0",
                      "leverage": "none", "order": descr, "close": ""},
            "vol": params["volume"], "vol_exec": params["volume"] if market else "0.00000000",
            "cost": "0", "fee": "0", "price": "0", "misc": "",
            "oflags": params.get("oflags", "fciq"),
        }
        return {"descr": {"order": descr}, "txid": [txid]}

    def _cancel(self, txids: list[str]) -> Any:
        for t in txids:
            self.orders[t]["status"] = "canceled"
            self.orders[t]["reason"] = "User requested"
        return {"count": len(txids), "pending": False}

    def _do_CancelOrder(self, params: dict[str, str]) -> Any:
        open_ = self._filtered(("pending", "open"), {})
        if "cl_ord_id" in params:
            hits = [t for t, o in open_.items() if o.get("cl_ord_id") == params["cl_ord_id"]]
        else:
            ref = params.get("txid", "")
            hits = [t for t, o in open_.items() if t == ref or str(o.get("userref")) == ref]
        if not hits:
            return _Errors(("EOrder:Unknown order",))
        return self._cancel(hits)

    def _do_CancelAll(self, params: dict[str, str]) -> Any:
        return self._cancel(list(self._filtered(("pending", "open"), {})))

    def _do_CancelAllOrdersAfter(self, params: dict[str, str]) -> Any:
        self.cancel_after = int(params["timeout"])
        return {"currentTime": "2023-03-24T17:41:56Z",
                "triggerTime": "2023-03-24T17:42:56Z" if self.cancel_after else "0"}

    def _do_GetWebSocketsToken(self, params: dict[str, str]) -> Any:
        return {"token": "1Dwc4lzSwNWOAwkMdqhssNNFhs1ed606d1WcF3XfEMw", "expires": 900}


def _ns(time: Any) -> int:
    """Nanoseconds of a Trades row time (a float as JSON carries it), exactly as written."""
    return int(Decimal(repr(time) if isinstance(time, float) else str(time)) * 10**9)


@dataclass(frozen=True)
class _Errors:
    errors: tuple[str, ...]


# --------------------------------------------------------------------------- socket layer


@dataclass
class KrakenRestServer:
    state: KrakenRestState
    url: str
    connections: int = 0


async def _serve_connection(stream: trio.SocketStream, server: KrakenRestServer) -> None:
    server.connections += 1
    conn = h11.Connection(h11.SERVER)
    try:
        while True:
            request: h11.Request | None = None
            body = bytearray()
            while True:
                event = conn.next_event()
                if event is h11.NEED_DATA:
                    data = await stream.receive_some(65536)
                    if not data:
                        return
                    conn.receive_data(data)
                elif isinstance(event, h11.Request):
                    request = event
                elif isinstance(event, h11.Data):
                    body += event.data
                elif isinstance(event, h11.EndOfMessage | h11.ConnectionClosed):
                    break
            if request is None:
                return
            headers = {k.decode(): v.decode() for k, v in request.headers}
            answer = await server.state.handle(request.method.decode(), request.target.decode(),
                                               headers, bytes(body))
            if isinstance(answer, _Lost):
                return  # the finally closes the socket: the client sees no response at all
            status, payload = answer
            for ev in (
                h11.Response(status_code=status, headers=[
                    ("content-type", "application/json"), ("content-length", str(len(payload)))]),
                h11.Data(data=payload),
                h11.EndOfMessage(),
            ):
                await stream.send_all(conn.send(ev) or b"")
            if conn.our_state is h11.MUST_CLOSE or conn.their_state is h11.MUST_CLOSE:
                return
            conn.start_next_cycle()
    except (trio.BrokenResourceError, trio.ClosedResourceError, h11.RemoteProtocolError):
        return
    finally:
        await stream.aclose()


@asynccontextmanager
async def open_kraken_rest_server(state: KrakenRestState) -> AsyncIterator[KrakenRestServer]:
    """Serve ``state`` on 127.0.0.1, an ephemeral port, until the block exits."""
    async with trio.open_nursery() as nursery:
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        port = listeners[0].socket.getsockname()[1]
        server = KrakenRestServer(state=state, url=f"http://127.0.0.1:{port}")

        async def handler(stream: trio.SocketStream) -> None:
            await _serve_connection(stream, server)

        nursery.start_soon(trio.serve_listeners, handler, listeners)
        try:
            yield server
        finally:
            nursery.cancel_scope.cancel()

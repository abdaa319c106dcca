"""Kraken Spot REST client on ``httpx.AsyncClient`` (PROTOCOL.md §1-4).

One client owns one connection pool. Every call goes through:

1. the REST call-counter limiter (waits, never breaches; §3.1),
2. a fresh nonce and signature for private calls (§2; signed over the exact body bytes),
3. a per-attempt deadline (``trio.move_on_after``: a total bound, where httpx only bounds each
   read/write),
4. translation of every failure into :mod:`._errors` (``raise Ours(...) from exc``),
5. the retry policy of :mod:`._retry` (2, 4, 8, 16, 32 s for transport/5xx, EService
   Unavailable/Busy, and one invalid-nonce retry).

AddOrder is never blindly retried: after an ambiguous failure (timeout, transport, 5xx,
EService/Internal error) the client looks the order up by ``cl_ord_id`` in OpenOrders and then
ClosedOrders, and resends only if it is not there. So every non-validate AddOrder carries a
``cl_ord_id`` (a UUID is generated when the caller gave neither it nor ``userref``).

Secrets: the credentials object never prints its secret, requests are logged by endpoint name
only (never body or headers), and errors carry only the endpoint and Kraken's error strings.

Runs under trio (httpx uses anyio). Time for timeouts, the limiter and the ticker cache comes
from ``trio.current_time`` (or an injected clock); the wall clock only feeds nonce values.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from decimal import Decimal
from typing import Any, Self, TypeVar
from urllib.parse import urlencode

import httpx
import trio

from ..messages import OrderType, Side
from ._errors import (
    DecodeError,
    InvalidNonce,
    KrakenError,
    PermissionDenied,
    RateLimited,
    TransportError,
    error_from_strings,
)
from ._nonce import NonceGenerator
from ._ratelimit import CallCounterLimiter, RateLimitTier
from ._rest_models import (
    AddOrderResult,
    CancelAfterResult,
    CancelResult,
    ClosedOrdersPage,
    OHLCSeries,
    OrderBookSnapshot,
    OrderInfo,
    RecentTrades,
    ServerTime,
    SystemStatus,
    Ticker,
    TradeRecord,
    TradesHistoryPage,
    WebSocketsToken,
    dec,
    guarded,
    parse_orders,
)
from ._retry import RetryPolicy, is_ambiguous, is_retryable, retry_call
from ._signing import KrakenCredentials

__all__ = ["DEFAULT_REST_URL", "KrakenRestClient", "RequestObserver", "open_kraken_rest"]

DEFAULT_REST_URL = "https://api.kraken.com"
_USER_AGENT = "crypto-enhanced/0.1 (+https://github.com/; trio httpx)"

#: ``observer(endpoint, seconds, outcome)``; outcome is "ok" or the error class name. The actor
#: layer wires it to ``trading_exchange_request_*`` metrics (protocol/ cannot import monitoring).
RequestObserver = Callable[[str, float, str], None]

log = logging.getLogger("protocol.kraken.rest")

Params = Mapping[str, str]
_T = TypeVar("_T")


def _fmt(value: Decimal) -> str:
    if not value.is_finite():
        raise ValueError("order numbers must be finite")
    return format(value, "f")


def _flag(value: bool) -> str:
    return "true" if value else "false"


class KrakenRestClient:
    """Async Kraken REST client; use :func:`open_kraken_rest` or ``async with``.

    Args:
        credentials: needed for private endpoints only.
        base_url: scheme and host (``--rest-url`` / ``KRAKEN_REST_URL``); a trailing ``/0`` is
            tolerated.
        tier: Kraken verification tier for the call-counter model.
        limiter: a limiter shared with other clients of the same key (overrides ``tier``).
        retry: delays for retryable failures.
        nonce: a nonce generator (pass one with a high-water file to survive restarts).
        timeout: total seconds per attempt.
        ticker_ttl: seconds a cached :meth:`ticker` answer is served.
        transport: an httpx transport (tests: ``httpx.MockTransport``).
        observer: per-request callback for metrics.
        clock: monotonic seconds (``trio.current_time``).
    """

    def __init__(
        self,
        credentials: KrakenCredentials | None = None,
        *,
        base_url: str = DEFAULT_REST_URL,
        tier: RateLimitTier = RateLimitTier.STARTER,
        limiter: CallCounterLimiter | None = None,
        retry: RetryPolicy | None = None,
        nonce: NonceGenerator | None = None,
        timeout: float = 10.0,
        ticker_ttl: float = 15.0,
        transport: httpx.AsyncBaseTransport | None = None,
        observer: RequestObserver | None = None,
        clock: Callable[[], float] = trio.current_time,
    ) -> None:
        base = base_url.rstrip("/")
        base = base.removesuffix("/0")
        self._credentials = credentials
        self._limiter = limiter or CallCounterLimiter(tier, clock=clock)
        self._retry = retry or RetryPolicy()
        self._nonce = nonce or NonceGenerator()
        self._timeout = timeout
        self._ticker_ttl = ticker_ttl
        self._observer = observer
        self._clock = clock
        self._ticker_cache: dict[str, tuple[float, Ticker]] = {}
        self._http = httpx.AsyncClient(
            base_url=base,
            transport=transport,
            # httpx's own timeout is a backstop; the per-attempt total bound is ours.
            timeout=httpx.Timeout(timeout),
            headers={"User-Agent": _USER_AGENT},
        )
        self.base_url = base

    @property
    def limiter(self) -> CallCounterLimiter:
        return self._limiter

    def __repr__(self) -> str:
        return f"KrakenRestClient(base_url={self.base_url!r}, credentials={self._credentials!r})"

    async def aclose(self) -> None:
        """Close the connection pool."""
        await self._http.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    # ------------------------------------------------------------------ transport core

    def _build(self, endpoint: str, private: bool, params: Params) -> httpx.Request:
        if not private:
            return self._http.build_request("GET", f"/0/public/{endpoint}", params=dict(params))
        creds = self._credentials
        if creds is None:
            raise PermissionDenied("no Kraken credentials configured", endpoint=endpoint)
        nonce = self._nonce.next()
        body = urlencode([("nonce", str(nonce)), *params.items()]).encode("ascii")
        path = f"/0/private/{endpoint}"
        headers = {
            "API-Key": creds.api_key,
            # Signed over exactly these bytes; the body is never re-serialized after this.
            "API-Sign": creds.sign(path, nonce, body),
            "Content-Type": "application/x-www-form-urlencoded",
        }
        return self._http.build_request("POST", path, content=body, headers=headers)

    async def _send(self, endpoint: str, request: httpx.Request) -> httpx.Response:
        try:
            with trio.move_on_after(self._timeout) as scope:
                return await self._http.send(request)
        except httpx.TimeoutException as exc:
            raise TransportError(f"Kraken {endpoint} timed out", endpoint=endpoint) from exc
        except httpx.HTTPError as exc:
            raise TransportError(
                f"Kraken {endpoint} transport failure ({type(exc).__name__})", endpoint=endpoint
            ) from exc
        assert scope.cancelled_caught
        raise TransportError(
            f"Kraken {endpoint} timed out after {self._timeout:g}s", endpoint=endpoint
        )

    def _decode(self, endpoint: str, response: httpx.Response) -> Any:
        status = response.status_code
        if status >= 500:
            raise TransportError(f"Kraken {endpoint} HTTP {status}", endpoint=endpoint)
        if status == 429:
            raise RateLimited(f"Kraken {endpoint} HTTP 429", endpoint=endpoint)
        if status != 200:
            raise KrakenError(f"Kraken {endpoint} HTTP {status}", endpoint=endpoint)
        try:
            payload = json.loads(response.content, parse_float=Decimal)
        except ValueError:
            raise DecodeError(f"Kraken {endpoint} sent invalid JSON", endpoint=endpoint) from None
        if not isinstance(payload, dict):
            raise DecodeError(f"Kraken {endpoint} sent a non-object", endpoint=endpoint)
        errors = [str(e) for e in payload.get("error") or ()]
        # Strings starting with "W" are warnings; only "E" ones fail the call.
        if any(not e.startswith("W") for e in errors):
            raise error_from_strings(endpoint, errors)
        if "result" not in payload:
            raise DecodeError(f"Kraken {endpoint} response has no result", endpoint=endpoint)
        return payload["result"]

    async def _attempt(self, endpoint: str, private: bool, params: Params) -> Any:
        """One request, no retry: limiter, sign, send, decode."""
        await self._limiter.acquire(endpoint)
        request = self._build(endpoint, private, params)
        start = self._clock()
        outcome = "ok"
        try:
            response = await self._send(endpoint, request)
            return self._decode(endpoint, response)
        except KrakenError as exc:
            outcome = type(exc).__name__
            if isinstance(exc, RateLimited):
                self._limiter.on_rate_limited()
            raise
        finally:
            elapsed = self._clock() - start
            log.debug("kraken %s %s in %.3fs", endpoint, outcome, elapsed)
            if self._observer is not None:
                self._observer(endpoint, elapsed, outcome)

    def _on_retry(self, retry: int, delay: float, exc: KrakenError) -> None:
        log.warning("kraken %s retry %d in %gs after: %s", exc.endpoint, retry, delay, exc)

    async def _call(self, endpoint: str, params: Params | None = None, *,
                    private: bool = False) -> Any:
        def attempt() -> Awaitable[Any]:
            return self._attempt(endpoint, private, params or {})

        return await retry_call(attempt, policy=self._retry, on_retry=self._on_retry)

    # ------------------------------------------------------------------ public endpoints

    async def server_time(self) -> ServerTime:
        r = await self._call("Time")
        return guarded("Time", lambda: ServerTime(unixtime=int(r["unixtime"]),
                                                  rfc1123=str(r["rfc1123"])))

    async def system_status(self) -> SystemStatus:
        r = await self._call("SystemStatus")
        return guarded("SystemStatus", lambda: SystemStatus(status=str(r["status"]),
                                                            timestamp=str(r["timestamp"])))

    async def asset_pairs(self, pairs: Sequence[str] = ()) -> dict[str, Any]:
        """Raw ``AssetPairs`` result (feed it to ``PairRegistry.from_asset_pairs``)."""
        r = await self._call("AssetPairs", {"pair": ",".join(pairs)} if pairs else None)
        if not isinstance(r, dict):
            raise DecodeError("AssetPairs result is not an object", endpoint="AssetPairs")
        return r

    async def tickers(self, pairs: Sequence[str] = ()) -> dict[str, Ticker]:
        """Ticker for several pairs (all when empty), keyed by Kraken pair id; not cached."""
        r = await self._call("Ticker", {"pair": ",".join(pairs)} if pairs else None)
        return guarded("Ticker", lambda: {k: Ticker.parse(k, v) for k, v in r.items()})

    async def ticker(self, pair: str, *, max_age: float | None = None) -> Ticker:
        """Ticker for one pair, served from a cache for ``ticker_ttl`` seconds (15 s default).

        Args:
            pair: any name Kraken accepts; the cache is keyed by it.
            max_age: override the TTL for this call (0 forces a request).
        """
        ttl = self._ticker_ttl if max_age is None else max_age
        now = self._clock()
        cached = self._ticker_cache.get(pair)
        if cached is not None and now - cached[0] < ttl:
            return cached[1]
        result = await self.tickers([pair])
        if len(result) != 1:
            raise DecodeError(f"Ticker for {pair} returned {len(result)} pairs", endpoint="Ticker")
        ticker = next(iter(result.values()))
        self._ticker_cache[pair] = (self._clock(), ticker)
        return ticker

    async def ohlc(self, pair: str, *, interval: int = 1, since: int | None = None
                   ) -> OHLCSeries:
        params = {"pair": pair, "interval": str(interval)}
        if since is not None:
            params["since"] = str(since)
        r = await self._call("OHLC", params)
        return guarded("OHLC", lambda: self._single(r, lambda k, v: OHLCSeries.parse(
            k, v, r["last"])))

    async def depth(self, pair: str, *, count: int = 100) -> OrderBookSnapshot:
        r = await self._call("Depth", {"pair": pair, "count": str(count)})
        return guarded("Depth", lambda: self._single(r, OrderBookSnapshot.parse))

    async def recent_trades(self, pair: str, *, since: str | None = None,
                            count: int | None = None) -> RecentTrades:
        params = {"pair": pair}
        if since is not None:
            params["since"] = since
        if count is not None:
            params["count"] = str(count)
        r = await self._call("Trades", params)
        return guarded("Trades", lambda: self._single(r, lambda k, v: RecentTrades.parse(
            k, v, r["last"])))

    @staticmethod
    def _single(result: Mapping[str, Any], parse: Callable[[str, Any], _T]) -> _T:
        (key,) = [k for k in result if k != "last"]
        return parse(key, result[key])

    # ------------------------------------------------------------------ private: queries

    async def balance(self) -> dict[str, Decimal]:
        r = await self._call("Balance", private=True)
        return guarded("Balance", lambda: {str(k): dec(v) for k, v in r.items()})

    async def open_orders(self, *, trades: bool = False, userref: int | None = None,
                          cl_ord_id: str | None = None) -> dict[str, OrderInfo]:
        params = self._order_filter(trades, userref, cl_ord_id)
        r = await self._call("OpenOrders", params, private=True)
        return guarded("OpenOrders", lambda: parse_orders(r["open"]))

    async def closed_orders(
        self, *, trades: bool = False, userref: int | None = None, cl_ord_id: str | None = None,
        start: int | str | None = None, end: int | str | None = None, ofs: int | None = None,
        closetime: str | None = None,
    ) -> ClosedOrdersPage:
        params = self._order_filter(trades, userref, cl_ord_id)
        for key, value in (("start", start), ("end", end), ("ofs", ofs),
                           ("closetime", closetime)):
            if value is not None:
                params[key] = str(value)
        r = await self._call("ClosedOrders", params, private=True)
        return guarded("ClosedOrders", lambda: ClosedOrdersPage(
            orders=parse_orders(r["closed"]), count=int(r.get("count", len(r["closed"])))))

    async def query_orders(self, txids: Sequence[str], *, trades: bool = False,
                           userref: int | None = None) -> dict[str, OrderInfo]:
        if not 0 < len(txids) <= 50:
            raise ValueError("QueryOrders takes 1 to 50 txids")
        params = self._order_filter(trades, userref, None)
        params["txid"] = ",".join(txids)
        r = await self._call("QueryOrders", params, private=True)
        return guarded("QueryOrders", lambda: parse_orders(r))

    async def trades_history(self, *, trade_type: str | None = None, trades: bool = False,
                             start: int | str | None = None, end: int | str | None = None,
                             ofs: int | None = None) -> TradesHistoryPage:
        params: dict[str, str] = {}
        if trades:
            params["trades"] = "true"
        for key, value in (("type", trade_type), ("start", start), ("end", end), ("ofs", ofs)):
            if value is not None:
                params[key] = str(value)
        r = await self._call("TradesHistory", params, private=True)
        return guarded("TradesHistory", lambda: TradesHistoryPage(
            trades={k: TradeRecord.parse(k, v) for k, v in r["trades"].items()},
            count=int(r.get("count", len(r["trades"])))))

    async def get_websockets_token(self) -> WebSocketsToken:
        r = await self._call("GetWebSocketsToken", private=True)
        return guarded("GetWebSocketsToken", lambda: WebSocketsToken(
            token=str(r["token"]), expires=int(r["expires"])))

    @staticmethod
    def _order_filter(trades: bool, userref: int | None, cl_ord_id: str | None
                      ) -> dict[str, str]:
        params: dict[str, str] = {}
        if trades:
            params["trades"] = "true"
        if userref is not None:
            params["userref"] = str(userref)
        if cl_ord_id is not None:
            params["cl_ord_id"] = cl_ord_id
        return params

    # ------------------------------------------------------------------ private: trading

    async def add_order(
        self, *, pair: str, side: Side | str, ordertype: OrderType | str, volume: Decimal,
        price: Decimal | None = None, price2: Decimal | None = None,
        cl_ord_id: str | None = None, userref: int | None = None, validate: bool = False,
        timeinforce: str | None = None, oflags: Sequence[str] = (),
        extra: Mapping[str, str] | None = None,
    ) -> AddOrderResult:
        """Submit an order, reconciling by ``cl_ord_id`` instead of blindly resending.

        Args:
            pair: pair id or altname (``XXBTZUSD`` / ``XBTUSD``).
            side: buy or sell.
            ordertype: ``market``, ``limit``, or any Kraken order type string.
            volume: base-asset quantity (Decimal, sent in plain notation).
            price, price2: per order type.
            cl_ord_id: client order id (unique among open orders); generated when neither it
                nor ``userref`` is given, so that an ambiguous failure can be reconciled.
            userref: Kraken's non-unique integer tag (mutually exclusive with ``cl_ord_id``).
            validate: validate only; nothing is created.
            timeinforce: GTC / IOC / GTD / FOK.
            oflags: e.g. ``("post",)``.
            extra: further AddOrder parameters, passed verbatim.

        Returns:
            The result; ``recovered=True`` when the order was found after a lost response.

        Raises:
            ValueError: both ``cl_ord_id`` and ``userref``.
            KrakenError: the order was rejected, or retries ran out. After an exhausted run of
                ambiguous failures the order's fate is unknown: reconcile by ``cl_ord_id``.

        If cancelled mid-request the order may or may not exist: reconcile by ``cl_ord_id``.
        """
        if cl_ord_id is not None and userref is not None:
            raise ValueError("cl_ord_id and userref are mutually exclusive (Kraken AddOrder)")
        if cl_ord_id is None and userref is None and not validate:
            cl_ord_id = str(uuid.uuid4())
        params: dict[str, str] = {
            "ordertype": ordertype.value if isinstance(ordertype, OrderType) else ordertype,
            "type": side.value if isinstance(side, Side) else side,
            "volume": _fmt(volume),
            "pair": pair,
        }
        if price is not None:
            params["price"] = _fmt(price)
        if price2 is not None:
            params["price2"] = _fmt(price2)
        if cl_ord_id is not None:
            params["cl_ord_id"] = cl_ord_id
        if userref is not None:
            params["userref"] = str(userref)
        if timeinforce is not None:
            params["timeinforce"] = timeinforce
        if oflags:
            params["oflags"] = ",".join(oflags)
        if validate:
            params["validate"] = "true"
        params.update(extra or {})

        def parse(r: Any) -> AddOrderResult:
            return guarded("AddOrder", lambda: AddOrderResult.parse(
                r, cl_ord_id=cl_ord_id, validated=validate))

        if validate:
            # A validate-only call creates nothing, so it may be retried like a query.
            return parse(await self._call("AddOrder", params, private=True))
        return await self._add_order_reconciling(params, cl_ord_id, parse)

    async def _add_order_reconciling(
        self, params: Params, cl_ord_id: str | None, parse: Callable[[Any], AddOrderResult]
    ) -> AddOrderResult:
        retry = nonce_retries = 0
        need_lookup = False
        while True:
            try:
                if need_lookup:
                    assert cl_ord_id is not None
                    found = await self._find_by_cl_ord_id(cl_ord_id)
                    if found is not None:
                        log.warning("kraken AddOrder outcome was unknown; found order %s by "
                                    "cl_ord_id", found.txid)
                        return AddOrderResult(txid=(found.txid,), description=found.description,
                                              cl_ord_id=cl_ord_id, recovered=True)
                    need_lookup = False  # definitely not there: resending is safe
                return parse(await self._attempt("AddOrder", True, params))
            except InvalidNonce as exc:
                # Rejected before processing (AddOrder or a lookup): nothing was created, and
                # a fresh nonce is taken on the next attempt.
                if nonce_retries >= self._retry.max_nonce_retries:
                    raise
                nonce_retries += 1
                error: KrakenError = exc
            except KrakenError as exc:
                # AddOrder itself: only an ambiguous failure may have created the order. A
                # lookup: only transient failures are worth another try; anything else (e.g.
                # no query permission) means we cannot reconcile, so we stop.
                if not (is_retryable(exc) if need_lookup else is_ambiguous(exc)):
                    raise
                if cl_ord_id is None:
                    raise  # userref-only orders cannot be told apart: the caller reconciles
                need_lookup = True
                error = exc
            if retry >= self._retry.max_retries:
                raise error
            delay = self._retry.delays[retry]
            retry += 1
            self._on_retry(retry, delay, error)
            await trio.sleep(delay)

    async def _find_by_cl_ord_id(self, cl_ord_id: str) -> OrderInfo | None:
        """One OpenOrders then one ClosedOrders lookup (no retry; the caller loops)."""
        filt = {"cl_ord_id": cl_ord_id}
        r = await self._attempt("OpenOrders", True, filt)
        open_ = guarded("OpenOrders", lambda: parse_orders(r["open"]))
        if open_:
            return next(iter(open_.values()))
        r = await self._attempt("ClosedOrders", True, filt)
        closed = guarded("ClosedOrders", lambda: parse_orders(r["closed"]))
        return next(iter(closed.values()), None)

    async def cancel_order(self, txid: str | int | None = None, *,
                           cl_ord_id: str | None = None) -> CancelResult:
        """Cancel by txid, userref (int) or ``cl_ord_id``; exactly one must be given."""
        if (txid is None) == (cl_ord_id is None):
            raise ValueError("give exactly one of txid/userref or cl_ord_id")
        params = {"txid": str(txid)} if txid is not None else {"cl_ord_id": str(cl_ord_id)}
        r = await self._call("CancelOrder", params, private=True)
        return guarded("CancelOrder", lambda: CancelResult(
            count=int(r["count"]), pending=bool(r.get("pending", False))))

    async def cancel_all(self) -> CancelResult:
        r = await self._call("CancelAll", private=True)
        return guarded("CancelAll", lambda: CancelResult(
            count=int(r["count"]), pending=bool(r.get("pending", False))))

    # ``timeout`` is Kraken's parameter name (the switch's delay), not a deadline on this call.
    async def cancel_all_orders_after(self, timeout: int) -> CancelAfterResult:  # noqa: ASYNC109
        """Arm (or with 0 disarm) Kraken's dead man's switch for ``timeout`` seconds."""
        if not 0 <= timeout < 86400:
            raise ValueError("timeout must be in [0, 86400)")
        r = await self._call("CancelAllOrdersAfter", {"timeout": str(timeout)}, private=True)
        return guarded("CancelAllOrdersAfter", lambda: CancelAfterResult(
            current_time=str(r["currentTime"]), trigger_time=str(r["triggerTime"])))


@asynccontextmanager
async def open_kraken_rest(
    credentials: KrakenCredentials | None = None, **kwargs: Any
) -> AsyncIterator[KrakenRestClient]:
    """Open a :class:`KrakenRestClient` (same arguments) and close its pool on exit."""
    client = KrakenRestClient(credentials, **kwargs)
    try:
        yield client
    finally:
        await client.aclose()

"""The /metrics and /healthz HTTP server: h11 over trio sockets.

Deliberately tiny: two GET routes, HTTP/1.1 keep-alive, bounded request size, a per-request
read timeout (so an idle or slow client cannot pin a connection forever) and a cap on concurrent
connections. Anything else gets 404/405. It binds 127.0.0.1 by default: the exposition shows
positions and P&L, so exposing it on other interfaces is an explicit choice (``--metrics-addr``).

The exposition is rendered inline on the trio thread. For this registry (a few hundred series)
that takes well under a millisecond once per scrape, cheaper than a thread hop.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

import h11
import trio
from prometheus_client.exposition import choose_encoder

from .metrics import Metrics

__all__ = ["HealthReport", "health_payload", "serve_metrics"]

log = logging.getLogger(__name__)

#: Requests larger than this (headers; we accept no body) are refused.
MAX_REQUEST_BYTES: Final = 16 * 1024
#: A connection that sends no complete request for this long is closed.
REQUEST_TIMEOUT_S: Final = 10.0
#: Concurrent connections served; the rest wait in the listen backlog.
MAX_CONNECTIONS: Final = 32
_READ_CHUNK: Final = 4096
_JSON: Final = "application/json"
_TEXT: Final = "text/plain; charset=utf-8"


@dataclass(frozen=True, slots=True, kw_only=True)
class HealthReport:
    """A snapshot of the system's health, produced by the supervisor for ``/healthz``.

    Attributes:
        actors: Actor name → state (e.g. ``"running"``, ``"restarting"``, ``"failed"``).
        breaker_state: Circuit breaker state (``"closed"``, ``"open"``, ``"half_open"``).
        breaker_reason: Why the breaker is open, or None.
        feed_ages_s: Feed name → seconds since its last data message (``math.inf`` if none yet).
        stale_after_s: A feed older than this is stale.
        halted: True while trading is halted (breaker open or the trading gate shut).
    """

    actors: Mapping[str, str] = field(default_factory=dict)
    breaker_state: str = "closed"
    breaker_reason: str | None = None
    feed_ages_s: Mapping[str, float] = field(default_factory=dict)
    stale_after_s: float = 30.0
    halted: bool = False

    @property
    def stale_feeds(self) -> tuple[str, ...]:
        """Names of the feeds whose last message is older than ``stale_after_s``."""
        return tuple(sorted(f for f, age in self.feed_ages_s.items() if age > self.stale_after_s))

    @property
    def healthy(self) -> bool:
        """False when trading is halted or any feed is stale (``/healthz`` answers 503)."""
        return not self.halted and not self.stale_feeds


def health_payload(report: HealthReport) -> dict[str, Any]:
    """The JSON body of ``/healthz`` for ``report``.

    ``status`` is ``"ok"``, ``"halted"`` (trading halted, takes precedence) or ``"stale"``.
    Infinite feed ages (no message yet) are rendered as ``null``, since JSON has no infinity.
    """
    stale = set(report.stale_feeds)
    status = "halted" if report.halted else ("stale" if stale else "ok")
    return {
        "status": status,
        "halted": report.halted,
        "breaker": {"state": report.breaker_state, "reason": report.breaker_reason},
        "actors": dict(report.actors),
        "feeds": {
            name: {
                "age_s": round(age, 3) if math.isfinite(age) else None,
                "stale": name in stale,
            }
            for name, age in sorted(report.feed_ages_s.items())
        },
        "stale_after_s": report.stale_after_s,
    }


class _App:
    """Routes one parsed request to a response (status, content type, body)."""

    def __init__(self, metrics: Metrics, health: Callable[[], HealthReport]) -> None:
        self._metrics = metrics
        self._health = health

    def respond(self, request: h11.Request) -> tuple[int, str, bytes, list[tuple[bytes, bytes]]]:
        target = request.target.split(b"?", 1)[0]
        if target not in (b"/metrics", b"/healthz"):
            return 404, _TEXT, b"not found\n", []
        if request.method not in (b"GET", b"HEAD"):
            return 405, _TEXT, b"method not allowed\n", [(b"allow", b"GET, HEAD")]
        if target == b"/metrics":
            accept = ""
            for name, value in request.headers:
                if name == b"accept":
                    accept = value.decode("latin-1")
            # Content negotiation as prometheus_client does it: OpenMetrics if the scraper asks
            # for it, the classic 0.0.4 text format otherwise.
            encoder, content_type = choose_encoder(accept)
            return 200, content_type, encoder(self._metrics.registry), []
        try:
            report = self._health()
        except Exception:
            # A health check that cannot compute health is itself unhealthy; never a 500 that
            # a load balancer might read as "try again".
            log.exception("health callable failed")
            body = {"status": "error", "halted": None}
            return 503, _JSON, json.dumps(body).encode() + b"\n", []
        code = 200 if report.healthy else 503
        payload = json.dumps(health_payload(report), sort_keys=True).encode() + b"\n"
        return code, _JSON, payload, [(b"cache-control", b"no-store")]


async def _send(stream: trio.SocketStream, conn: h11.Connection, event: h11.Event) -> None:
    data = conn.send(event)
    if data:
        await stream.send_all(data)


async def _next_event(stream: trio.SocketStream, conn: h11.Connection) -> Any:
    """The next h11 event, reading from the socket as needed (EOF becomes ConnectionClosed)."""
    while True:
        event = conn.next_event()
        if event is not h11.NEED_DATA:
            return event
        conn.receive_data(await stream.receive_some(_READ_CHUNK))


async def _serve_connection(stream: trio.SocketStream, app: _App) -> None:
    """Serve requests on one connection until the client closes, errs or idles out."""
    conn = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_REQUEST_BYTES)
    while True:
        request: Any = None
        with trio.move_on_after(REQUEST_TIMEOUT_S):
            request = await _next_event(stream, conn)
            # Drain (and ignore) any body so the connection can be reused.
            event = request
            while isinstance(request, h11.Request) and not isinstance(event, h11.EndOfMessage):
                event = await _next_event(stream, conn)
                if isinstance(event, h11.ConnectionClosed):
                    return
        if not isinstance(request, h11.Request):
            # Idle timeout, EOF (ConnectionClosed) or PAUSED: nothing more to serve.
            return
        code, content_type, body, extra = app.respond(request)
        headers = [
            (b"content-type", content_type.encode()),
            (b"content-length", str(len(body)).encode()),
            *extra,
        ]
        await _send(stream, conn, h11.Response(status_code=code, headers=headers))
        if request.method != b"HEAD":
            await _send(stream, conn, h11.Data(data=body))
        await _send(stream, conn, h11.EndOfMessage())
        if conn.our_state is not h11.DONE or conn.their_state is not h11.DONE:
            return
        conn.start_next_cycle()


async def _handle(stream: trio.SocketStream, app: _App, limiter: trio.CapacityLimiter) -> None:
    async with limiter:
        try:
            await _serve_connection(stream, app)
        except h11.RemoteProtocolError as exc:
            # A malformed request: answer 400 if we still can, then close.
            log.debug("bad request: %s", exc)
            try:
                await stream.send_all(
                    b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
                )
            except trio.BrokenResourceError:
                pass
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass  # the peer went away mid-response; nothing to do
        finally:
            await trio.aclose_forcefully(stream)


async def serve_metrics(
    metrics: Metrics,
    health: Callable[[], HealthReport],
    *,
    host: str = "127.0.0.1",
    port: int = 9108,
    task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve ``GET /metrics`` and ``GET /healthz`` until cancelled.

    ``/metrics`` is the registry of ``metrics`` (text format 0.0.4, or OpenMetrics when the
    scraper's Accept header asks for it). ``/healthz`` calls ``health()`` and answers JSON
    (see :func:`health_payload`): 200 when healthy, 503 when trading is halted, a feed is stale,
    or ``health()`` raised.

    Args:
        metrics: The metrics whose registry is exposed.
        health: Returns the current :class:`HealthReport`; called once per ``/healthz`` request
            on the trio thread, so it must be cheap and non-blocking.
        host: Address to bind (``"0.0.0.0"`` to expose beyond loopback, e.g. in a container).
        port: TCP port; 0 picks a free one.
        task_status: Receives the bound port once the socket listens.

    Raises:
        OSError: The address cannot be bound.

    Cancellation closes the listener and every open connection.
    """
    app = _App(metrics, health)
    limiter = trio.CapacityLimiter(MAX_CONNECTIONS)
    listeners = await trio.open_tcp_listeners(port, host=host)
    bound_port: int = listeners[0].socket.getsockname()[1]
    async with trio.open_nursery() as nursery:
        await nursery.start(trio.serve_listeners, lambda s: _handle(s, app, limiter), listeners)
        log.info("metrics server listening on %s:%d", host, bound_port)
        task_status.started(bound_port)

"""Feed actors: one per Kraken WebSocket connection, publishing into the market fan-out.

The session (``protocol.kraken.KrakenWsSession``) owns the connection's life: subscribe with
checked acks, verify every book checksum, resubscribe a book on a mismatch, declare a silent
connection dead and reconnect with backoff. The actor adds what the system needs around it:

* it reports ``started`` at once rather than after the first subscription, so an exchange outage
  never holds the rest of the tree (risk, executor, metrics, ``/healthz``) hostage; a feed that
  is not delivering shows up as a stale feed age instead;
* every published event is counted per feed and channel, and the feed's last-message time is
  kept for ``/healthz`` and ``trading_feed_last_message_timestamp_seconds``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, Protocol

import trio

from protocol.kraken import KrakenWsSession
from protocol.messages import BookEvent, CandleEvent, MarketEvent, TickerEvent, TradeEvent

log = logging.getLogger(__name__)

CHANNEL_OF: dict[type, str] = {
    BookEvent: "book", TickerEvent: "ticker", TradeEvent: "trade", CandleEvent: "ohlc",
}


class FeedObserver(Protocol):
    def feed_message(self, feed: str, channel: str) -> None: ...

    def feed_event(self, feed: str, kind: str, detail: str) -> None: ...


class CountingSender(trio.abc.SendChannel[MarketEvent]):
    """Forwards to the fan-out (which never blocks) and counts what went through."""

    def __init__(self, feed: str, out: trio.abc.SendChannel[MarketEvent],
                 observer: FeedObserver | None, last_seen: dict[str, float]) -> None:
        self.feed = feed
        self._out = out
        self._observer = observer
        self._last_seen = last_seen

    def send_nowait(self, value: MarketEvent) -> None:
        self._last_seen[self.feed] = trio.current_time()
        if self._observer is not None:
            self._observer.feed_message(self.feed, CHANNEL_OF.get(type(value), "other"))
        self._out.send_nowait(value)  # type: ignore[attr-defined]

    async def send(self, value: MarketEvent) -> None:
        self.send_nowait(value)
        await trio.lowlevel.checkpoint()

    async def aclose(self) -> None:
        await trio.lowlevel.checkpoint()


class FeedActor:
    def __init__(
        self,
        name: str,
        session_factory: Callable[[], KrakenWsSession],
        *,
        out: trio.abc.SendChannel[MarketEvent],
        observer: FeedObserver | None = None,
        last_seen: dict[str, float] | None = None,
    ) -> None:
        self.name = name
        self._factory = session_factory
        self._out = out
        self._observer = observer
        self._last_seen = last_seen if last_seen is not None else {}

    async def run(self, *, task_status: trio.TaskStatus[Any] = trio.TASK_STATUS_IGNORED) -> None:
        session = self._factory()  # per incarnation: a session is not reusable after a crash
        sender = CountingSender(self.name, self._out, self._observer, self._last_seen)
        task_status.started()
        await session.run(sender)

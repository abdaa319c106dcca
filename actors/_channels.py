"""Channel wiring: a conflating fan-out for market data and bounded lossless channels.

Market data fans out to every subscriber through its own bounded buffer. The publisher never
blocks: when a subscriber's buffer is full, that subscriber switches to *conflation* and keeps
only the latest value per key (per symbol and event kind), counted in ``statistics()``. A slow
strategy therefore sees fresh books late rather than stale books in order, and never stalls the
feed or its siblings. While conflating, a buffer holds at most one entry per key, so it stays
bounded by the number of keys even if that exceeds ``max_buffer_size``.

Orders, fills and events use :func:`open_lossless_channel`: plain trio memory channels that block
the sender rather than drop.

Both sides are typed against ``trio.abc.SendChannel`` / ``ReceiveChannel`` so a network channel
can replace them later (DESIGN.md, "Scale-out"), and both support ``clone()`` so a supervisor can
hand each actor incarnation its own endpoint (closing a clone never closes the subscription).
"""

from __future__ import annotations

import math
from collections import OrderedDict, deque
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Generic, Self, TypeVar

import trio

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class ChannelStatistics:
    name: str
    depth: int
    peak_depth: int
    max_buffer_size: float
    conflated: int
    closed: bool


class _Subscription(Generic[T]):
    """One subscriber's buffer: FIFO while it keeps up, latest-per-key once it overflows."""

    __slots__ = (
        "_fifo", "_latest", "closed", "conflated", "handles", "key", "lot", "max_size", "name",
        "peak",
    )

    def __init__(self, name: str, max_size: int, key: Callable[[T], Hashable]) -> None:
        self.name = name
        self.max_size = max_size
        self.key = key
        self._fifo: deque[T] = deque()
        self._latest: OrderedDict[Hashable, T] | None = None
        self.lot = trio.lowlevel.ParkingLot()
        self.conflated = 0
        self.peak = 0
        self.handles = 0
        self.closed = False  # no more items will come (all publishers closed)

    def __len__(self) -> int:
        return len(self._latest) if self._latest is not None else len(self._fifo)

    def put(self, item: T) -> None:
        latest = self._latest
        if latest is None:
            fifo = self._fifo
            if len(fifo) < self.max_size:
                fifo.append(item)
                depth = len(fifo)
                if depth > self.peak:
                    self.peak = depth
                if self.lot:  # wake a parked receiver only if there is one (hot path)
                    self.lot.unpark()
                return
            # Overflow: from now until the subscriber drains, keep the latest per key.
            latest = OrderedDict()
            for old in fifo:
                k = self.key(old)
                if k in latest:
                    self.conflated += 1
                latest[k] = old
            fifo.clear()
            self._latest = latest
        k = self.key(item)
        if k in latest:
            self.conflated += 1
        latest[k] = item
        if len(latest) > self.peak:
            self.peak = len(latest)
        if self.lot:
            self.lot.unpark()

    def pop(self) -> T:
        latest = self._latest
        if latest is None:
            return self._fifo.popleft()
        _, item = latest.popitem(last=False)
        if not latest:
            self._latest = None  # caught up: back to plain FIFO
        return item


class FanOutReceiver(trio.abc.ReceiveChannel[T]):
    """A subscriber's receive endpoint. ``receive()`` is atomic with respect to cancellation."""

    def __init__(self, subscription: _Subscription[T]) -> None:
        self._sub = subscription
        self._closed = False
        subscription.handles += 1

    def receive_nowait(self) -> T:
        if self._closed:
            raise trio.ClosedResourceError
        if len(self._sub):
            return self._sub.pop()
        if self._sub.closed:
            raise trio.EndOfChannel
        raise trio.WouldBlock

    async def receive(self) -> T:
        await trio.lowlevel.checkpoint_if_cancelled()
        sub = self._sub
        while True:
            # Inlined receive_nowait(): this is the market-data hot path.
            if self._closed:
                raise trio.ClosedResourceError
            if sub._latest is None:
                if sub._fifo:
                    item = sub._fifo.popleft()
                    break
            elif sub._latest:
                item = sub.pop()
                break
            if sub.closed:
                raise trio.EndOfChannel
            await sub.lot.park()
        await trio.lowlevel.cancel_shielded_checkpoint()
        return item

    def clone(self) -> FanOutReceiver[T]:
        if self._closed:
            raise trio.ClosedResourceError
        return FanOutReceiver(self._sub)

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._sub.handles -= 1
            self._sub.lot.unpark_all()

    async def aclose(self) -> None:
        self.close()
        await trio.lowlevel.checkpoint()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def statistics(self) -> ChannelStatistics:
        sub = self._sub
        return ChannelStatistics(sub.name, len(sub), sub.peak, sub.max_size, sub.conflated,
                                 sub.closed)


class _FanOutState(Generic[T]):
    def __init__(self, name: str) -> None:
        self.name = name
        self.subscriptions: list[_Subscription[T]] = []
        self.publishers = 0
        self.published = 0


class FanOut(trio.abc.SendChannel[T]):
    """The publisher side. ``send`` never blocks; every subscriber gets every item (or, when it
    has fallen behind, the latest item per key)."""

    def __init__(self, name: str = "market", *, _state: _FanOutState[T] | None = None) -> None:
        self._state: _FanOutState[T] = _state or _FanOutState(name)
        self._closed = False
        self._state.publishers += 1

    @property
    def name(self) -> str:
        return self._state.name

    def subscribe(
        self, name: str, *, max_buffer_size: int = 256, key: Callable[[T], Hashable] = id
    ) -> FanOutReceiver[T]:
        """Add a subscriber. ``key`` names what conflates (e.g. ``(type, symbol)``)."""
        if max_buffer_size < 1:
            raise ValueError("a fan-out subscriber needs a buffer of at least 1")
        sub: _Subscription[T] = _Subscription(name, max_buffer_size, key)
        self._state.subscriptions.append(sub)
        return FanOutReceiver(sub)

    def send_nowait(self, value: T) -> None:
        if self._closed:
            raise trio.ClosedResourceError
        self._state.published += 1
        for sub in self._state.subscriptions:
            if sub.handles:  # nobody can ever read an abandoned subscription
                sub.put(value)

    async def send(self, value: T) -> None:
        await trio.lowlevel.checkpoint_if_cancelled()
        self.send_nowait(value)
        await trio.lowlevel.cancel_shielded_checkpoint()

    def clone(self) -> FanOut[T]:
        if self._closed:
            raise trio.ClosedResourceError
        return FanOut(_state=self._state)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._state.publishers -= 1
        if self._state.publishers == 0:
            for sub in self._state.subscriptions:
                sub.closed = True
                sub.lot.unpark_all()

    async def aclose(self) -> None:
        self.close()
        await trio.lowlevel.checkpoint()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def statistics(self) -> tuple[ChannelStatistics, ...]:
        return tuple(
            ChannelStatistics(s.name, len(s), s.peak, s.max_size, s.conflated, s.closed)
            for s in self._state.subscriptions
        )


def open_lossless_channel(
    max_buffer_size: int,
) -> tuple[trio.MemorySendChannel[T], trio.MemoryReceiveChannel[T]]:
    """A bounded channel that blocks the sender rather than drop (orders, fills, events).

    ``max_buffer_size`` must be finite: an unbounded buffer hides a stuck consumer until memory
    runs out.
    """
    if max_buffer_size < 0 or math.isinf(max_buffer_size):
        raise ValueError("lossless channels must be bounded")
    return trio.open_memory_channel[T](max_buffer_size)


def memory_channel_statistics(
    name: str, channel: trio.MemorySendChannel[T] | trio.MemoryReceiveChannel[T]
) -> ChannelStatistics:
    stats = channel.statistics()
    return ChannelStatistics(
        name,
        stats.current_buffer_used,
        getattr(stats, "peak_buffer_used", stats.current_buffer_used),
        stats.max_buffer_size,
        0,
        stats.open_send_channels == 0,
    )

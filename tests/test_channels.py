"""Fan-out conflation and lossless channels."""

from __future__ import annotations

from typing import Any

import pytest
import trio
import trio.testing

from actors import FanOut, open_lossless_channel


def by_symbol(item: tuple[str, int]) -> str:
    return item[0]


async def test_slow_subscriber_does_not_block_publisher_or_siblings(autojump_clock: Any) -> None:
    fan: FanOut[tuple[str, int]] = FanOut("market")
    slow = fan.subscribe("slow", max_buffer_size=4, key=by_symbol)
    fast = fan.subscribe("fast", max_buffer_size=4, key=by_symbol)
    got_fast: list[tuple[str, int]] = []

    async def fast_reader() -> None:
        async for item in fast:
            got_fast.append(item)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(fast_reader)
        for i in range(1000):
            symbol = ("BTC/USD", "ETH/USD", "ETH/BTC")[i % 3]
            with trio.fail_after(0.001):  # virtual: send must never wait
                await fan.send((symbol, i))
            await trio.sleep(0.01)  # let the fast reader keep up
        fan.close()
        # The slow subscriber never read a thing; it now holds the latest value per key.
        drained = []
        async for item in slow:
            drained.append(item)
    assert got_fast == [(("BTC/USD", "ETH/USD", "ETH/BTC")[i % 3], i) for i in range(1000)]
    assert sorted(drained) == [("BTC/USD", 999), ("ETH/BTC", 998), ("ETH/USD", 997)]
    stats = {s.name: s for s in fan.statistics()}
    assert stats["slow"].conflated == 1000 - 3
    assert stats["slow"].peak_depth == 4
    assert stats["fast"].conflated == 0


async def test_conflation_ends_when_subscriber_catches_up() -> None:
    fan: FanOut[tuple[str, int]] = FanOut()
    sub = fan.subscribe("s", max_buffer_size=2, key=by_symbol)
    for i in range(5):
        fan.send_nowait(("A", i))
    assert sub.receive_nowait() == ("A", 4)
    for i in range(2):
        fan.send_nowait(("A", 10 + i))  # buffer has room again: plain FIFO, no conflation
    assert [sub.receive_nowait(), sub.receive_nowait()] == [("A", 10), ("A", 11)]
    with pytest.raises(trio.WouldBlock):
        sub.receive_nowait()


async def test_subscription_survives_closing_a_clone() -> None:
    fan: FanOut[tuple[str, int]] = FanOut()
    owner = fan.subscribe("s", max_buffer_size=8, key=by_symbol)
    clone = owner.clone()
    fan.send_nowait(("A", 1))
    clone.close()
    fan.send_nowait(("A", 2))
    incarnation = owner.clone()
    assert [incarnation.receive_nowait(), incarnation.receive_nowait()] == [("A", 1), ("A", 2)]


async def test_receive_is_cancellation_atomic(autojump_clock: Any) -> None:
    fan: FanOut[tuple[str, int]] = FanOut()
    sub = fan.subscribe("s", max_buffer_size=8, key=by_symbol)
    with trio.move_on_after(1):
        await sub.receive()
    fan.send_nowait(("A", 1))
    assert await sub.receive() == ("A", 1)


async def test_lossless_channel_blocks_instead_of_dropping(autojump_clock: Any) -> None:
    send: trio.MemorySendChannel[int]
    recv: trio.MemoryReceiveChannel[int]
    send, recv = open_lossless_channel(2)
    got: list[int] = []

    async def slow_consumer() -> None:
        async for item in recv:
            got.append(item)
            await trio.sleep(1)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(slow_consumer)
        async with send:
            for i in range(50):
                await send.send(i)
    assert got == list(range(50))


def test_lossless_channels_must_be_bounded() -> None:
    with pytest.raises(ValueError):
        open_lossless_channel(float("inf"))  # type: ignore[arg-type]

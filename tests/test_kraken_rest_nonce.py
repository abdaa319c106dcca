"""Nonces: strictly increasing across concurrent callers and across a restart."""

from __future__ import annotations

import pathlib

import pytest
import trio

from protocol.kraken._nonce import NonceGenerator


class StepClock:
    """A wall clock in ns that the test moves by hand (including backwards)."""

    def __init__(self, now: int = 1_700_000_000_000_000_000) -> None:
        self.now = now

    def __call__(self) -> int:
        return self.now


async def test_concurrent_callers_get_distinct_increasing_nonces() -> None:
    clock = StepClock()
    gen = NonceGenerator(clock_ns=clock)
    issued: list[int] = []

    async def worker() -> None:
        for _ in range(50):
            issued.append(gen.next())
            await trio.lowlevel.checkpoint()  # interleave with the other tasks

    async with trio.open_nursery() as nursery:
        for _ in range(20):
            nursery.start_soon(worker)
    assert len(issued) == 1000
    assert issued == sorted(issued)  # issue order is value order
    assert len(set(issued)) == 1000
    # The clock never moved, so everything after the first came from last + 1.
    assert issued[-1] == clock.now + 999


def test_clock_stepping_back_does_not_lower_nonces() -> None:
    clock = StepClock()
    gen = NonceGenerator(clock_ns=clock)
    first = gen.next()
    clock.now -= 5_000_000_000
    assert gen.next() == first + 1
    clock.now += 10_000_000_000
    assert gen.next() == clock.now


def test_restart_with_high_water_file_survives_clock_step_back(tmp_path: pathlib.Path) -> None:
    state = tmp_path / "nonce"
    clock = StepClock()
    gen = NonceGenerator(state, clock_ns=clock)
    issued = [gen.next() for _ in range(100)]
    # "Restart" with the clock 10 s behind: the new process must not reuse any value.
    clock.now -= 10_000_000_000
    gen2 = NonceGenerator(state, clock_ns=clock)
    assert gen2.next() > max(issued)


def test_restart_without_file_relies_on_clock() -> None:
    clock = StepClock()
    last = [NonceGenerator(clock_ns=clock).next() for _ in range(3)][-1]
    clock.now += 1  # any real restart takes longer than a nanosecond
    assert NonceGenerator(clock_ns=clock).next() > last


def test_high_water_file_written_once_per_reservation(tmp_path: pathlib.Path) -> None:
    state = tmp_path / "sub" / "nonce"
    clock = StepClock()
    gen = NonceGenerator(state, clock_ns=clock, reserve_ns=1_000)
    gen.next()
    mark = int(state.read_text())
    assert mark == clock.now + 1_000
    for _ in range(1000):
        gen.next()  # up to and including the mark itself
    assert int(state.read_text()) == mark  # still inside the reservation: no write
    gen.next()
    assert int(state.read_text()) > mark
    assert not list(state.parent.glob("*.tmp"))


def test_corrupt_high_water_file_is_an_error(tmp_path: pathlib.Path) -> None:
    state = tmp_path / "nonce"
    state.write_text("garbage")
    with pytest.raises(ValueError, match="corrupt"):
        NonceGenerator(state)

"""Circuit breaker state machine under MockClock."""

from __future__ import annotations

from typing import Any

import trio

from actors import BreakerState, CircuitBreaker


async def test_trip_opens_and_refuses(autojump_clock: Any) -> None:
    breaker = CircuitBreaker("rest", cooldown=30.0)
    assert breaker.allow()
    breaker.trip("exchange errors")
    assert breaker.state is BreakerState.OPEN
    assert breaker.reason == "exchange errors"
    assert not breaker.allow()


async def test_failures_within_window_trip_spaced_ones_do_not(autojump_clock: Any) -> None:
    breaker = CircuitBreaker("rest", threshold=3, window=10.0)
    for _ in range(5):
        breaker.record_failure("HTTP 503")
        await trio.sleep(6)
    assert breaker.state is BreakerState.CLOSED
    for _ in range(3):
        breaker.record_failure("HTTP 503")
        await trio.sleep(1)
    assert breaker.state is BreakerState.OPEN


async def test_cooldown_half_open_then_closed_on_success(autojump_clock: Any) -> None:
    changes: list[tuple[str, str]] = []
    breaker = CircuitBreaker("rest", threshold=1, cooldown=30.0, probes=1)
    breaker.add_listener(lambda name, old, new, reason: changes.append((old.value, new.value)))
    breaker.record_failure("timeout")
    await trio.sleep(29.9)
    assert breaker.state is BreakerState.OPEN
    await trio.sleep(0.2)
    assert breaker.state is BreakerState.HALF_OPEN
    assert breaker.allow()  # the one probe
    assert not breaker.allow()  # no second probe
    breaker.record_success()
    assert breaker.state is BreakerState.CLOSED
    assert changes == [("closed", "open"), ("open", "half_open"), ("half_open", "closed")]


async def test_half_open_failure_reopens(autojump_clock: Any) -> None:
    breaker = CircuitBreaker("rest", threshold=1, cooldown=10.0)
    breaker.record_failure("timeout")
    await trio.sleep(10)
    assert breaker.state is BreakerState.HALF_OPEN
    breaker.record_failure("timeout again")
    assert breaker.state is BreakerState.OPEN
    assert breaker.reason == "timeout again"
    await trio.sleep(5)
    assert breaker.state is BreakerState.OPEN
    assert breaker.statistics().trips == 2


async def test_latching_breaker_stays_open_until_reset(autojump_clock: Any) -> None:
    breaker = CircuitBreaker("trading", latching=True, cooldown=30.0)
    woke: list[float] = []

    async def waiter() -> None:
        await breaker.wait_closed()
        woke.append(trio.current_time())

    breaker.trip("drawdown")
    async with trio.open_nursery() as nursery:
        nursery.start_soon(waiter)
        await trio.sleep(3600)
        assert breaker.state is BreakerState.OPEN
        assert not breaker.allow()
        breaker.reset("operator acknowledged")
    assert woke == [3600.0]
    assert breaker.state is BreakerState.CLOSED
    assert breaker.allow()


async def test_latched_trip_on_a_transport_breaker(autojump_clock: Any) -> None:
    breaker = CircuitBreaker("rest", cooldown=5.0)
    breaker.trip("kill switch", latch=True)
    await trio.sleep(100)
    assert breaker.state is BreakerState.OPEN
    assert breaker.statistics().latched


async def test_retrip_keeps_first_reason_and_remembers_the_others(autojump_clock: Any) -> None:
    changes: list[tuple[str, str, str]] = []
    breaker = CircuitBreaker("trading", latching=True)
    breaker.add_listener(lambda name, old, new, reason: changes.append((old.value, new.value,
                                                                       reason)))
    breaker.trip("daily_loss")
    breaker.trip("drawdown")
    breaker.trip("drawdown")  # an echo of a known cause changes nothing
    assert breaker.reason == "daily_loss"
    assert breaker.reasons == ("daily_loss", "drawdown")
    assert breaker.statistics().trips == 2
    assert changes == [("closed", "open", "daily_loss"), ("open", "open", "drawdown")]


async def test_resolving_one_cause_keeps_the_breaker_open_for_the_others(
        autojump_clock: Any) -> None:
    breaker = CircuitBreaker("trading", latching=True)
    breaker.trip("database_unavailable")
    breaker.trip("restart_storm:strategies")
    breaker.resolve("database_unavailable", "database recovered")
    assert breaker.is_open
    assert breaker.reason == "restart_storm:strategies"
    breaker.resolve("not_a_cause")
    assert breaker.is_open
    breaker.resolve("restart_storm:strategies")
    assert breaker.state is BreakerState.CLOSED
    assert breaker.reasons == ()

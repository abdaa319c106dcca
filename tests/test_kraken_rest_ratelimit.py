"""The REST call-counter model (PROTOCOL.md §3.1): it waits, it never breaches."""

from __future__ import annotations

import pytest
import trio
import trio.testing
from hypothesis import given, settings
from hypothesis import strategies as st

from protocol.kraken._ratelimit import CallCounterLimiter, DecayingCounter, RateLimitTier

calls = st.lists(
    st.tuples(
        st.floats(min_value=0.0, max_value=20.0, allow_nan=False),  # time since previous call
        st.sampled_from([0.0, 1.0, 2.0, 4.0, 30.0]),  # cost (30 > any max: clamped)
    ),
    max_size=200,
)


@settings(max_examples=300, deadline=None)
@given(tier=st.sampled_from(list(RateLimitTier)), seq=calls)
def test_counter_never_exceeds_max(tier: RateLimitTier, seq: list[tuple[float, float]]) -> None:
    counter = DecayingCounter(limit=tier.max_counter, decay=tier.decay_per_second)
    now = 0.0
    for gap, cost in seq:
        now += gap
        # A caller does what CallCounterLimiter.acquire does: wait as told, then try again.
        for _ in range(10):
            wait = counter.try_add(now, cost)
            if wait == 0.0:
                break
            assert wait > 0
            now += wait
        else:
            pytest.fail("a call waited as told but was still not admitted")
        assert counter.level(now) <= tier.max_counter + 1e-9
        assert counter.level(now) >= 0.0


@settings(max_examples=200, deadline=None)
@given(seq=calls)
def test_waits_are_not_longer_than_needed(seq: list[tuple[float, float]]) -> None:
    counter = DecayingCounter(limit=15.0, decay=0.33)
    now = 0.0
    for gap, cost in seq:
        now += gap
        wait = counter.try_add(now, cost)
        if wait:
            # Slightly earlier than the returned wait, it would still not fit.
            if wait > 1e-3:
                probe = DecayingCounter(limit=15.0, decay=0.33)
                probe._level, probe._stamp = counter._level, counter._stamp
                assert probe.try_add(now + wait * 0.99, cost) > 0
            assert counter.try_add(now + wait, cost) == 0.0
            now += wait


async def test_limiter_sleeps_on_trio_clock(autojump_clock: trio.testing.MockClock) -> None:
    limiter = CallCounterLimiter(RateLimitTier.STARTER, headroom=2.0)
    start = trio.current_time()
    stamps = []
    for _ in range(16):
        await limiter.acquire("Balance")
        stamps.append(trio.current_time() - start)
    # 13 calls fit under 15 - 2 headroom at once; each further one waits 1 / 0.33 s.
    assert stamps[:13] == [0.0] * 13
    assert stamps[13:] == pytest.approx([1 / 0.33, 2 / 0.33, 3 / 0.33], rel=1e-6)
    stats = limiter.statistics()
    assert stats.level == pytest.approx(13.0)
    assert stats.headroom == pytest.approx(2.0)


async def test_costs_and_public_calls(autojump_clock: trio.testing.MockClock) -> None:
    limiter = CallCounterLimiter(RateLimitTier.PRO, headroom=0.0, costs={"Balance": 5.0})
    assert limiter.cost("TradesHistory") == 2.0
    assert limiter.cost("AddOrder") == 0.0
    assert limiter.cost("Ticker") == 0.0
    assert limiter.cost("OpenOrders") == 1.0
    start = trio.current_time()
    for _ in range(100):
        await limiter.acquire("Ticker")  # public: not on the per-key counter
        await limiter.acquire("AddOrder")  # trading-engine limiter, not this one
    for _ in range(4):
        await limiter.acquire("Balance")
    assert trio.current_time() == start
    await limiter.acquire("Balance")
    assert trio.current_time() - start == pytest.approx(5.0)


async def test_rate_limited_answer_saturates_model(
    autojump_clock: trio.testing.MockClock,
) -> None:
    limiter = CallCounterLimiter(RateLimitTier.INTERMEDIATE, headroom=0.0)
    limiter.on_rate_limited()
    start = trio.current_time()
    await limiter.acquire("Balance")
    assert trio.current_time() - start == pytest.approx(1 / 0.5)


async def test_waiters_are_fifo_and_cancellation_charges_nothing(
    autojump_clock: trio.testing.MockClock,
) -> None:
    limiter = CallCounterLimiter(RateLimitTier.PRO, headroom=0.0)
    for _ in range(20):
        await limiter.acquire("Balance")
    order: list[str] = []

    async def call(name: str, endpoint: str) -> None:
        await limiter.acquire(endpoint)
        order.append(name)

    with trio.move_on_after(0.5):
        await limiter.acquire("Balance")  # cancelled while waiting
    async with trio.open_nursery() as nursery:
        nursery.start_soon(call, "heavy", "TradesHistory")
        await trio.testing.wait_all_tasks_blocked()
        nursery.start_soon(call, "light", "Balance")
    assert order == ["heavy", "light"]


def test_tier_parse() -> None:
    assert RateLimitTier.parse("Pro") is RateLimitTier.PRO
    assert RateLimitTier.STARTER.max_counter == 15
    assert RateLimitTier.STARTER.decay_per_second == 0.33
    with pytest.raises(ValueError):
        RateLimitTier.parse("gold")

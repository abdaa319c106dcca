"""Supervisor behaviour under trio's MockClock (autojump): times asserted are virtual seconds."""

from __future__ import annotations

import random
from typing import Any

import pytest
import trio
import trio.testing

from actors import (
    Backoff,
    ChildSpec,
    CircuitBreaker,
    Restart,
    RestartStrategy,
    Supervisor,
    SupervisorEvent,
    SupervisorGaveUp,
)

Log = list[tuple[float, str, str]]


class Child:
    """Logs (time, name, "start"), then crashes after ``crash_after`` seconds ``crashes`` times."""

    def __init__(self, log: Log, name: str, *, crash_after: float | None = None,
                 crashes: int = 10**9, counter: dict[str, int] | None = None,
                 crash_before_started: bool = False) -> None:
        self.log, self.name = log, name
        self.crash_after, self.crashes = crash_after, crashes
        self.counter = counter if counter is not None else {}
        self.crash_before_started = crash_before_started

    async def run(self, *, task_status: trio.TaskStatus[Any] = trio.TASK_STATUS_IGNORED) -> None:
        self.log.append((trio.current_time(), self.name, "start"))
        n = self.counter.get(self.name, 0)
        failing = n < self.crashes
        if self.crash_before_started and failing:
            self.counter[self.name] = n + 1
            raise RuntimeError(f"{self.name} init failed")
        task_status.started()
        if self.crash_after is not None and failing:
            await trio.sleep(self.crash_after)
            self.counter[self.name] = n + 1
            raise RuntimeError(f"{self.name} crashed")
        await trio.sleep_forever()


def spec(log: Log, name: str, counter: dict[str, int] | None = None, **kw: Any) -> ChildSpec:
    shared = counter if counter is not None else {}
    restart = kw.pop("restart", Restart.PERMANENT)
    return ChildSpec(name, lambda: Child(log, name, counter=shared, **kw), restart=restart)


def starts(log: Log, name: str) -> list[float]:
    return [t for t, n, what in log if n == name and what == "start"]


NO_JITTER = Backoff(initial=1.0, factor=2.0, maximum=4.0, jitter=0.0)


async def test_crashing_child_restarts_with_growing_capped_delays(autojump_clock: Any) -> None:
    log: Log = []
    events: list[SupervisorEvent] = []
    sup = Supervisor("root", [spec(log, "a", crash_after=1.0), spec(log, "b")],
                     max_restarts=4, period=100.0, backoff=NO_JITTER, observer=events.append)
    with pytest.raises(SupervisorGaveUp) as info:
        await sup.run()
    # crash at 1 -> +1s backoff -> start 2; crash 3 -> +2 -> 5; crash 6 -> +4 -> 10;
    # crash 11 -> +4 (capped) -> 15; crash 16 is the 5th restart within 100 s: give up.
    assert starts(log, "a") == [0.0, 2.0, 5.0, 10.0, 15.0]
    assert starts(log, "b") == [0.0]
    assert isinstance(info.value.__cause__, RuntimeError)
    restarting = [e for e in events if e.kind == "restarting"]
    assert [e.restart_count for e in restarting] == [1, 2, 3, 4]
    assert [e.delay for e in restarting] == [1.0, 2.0, 4.0, 4.0]
    assert all(e.child == "a" and "crashed" in e.reason for e in restarting)
    assert [e.kind for e in events].count("gave_up") == 1


async def test_jittered_delays_stay_below_cap_and_vary() -> None:
    backoff = Backoff(initial=1.0, factor=2.0, maximum=8.0, jitter=0.5)
    rng = random.Random(7)
    delays = [backoff.delay(n, rng) for n in range(1, 30)]
    assert all(0 < d <= 8.0 for d in delays)
    assert len({round(d, 6) for d in delays}) > 20  # jitter actually varies the delays
    assert all(d >= 0.5 * min(8.0, 2 ** (n - 1)) for n, d in enumerate(delays, start=1))


async def test_exceeding_intensity_escalates_exactly_once_bare(autojump_clock: Any) -> None:
    log: Log = []
    gave_up: list[SupervisorGaveUp] = []
    inner = Supervisor("inner", [spec(log, "x", crash_after=0.5)], max_restarts=2, period=60.0,
                       backoff=NO_JITTER, on_give_up=gave_up.append)
    caught: list[BaseException] = []
    async with trio.open_nursery() as nursery:
        async def runner() -> None:
            try:
                await inner.run()
            except BaseException as exc:
                caught.append(exc)
        nursery.start_soon(runner)
    assert len(gave_up) == 1
    assert len(caught) == 1 and type(caught[0]) is SupervisorGaveUp  # bare, not a group


async def test_nested_escalation_restarts_inner_supervisor(autojump_clock: Any) -> None:
    log: Log = []
    counter: dict[str, int] = {}

    def inner() -> Supervisor:
        return Supervisor("inner", [spec(log, "x", counter, crash_after=1.0, crashes=2)],
                          max_restarts=1, period=60.0, backoff=NO_JITTER)

    outer = Supervisor("outer", [ChildSpec("inner", inner)], max_restarts=3, period=60.0,
                       backoff=Backoff(initial=10.0, factor=1.0, maximum=10.0, jitter=0.0))
    async with trio.open_nursery() as nursery:
        await nursery.start(outer.run)
        await trio.sleep(100)
        # x crashes at 1, restarted at 2 (inner restart 1), crashes at 3: inner gives up;
        # outer restarts inner after 10 s (t=13); x no longer crashes.
        assert starts(log, "x") == [0.0, 2.0, 13.0]
        stats = outer.statistics()
        assert stats.children[0].restarts == 1 and stats.children[0].state == "running"
        nursery.cancel_scope.cancel()


@pytest.mark.parametrize(
    ("strategy", "restarted"),
    [
        (RestartStrategy.ONE_FOR_ONE, {"b"}),
        (RestartStrategy.ONE_FOR_ALL, {"a", "b", "c"}),
        (RestartStrategy.REST_FOR_ONE, {"b", "c"}),
    ],
)
async def test_strategies_restart_exactly_the_right_siblings(
    autojump_clock: Any, strategy: RestartStrategy, restarted: set[str]
) -> None:
    log: Log = []
    counter: dict[str, int] = {}
    sup = Supervisor("s", [spec(log, "a", counter), spec(log, "b", counter, crash_after=1.0,
                                                          crashes=1), spec(log, "c", counter)],
                     strategy=strategy, backoff=Backoff(initial=0.5, jitter=0.0))
    async with trio.open_nursery() as nursery:
        await nursery.start(sup.run)
        await trio.sleep(10)
        nursery.cancel_scope.cancel()
    for name in "abc":
        expected = [0.0, 1.5] if name in restarted else [0.0]
        assert starts(log, name) == expected, name


async def test_restart_order_follows_start_order(autojump_clock: Any) -> None:
    log: Log = []
    counter: dict[str, int] = {}
    sup = Supervisor("s", [spec(log, "a", counter, crash_after=1.0, crashes=1),
                           spec(log, "b", counter), spec(log, "c", counter)],
                     strategy=RestartStrategy.REST_FOR_ONE, backoff=Backoff(jitter=0.0))
    async with trio.open_nursery() as nursery:
        await nursery.start(sup.run)
        await trio.sleep(5)
        nursery.cancel_scope.cancel()
    assert [n for _, n, _ in log] == ["a", "b", "c", "a", "b", "c"]


async def test_cancelling_the_tree_causes_no_restart(autojump_clock: Any) -> None:
    log: Log = []
    events: list[SupervisorEvent] = []
    sup = Supervisor("s", [spec(log, "a"), spec(log, "b")], observer=events.append)
    with trio.move_on_after(30):
        await sup.run()
    assert starts(log, "a") == [0.0] and starts(log, "b") == [0.0]
    assert not [e for e in events if e.kind in ("crashed", "restarting", "gave_up")]


async def test_transient_normal_exit_is_not_restarted(autojump_clock: Any) -> None:
    runs: list[float] = []

    class Once:
        async def run(self, *, task_status: trio.TaskStatus[Any] = trio.TASK_STATUS_IGNORED
                      ) -> None:
            runs.append(trio.current_time())
            task_status.started()

    sup = Supervisor("s", [ChildSpec("once", Once, restart=Restart.TRANSIENT)])
    with trio.move_on_after(10):
        await sup.run()
    assert runs == [0.0]


async def test_crash_before_started_never_hangs_start(autojump_clock: Any) -> None:
    log: Log = []
    sup = Supervisor("s", [spec(log, "a", crash_before_started=True, crashes=2)],
                     backoff=Backoff(initial=1.0, jitter=0.0))
    async with trio.open_nursery() as nursery:
        await nursery.start(sup.run)
        await trio.sleep(10)
        nursery.cancel_scope.cancel()
    assert starts(log, "a") == [0.0, 1.0, 3.0]


async def test_one_for_one_backoff_does_not_serialise_siblings(autojump_clock: Any) -> None:
    log: Log = []
    counter: dict[str, int] = {}
    sup = Supervisor("s", [spec(log, "a", counter, crash_after=1.0, crashes=1),
                           spec(log, "b", counter, crash_after=2.0, crashes=1)],
                     backoff=Backoff(initial=100.0, maximum=100.0, jitter=0.0))
    async with trio.open_nursery() as nursery:
        await nursery.start(sup.run)
        await trio.sleep(500)
        nursery.cancel_scope.cancel()
    assert starts(log, "a") == [0.0, 101.0]
    assert starts(log, "b") == [0.0, 102.0]


async def test_buffered_messages_survive_a_restart(autojump_clock: Any) -> None:
    send, recv = trio.open_memory_channel[int](10)
    received: list[int] = []

    class Consumer:
        def __init__(self, inbox: trio.MemoryReceiveChannel[int]) -> None:
            self.inbox = inbox

        async def run(self, *, task_status: trio.TaskStatus[Any] = trio.TASK_STATUS_IGNORED
                      ) -> None:
            task_status.started()
            async for item in self.inbox:
                received.append(item)
                if item == 2 and received.count(2) == 1:
                    raise RuntimeError("boom on 2")
                await trio.sleep(1)

    sup = Supervisor("s", [ChildSpec("consumer", Consumer, channels={"inbox": recv})],
                     backoff=Backoff(initial=5.0, jitter=0.0))
    async with trio.open_nursery() as nursery:
        await nursery.start(sup.run)
        for i in range(6):
            send.send_nowait(i)
        await trio.sleep(60)
        nursery.cancel_scope.cancel()
    # 2 was being processed when the consumer crashed (lost by design: at-most-once per
    # incarnation); 3, 4, 5 waited in the supervisor-owned buffer across the restart.
    assert received == [0, 1, 2, 3, 4, 5]
    assert recv.statistics().open_receive_channels == 1  # only the owner's original is open


async def test_restart_storm_trips_the_breaker(autojump_clock: Any) -> None:
    log: Log = []
    breaker = CircuitBreaker("trading", latching=True)
    sup = Supervisor("strategies", [spec(log, "momentum", crash_after=0.1)], max_restarts=3,
                     period=60.0, backoff=Backoff(initial=0.1, jitter=0.0),
                     on_give_up=lambda exc: breaker.trip(f"restart_storm:{exc.supervisor}"))
    with pytest.raises(SupervisorGaveUp):
        await sup.run()
    assert breaker.is_open
    assert breaker.reason == "restart_storm:strategies"


async def test_shutdown_stops_children_in_reverse_order(autojump_clock: Any) -> None:
    stopped: list[str] = []

    class Named:
        def __init__(self, name: str) -> None:
            self.name = name

        async def run(self, *, task_status: trio.TaskStatus[Any] = trio.TASK_STATUS_IGNORED
                      ) -> None:
            task_status.started()
            try:
                await trio.sleep_forever()
            finally:
                stopped.append(self.name)

    def inner() -> Supervisor:
        return Supervisor("inner", [ChildSpec("x", lambda: Named("x")),
                                    ChildSpec("y", lambda: Named("y"))])

    sup = Supervisor("root", [ChildSpec("a", lambda: Named("a")), ChildSpec("inner", inner),
                              ChildSpec("c", lambda: Named("c"))])
    async with trio.open_nursery() as nursery:
        await nursery.start(sup.run)
        await sup.shutdown()
    assert stopped == ["c", "y", "x", "a"]

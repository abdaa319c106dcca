"""``--engine actors`` throughput beside a bare 4-hop trio memory-channel chain (issue 8, item 7).

Run: ``.venv/bin/python bench/bench_backtest_actors.py [DATA_DIR] [DAYS] [ROUNDS]`` (defaults:
``../shared/data/binance-triangle-1m``, 2 days from 2021-05-01 = 8,640 candles over the three
symbols, 5 rounds). Kept apart from ``bench_backtest.py`` (the fast path's bench) so the two can
evolve independently. On the same preloaded real 1-minute candles, in one run:

* **bare chain**: producer -> 4 hop tasks -> sink over trio memory channels, one object per
  candle. One *event* = one object sent by the producer, received and re-sent by each of the
  4 hops, received by the sink; events/s = objects / wall time of the whole ``trio.run``.
  (a) *free-running*: 256-item buffers, the producer never waits (pipelined: the raw channel
  floor, the baseline of the acceptance ratio); (b) *lock-step*: under
  ``MockClock(autojump_threshold=0)`` the producer waits (``wait_all_tasks_blocked``) until
  each object has left the chain before sending the next, which is what any deterministic
  one-event-at-a-time replay must do.
* **actor path**: ``run_prepared`` with ``--engine actors`` (every strategy, risk on, the
  executor with the candle broker, virtual time), timed end to end (actor start-up and the
  result included). Two rates: *candles/s* (one candle = one input row, processed to quiescence
  by the whole tree: strategies, risk, executor and whatever orders and fills it causes) and
  *market events/s*, where the market events are what the replay publishes: each candle, the
  synthetic close book derived from it for the book-driven strategy, and stop-loss probe
  prints, each counted once however many actors receive it (the per-mailbox deliveries are
  printed too, but never used in a ratio). Measured twice: as shipped (market lanes are the
  engine's single-sender mailboxes) and with ``market_lanes="memory"`` (every edge a trio
  memory channel, like the chain), so the transport's share is visible.
* **replay floor**, for context: each candle sent to 5 idle memory-channel receivers (risk and
  the 4 strategies) and ``wait_all_tasks_blocked`` under the mock clock, nothing else: what any
  deterministic one-candle-at-a-time replay into this tree costs before any trading code runs.
* the fast path on the same candles, for scale, and the trade-log check (same sha256).

The machine is shared, so the three measurements are interleaved in rounds and each ratio is
taken within a round (same load); the best and the median round are printed. The acceptance
figure is actor **candles/s** over the **free-running** chain's events/s (target >= 0.5): the
conservative choice (a candle is a whole step of the tree, which a single object through 4
hops is not; market events/s is larger by the books and probes).
"""

from __future__ import annotations

import functools
import math
import statistics
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import trio
import trio.testing

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from backtest.cli import add_arguments, merged_candles, prepare, run_prepared  # noqa: E402
from config import load_settings  # noqa: E402

HOPS = 4
FLOOR_WIDTH = 5  # risk + the 4 strategies of the default set: the actors every candle wakes


async def _hop(recv: trio.MemoryReceiveChannel[Any], send: trio.MemorySendChannel[Any]) -> None:
    with send:
        async for item in recv:
            await send.send(item)


async def _sink(recv: trio.MemoryReceiveChannel[Any], done: trio.Event, n: int) -> None:
    seen = 0
    async for _ in recv:
        seen += 1
        if seen == n:
            done.set()


async def _chain(items: Sequence[object], lockstep: bool) -> None:
    # lock-step: one event in flight, unbounded is free; free-running: the app's buffer size.
    size = math.inf if lockstep else 256
    chans = [trio.open_memory_channel[Any](size) for _ in range(HOPS + 1)]
    done = trio.Event()
    async with trio.open_nursery() as nursery:
        for i in range(HOPS):
            nursery.start_soon(_hop, chans[i][1], chans[i + 1][0])
        nursery.start_soon(_sink, chans[HOPS][1], done, len(items))
        send = chans[0][0]
        if lockstep:
            for item in items:
                send.send_nowait(item)
                await trio.testing.wait_all_tasks_blocked()
        else:
            for item in items:
                await send.send(item)
        await done.wait()
        nursery.cancel_scope.cancel()


async def _idle(recv: trio.MemoryReceiveChannel[Any]) -> None:
    async for _ in recv:
        pass


async def _fan_out(items: Sequence[object], width: int) -> None:
    chans = [trio.open_memory_channel[Any](math.inf) for _ in range(width)]
    async with trio.open_nursery() as nursery:
        for _, recv in chans:
            nursery.start_soon(_idle, recv)
        sends = [send.send_nowait for send, _ in chans]
        for item in items:
            for send in sends:
                send(item)
            await trio.testing.wait_all_tasks_blocked()
        nursery.cancel_scope.cancel()


class _Rate:
    """Items per second of one run, on the wall clock and on this process's CPU clock.

    The box is shared: another process taking the CPU slows the wall figure of whichever run
    it overlaps. Process CPU time does not count the time this (single-threaded, never
    waiting: all I/O waits are zero-timeout polls) process was descheduled, so a ratio of CPU
    rates compares the two sides' own work even under load.
    """

    def __init__(self, items: int) -> None:
        self.items = items
        self._wall = time.perf_counter()
        self._cpu = time.process_time()
        self.wall = self.cpu = 0.0

    def stop(self) -> _Rate:
        self.wall = self.items / (time.perf_counter() - self._wall)
        self.cpu = self.items / max(time.process_time() - self._cpu, 1e-9)
        return self


def _replay_floor(items: Sequence[object], width: int) -> _Rate:
    rate = _Rate(len(items))
    trio.run(_fan_out, items, width, clock=trio.testing.MockClock(autojump_threshold=0))
    return rate.stop()


def _bare_chain(items: Sequence[object], *, lockstep: bool) -> _Rate:
    rate = _Rate(len(items))
    if lockstep:
        trio.run(_chain, items, True, clock=trio.testing.MockClock(autojump_threshold=0))
    else:
        trio.run(_chain, items, False)
    return rate.stop()


class _Counter(trio.abc.Instrument):
    """Task steps and scheduler passes (one I/O wait per pass) of one untimed run."""

    def __init__(self) -> None:
        self.steps = 0
        self.passes = 0

    def before_task_step(self, task: trio.lowlevel.Task) -> None:
        self.steps += 1

    def before_io_wait(self, timeout: float) -> None:
        self.passes += 1


def _counted_actor_run(prepared: Any, candles: Sequence[Any]) -> tuple[Any, _Counter]:
    """One untimed actor run that keeps the engine (its counts) and counts scheduler work."""
    import backtest._actor_engine as actor_engine
    import backtest.cli as cli

    engines: list[Any] = []
    counter = _Counter()
    base = actor_engine.ActorEngine

    class _Kept(base):  # type: ignore[misc, valid-type]
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            engines.append(self)

    real_run = trio.run

    def run(*args: Any, **kwargs: Any) -> Any:
        return real_run(*args, instruments=[counter], **kwargs)

    # Swapped for this one run only: the engine class (to keep the instance) and the trio.run
    # the engine module calls (to add the counting instrument).
    setattr(cli, "ActorEngine", _Kept)  # noqa: B010
    actor_engine.trio.run = run  # type: ignore[attr-defined]
    try:
        run_prepared(prepared, candles)
    finally:
        setattr(cli, "ActorEngine", base)  # noqa: B010
        actor_engine.trio.run = real_run  # type: ignore[attr-defined]
    return engines[0], counter


def main() -> None:
    data = Path(sys.argv[1]) if len(sys.argv) > 1 else (
        ROOT.parent / "shared" / "data" / "binance-triangle-1m")
    days = int(sys.argv[2]) if len(sys.argv) > 2 else 2
    rounds = int(sys.argv[3]) if len(sys.argv) > 3 else 5
    files = sorted(str(p) for p in data.glob("*.csv"))
    if not files:
        print(f"no candle files in {data}: nothing to measure")
        return
    t0 = time.perf_counter()
    span = ["--data", *files, "--from", "2021-05-01", "--to", f"2021-05-{1 + days:02d}"]
    prepared = prepare(load_settings(["--mode", "backtest", *span, "--engine", "actors"], {},
                                     extend=add_arguments))
    candles = merged_candles(prepared.loaded)
    n = len(candles)
    print(f"loaded {n:,} candles ({len(files)} files, {days} day(s)) in "
          f"{time.perf_counter() - t0:.2f} s (excluded below)")

    engine, counter = _counted_actor_run(prepared, candles)
    per_candle = engine.published / n
    print(f"actor path per candle: {per_candle:.2f} market events published "
          f"({engine.published:,}: candles, synthetic books, stop probes), "
          f"{engine.deliveries / n:.2f} mailbox deliveries, {counter.steps / n:.2f} task steps, "
          f"{counter.passes / n:.2f} scheduler passes")

    import backtest.cli as cli
    from backtest._actor_engine import ActorEngine

    shipped = ActorEngine
    memory_lanes = functools.partial(ActorEngine, market_lanes="memory")
    free: list[_Rate] = []
    lock: list[_Rate] = []
    floor: list[_Rate] = []
    actor: list[_Rate] = []
    actor_mem: list[_Rate] = []
    result = None
    for _ in range(rounds):
        free.append(_bare_chain(candles, lockstep=False))
        lock.append(_bare_chain(candles, lockstep=True))
        floor.append(_replay_floor(candles, FLOOR_WIDTH))
        rate = _Rate(n)
        result = run_prepared(prepared, candles)
        actor.append(rate.stop())
        setattr(cli, "ActorEngine", memory_lanes)  # noqa: B010
        try:
            rate = _Rate(n)
            mem_result = run_prepared(prepared, candles)
            actor_mem.append(rate.stop())
        finally:
            setattr(cli, "ActorEngine", shipped)  # noqa: B010
        assert mem_result.trade_log_sha256 == result.trade_log_sha256
    assert result is not None
    fast_cfg = prepare(load_settings(["--mode", "backtest", *span], {}, extend=add_arguments))
    rate = _Rate(n)
    fast = run_prepared(fast_cfg, candles)
    fast_rate = rate.stop()

    def fig(rates: list[_Rate], scale: float = 1.0) -> str:
        wall = [r.wall * scale for r in rates]
        cpu = [r.cpu * scale for r in rates]
        return (f"wall best {max(wall):8,.0f} median {statistics.median(wall):8,.0f} | "
                f"cpu median {statistics.median(cpu):8,.0f}")

    print(f"{rounds} interleaved rounds; /s on the wall clock and on the process CPU clock")
    print(f"bare {HOPS}-hop chain, free-running (256-buffer), events/s: {fig(free)}")
    print(f"bare {HOPS}-hop chain, lock-step (MockClock), events/s:     {fig(lock)}")
    print(f"replay floor ({FLOOR_WIDTH} idle receivers, lock-step), /s:     {fig(floor)}")
    print(f"actor path, candles/s:                               {fig(actor)}  "
          f"({len(result.fills)} fills)")
    print(f"actor path, market events/s:                         {fig(actor, per_candle)}")
    print(f"actor path, memory-channel lanes, candles/s:         {fig(actor_mem)}")
    print(f"fast path (same candles and strategies), candles/s: wall {fast_rate.wall:8,.0f}  "
          f"({len(fast.fills)} fills)")
    same = fast.trade_log_sha256 == result.trade_log_sha256
    print(f"trade logs identical: {same} (sha256 {result.trade_log_sha256[:16]}...)")

    def ratio(num: list[_Rate], den: list[_Rate], scale: float = 1.0) -> str:
        wall = [a.wall * scale / b.wall for a, b in zip(num, den, strict=True)]
        cpu = [a.cpu * scale / b.cpu for a, b in zip(num, den, strict=True)]
        return (f"wall median {statistics.median(wall):5.2f} (min {min(wall):4.2f} max "
                f"{max(wall):4.2f}) | cpu median {statistics.median(cpu):5.2f} "
                f"(min {min(cpu):4.2f})")

    print("ratios within each round:")
    print(f"  actor candles/s / free-running chain events/s:       {ratio(actor, free)}"
          "  <- acceptance (>= 0.5)")
    print(f"  actor market events/s / free-running chain events/s: "
          f"{ratio(actor, free, per_candle)}")
    print(f"  same, memory-channel market lanes:                   {ratio(actor_mem, free)}")
    print(f"  actor candles/s / lock-step chain events/s:          {ratio(actor, lock)}")
    print(f"  actor candles/s / replay floor:                      {ratio(actor, floor)}")


if __name__ == "__main__":
    main()

"""``--engine actors`` throughput beside a bare 4-hop trio memory-channel chain (issue 8, item 7).

Run: ``.venv/bin/python bench/bench_backtest_actors.py [DATA_DIR] [DAYS]`` (default
``../shared/data/binance-triangle-1m``, 2 days from 2021-05-01: ~8.6k candles over the three
symbols). Kept apart from ``bench_backtest.py`` (the fast path's bench) so the two can evolve
independently. Prints, in one run, on the same preloaded real 1-minute candles:

* the **bare chain**: N events through producer -> 4 hops -> sink over trio memory channels,
  (a) free-running (buffered, pipelined: the raw channel floor) and (b) lock-step under
  ``MockClock(autojump_threshold=0)``, the producer waiting until each event has left the
  chain (``wait_all_tasks_blocked``) before sending the next: what any deterministic replay
  of one event at a time costs;
* the **actor path**: every strategy, risk on, the executor with the candle broker, all actors
  in virtual time; candles/s and market events/s (every delivery the replay makes to an actor
  mailbox: candles, stop probes, synthetic books);
* the fast path on the same candles, for scale, and the trade-log check (same sha256);
* the ratios actor / bare chain (acceptance: >= 0.5).
"""

from __future__ import annotations

import math
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


async def _hop(recv: trio.MemoryReceiveChannel[Any], send: trio.MemorySendChannel[Any]) -> None:
    async with send:
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


def _bare_chain(items: Sequence[object], *, lockstep: bool) -> float:
    start = time.perf_counter()
    if lockstep:
        trio.run(_chain, items, True,
                 clock=trio.testing.MockClock(autojump_threshold=0))
    else:
        trio.run(_chain, items, False)
    return len(items) / (time.perf_counter() - start)


def main() -> None:
    data = Path(sys.argv[1]) if len(sys.argv) > 1 else (
        ROOT.parent / "shared" / "data" / "binance-triangle-1m")
    days = int(sys.argv[2]) if len(sys.argv) > 2 else 2
    files = sorted(str(p) for p in data.glob("*.csv"))
    if not files:
        print(f"no candle files in {data}: nothing to measure")
        return
    t0 = time.perf_counter()
    settings = load_settings(
        ["--mode", "backtest", "--data", *files, "--from", "2021-05-01",
         "--to", f"2021-05-{1 + days:02d}", "--engine", "actors"], {}, extend=add_arguments)
    prepared = prepare(settings)
    candles = merged_candles(prepared.loaded)
    n = len(candles)
    print(f"loaded {n:,} candles ({len(files)} files, {days} day(s)) in "
          f"{time.perf_counter() - t0:.2f} s (excluded below)")

    free = max(_bare_chain(candles, lockstep=False) for _ in range(3))
    lock = max(_bare_chain(candles, lockstep=True) for _ in range(3))
    print(f"bare {HOPS}-hop chain, free-running (256-buffer, pipelined): {free:12,.0f} events/s")
    print(f"bare {HOPS}-hop chain, lock-step under MockClock:              {lock:12,.0f} events/s")

    best_actor, result = math.inf, None
    for _ in range(2):
        start = time.perf_counter()
        result = run_prepared(prepared, candles)
        best_actor = min(best_actor, time.perf_counter() - start)
    assert result is not None
    from backtest._actor_engine import ActorEngine

    published = _published(prepared, candles, ActorEngine)
    fast_cfg = prepare(load_settings(
        ["--mode", "backtest", "--data", *files, "--from", "2021-05-01",
         "--to", f"2021-05-{1 + days:02d}"], {}, extend=add_arguments))
    start = time.perf_counter()
    fast = run_prepared(fast_cfg, candles)
    fast_s = time.perf_counter() - start
    rate = n / best_actor
    ev_rate = published / best_actor
    print(f"actor path (4 strategies, risk, executor; virtual time): {rate:12,.0f} candles/s "
          f"= {ev_rate:,.0f} market events/s ({published:,} deliveries), "
          f"{len(result.fills)} fills")
    print(f"fast path, same candles and strategies:                  {n / fast_s:12,.0f} "
          f"candles/s ({len(fast.fills)} fills)")
    same = fast.trade_log_sha256 == result.trade_log_sha256
    print(f"trade logs identical: {same} (sha256 {result.trade_log_sha256[:16]}...)")
    print(f"ratio actor candles/s / bare chain lock-step:     {rate / lock:6.2f}  "
          f"(events/s: {ev_rate / lock:.2f})")
    print(f"ratio actor candles/s / bare chain free-running:  {rate / free:6.2f}  "
          f"(events/s: {ev_rate / free:.2f})   target >= 0.5")


def _published(prepared: Any, candles: Sequence[Any], engine_cls: Any) -> int:
    """Market events the replay delivers for this run (one extra run, not timed)."""
    import backtest.cli as cli

    captured: list[Any] = []

    class _Counting(engine_cls):  # type: ignore[misc]
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            captured.append(self)

    original = getattr(cli, "ActorEngine")  # noqa: B009 - swapped for one counting run
    setattr(cli, "ActorEngine", _Counting)  # noqa: B010
    try:
        run_prepared(prepared, candles)
    finally:
        setattr(cli, "ActorEngine", original)  # noqa: B010
    return int(captured[0].published)


if __name__ == "__main__":
    main()

"""Cost of metrics on the tick-to-order path: the same pipeline with metrics off and on.

Two pipelines, each run with and without the recording a live actor does per message
(feed message + timestamp, channel depth, signal, order, tick-to-order histogram):

* ``inline``: the per-tick work alone (build a BookEvent, mid/EMA decision, Signal, OrderRequest),
  so the metrics overhead is not hidden behind channel costs (the worst case);
* ``trio``: feed → strategy → executor tasks over bounded trio memory channels, as the actors run.

Prints ticks/s and the on/off throughput ratio (target: metrics cost < 10%), plus the per-call
cost of each helper. Runs in well under a minute.

    .venv/bin/python bench/bench_metrics.py
"""

from __future__ import annotations

import sys
import time
import timeit
from decimal import Decimal
from pathlib import Path

import trio

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from monitoring.metrics import Metrics
from protocol.messages import BookEvent, BookLevel, OrderRequest, Side, Signal

N_INLINE = 100_000
N_TRIO = 30_000
REPEATS = 7
PRICES = [Decimal("50000.0") + Decimal(i % 97) / 10 for i in range(1000)]
QTY = Decimal("0.01")
ALPHA = 0.1


def decide(i: int, ema: float, metrics: Metrics | None) -> tuple[float, OrderRequest | None]:
    """One tick: the book event, a float EMA momentum rule, and an order every 10th tick."""
    p = PRICES[i % 1000]
    book = BookEvent(
        symbol="BTC/USD",
        bids=(BookLevel(p, QTY),),
        asks=(BookLevel(p + Decimal("0.1"), QTY),),
        ts_recv=float(i),
    )
    if metrics is not None:
        metrics.feed_message("public", "book")
    mid = book.mid
    assert mid is not None
    ema = ema + ALPHA * (float(mid) - ema)
    if i % 10:
        return ema, None
    signal = Signal(strategy="momentum", symbol="BTC/USD", side=Side.BUY, qty=QTY, ts_recv=0.0)
    order = OrderRequest(
        client_order_id=f"c{i}",
        strategy=signal.strategy,
        symbol=signal.symbol,
        side=signal.side,
        qty=signal.qty,
        ts_recv=signal.ts_recv,
    )
    if metrics is not None:
        metrics.signal("momentum")
        metrics.order("momentum", "pending")
        metrics.observe_tick_to_order(0.00021)
    return ema, order


def run_inline(metrics: Metrics | None) -> float:
    ema = 50000.0
    start = time.perf_counter()
    for i in range(N_INLINE):
        ema, _ = decide(i, ema, metrics)
    return N_INLINE / (time.perf_counter() - start)


async def _trio_pipeline(metrics: Metrics | None) -> float:
    raw_send, raw_recv = trio.open_memory_channel[int](64)
    order_send, order_recv = trio.open_memory_channel[OrderRequest](64)

    async def feed() -> None:
        async with raw_send:
            for i in range(N_TRIO):
                await raw_send.send(i)
                if metrics is not None and i % 16 == 0:
                    stats = raw_send.statistics()
                    metrics.channel_stats("market.momentum", stats.current_buffer_used, 64)

    async def strategy() -> None:
        ema = 50000.0
        async with raw_recv, order_send:
            async for i in raw_recv:
                ema, order = decide(i, ema, metrics)
                if order is not None:
                    await order_send.send(order)

    async def executor() -> None:
        async with order_recv:
            async for order in order_recv:
                if metrics is not None:
                    metrics.order(order.strategy, "filled")
                    metrics.fill(order.strategy, Decimal("0.01"))

    start = time.perf_counter()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(feed)
        nursery.start_soon(strategy)
        nursery.start_soon(executor)
    return N_TRIO / (time.perf_counter() - start)


def run_trio(metrics: Metrics | None) -> float:
    return trio.run(_trio_pipeline, metrics)


def compare(name: str, fn: object) -> None:
    assert callable(fn)
    off, on = [], []
    for _ in range(REPEATS):  # interleaved so drift hits both equally
        off.append(fn(None))
        on.append(fn(Metrics()))
    # Best of N: the least-disturbed run of each (the machine is shared; medians wander).
    off_m, on_m = max(off), max(on)
    print(
        f"{name:7s} metrics off {off_m:11,.0f} ticks/s   on {on_m:11,.0f} ticks/s   "
        f"ratio on/off {on_m / off_m:.3f}   overhead {100 * (1 - on_m / off_m):5.1f}%"
    )


def per_call() -> None:
    m = Metrics()
    n = 200_000
    calls = {
        "feed_message": lambda: m.feed_message("public", "book"),
        "order": lambda: m.order("momentum", "filled"),
        "observe_tick_to_order": lambda: m.observe_tick_to_order(0.0002),
        "channel_stats": lambda: m.channel_stats("market.momentum", 3, 7),
        "labels().inc (unbound)": lambda: m.orders.labels("momentum", "filled").inc(),
    }
    for name, fn in calls.items():
        ns = min(timeit.repeat(fn, number=n, repeat=3)) / n * 1e9
        print(f"  {name:24s} {ns:7.0f} ns/call")


def main() -> None:
    print(
        f"python {sys.version.split()[0]}, trio {trio.__version__}, best of {REPEATS}, "
        "an order every 10th tick (pessimistic)"
    )
    compare("inline", run_inline)
    compare("trio", run_trio)
    print("per-call cost:")
    per_call()


if __name__ == "__main__":
    main()

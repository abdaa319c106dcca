"""Cost of metrics on the tick-to-order path: the real actors, with metrics on and off.

The path is the Application's own actor classes under a ``Supervisor``, wired as
``actors/app.py`` wires them::

    feed (actors.feed.CountingSender) ──▶ market FanOut ──▶ StrategyActor ──▶ RiskActor
                                                     ├──▶ RiskActor (marks, exits)      │
                                                     └──▶ ExecutorActor ◀──(orders)─────┘
                                                          └─▶ PaperBroker (fills) ─▶ risk, strategy

* **on**: every observer hook is a ``MetricsBridge`` over a fresh ``monitoring.Metrics`` (what
  the Application does): feed message counts and timestamps, signals, risk rejections and the
  portfolio gauges, the tick-to-order histogram, orders and fills by status, supervisor events,
  plus the MonitorActor's once-a-second sampler;
* **off**: the same tree with a no-op observer in every hook and no sampler.

The feed publishes pre-built ``BookEvent`` s (JSON decoding is left out on purpose: it would
dilute the ratio, so this is the pessimistic case). Every fan-out buffer holds the whole run, so
nothing is conflated and each actor handles every tick; a run ends when the last tick has been
through the strategy, risk and the executor and every order it caused has been handled. The
strategy is a trivial "flip" rule (buy, then sell, every ``ORDER_EVERY``-th tick) so the
strategy's own logic does not hide the plumbing, and orders flow at a steady, high rate.

Prints ticks per wall second and per CPU second (this process; steadier on a shared machine),
the on/off ratio as the median of adjacent on/off pairs (issue 6 target: >= 0.90), and the
per-call cost of the metrics helpers. Runs in ~10-25 s.

    .venv/bin/python bench/bench_metrics.py [TICKS] [REPEATS]
"""

from __future__ import annotations

import statistics
import sys
import time
import timeit
from collections.abc import Sequence
from decimal import Decimal
from pathlib import Path
from typing import Any

import trio

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from actors import ChildSpec, FanOut, RestartStrategy, Supervisor, open_lossless_channel
from actors._breaker import CircuitBreaker
from actors.app import load_pairs, market_key
from actors.executor import ExecutorActor, PaperBroker
from actors.feed import CountingSender
from actors.monitor import MetricsBridge, MonitorActor
from actors.risk import RiskActor
from actors.strategy import StrategyActor
from monitoring import HealthReport
from monitoring.metrics import Metrics
from protocol.messages import BookEvent, BookLevel, Fill, MarketEvent, Side, Signal
from trading import ClientOrderIds, Portfolio, RiskEngine, RiskLimits

SYMBOL = "BTC/USD"
ORDER_EVERY = 10  # an order every 10th tick: far more than any real strategy (pessimistic)
QTY = Decimal("0.001")
BIG = Decimal(10) ** 9


def book_events(n: int) -> list[BookEvent]:
    """``n`` books oscillating a few ticks around 60 000 (no stop-loss/take-profit exits)."""
    out = []
    tick = Decimal("0.1")
    for i in range(n):
        mid = Decimal(60000) + tick * (i % 7 - 3)
        out.append(BookEvent(
            symbol=SYMBOL,
            bids=tuple(BookLevel(mid - tick * (k + 1), Decimal(50)) for k in range(5)),
            asks=tuple(BookLevel(mid + tick * (k + 1), Decimal(50)) for k in range(5)),
            ts_recv=1.0 + i * 1e-6,  # non-zero: tick-to-order is observed on every order
        ))  # fmt: skip
    return out


class NoopObserver:
    """Every observer hook of the actors, doing nothing (metrics off)."""

    def feed_message(self, feed: str, channel: str) -> None: ...
    def feed_event(self, feed: str, kind: str, detail: str) -> None: ...
    def signals(self, strategy: str, n: int) -> None: ...
    def rejected(self, rejection: Any) -> None: ...
    def order_submitted(self, order: Any, tick_to_order: float) -> None: ...
    def order_event(self, strategy: str, event: Any) -> None: ...
    def supervisor_event(self, event: Any) -> None: ...


class Flip:
    """Buy, then sell back, every ``ORDER_EVERY``-th tick; counts ticks for the end of a run."""

    name = "flip"
    symbols: tuple[str, ...] = (SYMBOL,)

    def __init__(self, n: int, done: trio.Event) -> None:
        self._n = n
        self._seen = 0
        self._side = Side.BUY
        self._done = done

    def on_market(self, event: MarketEvent) -> Sequence[Signal]:
        self._seen += 1
        if self._seen == self._n:
            self._done.set()
        if self._seen % ORDER_EVERY:
            return ()
        side = self._side
        self._side = Side.SELL if side is Side.BUY else Side.BUY
        assert isinstance(event, BookEvent)
        return (Signal(strategy="flip", symbol=SYMBOL, side=side, qty=QTY,
                       ts_recv=event.ts_recv, reference_price=event.mid),)

    def on_fill(self, fill: Fill) -> None: ...

    def on_order_closed(self, client_order_id: str, filled_qty: Decimal) -> None: ...


class Feed:
    """Publishes the prepared events through the real feed's counting sender."""

    def __init__(self, events: list[BookEvent], out: FanOut[MarketEvent], observer: Any) -> None:
        self._events = events
        self._sender = CountingSender("kraken", out, observer, {})

    async def run(self, *, task_status: trio.TaskStatus[Any] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        send = self._sender.send
        for event in self._events:
            await send(event)
        await trio.sleep_forever()


async def run_path(events: list[BookEvent], metrics_on: bool) -> tuple[float, float, int]:
    """Run the tree over ``events``; return (ticks per wall second, per CPU second, fills)."""
    n = len(events)
    pairs = load_pairs([SYMBOL])
    portfolio = Portfolio({"USD": Decimal(1_000_000)})
    limits = RiskLimits(max_position_usd=BIG, max_total_exposure_usd=BIG,
                        max_open_positions=10, daily_loss_limit_usd=BIG,
                        max_drawdown=Decimal("0.99"))
    engine = RiskEngine(limits, portfolio, pairs, ClientOrderIds("bench"))
    broker = PaperBroker(pairs, portfolio.balances())
    breaker = CircuitBreaker("trading", latching=True)
    metrics = Metrics() if metrics_on else None
    observer: Any
    if metrics is not None:
        observer = MetricsBridge(metrics, usd_rate=portfolio.usd_rate)
        metrics.initialise(actors=["risk", "executor", "flip", "feed"],
                           feeds={"kraken": ["book"]}, symbols=[SYMBOL],
                           strategies=["flip"], order_statuses=("accepted", "filled"))
        breaker.add_listener(observer.breaker_changed)
    else:
        observer = NoopObserver()
    fills: list[Fill] = []

    class Tap:  # app.py's _ExecutionTap: the observer plus the run's fill list
        def order_submitted(self, order: Any, tick_to_order: float) -> None:
            observer.order_submitted(order, tick_to_order)

        def order_event(self, strategy: str, event: Any) -> None:
            observer.order_event(strategy, event)
            if isinstance(event, Fill):
                fills.append(event)

    # Buffers hold the whole run: every actor sees every tick (no conflation), so both
    # variants do exactly the same work.
    market: FanOut[MarketEvent] = FanOut("market")
    strategy_in = market.subscribe("strategy:flip", max_buffer_size=n + 1, key=market_key)
    risk_in = market.subscribe("risk", max_buffer_size=n + 1, key=market_key)
    exec_in = market.subscribe("executor", max_buffer_size=n + 1, key=market_key)
    signals = open_lossless_channel(256)  # type: ignore[var-annotated]
    orders = open_lossless_channel(256)  # type: ignore[var-annotated]
    order_events = open_lossless_channel(256)  # type: ignore[var-annotated]
    feedback = open_lossless_channel(256)  # type: ignore[var-annotated]
    done = trio.Event()

    children = [
        ChildSpec("risk", lambda signals, market, order_events, orders, fb: RiskActor(
            engine, breaker, signals=signals, market=market, order_events=order_events,
            orders=orders, feedback={"flip": fb}, observer=observer), channels={
            "signals": signals[1], "market": risk_in, "order_events": order_events[1],
            "orders": orders[0], "fb": feedback[0]}),
        ChildSpec("executor", lambda orders, market, order_events, fb: ExecutorActor(
            broker, orders=orders, market=market, order_events=order_events,
            feedback={"flip": fb}, observer=Tap(), pairs=pairs), channels={
            "orders": orders[1], "market": exec_in, "order_events": order_events[0],
            "fb": feedback[0]}),
        ChildSpec("flip", lambda market, fb, signals: StrategyActor(
            Flip(n, done), market=market, feedback=fb, signals=signals,
            on_signals=observer.signals), channels={
            "market": strategy_in, "fb": feedback[1], "signals": signals[0]}),
        ChildSpec("feed", lambda out: Feed(events, out, observer), channels={"out": market}),
    ]  # fmt: skip
    if metrics is not None:
        bridge = observer
        children.insert(0, ChildSpec("metrics", lambda: MonitorActor(
            bridge, HealthReport, host="127.0.0.1", port=0, channel_stats=market.statistics,
            engine=engine)))  # fmt: skip
    root = Supervisor("root", children, strategy=RestartStrategy.REST_FOR_ONE,
                      observer=observer.supervisor_event)
    lossless = (signals[1], orders[1], order_events[1], feedback[1])
    async with trio.open_nursery() as nursery:
        await nursery.start(root.run)
        start, cpu_start = time.perf_counter(), time.process_time()
        await done.wait()
        # The tail: the last orders fill, risk and the executor finish their ticks and events.
        expected = n // ORDER_EVERY
        # Polled (a checkpoint per pass): only for the last few messages of the run.
        while (len(fills) < expected or risk_in.statistics().depth or exec_in.statistics().depth
               or any(ch.statistics().current_buffer_used for ch in lossless)):
            await trio.lowlevel.checkpoint()
        elapsed = time.perf_counter() - start
        cpu = time.process_time() - cpu_start
        nursery.cancel_scope.cancel()
    if len(fills) != expected or (metrics is not None and not _consistent(metrics, n, fills)):
        raise RuntimeError(f"incomplete run: {len(fills)} fills of {expected} orders")
    return n / elapsed, n / cpu, len(fills)


def _consistent(metrics: Metrics, n: int, fills: list[Fill]) -> bool:
    """The 'on' run really recorded: every tick counted, every order timed."""
    get = metrics.registry.get_sample_value
    return (get("trading_feed_messages_total", {"feed": "kraken", "channel": "book"}) == n
            and get("trading_tick_to_order_seconds_count") == n // ORDER_EVERY
            and get("trading_fills_total", {"strategy": "flip"}) == len(fills))


def per_call() -> None:
    m = Metrics()
    n = 200_000
    calls = {
        "feed_message": lambda: m.feed_message("kraken", "book"),
        "order": lambda: m.order("flip", "filled"),
        "observe_tick_to_order": lambda: m.observe_tick_to_order(0.0002),
        "channel_stats": lambda: m.channel_stats("strategy:flip", 3, 7),
        "labels().inc (unbound)": lambda: m.orders.labels("flip", "filled").inc(),
    }
    for name, fn in calls.items():
        ns = min(timeit.repeat(fn, number=n, repeat=3)) / n * 1e9
        print(f"  {name:24s} {ns:7.0f} ns/call")


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 10_000
    repeats = int(sys.argv[2]) if len(sys.argv) > 2 else 9
    events = book_events(n)
    print(f"python {sys.version.split()[0]}, trio {trio.__version__}: {n} ticks x {repeats} "
          f"runs per variant, interleaved; an order every {ORDER_EVERY}th tick")
    runs: dict[bool, list[tuple[float, float, int]]] = {False: [], True: []}
    for _ in range(repeats):  # interleaved, so drift on a shared machine hits both alike
        for on in (False, True):
            runs[on].append(trio.run(run_path, events, on))
    for clock, k in (("wall", 0), ("CPU", 1)):
        off = [r[k] for r in runs[False]]
        on_ = [r[k] for r in runs[True]]
        paired = statistics.median(o / f for o, f in zip(on_, off, strict=True))
        print(f"  per {clock:4s} second: metrics off {statistics.median(off):9,.0f} ticks/s   "
              f"on {statistics.median(on_):9,.0f} ticks/s (medians)   "
              f"ratio on/off {paired:.3f} (median of paired runs; target >= 0.90)")
        best = max(on_) / max(off)
        listing = (" ".join(f"{r / 1e3:.1f}" for r in off), " ".join(f"{r / 1e3:.1f}" for r in on_))
        print(f"    best: off {max(off):9,.0f}  on {max(on_):9,.0f}  ratio {best:.3f};"
              f"  runs (k/s) off {listing[0]}  on {listing[1]}")
    print(f"  {runs[True][-1][2]} fills per run (feed -> strategy -> risk -> executor -> "
          "PaperBroker)")
    print("per-call cost of the metrics helpers:")
    per_call()


if __name__ == "__main__":
    main()

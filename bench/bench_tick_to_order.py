"""Tick-to-order latency of paper mode over a loopback WebSocket, next to a bare channel hop.

What runs: the real :class:`actors.app.Application` in paper mode (feed actor over
``KrakenWsSession``, conflating fan-out, strategy shell, risk actor, executor with
``PaperBroker``, metrics, console and, in the "sqlite" runs, the recorder and the write-ahead
journal on a temporary SQLite file with paper mode's ``synchronous=NORMAL``; "sqlite-thread"
is the same with every write-ahead through a worker thread (``StoreJournal(inline=False)``,
the path before the event-loop write-ahead of ``persistence._writeahead``), the baseline of
that change in the same run). The only stand-in
is the strategy: :class:`TickStrategy` sends a minimum-size market buy on every Nth book
event (N = rate // 100: about 100 orders/s), with the event's ``ts_recv``. Risk limits are
raised out of the way, so every signal becomes an order.

The market comes from the Kraken-protocol test server (``tests/kraken_ws_server.py``) in a
child process (``bench/_paced_kraken_server.py``), streaming book updates for BTC/USD and
ETH/USD at a fixed rate on an absolute schedule.

What is measured, per order, on trio's clock of the trading process:

* **tick-to-order**: from ``ts_recv`` (stamped by ``KrakenWsSession`` the moment
  ``get_message()`` returns the frame, *before* JSON decoding, book update and checksum, so
  those are inside the figure) to the executor calling ``order_submitted`` right before
  ``broker.submit`` (after the write-ahead commit when a store is configured). Samples come
  from a wrapper around the executor's observer (``Application.bridge``), so percentiles use
  raw samples, not histogram buckets;
* the split of that time: frame -> strategy (decode, book, checksum, fan-out, wake-up) and
  strategy -> submit (signal channel, risk, order channel, executor, write-ahead);
* **wire**: the server's wall clock at frame generation -> ``ts_recv`` (wall clock of the same
  machine). It holds what the stamping point leaves out: the server's writer, loopback TCP,
  trio-websocket's reader task and the frames' wait in its queue while the process is busy;
* baselines, in the same run: **bare hop**, one trio memory-channel ``send`` -> ``receive``
  paced at the same rate; **bare wire**, the wire figure of a receive-only trio-websocket
  client of the same server (so wire - bare wire = the wait the stamping point hides).

Options for finding where the time goes: ``--where`` times every trio task step and GC pause
(``bench/_loop_blocking.py``); ``--sqlite-sync`` and ``--switch-interval`` try a change without
editing the product.

Run: ``.venv/bin/python bench/bench_tick_to_order.py [--seconds 10] [--rates 100,1000]
[--stores none,sqlite,sqlite-thread]`` (about 60 s). Prints figures; asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import pathlib
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any

import trio
import trio_websocket

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from actors.app import Application, load_pairs  # noqa: E402
from actors.journal import StoreJournal  # noqa: E402
from bench._loop_blocking import StepTimer  # noqa: E402
from config import load_settings  # noqa: E402
from persistence import Store  # noqa: E402
from protocol.instruments import PairInfo  # noqa: E402
from protocol.messages import (  # noqa: E402
    BookEvent,
    Fill,
    MarketEvent,
    OrderRequest,
    OrderType,
    Side,
    Signal,
)

SYMBOLS = ("BTC/USD", "ETH/USD")
STRATEGY = "tick_bench"
# Target order rate (every = max(1, rate // 100)): a strategy sending a few orders a second is
# realistic; 100/s gives ~1,000 samples per 10 s run without saturating the write-ahead journal
# (one synchronous=NORMAL commit per order, as paper mode does; ``--every`` overrides, see
# the module docstring).
ORDERS_PER_SECOND = 100


# ----------------------------------------------------------------------------- statistics


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile of an ascending list (q in [0, 100])."""
    if not sorted_values:
        return math.nan
    rank = max(1, math.ceil(q / 100 * len(sorted_values)))
    return sorted_values[min(rank, len(sorted_values)) - 1]


@dataclass(frozen=True, slots=True)
class Summary:
    n: int
    p50: float
    p99: float
    max: float

    @classmethod
    def of(cls, values: Sequence[float]) -> Summary:
        s = sorted(values)
        return cls(len(s), percentile(s, 50), percentile(s, 99), s[-1] if s else math.nan)

    def ms(self) -> str:
        return f"{self.p50 * 1e3:7.3f} {self.p99 * 1e3:7.3f} {self.max * 1e3:8.3f}"


# ----------------------------------------------------------------------------- the strategy


class TickStrategy:
    """Signals a minimum-size market buy on every ``every``-th book event.

    Always a buy (the position grows by a few dollars per order; limits are out of the way):
    alternating buys and sells would put opposite orders in flight on one symbol, and
    ``RiskEngine`` then drops the symbol's in-flight entry while orders remain (net zero) and
    crashes on their fill with ``KeyError`` (trading/risk.py as of commit 4095078).

    Also records, for every book event, how long after ``ts_recv`` it reached the strategy,
    and the wire delay (server wall clock in the frame -> ``ts_recv`` on this machine's wall
    clock). It trades during the warm-up too; only events inside the probe's window are
    sampled.
    """

    def __init__(self, pairs: Mapping[str, PairInfo], every: int, probe: Probe) -> None:
        self.name = STRATEGY
        self.symbols = tuple(pairs)
        self._qty = {s: p.ordermin or p.lot for s, p in pairs.items()}
        self._every = every
        self._seen = 0
        self._probe = probe

    def on_market(self, event: MarketEvent) -> Sequence[Signal]:
        if type(event) is not BookEvent:
            return ()
        assert isinstance(event, BookEvent)
        probe = self._probe
        lag = trio.current_time() - event.ts_recv
        sampled = probe.in_window(event.ts_recv)
        if sampled:
            probe.to_strategy.append(lag)
            if event.ts_event_ns:
                probe.wire.append(event.ts_recv + probe.wall_offset - event.ts_event_ns / 1e9)
        self._seen += 1
        if self._seen % self._every or event.mid is None:
            return ()
        symbol = event.symbol
        if sampled:
            probe.signal_lag[event.ts_recv] = lag
        return (Signal(strategy=self.name, symbol=symbol, side=Side.BUY, qty=self._qty[symbol],
                       order_type=OrderType.MARKET, reason="bench", ts_recv=event.ts_recv,
                       reference_price=event.mid),)

    def on_fill(self, fill: Fill) -> None:
        pass

    def on_order_closed(self, client_order_id: str, filled_qty: Decimal) -> None:
        pass


@dataclass
class Probe:
    """Raw samples of one run (seconds)."""

    wall_offset: float  # time.time() - trio.current_time(), taken at start
    start: float = math.inf
    end: float = math.inf
    to_strategy: list[float] = field(default_factory=list)
    wire: list[float] = field(default_factory=list)
    tick_to_order: list[float] = field(default_factory=list)
    strategy_to_submit: list[float] = field(default_factory=list)
    signal_lag: dict[float, float] = field(default_factory=dict)
    book_messages: int = 0
    crashes: list[str] = field(default_factory=list)  # a crash makes the run's figures void

    def in_window(self, ts: float) -> bool:
        return self.start <= ts < self.end


class Tap:
    """Wraps ``Application.bridge`` (the metrics bridge every actor reports to).

    ``order_submitted`` is called by the executor right before ``broker.submit`` with
    ``trio.current_time() - order.ts_recv``: the raw tick-to-order sample. ``feed_message``
    counts book messages in the window (the achieved rate). Everything else goes through.
    """

    def __init__(self, bridge: Any, probe: Probe) -> None:
        self._bridge = bridge
        self._probe = probe

    def order_submitted(self, order: OrderRequest, tick_to_order: float) -> None:
        probe = self._probe
        if probe.in_window(order.ts_recv):
            probe.tick_to_order.append(tick_to_order)
            lag = probe.signal_lag.pop(order.ts_recv, None)
            if lag is not None:
                probe.strategy_to_submit.append(tick_to_order - lag)
        self._bridge.order_submitted(order, tick_to_order)

    def feed_message(self, feed: str, channel: str) -> None:
        if channel == "book" and self._probe.in_window(trio.current_time()):
            self._probe.book_messages += 1
        self._bridge.feed_message(feed, channel)

    def supervisor_event(self, event: Any) -> None:
        if event.kind == "crashed":
            self._probe.crashes.append(f"{event.supervisor}/{event.child}: {event.reason}")
        self._bridge.supervisor_event(event)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._bridge, name)


# ----------------------------------------------------------------------------- one run


@dataclass(frozen=True, slots=True)
class RunResult:
    rate: int
    store: str
    every: int
    seconds: float
    book_messages: int
    orders: int
    fills: int
    conflated: dict[str, int]  # market fan-out subscriber -> events conflated in the window
    cpu: float  # CPU seconds of this process per measured second (all threads)
    crashes: tuple[str, ...]
    write_aheads: tuple[int, int]  # (on the event loop, through a worker thread)
    tick_to_order: Summary
    to_strategy: Summary
    strategy_to_submit: Summary
    wire: Summary


def start_server(rate: int) -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "bench._paced_kraken_server", "--rate", str(rate),
         "--symbols", ",".join(SYMBOLS)],
        cwd=ROOT, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line:
        proc.wait(5)
        raise RuntimeError(f"the test server exited with {proc.returncode}")
    url: str = json.loads(line)["url"]
    return proc, url


def _conflated(app: Application) -> dict[str, int]:
    return {s.name: s.conflated for s in app.wiring.market.statistics()}


async def run_app(url: str, *, rate: int, every: int, seconds: float, warmup: float,
                  db_path: pathlib.Path | None, where: StepTimer | None = None,
                  sqlite_sync: str = "NORMAL", store_kind: str = "sqlite") -> RunResult:
    settings = load_settings([
        "--mode", "paper", "--ws-url", url, "--metrics-addr", "127.0.0.1:0",
        "--pairs", ",".join(SYMBOLS), "--strategies", STRATEGY, "--log-level", "WARNING",
        "--cash", "10000000", "--max-position-usd", "100000000",
        "--max-exposure-usd", "100000000", "--max-open-positions", "100",
        "--daily-loss-limit-usd", "100000000", "--max-drawdown", "0.99",
        "--stop-loss", "0.9", "--take-profit", "0.9",
        "--db", f"sqlite:///{db_path}" if db_path else "sqlite:///unused.db",
    ], {})
    # trio's clock is perf_counter plus a random offset; the frames carry the server's wall
    # clock. Take the tightest of a few readings of the offset between the two.
    offsets = []
    for _ in range(5):
        a = time.time()
        t = trio.current_time()
        b = time.time()
        offsets.append((b - a, (a + b) / 2 - t))
    probe = Probe(wall_offset=min(offsets)[1])
    pairs = load_pairs(SYMBOLS)
    store = (Store(f"sqlite:///{db_path}", sqlite_synchronous=sqlite_sync)  # type: ignore[arg-type]
             if db_path is not None else None)
    app = Application(settings, store=store, run_tag=f"bench{rate}",
                      strategy_factory=lambda name: TickStrategy(pairs, every, probe))
    app.bridge = Tap(app.bridge, probe)  # type: ignore[assignment]
    journal: StoreJournal | None = app._journal
    if store is not None and store_kind == "sqlite-thread":
        # replaced before run(): the executor takes the journal when it starts
        assert journal is not None
        journal.close()
        journal = app._journal = StoreJournal(store, inline=False)
    if where is not None:
        trio.lowlevel.add_instrument(where)
    try:
        async with trio.open_nursery() as nursery:
            await nursery.start(app.run)
            await trio.sleep(warmup)  # connect, subscribe, snapshots, first orders
            probe.start = trio.current_time()
            probe.end = probe.start + seconds
            conflated0 = _conflated(app)
            cpu0 = time.process_time()
            if where is not None:
                where.start()
            await trio.sleep_until(probe.end)
            if where is not None:
                where.stop()
            cpu = (time.process_time() - cpu0) / seconds
            conflated = {k: v - conflated0.get(k, 0) for k, v in _conflated(app).items()
                         if v - conflated0.get(k, 0)}
            app.request_stop()
    finally:
        if journal is not None:
            journal.close()
        if store is not None:
            store.close()
    return RunResult(
        rate=rate, store=store_kind if db_path else "none", every=every, seconds=seconds,
        book_messages=probe.book_messages, orders=len(probe.tick_to_order),
        fills=len(app.fills), conflated=conflated, cpu=cpu, crashes=tuple(probe.crashes),
        write_aheads=(journal.inline_writes, journal.thread_writes) if journal else (0, 0),
        tick_to_order=Summary.of(probe.tick_to_order),
        to_strategy=Summary.of(probe.to_strategy),
        strategy_to_submit=Summary.of(probe.strategy_to_submit),
        wire=Summary.of(probe.wire),
    )


def measure(rate: int, store: str, *, seconds: float, warmup: float, every: int | None,
            where: StepTimer | None = None, sqlite_sync: str = "NORMAL") -> RunResult:
    n = every or max(1, rate // ORDERS_PER_SECOND)
    proc, url = start_server(rate)
    try:
        with tempfile.TemporaryDirectory(prefix="bench_t2o_") as tmp:
            db = pathlib.Path(tmp) / "bench.db" if store.startswith("sqlite") else None
            return trio.run(lambda: run_app(url, rate=rate, every=n, seconds=seconds,
                                            warmup=warmup, db_path=db, where=where,
                                            sqlite_sync=sqlite_sync, store_kind=store))
    finally:
        proc.terminate()
        proc.wait(5)


# ----------------------------------------------------------------------------- baselines


async def _bare_wire(url: str, seconds: float, warmup: float) -> Summary:
    samples: list[float] = []
    async with trio_websocket.open_websocket_url(url, message_queue_size=1024) as ws:
        await ws.send_message(json.dumps({"method": "subscribe", "req_id": 1,
                                          "params": {"channel": "instrument"}}))
        await ws.send_message(json.dumps({"method": "subscribe", "req_id": 2, "params": {
            "channel": "book", "symbol": list(SYMBOLS), "depth": 10}}))
        start = trio.current_time() + warmup
        end = start + seconds
        while (now := trio.current_time()) < end:
            raw = await ws.get_message()
            wall = time.time()
            if now < start or not isinstance(raw, str) or not raw.startswith(
                    '{"channel":"book","type":"update"'):
                continue
            stamp = json.loads(raw)["data"][0]["timestamp"]
            samples.append(wall - datetime.fromisoformat(stamp).timestamp())
    return Summary.of(samples)


def bare_wire(rate: int, seconds: float, warmup: float) -> Summary:
    """The wire figure for a bare trio-websocket client: server -> ``get_message`` returns.

    The same paced server, a client that only receives: what the wire figure of a run costs
    when nothing in the receiving process delays ``get_message``.
    """
    proc, url = start_server(rate)
    try:
        return trio.run(_bare_wire, url, seconds, warmup)
    finally:
        proc.terminate()
        proc.wait(5)


async def bare_hop(rate: int, seconds: float) -> Summary:
    """One memory-channel hop: a sender stamps ``trio.current_time()`` at ``rate``/s."""
    send, recv = trio.open_memory_channel[float](256)
    samples: list[float] = []

    async def receiver() -> None:
        with recv:
            async for stamp in recv:
                samples.append(trio.current_time() - stamp)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(receiver)
        with send:
            start = trio.current_time()
            for k in range(int(rate * seconds)):
                await trio.sleep_until(start + k / rate)
                await send.send(trio.current_time())
    return Summary.of(samples)


# ----------------------------------------------------------------------------- main


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rates", default="100,1000", help="book messages/second to test")
    parser.add_argument("--stores", default="none,sqlite",
                        help="none, sqlite and/or sqlite-thread (see the docstring)")
    parser.add_argument("--seconds", type=float, default=10.0, help="measured seconds per run")
    parser.add_argument("--warmup", type=float, default=1.0, help="unmeasured seconds first")
    parser.add_argument("--hop-seconds", type=float, default=1.5,
                        help="seconds of each baseline (bare hop, bare wire) per rate")
    parser.add_argument("--every", type=int, default=None,
                        help=f"signal on every Nth book event (default: rate // "
                             f"{ORDERS_PER_SECOND}, at least 1)")
    parser.add_argument("--sqlite-sync", default="NORMAL", choices=("FULL", "NORMAL", "OFF"),
                        help="PRAGMA synchronous of the sqlite runs (paper mode uses NORMAL, "
                        "other modes FULL)")
    parser.add_argument("--switch-interval", type=float, default=None,
                        help="sys.setswitchinterval for this process (Python's default: 0.005)")
    parser.add_argument("--where", action="store_true",
                        help="also time every trio task step and GC pause (adds overhead)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    if args.switch_interval is not None:
        sys.setswitchinterval(args.switch_interval)
    rates = [int(r) for r in args.rates.split(",")]
    stores = args.stores.split(",")

    hops = {rate: trio.run(bare_hop, rate, args.hop_seconds) for rate in rates}
    wires = {rate: bare_wire(rate, args.hop_seconds, 0.5) for rate in rates}
    results: list[RunResult] = []
    wheres: list[tuple[RunResult, StepTimer]] = []
    for rate in rates:
        for store in stores:
            where = StepTimer() if args.where else None
            result = measure(rate, store, seconds=args.seconds, warmup=args.warmup,
                             every=args.every, where=where, sqlite_sync=args.sqlite_sync)
            results.append(result)
            if where is not None:
                wheres.append((result, where))

    print("tick-to-order: WebSocket frame received (ts_recv, before decode) -> paper order "
          "submitted")
    print(f"paper mode, real Application, {'+'.join(SYMBOLS)} books over loopback from a "
          f"child-process server; {args.seconds:g} s measured per run after "
          f"{args.warmup:g} s warm-up; times in ms (p50 p99 max); sqlite synchronous="
          f"{args.sqlite_sync}, GIL switch interval {sys.getswitchinterval() * 1e3:g} ms"
          + ("; --where instrument ON (adds overhead)" if args.where else ""))
    print()
    print(f"{'rate':>5} {'store':>13} {'msg/s':>6} {'orders':>6} {'confl':>5} {'cpu':>4} | "
          f"{'tick-to-order':^24} | {'frame->strategy':^24} | {'strategy->submit':^24} | "
          f"{'wire (server->ts_recv)':^24}")
    for r in results:
        print(f"{r.rate:>5} {r.store:>13} {r.book_messages / r.seconds:6.0f} {r.orders:>6} "
              f"{sum(r.conflated.values()):>5} {r.cpu:4.0%} | {r.tick_to_order.ms()} | "
              f"{r.to_strategy.ms()} | {r.strategy_to_submit.ms()} | {r.wire.ms()}")
    for r in results:
        if r.write_aheads != (0, 0):
            print(f"   {r.rate} msg/s {r.store}: write-aheads (whole run) on the event loop "
                  f"{r.write_aheads[0]}, through a worker thread {r.write_aheads[1]}")
        if r.conflated:
            print(f"   {r.rate} msg/s {r.store}: conflated (subscriber fell behind): "
                  + ", ".join(f"{k} {v}" for k, v in sorted(r.conflated.items())))
        for crash in r.crashes:
            print(f"!! {r.rate} msg/s {r.store}: an actor crashed, figures void: {crash}")
    print()
    print(f"bare trio memory-channel hop (send -> receive, paced, {args.hop_seconds:g} s):")
    for rate, hop in hops.items():
        print(f"{rate:>5} msg/s: {hop.ms()}  ({hop.n} samples)")
    print(f"bare wire: a receive-only trio-websocket client, server -> get_message "
          f"({args.hop_seconds:g} s):")
    for rate, wire in wires.items():
        print(f"{rate:>5} msg/s: {wire.ms()}  ({wire.n} samples)")
    print()
    for r in results:
        hop = hops[r.rate]
        verdict = ""
        if r.rate == 1000:
            verdict = "  target p99 < 2 ms: " + ("MET" if r.tick_to_order.p99 < 0.002
                                                 else "MISSED")
        print(f"{r.rate:>5} msg/s {r.store:>13}: tick-to-order / bare hop = "
              f"{r.tick_to_order.p50 / hop.p50:5.1f}x (p50), "
              f"{r.tick_to_order.p99 / hop.p99:5.1f}x (p99); one order per {r.every} book "
              f"messages{verdict}")
    for r, where in wheres:
        print()
        print(f"where the time goes at {r.rate} msg/s, store {r.store} (trio task steps in the "
              "measured window):")
        print(where.report())


if __name__ == "__main__":
    main()

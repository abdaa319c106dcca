"""WebSocket ingest throughput: KrakenWsSession versus a bare trio-websocket receive loop.

The Kraken test server (tests/kraken_ws_server.py) runs in a child process in burst mode: it
pre-renders 3 book snapshots and N depth-10 updates (valid checksums) and, once a connection
has subscribed the three books, sends them all as fast as it can. Both clients receive exactly
the same frames from the same server in the same run:

* baseline: ``open_websocket_url`` + the same subscribe requests + ``get_message()`` in a loop;
* session: ``KrakenWsSession`` decoding (Decimal), maintaining three ``OrderBook``s, verifying
  every checksum and publishing a top-10 ``BookEvent`` per message to a consumer task.

Prints messages/second for both and the ratio session/baseline (target >= 0.7): the ratio of
the medians, the median of the per-round ratios (each round runs both clients back to back, so
a burst of load from elsewhere on the machine hits a pair, not one side), and the same ratio in
client CPU seconds (``time.process_time``), which a busy shared machine distorts least.
Run: ``.venv/bin/python bench/bench_ws.py [--updates N] [--rounds R]``.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import statistics
import subprocess
import sys
import time

import trio
import trio_websocket

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from protocol.kraken._ws import KrakenWsSession, Subscription  # noqa: E402
from protocol.messages import BookEvent, MarketEvent  # noqa: E402

SYMBOLS = ["BTC/USD", "ETH/USD", "ETH/BTC"]


async def serve(updates: int) -> None:
    from tests.kraken_ws_server import open_kraken_ws_server

    async with open_kraken_ws_server(symbols=SYMBOLS, seed=1, burst=updates,
                                     heartbeat_interval=None) as server:
        print(json.dumps({"url": server.url, "messages": server.burst_message_count}),
              flush=True)
        await trio.sleep_forever()


async def bare_loop(url: str, messages: int) -> tuple[float, float]:
    """(wall, CPU) seconds from the first to the last book frame with a plain receive loop."""
    async with trio_websocket.open_websocket_url(url, message_queue_size=1024,
                                                 max_message_size=8 * 1024 * 1024) as ws:
        await ws.send_message('{"method":"subscribe","params":{"channel":"instrument"},'
                              '"req_id":1}')
        await ws.send_message(json.dumps({"method": "subscribe", "req_id": 2, "params": {
            "channel": "book", "symbol": SYMBOLS, "depth": 10}}))
        seen = 0
        start = cpu = 0.0
        while seen < messages:
            raw = await ws.get_message()
            # Same selection cost for both sides is negligible; count only book frames.
            if isinstance(raw, str) and raw.startswith('{"channel":"book"'):
                if seen == 0:
                    start, cpu = trio.current_time(), time.process_time()
                seen += 1
        return trio.current_time() - start, time.process_time() - cpu


async def session_loop(url: str, messages: int) -> tuple[float, float]:
    """(wall, CPU) seconds from the first to the last BookEvent through KrakenWsSession."""
    session = KrakenWsSession(url, subscriptions=[Subscription(channel="book",
                                                               symbols=tuple(SYMBOLS))],
                              stale_after=30.0, ping_interval=None)
    send, recv = trio.open_memory_channel[MarketEvent](1024)
    elapsed = cpu_elapsed = 0.0
    async with trio.open_nursery() as nursery:
        nursery.start_soon(session.run, send)
        seen = 0
        start = cpu = 0.0
        async for event in recv:
            if isinstance(event, BookEvent):
                if seen == 0:
                    start, cpu = trio.current_time(), time.process_time()
                seen += 1
                if seen == messages:
                    elapsed = trio.current_time() - start
                    cpu_elapsed = time.process_time() - cpu
                    break
        stats = session.statistics()
        assert stats.checksum_mismatches == 0 and stats.reconnects == 0, stats
        nursery.cancel_scope.cancel()
    return elapsed, cpu_elapsed


async def measure(url: str, messages: int, rounds: int) -> None:
    bare: list[float] = []
    sess: list[float] = []
    pairs: list[float] = []
    cpu_bare: list[float] = []
    cpu_sess: list[float] = []
    for _ in range(rounds):  # interleaved, so machine noise hits both alike
        wall_b, cpu_b = await bare_loop(url, messages)
        wall_s, cpu_s = await session_loop(url, messages)
        bare.append(messages / wall_b)
        sess.append(messages / wall_s)
        pairs.append(wall_b / wall_s)
        cpu_bare.append(cpu_b / messages)
        cpu_sess.append(cpu_s / messages)
    b, s = statistics.median(bare), statistics.median(sess)
    cb, cs = statistics.median(cpu_bare), statistics.median(cpu_sess)
    print(f"messages per run            : {messages} (3 snapshots + depth-10 updates)")
    print(f"bare trio-websocket loop    : {b:10.0f} msg/s  (median of {rounds}; "
          f"min {min(bare):.0f}, max {max(bare):.0f})")
    print(f"KrakenWsSession (verified)  : {s:10.0f} msg/s  (median of {rounds}; "
          f"min {min(sess):.0f}, max {max(sess):.0f})")
    print(f"per-message wall time       : bare {1e6 / b:.1f} us, session {1e6 / s:.1f} us")
    print(f"per-message client CPU      : bare {cb * 1e6:.1f} us, session {cs * 1e6:.1f} us")
    print(f"per-round ratios            : {' '.join(f'{r:.2f}' for r in pairs)}")
    print(f"ratio session / bare        : {s / b:.2f}  (target >= 0.70; median of per-round "
          f"ratios {statistics.median(pairs):.2f}, CPU-time ratio {cb / cs:.2f})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--updates", type=int, default=30_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        trio.run(serve, args.updates)
        return
    child = subprocess.Popen([sys.executable, __file__, "--serve", "--updates",
                              str(args.updates)], stdout=subprocess.PIPE, text=True,
                             cwd=ROOT)
    try:
        assert child.stdout is not None
        info = json.loads(child.stdout.readline())
        trio.run(measure, info["url"], info["messages"], args.rounds)
    finally:
        child.terminate()
        child.wait(timeout=10)


if __name__ == "__main__":
    main()

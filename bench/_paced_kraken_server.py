"""The Kraken WS v2 test server streaming book updates at a fixed rate, for latency benchmarks.

Run as a child process (``python -m bench._paced_kraken_server --rate 1000``): it prints one
JSON line ``{"url": ...}`` once it listens, then streams until it is terminated.

Why not the server's own random-walk mode: its driver sleeps ``1/updates_per_second`` *after*
each step, so the achieved rate drifts below the target by the step cost and trio's timer
granularity (about 1 ms through epoll). Here the schedule is absolute: step ``k`` is due at
``start + k / rate`` and a late step is caught up at once (bursts included, as on a real feed),
so the offered rate is the requested one. Each step is one book update for the next symbol,
round robin; trades and tickers are off, so "messages/second" means book messages/second.

Frame timestamps carry the server's wall clock at generation (instead of the server's
synthetic step clock), so the client can estimate the one-way delay server -> ``ts_recv``:
both processes read the same system clock.
"""

from __future__ import annotations

import argparse
import json
import math
from datetime import UTC, datetime

import trio

from tests.kraken_ws_server import KrakenWsTestServer, open_kraken_ws_server

# A step later than this behind schedule (a long stall) restarts the schedule instead of
# sending the whole backlog in one burst.
MAX_CATCH_UP_S = 0.1


def _wall_timestamp() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


async def pace(server: KrakenWsTestServer, rate: float) -> None:
    """Step the market ``rate`` times per second on an absolute schedule, forever."""
    interval = 1.0 / rate
    symbols = server.symbols
    k = 0
    start = trio.current_time()
    while True:
        due = start + k * interval
        now = trio.current_time()
        if now < due:
            await trio.sleep_until(due)
        elif now - due > MAX_CATCH_UP_S:
            start, k = now, 0
        server._tick(symbols[k % len(symbols)])
        k += 1
        if k % 64 == 0:
            await trio.lowlevel.checkpoint()  # let the writers run during a catch-up burst


async def serve(rate: float, symbols: list[str], seed: int) -> None:
    async with open_kraken_ws_server(symbols=symbols, seed=seed, updates_per_second=0,
                                     trade_every=0, ticker_every=0,
                                     heartbeat_interval=1.0) as server:
        server._timestamp = _wall_timestamp  # type: ignore[method-assign]
        print(json.dumps({"url": server.url}), flush=True)
        await pace(server, rate)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, required=True, help="book messages per second")
    parser.add_argument("--symbols", default="BTC/USD,ETH/USD")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    if not (args.rate > 0 and math.isfinite(args.rate)):
        parser.error("--rate must be a positive number")
    trio.run(serve, args.rate, args.symbols.split(","), args.seed)


if __name__ == "__main__":
    main()

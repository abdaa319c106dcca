"""REST client overhead over loopback: KrakenRestClient vs raw httpx against the test server.

Prints requests/s and latency percentiles for (a) raw ``httpx.AsyncClient.get`` of
``/0/public/Depth`` and (b) ``KrakenRestClient.depth`` (limiter, deadline, decode to Decimal),
plus signed private calls (``Balance``), and the ratio against the raw baseline measured in the
same run. Run: ``.venv/bin/python bench/bench_rest.py``.
"""

from __future__ import annotations

import pathlib
import statistics
import sys
from collections.abc import Awaitable, Callable

import httpx
import trio

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from protocol.kraken._ratelimit import CallCounterLimiter, RateLimitTier  # noqa: E402
from protocol.kraken._rest import open_kraken_rest  # noqa: E402
from protocol.kraken._signing import KrakenCredentials  # noqa: E402
from tests.kraken_rest_server import DOCS_EXAMPLE_SECRET, KrakenRestState, open_kraken_rest_server  # noqa: E402

SECRET = DOCS_EXAMPLE_SECRET
N = 2000


async def measure(name: str, call: Callable[[], Awaitable[object]]) -> float:
    for _ in range(50):
        await call()
    lat = []
    start = trio.current_time()
    for _ in range(N):
        t = trio.current_time()
        await call()
        lat.append(trio.current_time() - t)
    total = trio.current_time() - start
    q = statistics.quantiles(lat, n=100)
    print(f"{name:<28} {N / total:8.0f} req/s  p50 {q[49] * 1e3:6.3f} ms  "
          f"p99 {q[98] * 1e3:6.3f} ms")
    return N / total


async def main() -> None:
    creds = KrakenCredentials("bench-key-000000", SECRET)
    state = KrakenRestState(credentials=creds)
    async with open_kraken_rest_server(state) as server:
        async with httpx.AsyncClient(base_url=server.url) as raw:
            base = await measure("raw httpx GET Depth", lambda: raw.get(
                "/0/public/Depth", params={"pair": "XBTUSD"}))
        # Benchmark the client path, not Kraken's limits: Balance costs 0 here.
        limiter = CallCounterLimiter(RateLimitTier.PRO, costs={"Balance": 0.0})
        async with open_kraken_rest(creds, base_url=server.url, limiter=limiter) as client:
            ours = await measure("KrakenRestClient.depth", lambda: client.depth("XBTUSD"))
            signed = await measure("KrakenRestClient.balance", client.balance)
    print(f"ratio depth/raw {ours / base:.2f}  balance(signed)/raw {signed / base:.2f}")


if __name__ == "__main__":
    trio.run(main)

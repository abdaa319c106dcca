"""Kraken book throughput: decode + apply + checksum versus decode only, in the same run.

Two workloads:

* v1 recorded: the raw frames of ``shared/data/kraken-ws-v1/kraken_ws_v1_book1000_*.jsonl``
  (book depth 1000, 10 pairs, 14,496 checksummed updates); falls back to the 300-line fixture
  slice when ``../shared`` is absent.
* v2 synthesised: one BTC/USD depth-1000 snapshot then N single/double-level updates clustered
  near the top of the book, each carrying the checksum Kraken would send.

The baseline is decode-only over the same frames; the ratio shows what keeping and verifying
the book costs on top of parsing. A third line adds what the WS session does next for every
message: ``to_event(levels=10)`` (the published top-10 ``BookEvent``).
Run: ``.venv/bin/python bench/bench_book.py [--updates N] [--repeat R]``.
"""

from __future__ import annotations

import argparse
import pathlib
import random
import statistics
import sys
import time
from collections.abc import Callable
from decimal import Decimal

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from protocol.kraken._book import OrderBook  # noqa: E402
from protocol.kraken._codec import BookFrame, decode_v2, dumps  # noqa: E402
from protocol.kraken._codec_v1 import V1Decoder  # noqa: E402
from protocol.messages import BookLevel  # noqa: E402

SHARED_FILE = (
    ROOT.parent / "shared" / "data" / "kraken-ws-v1" / "kraken_ws_v1_book1000_20210405T2347Z.jsonl"
)
SLICE_FILE = ROOT / "tests" / "fixtures" / "kraken" / "kraken_ws_v1_book1000_head300.jsonl"


def v1_frames() -> tuple[str, list[str]]:
    """The raw received frame texts (as Kraken sent them) of the recorded v1 session."""
    path = SHARED_FILE if SHARED_FILE.exists() else SLICE_FILE
    frames = []
    for line in path.read_text().splitlines():
        if '"dir":"recv"' in line:
            frames.append(line[line.index('"msg":') + 6 : line.rindex("}")])
    return path.name, frames


def run_v1(frames: list[str], *, with_book: bool, with_event: bool = False) -> int:
    decoder = V1Decoder()
    books: dict[str, OrderBook] = {}
    count = 0
    for raw in frames:
        for fr in decoder.decode(raw, ts_recv=0.0):
            if type(fr) is BookFrame:
                count += 1
                if with_book:
                    book = books.get(fr.symbol)
                    if book is None:
                        depth = decoder.depth(fr.symbol) or 1000
                        book = books[fr.symbol] = OrderBook(fr.symbol, depth=depth, v1=True)
                    book.apply(fr)
                    if with_event:
                        book.to_event(levels=10)
    if with_book:
        assert sum(b.checksums_verified for b in books.values()) > 0
    return count


def v2_frames(updates: int, seed: int = 1) -> list[str]:
    """A BTC/USD depth-1000 snapshot and ``updates`` deltas with correct v2 checksums."""
    rng = random.Random(seed)
    tick, mid = Decimal("0.1"), Decimal("45000.0")
    lot = Decimal("0.00000001")

    def qty() -> Decimal:
        return (Decimal(rng.randint(1, 300_000_000)) * lot).normalize()  # JSON drops zeros

    bids = [BookLevel(mid - tick * (i + 1), qty()) for i in range(1000)]
    asks = [BookLevel(mid + tick * i, qty()) for i in range(1000)]
    ref = OrderBook("BTC/USD", depth=1000)  # reference without verification
    ref.set_precision(1, 8)
    snap = BookFrame(symbol="BTC/USD", is_snapshot=True, bids=tuple(bids), asks=tuple(asks),
                     checksum=None, ts_event_ns=0, ts_recv=0.0)
    ref.apply(snap)

    def message(kind: str, b: list[BookLevel], a: list[BookLevel], checksum: int) -> str:
        return dumps({
            "channel": "book", "type": kind,
            "data": [{
                "symbol": "BTC/USD",
                "bids": [{"price": lvl.price, "qty": lvl.qty} for lvl in b],
                "asks": [{"price": lvl.price, "qty": lvl.qty} for lvl in a],
                "checksum": checksum,
                "timestamp": "2023-10-06T17:35:55.440295Z",
            }],
        })

    out = [message("snapshot", bids, asks, ref.checksum())]
    for _ in range(updates):
        b: list[BookLevel] = []
        a: list[BookLevel] = []
        for _ in range(rng.choice((1, 1, 1, 2))):
            depth = min(int(rng.expovariate(1 / 15)), 1200)  # most activity near the top
            side_bid = rng.random() < 0.5
            price = (mid - tick * (depth + 1)) if side_bid else (mid + tick * depth)
            level = BookLevel(price, Decimal(0) if rng.random() < 0.35 else qty())
            (b if side_bid else a).append(level)
        upd = BookFrame(symbol="BTC/USD", is_snapshot=False, bids=tuple(b), asks=tuple(a),
                        checksum=None, ts_event_ns=0, ts_recv=0.0)
        ref.apply(upd)
        out.append(message("update", b, a, ref.checksum()))
    return out


def run_v2(frames: list[str], *, with_book: bool, with_event: bool = False) -> int:
    book = OrderBook("BTC/USD", depth=1000, price_precision=1, qty_precision=8)
    count = 0
    for raw in frames:
        for fr in decode_v2(raw, ts_recv=0.0):
            if type(fr) is BookFrame:
                count += 1
                if with_book:
                    book.apply(fr)
                    if with_event:
                        book.to_event(levels=10)
    if with_book:
        assert book.checksums_verified == count
    return count


def best_of(fn: Callable[[], int], repeat: int) -> tuple[float, int]:
    """Best CPU seconds of ``repeat`` runs and the message count.

    CPU time (``process_time``) rather than wall time: this loop never waits, so the two agree
    on an idle machine, and on a shared one CPU time is not inflated by other processes.
    """
    best, count = float("inf"), 0
    for _ in range(repeat):
        start = time.process_time()
        count = fn()
        best = min(best, time.process_time() - start)
    return best, count


def report(title: str, base: tuple[float, int], full: tuple[float, int],
           event: tuple[float, int]) -> None:
    (t_dec, n), (t_all, _), (t_ev, _) = base, full, event
    print(f"\n{title}: {n:,} book messages")
    for label, t in (("decode only", t_dec), ("decode + apply + checksum", t_all),
                     ("  + to_event(levels=10)", t_ev)):
        print(f"  {label:<32}{n / t:>12,.0f} msg/s  {t / n * 1e6:7.2f} µs/msg")
    print(f"  ratio (full / decode-only rate) {t_dec / t_all:>12.2f}    book adds "
          f"{(t_all - t_dec) / n * 1e6:.2f} µs/msg")
    print(f"  ratio with the event            {t_dec / t_ev:>12.2f}    book + event add "
          f"{(t_ev - t_dec) / n * 1e6:.2f} µs/msg")


def latency_percentiles(frames: list[str]) -> None:
    book = OrderBook("BTC/USD", depth=1000, price_precision=1, qty_precision=8)
    samples = []
    clock = time.perf_counter_ns
    for raw in frames:
        start = clock()
        for fr in decode_v2(raw, ts_recv=0.0):
            if type(fr) is BookFrame:
                book.apply(fr)
        samples.append(clock() - start)
    updates = sorted(samples[1:])
    q = statistics.quantiles(updates, n=100)
    print(f"  per-update latency decode+apply+checksum: p50 {q[49] / 1e3:.1f} µs, "
          f"p99 {q[98] / 1e3:.1f} µs, max {updates[-1] / 1e3:.1f} µs")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--updates", type=int, default=20_000, help="synthesised v2 updates")
    parser.add_argument("--repeat", type=int, default=5, help="runs per variant (best is kept)")
    args = parser.parse_args()

    name, frames1 = v1_frames()
    base = best_of(lambda: run_v1(frames1, with_book=False), args.repeat)
    full = best_of(lambda: run_v1(frames1, with_book=True), args.repeat)
    event = best_of(lambda: run_v1(frames1, with_book=True, with_event=True), args.repeat)
    report(f"v1 recorded ({name})", base, full, event)

    frames2 = v2_frames(args.updates)
    base = best_of(lambda: run_v2(frames2, with_book=False), args.repeat)
    full = best_of(lambda: run_v2(frames2, with_book=True), args.repeat)
    event = best_of(lambda: run_v2(frames2, with_book=True, with_event=True), args.repeat)
    report("v2 synthesised (BTC/USD depth 1000, precision 1/8)", base, full, event)
    latency_percentiles(frames2)


if __name__ == "__main__":
    main()

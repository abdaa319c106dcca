"""Recorder write throughput against a raw DB-API executemany of the same rows.

For each database (SQLite always; PostgreSQL when ``TEST_DATABASE_URL`` is set or a server
answers on 127.0.0.1:5432) it writes N fills five ways in the same run:

* ``raw``: DB-API ``cursor.executemany`` of the fill rows, one commit per 500 rows (the
  reference; the store itself writes set-based statements, see ``persistence/_bulk.py``);
* ``recorder``: the ``Recorder`` actor end to end (trio channel → batches of 500 →
  ``trio.to_thread.run_sync(Store.write_batch)``), fills of orders the store does not know,
  from a producer that sends without a checkpoint while the channel has room (``send_nowait``)
  and awaits ``send`` when it is full;
* ``recorder, await per event``: the same with a producer that awaits ``send`` for every
  event, so trio's per-send checkpoint is inside the figure (see ``through_recorder``);
* ``recorder+orders``: the same, but every fill belongs to an order written ahead, so each batch
  also advances ``filled_qty``/status and writes status history (the live case);
* ``store.write_batch``: the store alone, batches of 500, no channel and no thread (what is
  left of the recorder's cost is the per-event trio channel hop).

and prints events/second and the ratio to raw (target: ``recorder`` >= 50 % of raw). The paths
run in interleaved rounds (default 3) and the medians are printed, with each ratio taken
against the raw run of the same round: on a shared machine, load moves between runs. On SQLite
each path starts with the write-ahead log folded (see ``one_round``).

Run: ``.venv/bin/python bench/bench_recorder.py [N] [ROUNDS]`` (default 20000 and 3; about
30 s on a loaded 2-core box).
"""

from __future__ import annotations

import os
import pathlib
import statistics
import sys
import tempfile
import time
import uuid
from decimal import Decimal

import sqlalchemy as sa
import trio
from sqlalchemy.engine import make_url

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))

from actors.recorder import Recorder
from persistence import Store
from protocol.messages import Fill, OrderRequest, Side

BATCH = 500
PG_DEFAULT = "postgresql+psycopg://postgres@127.0.0.1:5432/test"


def make_fills(n: int, tag: str) -> list[Fill]:
    return [
        Fill(
            fill_id=f"{tag}-f{i}",
            client_order_id=f"{tag}-c{i}",
            strategy="bench",
            symbol="BTC/USD",
            side=Side.BUY if i % 2 else Side.SELL,
            price=Decimal("65000.1") + i,
            qty=Decimal("0.00123"),
            fee=Decimal("0.208"),
            fee_currency="USD",
            ts_event_ns=1_700_000_000_000_000_000 + i,
        )
        for i in range(n)
    ]


def raw_executemany(store: Store, fills: list[Fill]) -> float:
    """Insert the same fill rows with the driver's executemany; return seconds."""
    sqlite = store.engine.dialect.name == "sqlite"
    mark = "?" if sqlite else "%s"
    sql = (
        "INSERT INTO fills (fill_id, client_order_id, run_id, strategy, symbol, side, price, "
        "qty, fee, fee_currency, liquidity, ts) VALUES (" + ", ".join([mark] * 12) + ")"
    )
    money = str if sqlite else (lambda d: d)
    import datetime as dt

    rows = [
        (
            f.fill_id,
            f.client_order_id,
            None,
            f.strategy,
            f.symbol,
            f.side.value,
            money(f.price),
            money(f.qty),
            money(f.fee),
            f.fee_currency,
            f.liquidity.value,
            dt.datetime.fromtimestamp(f.ts_event_ns / 1e9, dt.UTC).replace(tzinfo=None)
            if sqlite
            else dt.datetime.fromtimestamp(f.ts_event_ns / 1e9, dt.UTC),
        )
        for f in fills
    ]
    conn = store.engine.raw_connection()  # same pool, same PRAGMAs as the store
    try:
        t0 = time.perf_counter()
        for i in range(0, len(rows), BATCH):
            cur = conn.cursor()
            cur.executemany(sql, rows[i : i + BATCH])
            cur.close()
            conn.commit()
        return time.perf_counter() - t0
    finally:
        conn.close()


async def through_recorder(store: Store, fills: list[Fill], *, burst: bool = True) -> float:
    """The recorder end to end, from the first event sent to the last batch committed.

    ``burst``: the producer hands events over with ``send_nowait`` while the channel has room
    and awaits ``send`` only when it is full (the backpressure the recorder relies on). A
    producer that awaits ``send`` for every event pays trio's checkpoint per event (a trip
    through the scheduler): measured here at 86k-126k sends/s with a consumer that only
    drains, which is the raw executemany's own speed on SQLite, so that variant (printed as
    "recorder, await per event") times trio's scheduler as much as the recorder.
    """
    send, recv = trio.open_memory_channel[Fill](BATCH * 4)
    rec = Recorder(store, recv, batch_size=BATCH, flush_interval=0.05)
    t0 = time.perf_counter()
    async with trio.open_nursery() as nursery:
        await nursery.start(rec.run)
        with send:
            for f in fills:
                if burst:
                    try:
                        send.send_nowait(f)
                        continue
                    except trio.WouldBlock:
                        pass
                await send.send(f)
    # run() returns once the channel closed and everything is committed
    assert rec.statistics().written == len(fills)
    if os.environ.get("BENCH_VERBOSE"):
        print("   ", rec.statistics())
    return time.perf_counter() - t0


def one_round(store: Store, n: int, tag: str) -> dict[str, float]:
    """Each path once on fresh rows; returns events/second per path.

    SQLite: every path starts with the write-ahead log folded (``store.checkpoint()``, outside
    the timing). The store's connections never checkpoint by themselves; the recorder does it
    between batches, every CHECKPOINT_INTERVAL and first at its first batch. Without the reset
    the recorder's first batch would fold the log every earlier path left (tens of
    milliseconds, the raw run's rows included) inside its own timing, while the raw path
    never pays for folding anything.
    """
    store.checkpoint()
    secs = {"raw executemany": raw_executemany(store, make_fills(n, f"{tag}raw"))}
    store.checkpoint()
    secs["recorder"] = trio.run(through_recorder, store, make_fills(n, f"{tag}rec"))
    store.checkpoint()
    secs["recorder, await per event"] = trio.run(
        lambda: through_recorder(store, make_fills(n, f"{tag}aw"), burst=False))
    with_orders = make_fills(n, f"{tag}ord")
    for i in range(0, n, BATCH):
        store.write_batch(
            [
                OrderRequest(
                    client_order_id=f.client_order_id,
                    strategy=f.strategy,
                    symbol=f.symbol,
                    side=f.side,
                    qty=f.qty * 2,
                )
                for f in with_orders[i : i + BATCH]
            ]
        )
    if store.engine.dialect.name == "postgresql":
        # fresh statistics, as autovacuum keeps them in a running system: without them the
        # planner still believes ``orders`` is empty and scans it for every UPDATE
        with store.engine.begin() as conn:
            conn.execute(sa.text("ANALYZE orders"))
    store.checkpoint()
    secs["recorder+orders"] = trio.run(through_recorder, store, with_orders)
    # the store alone (no channel, no thread): splits the recorder's cost into the store's
    # write path and the per-event trio channel hop
    direct = make_fills(n, f"{tag}dir")
    store.checkpoint()
    t0 = time.perf_counter()
    for i in range(0, n, BATCH):
        store.write_batch(direct[i : i + BATCH])
    secs["store.write_batch"] = time.perf_counter() - t0
    return {k: n / v for k, v in secs.items()}


def bench(name: str, url: str, n: int, rounds: int) -> None:
    store = Store(url, sqlite_synchronous="FULL")
    try:
        store.start_run(mode="bench")
        # Rounds interleave the paths, so a burst of load on a shared machine hits all of them
        # rather than one; each ratio compares a path with the raw run of the same round.
        results = [one_round(store, n, f"r{r}-") for r in range(rounds)]
        with store.engine.connect() as conn:
            count = conn.execute(sa.text("select count(*) from fills")).scalar()
        assert count == 5 * n * rounds, count
    finally:
        store.close()
    for label in results[0]:
        eps = statistics.median(r[label] for r in results)
        line = f"{name:<11} {label:<26} {eps:>10,.0f} events/s"
        if label != "raw executemany":
            ratios = [r[label] / r["raw executemany"] for r in results]
            line += (f"   ratio {statistics.median(ratios):6.1%} "
                     f"(rounds {min(ratios):.0%}..{max(ratios):.0%})")
        print(line)


def pg_url() -> str | None:
    url = os.environ.get("TEST_DATABASE_URL") or PG_DEFAULT
    try:
        engine = sa.create_engine(url, connect_args={"connect_timeout": 2})
        with engine.connect():
            pass
        engine.dispose()
    except Exception as exc:
        print(f"postgresql  skipped: {url} not reachable ({type(exc).__name__})")
        return None
    return url


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 20_000
    rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 3
    print(f"N = {n} fills per path and round, {rounds} rounds (medians), batch size {BATCH}, "
          f"one transaction per batch; load average {os.getloadavg()[0]:.2f}")
    with tempfile.TemporaryDirectory() as tmp:
        bench("sqlite", f"sqlite:///{pathlib.Path(tmp) / 'bench.db'}", n, rounds)
    url = pg_url()
    if url is None:
        return
    schema = f"bench_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(url)
    with admin.begin() as conn:
        conn.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
    try:
        scoped = make_url(url).update_query_dict({"options": f"-csearch_path={schema}"})
        bench("postgresql", scoped.render_as_string(hide_password=False), n, rounds)
    finally:
        with admin.begin() as conn:
            conn.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


if __name__ == "__main__":
    main()

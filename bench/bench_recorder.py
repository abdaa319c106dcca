"""Recorder write throughput against a raw DB-API executemany of the same rows.

For each database (SQLite always; PostgreSQL when ``TEST_DATABASE_URL`` is set or a server
answers on 127.0.0.1:5432) it writes N fills three ways in the same run:

* ``raw``: DB-API ``cursor.executemany`` of the fill rows, one commit per 500 rows (the floor);
* ``recorder``: the ``Recorder`` actor end to end (trio channel → batches of 500 →
  ``trio.to_thread.run_sync(Store.write_batch)``), fills of orders the store does not know;
* ``recorder+orders``: the same, but every fill belongs to an order written ahead, so each batch
  also advances ``filled_qty``/status and writes status history (the live case);
* ``store.write_batch``: the store alone, batches of 500, no channel and no thread (what is
  left of the recorder's cost is the per-event trio channel hop).

and prints events/second and the ratio to raw (target: ``recorder`` >= 50 % of raw).

Run: ``.venv/bin/python bench/bench_recorder.py [N]`` (default 20000; under ~20 s).
"""

from __future__ import annotations

import os
import pathlib
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


async def through_recorder(store: Store, fills: list[Fill]) -> float:
    send, recv = trio.open_memory_channel[Fill](BATCH * 4)
    rec = Recorder(store, recv, batch_size=BATCH, flush_interval=0.05)
    t0 = time.perf_counter()
    async with trio.open_nursery() as nursery:
        await nursery.start(rec.run)
        with send:
            for f in fills:
                await send.send(f)
    # run() returns once the channel closed and everything is committed
    assert rec.statistics().written == len(fills)
    if os.environ.get("BENCH_VERBOSE"):
        print("   ", rec.statistics())
    return time.perf_counter() - t0


def bench(name: str, url: str, n: int) -> None:
    store = Store(url, sqlite_synchronous="FULL")
    try:
        store.start_run(mode="bench")
        raw_s = raw_executemany(store, make_fills(n, "raw"))
        rec_s = trio.run(through_recorder, store, make_fills(n, "rec"))
        # the store alone (no channel, no thread): splits the recorder's cost into the
        # store's write path and the per-event trio channel hop
        direct = make_fills(n, "dir")
        t0 = time.perf_counter()
        for i in range(0, n, BATCH):
            store.write_batch(direct[i : i + BATCH])
        dir_s = time.perf_counter() - t0
        with_orders = make_fills(n, "ord")
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
        ord_s = trio.run(through_recorder, store, with_orders)
        with store.engine.connect() as conn:
            count = conn.execute(sa.text("select count(*) from fills")).scalar()
        assert count == 4 * n, count
    finally:
        store.close()
    raw_eps = n / raw_s
    print(f"{name:<11} raw executemany   {raw_eps:>10,.0f} events/s")
    for label, secs in (("recorder", rec_s), ("recorder+orders", ord_s),
                        ("store.write_batch", dir_s)):
        eps = n / secs
        print(f"{name:<11} {label:<17} {eps:>10,.0f} events/s   ratio {eps / raw_eps:6.1%}")


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
    print(f"N = {n} fills per path, batch size {BATCH}, one transaction per batch")
    with tempfile.TemporaryDirectory() as tmp:
        bench("sqlite", f"sqlite:///{pathlib.Path(tmp) / 'bench.db'}", n)
    url = pg_url()
    if url is None:
        return
    schema = f"bench_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(url)
    with admin.begin() as conn:
        conn.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
    try:
        scoped = make_url(url).update_query_dict({"options": f"-csearch_path={schema}"})
        bench("postgresql", scoped.render_as_string(hide_password=False), n)
    finally:
        with admin.begin() as conn:
            conn.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


if __name__ == "__main__":
    main()

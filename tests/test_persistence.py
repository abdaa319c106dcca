"""Store tests on SQLite and real PostgreSQL (``db_url`` is parametrized over both)."""

from __future__ import annotations

import datetime as dt
import json
import pathlib
import random
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import pytest
import sqlalchemy as sa

from persistence import (
    EquitySnapshot,
    PositionSnapshot,
    Store,
    StoreError,
    StoreUnavailable,
)
from protocol.messages import (
    Fill,
    OrderAccepted,
    OrderCancelled,
    OrderRejected,
    OrderRequest,
    OrderStatus,
    RiskRejection,
    Side,
    SystemEvent,
)
from tests.test_persistence_support import db_url, pg_url, sqlite_url  # noqa: F401

D = Decimal
T0 = dt.datetime(2025, 1, 2, 3, 4, 5, tzinfo=dt.UTC)


def fixed_clock() -> dt.datetime:
    return T0


@pytest.fixture
def store(db_url: str) -> Iterator[Store]:  # noqa: F811
    s = Store(db_url, clock=fixed_clock)
    yield s
    s.close()


def order(cid: str, side: Side = Side.BUY, qty: str = "1", symbol: str = "BTC/USD") -> OrderRequest:
    return OrderRequest(client_order_id=cid, strategy="mom", symbol=symbol, side=side, qty=D(qty))


def fill(
    fid: str,
    cid: str,
    side: Side,
    price: str,
    qty: str,
    fee: str = "0.1",
    strategy: str = "mom",
    symbol: str = "BTC/USD",
) -> Fill:
    return Fill(
        fill_id=fid,
        client_order_id=cid,
        strategy=strategy,
        symbol=symbol,
        side=side,
        price=D(price),
        qty=D(qty),
        fee=D(fee),
        fee_currency=symbol.split("/")[1],
    )


def rows(store: Store, sql: str) -> list[sa.Row[Any]]:
    with store.engine.connect() as conn:
        return list(conn.execute(sa.text(sql)))


AMOUNTS = [
    D("0"),
    D("-0.1"),
    D("0.000000000000000001"),  # 1e-18: the smallest unit the schema holds
    D("123456789012345678.123456789012345678"),  # 36 significant digits
    D("-99999999999999999.999999999999999999"),
    D("1E-8"),
    D("0.30000000000000000"),
    D("65000.1"),
]


def test_decimal_round_trips_exactly(store: Store) -> None:
    run = store.start_run(
        mode="paper", initial_balances={f"C{i}": a for i, a in enumerate(AMOUNTS)}
    )
    got = store.recover(run).initial_balances
    assert {k: got[k] for k in sorted(got)} == {f"C{i}": a for i, a in enumerate(AMOUNTS)}
    for value in got.values():
        assert isinstance(value, Decimal)


def test_more_than_18_places_rounds_half_even_on_both_dialects(store: Store) -> None:
    run = store.start_run(
        mode="paper",
        initial_balances={
            "A": D("0.0000000000000000005"),
            "B": D("0.0000000000000000015"),
            "C": D("2.1234567890123456789"),
        },
    )
    got = store.recover(run).initial_balances
    assert got == {"A": D(0), "B": D("0.000000000000000002"), "C": D("2.123456789012345679")}


def test_float_money_is_refused_and_nothing_is_written(store: Store) -> None:
    run = store.start_run(mode="paper")
    bad = EquitySnapshot(
        equity=1.5,  # type: ignore[arg-type]  # a float is exactly what must be refused
        realized=D(0),
        unrealized=D(0),
        drawdown=D(0),
        high_water=D(0),
    )
    with pytest.raises(StoreError):
        store.write_batch([SystemEvent(kind="restart", source="test"), bad], run_id=run)
    # the batch is one transaction: the valid event before the bad one is not there either
    assert rows(store, "select count(*) from system_events")[0][0] == 0


def test_times_are_timezone_aware_utc(store: Store) -> None:
    run = store.start_run(mode="paper")
    tz = dt.timezone(dt.timedelta(hours=5))
    store.write_batch(
        [
            EquitySnapshot(
                equity=D(1),
                realized=D(0),
                unrealized=D(0),
                drawdown=D(0),
                high_water=D(1),
                ts=dt.datetime(2025, 1, 1, 5, 0, tzinfo=tz),
            )
        ]
    )
    (point,) = store.equity_curve(run_id=run)
    assert point.ts == dt.datetime(2025, 1, 1, 0, 0, tzinfo=dt.UTC)
    assert point.ts.utcoffset() == dt.timedelta(0)


def test_write_ahead_then_accept_and_fills(store: Store, db_url: str) -> None:  # noqa: F811
    run = store.start_run(mode="live")
    assert store.record_order_ahead(order("c1", qty="1.5"), run) is True
    # committed before anything else happens: a second, independent engine sees it
    other = Store(db_url, upgrade=False)
    try:
        (st,) = other.recover(run).open_orders
        assert (st.client_order_id, st.status, st.filled_qty) == ("c1", OrderStatus.PENDING, 0)
    finally:
        other.close()
    assert store.record_order_ahead(order("c1", qty="1.5"), run) is False  # idempotent
    store.write_batch(
        [
            OrderAccepted(client_order_id="c1", exchange_order_id="OX-1"),
            fill("f1", "c1", Side.BUY, "100", "0.5"),
        ]
    )
    (st,) = store.recover().open_orders
    assert (st.status, st.filled_qty, st.exchange_order_id) == (
        OrderStatus.PARTIALLY_FILLED,
        D("0.5"),
        "OX-1",
    )
    store.write_batch([fill("f2", "c1", Side.BUY, "101", "1.0")])
    assert store.recover().open_orders == ()
    (o,) = rows(store, "select status, filled_qty from orders")
    assert o[0] == "filled" and D(str(o[1])) == D("1.5")
    history = [r[0] for r in rows(store, "select status from order_status_history order by id")]
    assert history == ["pending", "open", "partially_filled", "filled"]


def test_cancel_and_reject_are_terminal_and_not_regressed(store: Store) -> None:
    store.start_run(mode="paper")
    for cid in ("a", "b", "c"):
        store.record_order_ahead(order(cid))
    store.write_batch(
        [
            OrderRejected(client_order_id="a", strategy="mom", symbol="BTC/USD", reason="EOrder"),
            OrderAccepted(client_order_id="b", exchange_order_id="X"),
            fill("fb", "b", Side.BUY, "10", "0.4"),
            OrderCancelled(client_order_id="b", reason="user"),
            OrderCancelled(client_order_id="a", reason="late cancel of a rejected order"),
            OrderAccepted(client_order_id="c", exchange_order_id="Y"),
        ]
    )
    status = {r[0]: r[1] for r in rows(store, "select client_order_id, status from orders")}
    assert status == {"a": "rejected", "b": "cancelled", "c": "open"}
    assert [o.client_order_id for o in store.recover().open_orders] == ["c"]


@pytest.mark.parametrize("set_based", [True, False], ids=["set-based", "executemany"])
def test_fills_are_idempotent(store: Store, set_based: bool) -> None:
    if not set_based:
        if store.engine.dialect.name != "sqlite":
            pytest.skip("the executemany fallback exists for SQLite older than 3.35 only")
        store._bulk.set_based = False  # what an old SQLite gets (no RETURNING, no UPDATE FROM)
    store.start_run(mode="paper", initial_balances={"USD": D(1000)})
    store.record_order_ahead(order("c1", qty="2"))
    f1 = fill("f1", "c1", Side.BUY, "100", "1")
    batch: list[Any] = [OrderAccepted(client_order_id="c1", exchange_order_id="X"), f1, f1]
    store.write_batch(batch)
    snapshot = (
        rows(store, "select * from orders"),
        rows(store, "select * from fills"),
        rows(store, "select * from order_status_history"),
    )
    store.write_batch(batch)  # the whole batch replayed, e.g. after an ambiguous commit
    store.write_batch([f1])
    assert (
        rows(store, "select * from orders"),
        rows(store, "select * from fills"),
        rows(store, "select * from order_status_history"),
    ) == snapshot
    assert len(snapshot[1]) == 1
    state = store.recover()
    assert state.balances == {"USD": D("899.9"), "BTC": D(1)}
    assert state.open_orders[0].filled_qty == D(1)


def test_large_batch_spans_statement_chunks_and_replays_as_a_no_op(store: Store) -> None:
    # 1200 orders and their fills: several multi-row statements per table on SQLite
    store.start_run(mode="paper", initial_balances={"USD": D(10**9)})
    orders = [order(f"c{i}", qty="2") for i in range(1200)]
    fills = [fill(f"f{i}", f"c{i}", Side.BUY, "100.5", "2" if i % 2 else "1") for i in range(1200)]
    store.write_batch(orders)
    store.write_batch(fills)
    snapshot = [rows(store, f"select * from {t}")
                for t in ("orders", "fills", "order_status_history")]
    store.write_batch([*orders, *fills])  # replayed: nothing changes
    assert [rows(store, f"select * from {t}")
            for t in ("orders", "fills", "order_status_history")] == snapshot
    status = {r[0]: r[1] for r in rows(store, "select client_order_id, status from orders")}
    assert len(status) == 1200 and len(snapshot[1]) == 1200
    assert status["c1"] == "filled" and status["c0"] == "partially_filled"
    assert store.recover().balances["BTC"] == D(1800)


def test_bulk_timestamps_match_the_column_type(store: Store) -> None:
    # the bulk path formats times itself (isoformat on SQLite): it must store what the
    # SQLAlchemy column type stores, or ORM reads and SQL comparisons would disagree
    from persistence._bulk import BulkSql

    dialect = store.engine.dialect
    bulk = BulkSql(dialect)
    processor = sa.DateTime(timezone=True).dialect_impl(dialect).bind_processor(dialect)
    for value in (T0, T0.replace(microsecond=0), dt.datetime(999, 1, 2, 3, 4, 5, 6, tzinfo=dt.UTC)):
        bound = value.replace(tzinfo=None) if dialect.name == "sqlite" else value
        expected = processor(bound) if processor else bound
        assert bulk.ts(value) == expected
        assert bulk.ts_utc_naive(value.replace(tzinfo=None)) == expected
    # ts_ns (fills: event nanoseconds, the whole second's text reused between calls) binds
    # what ts binds for the same instant truncated to the microsecond, before and after the
    # epoch, within one second and across seconds
    rng = random.Random(11)
    base = int(T0.timestamp()) * 10**9
    for ns in [base, base + 999_999_999, base + 1, -1, -10**9 - 7, 0,
               *(base + rng.randrange(-10**12, 10**12) for _ in range(300))]:
        instant = dt.datetime(1970, 1, 1, tzinfo=dt.UTC) + dt.timedelta(microseconds=ns // 1000)
        assert bulk.ts_ns(ns) == bulk.ts(instant), ns


def recompute(initial: dict[str, Decimal], fills: list[Fill]) -> dict[str, Decimal]:
    """Independent recomputation of balances from committed fills."""
    out = dict(initial)
    for f in fills:
        base, quote = f.symbol.split("/")
        sign = 1 if f.side is Side.BUY else -1
        out[base] = out.get(base, D(0)) + sign * f.qty
        out[quote] = out.get(quote, D(0)) - sign * f.qty * f.price
        out[f.fee_currency] = out.get(f.fee_currency, D(0)) - f.fee
    return out


def test_recover_equals_recomputation_from_committed_fills(store: Store) -> None:
    rng = random.Random(7)
    initial = {"USD": D("100000"), "ETH": D("3")}
    run = store.start_run(mode="paper", initial_balances=initial)
    committed: list[Fill] = []
    orders: list[OrderRequest] = []
    for i in range(60):
        sym = rng.choice(["BTC/USD", "ETH/USD", "ETH/BTC"])
        side = rng.choice([Side.BUY, Side.SELL])
        o = order(f"o{i}", side, str(rng.randint(1, 9)), sym)
        orders.append(o)
        store.record_order_ahead(o)
    batch: list[Any] = []
    for i, o in enumerate(orders):
        if i % 5 == 4:
            batch.append(OrderCancelled(client_order_id=o.client_order_id, reason="x"))
            continue
        parts = [D(1)] * int(o.qty) if i % 3 else [o.qty]
        for j, q in enumerate(parts[: max(1, len(parts) - (i % 2))]):
            f = fill(
                f"f{i}-{j}",
                o.client_order_id,
                o.side,
                str(D(rng.randint(1000, 99999)) / 100),
                str(q),
                str(D(rng.randint(1, 99)) / 1000),
                symbol=o.symbol,
            )
            batch.append(f)
            committed.append(f)
        if len(batch) > 20:
            store.write_batch(batch + batch[:3])  # with some duplicates
            batch = []
    store.write_batch(batch)
    store.write_batch(
        [
            EquitySnapshot(
                equity=D("100100"),
                realized=D(0),
                unrealized=D(0),
                drawdown=D(0),
                high_water=D("100500"),
            ),
            EquitySnapshot(
                equity=D("100300"),
                realized=D(0),
                unrealized=D(0),
                drawdown=D(200),
                high_water=D("100500"),
            ),
        ]
    )
    store.latch_breaker("drawdown limit 5% reached")

    state = store.recover(run)
    assert state.fills_applied == len(committed)
    assert state.balances == recompute(initial, committed)
    for sym, pos in state.positions.items():
        base = sym.split("/")[0]
        assert pos.qty == sum(
            (f.qty if f.side is Side.BUY else -f.qty) for f in committed if f.symbol == sym
        )
        assert base
    filled = {f.client_order_id: D(0) for f in committed}
    for f in committed:
        filled[f.client_order_id] += f.qty
    expected_open = [
        o.client_order_id
        for i, o in enumerate(orders)
        if i % 5 != 4 and filled.get(o.client_order_id, D(0)) < o.qty
    ]
    assert [o.client_order_id for o in state.open_orders] == expected_open
    assert state.high_water == D("100500") and state.last_equity == D("100300")
    assert state.breaker_latched and state.breaker_reason == "drawdown limit 5% reached"
    store.reset_breaker()
    assert not store.recover().breaker_latched


def test_resume_carries_balances_open_orders_and_high_water(store: Store) -> None:
    r1 = store.start_run(mode="paper", initial_balances={"USD": D(1000)})
    store.record_order_ahead(order("c1", qty="2"))
    store.write_batch(
        [
            fill("f1", "c1", Side.BUY, "100", "1", fee="0"),
            EquitySnapshot(
                equity=D(1000), realized=D(0), unrealized=D(0), drawdown=D(0), high_water=D(1200)
            ),
        ]
    )
    before = store.recover()
    r2 = store.start_run(mode="paper", resume=before)
    assert r2 != r1 and store.current_run_id == r2
    state = store.recover()
    assert state.run_id == r2
    assert state.balances == before.balances == {"USD": D(900), "BTC": D(1)}
    assert [o.client_order_id for o in state.open_orders] == ["c1"]
    assert state.high_water == D(1200)
    # the rest of the old order fills after the restart: it counts in the new run, once
    store.write_batch([fill("f2", "c1", Side.BUY, "110", "1", fee="0")])
    state = store.recover()
    assert state.balances == {"USD": D(790), "BTC": D(2)}
    assert state.open_orders == ()
    assert store.recover(r1).balances == {"USD": D(900), "BTC": D(1)}


def test_reports(store: Store) -> None:
    store.start_run(mode="backtest")
    evs: list[Any] = []
    for i, (strat, side, price, qty) in enumerate(
        [
            ("mom", Side.BUY, "100", "2"),
            ("mom", Side.SELL, "110", "1"),
            ("mom", Side.SELL, "90", "1"),
            ("mr", Side.BUY, "50", "1"),
            ("mr", Side.SELL, "60", "1"),
        ]
    ):
        evs.append(
            OrderRequest(
                client_order_id=f"c{i}", strategy=strat, symbol="BTC/USD", side=side, qty=D(qty)
            )
        )
        evs.append(fill(f"f{i}", f"c{i}", side, price, qty, fee="0.5", strategy=strat))
    evs.append(RiskRejection(strategy="mom", symbol="BTC/USD", reason="max_position"))
    evs.append(PositionSnapshot(symbol="BTC/USD", qty=D(0), avg_price=D(0), realized_pnl=D(10)))
    store.write_batch(evs)
    trades = store.trades()
    assert [t.realized_pnl for t in trades] == [D(0), D(10), D(-10), D(0), D(10)]
    assert [t.fill_id for t in store.trades(strategy="mr")] == ["f3", "f4"]
    pnl = store.pnl_by_strategy()
    assert pnl["mom"].realized_pnl == D(0) and pnl["mom"].win_rate == D("0.5")
    assert pnl["mom"].closing_trades == 2 and pnl["mom"].fees == {"USD": D("1.5")}
    assert pnl["mr"].realized_pnl == D(10) and pnl["mr"].win_rate == D(1)
    assert pnl["mom"].volume == D(400)
    assert store.fees() == {"USD": D("2.5")}
    assert rows(store, "select count(*) from risk_rejections")[0][0] == 1
    assert rows(store, "select count(*) from positions")[0][0] == 1


def test_system_events_and_secrets_never_stored(store: Store) -> None:
    run = store.start_run(
        mode="live",
        version="0.1.0",
        config={
            "kraken": {"api_key": "AKEY", "api_secret": "c2VjcmV0", "ws_url": "wss://x"},
            "db": "postgresql+psycopg://u:hunter2@db/trading",
            "otp": "123456",
            "symbols": ["BTC/USD"],
        },
    )
    cfg = rows(store, "select config from runs")[0][0]
    for secret in ("AKEY", "c2VjcmV0", "hunter2", "123456"):
        assert secret not in cfg
    assert json.loads(cfg)["kraken"]["ws_url"] == "wss://x"
    store.write_batch(
        [
            SystemEvent(
                kind="breaker_trip", source="risk", detail="drawdown", attrs={"reason": "drawdown"}
            )
        ]
    )
    (ev,) = store.system_events(run_id=run, kinds=["breaker_trip"])
    assert (ev.kind, ev.source, ev.detail, ev.attrs) == (
        "breaker_trip",
        "risk",
        "drawdown",
        {"reason": "drawdown"},
    )


def test_unknown_event_type_is_refused(store: Store) -> None:
    with pytest.raises(TypeError):
        store.write_batch([object()])  # type: ignore[list-item]


def test_unreachable_postgresql_is_store_unavailable() -> None:
    # port 9 on loopback: nothing listens there, the connection is refused at once
    with pytest.raises(StoreUnavailable):
        Store("postgresql+psycopg://postgres@127.0.0.1:9/test")


def test_sqlite_in_missing_directory_is_store_unavailable(tmp_path: pathlib.Path) -> None:
    with pytest.raises(StoreUnavailable):
        Store(f"sqlite:///{tmp_path / 'missing' / 'x.db'}")

"""A stop that reaches the executor mid-order loses no fill and sends no order.

Found by ``test_db_outage`` under CPU load: the shutdown cancelled the executor while a
PostgreSQL write-ahead ran in its (not abandoned) worker thread; the order then went to the
broker anyway, its fill was counted by the run but waited in the outbox for an incarnation that
never came, and was never persisted. These pin both halves of the fix deterministically.
"""

from __future__ import annotations

import pathlib
from decimal import Decimal
from typing import Any

import sqlalchemy as sa
import trio
import trio.testing

from actors.app import Application
from actors.executor import RECORDER_TARGET, ExecutionState, ExecutorActor
from config import load_settings
from persistence import Store
from protocol.messages import (
    Fill,
    MarketEvent,
    OrderAccepted,
    OrderEvent,
    OrderRejected,
    OrderRequest,
    Side,
)
from tests.test_actor_resilience import InstantBroker, order
from tests.test_crash_recovery import write_replay
from tests.test_paper_e2e import SYMBOLS


class GatedJournal:
    """A write-ahead that, like a worker thread, finishes even when cancelled meanwhile."""

    def __init__(self) -> None:
        self.entered = trio.Event()
        self.release = trio.Event()

    async def record_ahead(self, o: OrderRequest) -> None:
        self.entered.set()
        with trio.CancelScope(shield=True):
            await self.release.wait()


async def test_stop_during_write_ahead_does_not_send_the_order() -> None:
    broker = InstantBroker()
    journal = GatedJournal()
    state = ExecutionState()
    orders_send, orders_recv = trio.open_memory_channel[Any](10)
    events_send, _events_recv = trio.open_memory_channel[OrderEvent](10)
    _, market_recv = trio.open_memory_channel[MarketEvent](0)
    actor = ExecutorActor(broker, orders=orders_recv, market=market_recv,
                          order_events=events_send, events=events_send, feedback={},
                          journal=journal, state=state)
    orders_send.send_nowait((order("a"),))
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            await nursery.start(actor.run)
            await journal.entered.wait()
            nursery.cancel_scope.cancel()  # the stop arrives while the write-ahead runs
            journal.release.set()
    assert broker.submitted == []
    [rejected] = state.unrecorded()
    assert isinstance(rejected, OrderRejected)
    assert rejected.client_order_id == "a" and rejected.reason.startswith("not sent")


async def test_unrecorded_is_what_the_recorder_never_received() -> None:
    broker = InstantBroker()
    state = ExecutionState()
    orders_send, orders_recv = trio.open_memory_channel[Any](10)
    risk_send, risk_recv = trio.open_memory_channel[OrderEvent](10)
    recorder_send, _recorder_recv = trio.open_memory_channel[OrderEvent](1)  # room for one
    _, market_recv = trio.open_memory_channel[MarketEvent](0)
    actor = ExecutorActor(broker, orders=orders_recv, market=market_recv,
                          order_events=risk_send, events=recorder_send, feedback={},
                          state=state)
    orders_send.send_nowait((order("a"),))
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            await nursery.start(actor.run)
            await trio.testing.wait_all_tasks_blocked()  # the fill waits for the recorder
            nursery.cancel_scope.cancel()
    assert [e[1] for e in state.outbox] == [RECORDER_TARGET]
    [fill] = state.unrecorded()
    assert isinstance(fill, Fill) and fill.client_order_id == "a"
    assert isinstance(risk_recv.receive_nowait(), OrderAccepted)  # risk had both already
    assert risk_recv.receive_nowait() == fill


def test_application_persists_fills_stranded_by_the_stop(tmp_path: pathlib.Path) -> None:
    url = f"sqlite:///{tmp_path / 'trading.db'}"
    settings = load_settings([
        "--mode", "paper", "--replay", str(write_replay(tmp_path / "s.jsonl", cycles=1)),
        "--db", url, "--metrics-addr", "127.0.0.1:0", "--pairs", ",".join(SYMBOLS),
    ], {})
    store = Store(url)
    try:
        app = Application(settings, store=store, run_tag="stop")
        sent = OrderRequest(client_order_id="stop-1", strategy="momentum", symbol=SYMBOLS[0],
                            side=Side.BUY, qty=Decimal("0.01"))
        assert store.record_order_ahead(sent)

        def fill(n: int) -> Fill:
            return Fill(fill_id=f"F{n}", client_order_id="stop-1", strategy="momentum",
                        symbol=SYMBOLS[0], side=Side.BUY, price=Decimal(100),
                        qty=Decimal("0.005"), fee=Decimal(0), fee_currency="USD")

        # F1: cut off before the recorder; F2: the recorder had it (wrote it, or logged it lost)
        app.execution.outbox.extend([[fill(1), RECORDER_TARGET], [fill(2), RECORDER_TARGET + 1]])
        app._record_stranded()
    finally:
        store.close()
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            stored = conn.execute(sa.text("select fill_id from fills")).scalars().all()
    finally:
        engine.dispose()
    assert stored == ["F1"]

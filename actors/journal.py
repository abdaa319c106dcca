"""Glue between the actors and the store: write-ahead journal, start-up recovery, system events.

Recovery is crash-only (the start-up path *is* the recovery path): the ledger is rebuilt by
replaying every committed fill over the account's first balances (``Store.account_history``),
so what a restarted process believes is exactly the recomputation from committed fills. Orders
that were open at the paper exchange when the process died are gone with it (the simulated
exchange lived in that process); they are marked cancelled with that reason, so no order that
was sent is unknown after a restart.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import trio
from sqlalchemy import text

from persistence import Recordable, Store
from protocol.instruments import PairInfo
from protocol.messages import Fill, OrderCancelled, OrderEvent, OrderRequest, SystemEvent
from trading import Portfolio

log = logging.getLogger(__name__)


class DuplicateOrderId(Exception):
    """The store already holds an order with this client order id: it must not be sent.

    ``record_order_ahead`` is idempotent, so a reused id (another run numbering its orders
    the same way) would otherwise pass the write-ahead silently and the new order's fills
    would be booked against the old order's row.
    """

    def __init__(self, client_order_id: str) -> None:
        super().__init__(f"client order id {client_order_id!r} is already in the store")
        self.client_order_id = client_order_id


#: Seconds the event-loop write-ahead keeps retrying a busy database before the worker
#: thread (which waits with the store's busy timeout) takes over, and its polling period
#: (trio's timers resolve about a millisecond).
INLINE_WAIT = 0.05
INLINE_POLL = 0.0005


def probe_write(store: Store) -> None:
    """A harmless write transaction: succeeds only when the database accepts writes again."""
    with store.engine.begin() as conn:
        conn.execute(text("UPDATE runs SET version = version WHERE id = :id"),
                     {"id": store.current_run_id or ""})


class StoreJournal:
    """Write-ahead: the order row is committed before the order goes to the broker.

    On a SQLite file whose ``synchronous`` setting does not sync every commit (paper mode),
    the commit runs right here on the event loop when the database is free
    (``Store.open_write_ahead``: about 50 us, no thread hop, no GIL convoy), and only
    otherwise in a worker thread through ``Store.record_order_ahead``, which waits for the
    recorder's batch or a lock as long as it must. Either way ``record_ahead`` returns only
    once the row is committed.
    """

    def __init__(self, store: Store, *, inline: bool = True) -> None:
        self._store = store
        # inline=False: always the worker thread (benchmarks compare the two paths)
        self._now = store.open_write_ahead() if inline else None
        self._threaded = 0

    @property
    def inline_writes(self) -> int:
        """Orders committed on the event loop (the rest went through a worker thread)."""
        return self._now.written if self._now is not None else 0

    @property
    def thread_writes(self) -> int:
        """Write-aheads that took the worker-thread path (busy database, or not SQLite)."""
        return self._threaded

    async def record_ahead(self, order: OrderRequest) -> None:
        """Commit ``order`` as pending; raise ``DuplicateOrderId`` if its id is known.

        Raises:
            DuplicateOrderId: the store already holds this client order id (nothing written).
            StoreError: the write failed (``StoreUnavailable`` when the database is away);
                nothing was committed and the order must not be sent.
        """
        inserted = None
        now = self._now
        if now is not None and now.inline:
            inserted = now.try_now(order)
            if inserted is None:
                # Busy: almost always the recorder committing a batch under the store's lock.
                # Polling from here takes the database the moment it is free; a worker thread
                # would wait on the lock too, then for the GIL from this busy thread.
                deadline = trio.current_time() + INLINE_WAIT
                while inserted is None and trio.current_time() < deadline:
                    await trio.sleep(INLINE_POLL)
                    inserted = now.try_now(order)
        if inserted is None:
            self._threaded += 1
            inserted = await trio.to_thread.run_sync(self._store.record_order_ahead, order)
        if not inserted:
            raise DuplicateOrderId(order.client_order_id)

    def close(self) -> None:
        """Close the event-loop write-ahead connection (idempotent; the store stays open)."""
        if self._now is not None:
            self._now.close()


@dataclass(frozen=True, slots=True)
class Restored:
    portfolio: Portfolio
    run_id: str
    resumed_from: str | None
    breaker_reason: str | None  # a latched breaker to restore, or None
    cancelled_orders: tuple[str, ...]
    fills: tuple[Fill, ...] = ()  # every committed fill replayed (strategies rebuild from them)


def restore(store: Store, *, mode: str, config: Mapping[str, Any], version: str,
            cash: Mapping[str, Decimal], pairs: Mapping[str, PairInfo],
            reset_breaker: bool) -> Restored:
    """Recover the account from the store and open this process's run (after committing
    what an earlier stop spilled, ``Store.replay_spill``)."""
    store.replay_spill()
    state = store.recover()
    if state.run_id is None:
        portfolio = Portfolio(dict(cash))
        run_id = store.start_run(mode=mode, config=config, version=version,
                                 initial_balances=cash)
        cancelled: tuple[str, ...] = ()
        fills: list[Fill] = []
    else:
        initial, fills = store.account_history(state.run_id)
        portfolio = Portfolio(initial)
        for fill in fills:
            pair = pairs.get(fill.symbol)
            if pair is None:
                raise ValueError(f"the database holds fills of {fill.symbol}, which is not a "
                                 "configured pair: add it to --pairs")
            portfolio.apply_fill(fill, pair)
        portfolio.carry_high_water(state.high_water)
        if portfolio.balances() != dict(state.balances):
            log.warning("recovery: replayed balances %s differ from the store's %s; trusting "
                        "the replay of committed fills", portfolio.balances(),
                        dict(state.balances))
        run_id = store.start_run(mode=mode, config=config, version=version, resume=state)
        cancelled = tuple(o.client_order_id for o in state.open_orders)
        if cancelled:
            store.write_batch([OrderCancelled(client_order_id=cid,
                                              reason="paper exchange restarted")
                               for cid in cancelled])
        log.info("recovered from run %s: %d fills replayed, balances %s, %d open position(s), "
                 "%d open order(s) marked cancelled, high-water %s%s", state.run_id, len(fills),
                 {k: str(v) for k, v in portfolio.balances().items()},
                 portfolio.open_position_count(), len(cancelled), state.high_water,
                 f", breaker latched ({state.breaker_reason})" if state.breaker_latched else "")
    breaker_reason: str | None = None
    if state.breaker_latched:
        if reset_breaker:
            store.reset_breaker(reason="--reset-breaker at start-up")
            log.warning("latched breaker (%s) reset by --reset-breaker", state.breaker_reason)
        else:
            breaker_reason = state.breaker_reason or "latched before restart"
    return Restored(portfolio, run_id, state.run_id, breaker_reason, cancelled, tuple(fills))


class SystemEvents:
    """Sync hooks (supervisor, breaker, feeds) hand system events to the recorder's channel.

    System events are rare, so the channel always has room in practice; if it is ever full the
    event is logged (never silently dropped) rather than blocking a sync hook.
    """

    def __init__(self, send: trio.MemorySendChannel[Any]) -> None:
        self._send = send
        self.overflowed = 0

    def emit(self, kind: str, source: str, detail: str = "") -> None:
        event = SystemEvent(kind=kind, source=source, detail=detail, ts=trio.current_time())
        try:
            self._send.send_nowait(event)
        except trio.WouldBlock:
            self.overflowed += 1
            log.error("system event not persisted (recorder channel full): %s %s %s",
                      kind, source, detail)
        except (trio.ClosedResourceError, trio.BrokenResourceError):
            log.info("system event after shutdown: %s %s %s", kind, source, detail)


def persist_stranded(store: Store, stranded: Sequence[OrderEvent]) -> None:
    """Write execution events that a stop left in the executor's outbox, undelivered.

    A fill made as the stop arrived (a resting order hit by the last market event, an order
    already past the broker) waits in the outbox, and no executor incarnation follows to
    deliver it. Called once the recorder has finished its final flush, inline like the
    breaker latches: the stop must not lose a fill the exchange made. The store skips fills it
    already holds, so a repeat is harmless; a failure is logged with what it lost.
    """
    if not stranded:
        return
    try:
        store.write_batch(stranded)
    except Exception as exc:
        log.error("%d execution events (%d fills) could not be committed at shutdown: %s",
                  len(stranded), sum(isinstance(e, Fill) for e in stranded), exc)
        spill(store, stranded)
        return
    log.info("persisted %d execution events the stop cut off from the recorder", len(stranded))


def spill(store: Store, events: Sequence[Recordable]) -> None:
    """Keep events a stop could not commit in the store's spill file (the next start commits
    them before recovery, ``Store.replay_spill``); only a failure to write it loses them."""
    try:
        path = store.spill(events)
    except Exception as exc:  # OSError above all; whatever it is, say what was lost
        log.critical("%d uncommitted events (%d fills) could not be spilled either (%s), "
                     "they are lost: %s", len(events), sum(isinstance(e, Fill) for e in events),
                     ", ".join(map(str, store.spill_paths)), exc)
        return
    log.warning("%d uncommitted events spilled to %s: the next start on this database "
                "commits them", len(events), path)

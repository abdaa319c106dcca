"""Restart state: the persistent breaker latch and ``recover()``. Mixed into ``Store``.

The latch survives restarts so a tripped breaker stays tripped until a person resets it;
``recover()`` rebuilds balances, positions and open orders from committed fills.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
from collections.abc import Callable
from typing import Any

from sqlalchemy import Table, select
from sqlalchemy.engine import Connection

from protocol.messages import OrderStatus, OrderType, Side

from ._errors import StoreError
from ._ledger import Ledger
from ._models import Balance, BreakerStateRow, EquitySnapshotRow, FillRow, Order, Run
from ._records import BreakerLatch, OpenOrder, RecoveredState

log = logging.getLogger("persistence")

TERMINAL_STATUSES = tuple(s.value for s in OrderStatus if s.is_terminal)
DEFAULT_BREAKER = "trading"


class StoreRecovery:
    """Breaker-and-recovery half of ``Store``: every method runs in one transaction."""

    _clock: Callable[[], dt.datetime]

    def _tx(self, operation: str) -> contextlib.AbstractContextManager[Connection]:
        raise NotImplementedError  # provided by Store

    def _insert(self, conn: Connection, table: Table) -> Any:
        raise NotImplementedError  # provided by Store

    # ------------------------------------------------------------------ breaker

    def latch_breaker(self, reason: str, *, name: str = DEFAULT_BREAKER) -> None:
        """Persist that breaker ``name`` is latched open for ``reason`` (survives restarts)."""
        self._set_breaker(name, True, reason)

    def reset_breaker(self, *, name: str = DEFAULT_BREAKER, reason: str = "manual reset") -> None:
        """Clear the latch of breaker ``name`` (a person acknowledged the trip)."""
        self._set_breaker(name, False, reason)

    def _set_breaker(self, name: str, latched: bool, reason: str) -> None:
        with self._tx("breaker") as conn:
            stmt = self._insert(conn, BreakerStateRow.__table__)  # type: ignore[arg-type]
            stmt = stmt.on_conflict_do_update(
                index_elements=["name"],
                set_={
                    "latched": stmt.excluded.latched,
                    "reason": stmt.excluded.reason,
                    "updated_at": stmt.excluded.updated_at,
                },
            )
            conn.execute(
                stmt,
                {"name": name, "latched": latched, "reason": reason, "updated_at": self._clock()},
            )
        log.warning("breaker %s %s: %s", name, "latched" if latched else "reset", reason)

    def breaker(self, name: str = DEFAULT_BREAKER) -> BreakerLatch | None:
        with self._tx("breaker") as conn:
            row = conn.execute(
                select(BreakerStateRow).where(BreakerStateRow.name == name)
            ).one_or_none()
            if row is None:
                return None
            return BreakerLatch(
                name=row.name, latched=row.latched, reason=row.reason, updated_at=row.updated_at
            )

    # ------------------------------------------------------------------ recovery

    def recover(self, run_id: str | None = None) -> RecoveredState:
        """Rebuild what a restart needs from committed rows of ``run_id`` (default: latest run).

        Balances are the run's initial balances plus every committed fill of the run (applied
        in commit order); positions are recomputed at average cost from the same fills; open
        orders are the run's orders whose status is not terminal; the high-water mark is the
        highest of the carried-over mark and the latest equity snapshot's; the breaker latch is
        global. Nothing is read from the ``positions`` or ``latest`` balance snapshots: fills
        are the source of truth. Logs what it restored.
        """
        latch = self.breaker()
        with self._tx("recover") as conn:
            run = conn.execute(
                select(Run).where(Run.id == run_id)
                if run_id
                else select(Run).order_by(Run.seq.desc()).limit(1)
            ).one_or_none()
            if run is None:
                if run_id:
                    raise StoreError(f"no run {run_id!r}", operation="recover")
                return RecoveredState(
                    run_id=None,
                    breaker_latched=bool(latch and latch.latched),
                    breaker_reason=latch.reason if latch and latch.latched else "",
                )
            initial = {
                b.currency: b.amount
                for b in conn.execute(
                    select(Balance).where(Balance.run_id == run.id, Balance.kind == "initial")
                )
            }
            ledger = Ledger(initial)
            n = 0
            for f in conn.execute(
                select(
                    FillRow.symbol,
                    FillRow.side,
                    FillRow.price,
                    FillRow.qty,
                    FillRow.fee,
                    FillRow.fee_currency,
                )
                .where(FillRow.run_id == run.id)
                .order_by(FillRow.id)
            ):
                ledger.apply_fill(
                    key=f.symbol,
                    symbol=f.symbol,
                    side=Side(f.side),
                    price=f.price,
                    qty=f.qty,
                    fee=f.fee,
                    fee_currency=f.fee_currency,
                )
                n += 1
            open_orders = tuple(
                OpenOrder(
                    client_order_id=o.client_order_id,
                    exchange_order_id=o.exchange_order_id,
                    run_id=o.run_id,
                    strategy=o.strategy,
                    symbol=o.symbol,
                    side=Side(o.side),
                    order_type=OrderType(o.type),
                    quantity=o.quantity,
                    limit_price=o.limit_price,
                    status=OrderStatus(o.status),
                    filled_qty=o.filled_qty,
                )
                for o in conn.execute(
                    select(Order)
                    .where(Order.run_id == run.id, Order.status.not_in(TERMINAL_STATUSES))
                    .order_by(Order.id)
                )
            )
            snap = conn.execute(
                select(EquitySnapshotRow)
                .where(EquitySnapshotRow.run_id == run.id)
                .order_by(EquitySnapshotRow.id.desc())
                .limit(1)
            ).one_or_none()
            marks = [run.high_water_start] if run.high_water_start is not None else []
            if snap is not None:
                marks += [snap.high_water, snap.equity]
            state = RecoveredState(
                run_id=run.id,
                initial_balances=initial,
                balances=ledger.balances,
                positions={k: p for k, p in ledger.positions().items() if p.qty != 0},
                open_orders=open_orders,
                high_water=max(marks) if marks else None,
                last_equity=snap.equity if snap else None,
                breaker_latched=bool(latch and latch.latched),
                breaker_reason=latch.reason if latch and latch.latched else "",
                fills_applied=n,
            )
        log.info(
            "recovered run %s: %d fills applied, balances %s, %d positions, %d open orders, "
            "high water %s, breaker %s",
            state.run_id,
            n,
            {k: str(v) for k, v in sorted(state.balances.items())},
            len(state.positions),
            len(open_orders),
            state.high_water,
            f"LATCHED ({state.breaker_reason})" if state.breaker_latched else "clear",
        )
        return state

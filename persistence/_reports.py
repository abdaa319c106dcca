"""Report queries over committed fills and snapshots: trades, P&L per strategy, fees, win rate,
equity curve, system events. Mixed into ``Store``; read-only.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterable
from decimal import Decimal
from typing import Any

from sqlalchemy import select
from sqlalchemy.engine import Connection

from protocol.messages import Fill, Liquidity, Side, SystemEvent

from ._ledger import ZERO, Ledger
from ._models import Balance, EquitySnapshotRow, FillRow, Run, SystemEventRow
from ._records import EquityPoint, StrategyPnl, TradeRow


class StoreReports:
    """Report half of ``Store``: every method runs in one read transaction."""

    def _tx(self, operation: str) -> contextlib.AbstractContextManager[Connection]:
        raise NotImplementedError  # provided by Store

    def _resolve_run(self, conn: Connection, run_id: str | None) -> str | None:
        if run_id:
            return run_id
        return conn.execute(select(Run.id).order_by(Run.seq.desc()).limit(1)).scalar()

    def account_history(
        self, run_id: str | None = None
    ) -> tuple[dict[str, Decimal], list[Fill]]:
        """The account's starting balances and every committed fill since, in commit order.

        Follows ``resumed_from`` from ``run_id`` (default: the latest run) back to the first run
        of the chain, so a restarted process can rebuild its ledger exactly (FIFO lots and
        per-strategy P&L included) by replaying the fills over the first run's balances: the
        recovered state *is* the recomputation from committed fills.
        """
        with self._tx("account_history") as conn:
            run = self._resolve_run(conn, run_id)
            chain: list[str] = []
            while run is not None:
                chain.append(run)
                run = conn.execute(select(Run.resumed_from).where(Run.id == run)).scalar()
            if not chain:
                return {}, []
            initial = {
                b.currency: b.amount
                for b in conn.execute(
                    select(Balance).where(Balance.run_id == chain[-1], Balance.kind == "initial")
                )
            }
            rows = list(conn.execute(
                select(FillRow).where(FillRow.run_id.in_(chain)).order_by(FillRow.id)))
        fills = [
            Fill(fill_id=f.fill_id, client_order_id=f.client_order_id, strategy=f.strategy,
                 symbol=f.symbol, side=Side(f.side), price=f.price, qty=f.qty, fee=f.fee,
                 fee_currency=f.fee_currency, liquidity=Liquidity(f.liquidity),
                 ts_event_ns=int(f.ts.timestamp() * 1_000_000) * 1000)
            for f in rows
        ]
        return initial, fills

    def trades(self, *, run_id: str | None = None, strategy: str | None = None) -> list[TradeRow]:
        """Fills of ``run_id`` (default: latest run) in commit order, with realized P&L."""
        with self._tx("trades") as conn:
            run = self._resolve_run(conn, run_id)
            query = select(FillRow).where(FillRow.run_id == run).order_by(FillRow.id)
            rows = list(conn.execute(query))
        ledger = Ledger()
        out = []
        for f in rows:
            pnl = ledger.apply_fill(
                key=f"{f.strategy}\x00{f.symbol}",
                symbol=f.symbol,
                side=Side(f.side),
                price=f.price,
                qty=f.qty,
                fee=f.fee,
                fee_currency=f.fee_currency,
            )
            if strategy is None or f.strategy == strategy:
                out.append(
                    TradeRow(
                        fill_id=f.fill_id,
                        client_order_id=f.client_order_id,
                        strategy=f.strategy,
                        symbol=f.symbol,
                        side=Side(f.side),
                        price=f.price,
                        qty=f.qty,
                        fee=f.fee,
                        fee_currency=f.fee_currency,
                        liquidity=f.liquidity,
                        ts=f.ts,
                        realized_pnl=pnl,
                    )
                )
        return out

    def pnl_by_strategy(self, *, run_id: str | None = None) -> dict[str, StrategyPnl]:
        """Realized P&L, fees, volume and win rate per strategy (see ``StrategyPnl``)."""
        acc: dict[str, dict[str, Any]] = {}
        for t in self.trades(run_id=run_id):
            a = acc.setdefault(
                t.strategy,
                {"pnl": ZERO, "fees": {}, "fills": 0, "closing": 0, "wins": 0, "volume": ZERO},
            )
            a["pnl"] += t.realized_pnl
            a["fees"][t.fee_currency] = a["fees"].get(t.fee_currency, ZERO) + t.fee
            a["fills"] += 1
            a["volume"] += t.price * t.qty
            if t.realized_pnl != 0:
                a["closing"] += 1
                a["wins"] += t.realized_pnl > 0
        return {
            s: StrategyPnl(
                strategy=s,
                realized_pnl=a["pnl"],
                fees=a["fees"],
                fills=a["fills"],
                closing_trades=a["closing"],
                wins=a["wins"],
                win_rate=Decimal(a["wins"]) / a["closing"] if a["closing"] else None,
                volume=a["volume"],
            )
            for s, a in sorted(acc.items())
        }

    def fees(self, *, run_id: str | None = None) -> dict[str, Decimal]:
        """Total fees per currency."""
        total: dict[str, Decimal] = {}
        for t in self.trades(run_id=run_id):
            total[t.fee_currency] = total.get(t.fee_currency, ZERO) + t.fee
        return total

    def equity_curve(self, *, run_id: str | None = None) -> list[EquityPoint]:
        """Equity snapshots of ``run_id`` (default: latest run) in time order."""
        with self._tx("equity_curve") as conn:
            run = self._resolve_run(conn, run_id)
            return [
                EquityPoint(ts=r.ts, equity=r.equity, drawdown=r.drawdown, high_water=r.high_water)
                for r in conn.execute(
                    select(EquitySnapshotRow)
                    .where(EquitySnapshotRow.run_id == run)
                    .order_by(EquitySnapshotRow.ts, EquitySnapshotRow.id)
                )
            ]

    def system_events(
        self, *, run_id: str | None = None, kinds: Iterable[str] | None = None
    ) -> list[SystemEvent]:
        """System events of ``run_id`` (default: every run), oldest first."""
        with self._tx("system_events") as conn:
            q = select(SystemEventRow).order_by(SystemEventRow.id)
            if run_id:
                q = q.where(SystemEventRow.run_id == run_id)
            if kinds is not None:
                q = q.where(SystemEventRow.kind.in_(list(kinds)))
            return [
                SystemEvent(
                    kind=r.kind,
                    source=r.source,
                    detail=r.detail,
                    attrs=json.loads(r.attrs or "{}"),
                    ts=r.ts.timestamp(),
                )
                for r in conn.execute(q)
            ]

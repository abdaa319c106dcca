"""The terminal experience: a compact live status line and the summary table on exit.

On a terminal the status is redrawn in place once a second; otherwise (a log file, CI) a plain
status line is logged every ``log_interval`` seconds, so logs stay greppable.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from decimal import Decimal
from typing import Any, TextIO

import trio

from trading import Portfolio

from ._breaker import CircuitBreaker

log = logging.getLogger("crypto_enhanced.status")


def _money(value: Decimal | None) -> str:
    if value is None:
        return "n/a"
    return f"{value.quantize(Decimal('0.01')):,}"


def status_line(portfolio: Portfolio, breaker: CircuitBreaker, *, open_orders: int,
                feed_ages: dict[str, float]) -> str:
    feeds = " ".join(
        f"{name}:{'-' if age == float('inf') else f'{age:.1f}s'}" for name, age in feed_ages.items()
    )
    positions = ", ".join(f"{p.symbol} {p.qty.normalize():f}" for p in portfolio.open_positions())
    pf = portfolio
    return (
        f"equity ${_money(pf.equity_usd())} | realized ${_money(pf.realized_pnl_usd())}"
        f" | unrealized ${_money(pf.unrealized_pnl_usd())} | fees ${_money(pf.fees_usd())}"
        f" | dd {float(portfolio.drawdown()) * 100:.2f}% | positions [{positions or 'none'}]"
        f" | open orders {open_orders} | breaker {breaker.state.value}"
        f"{' (' + breaker.reason + ')' if breaker.reason else ''} | feeds {feeds}"
    )


def summary_table(portfolio: Portfolio, *, title: str = "paper trading summary") -> str:
    stats = portfolio.strategy_stats()
    rows = [("strategy", "trades", "wins", "losses", "win rate", "realized $", "fees $")]
    for name, st in sorted(stats.items()):
        closed = st.wins + st.losses
        win_rate = f"{100 * st.wins / closed:.1f}%" if closed else "-"
        rows.append((name, str(st.trades), str(st.wins), str(st.losses), win_rate,
                     _money(st.realized_usd), _money(st.fees_usd)))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = [title, "=" * len(title)]
    for i, row in enumerate(rows):
        lines.append("  ".join(cell.ljust(w) if j == 0 else cell.rjust(w)
                               for j, (cell, w) in enumerate(zip(row, widths, strict=True))))
        if i == 0:
            lines.append("  ".join("-" * w for w in widths))
    lines += [
        "",
        f"fills           {portfolio.fill_count}",
        f"equity          ${_money(portfolio.equity_usd())}",
        f"realized P&L    ${_money(portfolio.realized_pnl_usd())}",
        f"unrealized P&L  ${_money(portfolio.unrealized_pnl_usd())}",
        f"fees            ${_money(portfolio.fees_usd())}",
        f"max drawdown    {float(portfolio.max_drawdown()) * 100:.2f}%",
    ]
    return "\n".join(lines)


class ConsoleActor:
    def __init__(self, render: Callable[[], str], *, stream: TextIO | None = None,
                 interval: float = 1.0, log_interval: float = 30.0) -> None:
        self._render = render
        self._stream = stream or sys.stderr
        self._interval = interval
        self._log_interval = log_interval

    async def run(self, *, task_status: trio.TaskStatus[Any] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        tty = self._stream.isatty()
        try:
            while True:
                if tty:
                    await trio.sleep(self._interval)
                    self._stream.write("\r\x1b[2K" + self._render()[: 200])
                    self._stream.flush()
                else:
                    await trio.sleep(self._log_interval)
                    log.info("status: %s", self._render())
        finally:
            if tty:
                self._stream.write("\n")

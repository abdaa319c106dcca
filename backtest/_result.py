"""The result of one backtest: what the engines produce and the report consumes.

Both engines (the fast path and ``--engine actors``) build a :class:`BacktestResult`; the report
writer (``backtest.report.write_report``) and the terminal summary only read it. Every money
field is ``Decimal`` and every timestamp is ``int`` nanoseconds since the Unix epoch, UTC.

Money is counted in the run's *accounting currency* (:attr:`RunConfig.accounting_currency`):
``USD`` when the cash currency is USD or a currency pegged to it (USDT, USDC), otherwise the
cash currency itself (an ETH/BTC-only run counts in BTC). Trade P&L and fees are in the
symbol's quote currency (:attr:`ClosedTrade.currency`).

The *trade log* is the canonical text of the fills (:func:`trade_log_bytes`): the bytes whose
sha256 a run prints, and which both engines must reproduce byte for byte.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from decimal import Decimal

from protocol.instruments import PairInfo
from protocol.messages import Fill, Liquidity, Side

__all__ = [
    "TRADE_LOG_HEADER",
    "BacktestResult",
    "ClosedTrade",
    "EquityPoint",
    "RunConfig",
    "SymbolInfo",
    "trade_log_bytes",
    "trade_log_sha256",
]


@dataclass(frozen=True, slots=True, kw_only=True)
class RunConfig:
    """How the run was configured (echoed in the report so a result is reproducible).

    Attributes:
        engine: ``"fast"`` or ``"actors"``.
        strategies: strategy names in run order.
        params: ``(strategy, key, value)`` triples as given with ``--param`` (sorted).
        data_files: the input files, as given.
        start_ns: ``--from`` (inclusive) or None.
        end_ns: ``--to`` (exclusive) or None.
        timeframe: ``--timeframe`` (``""`` when the files' own interval was used).
        slippage_bps: added to (buys) or taken from (sells) the next open, in basis points.
        spread_bps: full spread of the synthetic book built around each candle close.
        no_risk_limits: True when the RiskEngine was bypassed (``--no-risk-limits``).
        cash: the initial cash amount.
        cash_currency: the currency the cash is held in.
        accounting_currency: the currency equity and drawdowns are counted in.
        equity_interval_s: the equity curve's sampling period in seconds.
        risk_limits: ``(name, value)`` of each risk limit as text; empty when bypassed.
    """

    engine: str
    strategies: tuple[str, ...]
    params: tuple[tuple[str, str, str], ...]
    data_files: tuple[str, ...]
    start_ns: int | None
    end_ns: int | None
    timeframe: str
    slippage_bps: Decimal
    spread_bps: Decimal
    no_risk_limits: bool
    cash: Decimal
    cash_currency: str
    accounting_currency: str
    equity_interval_s: int
    risk_limits: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class SymbolInfo:
    """One traded symbol: where its candles came from and what they span.

    Attributes:
        symbol: WS v2 name, e.g. ``"BTC/USDT"``.
        files: the files that supplied it (several only when they do not overlap).
        interval_s: candle length in seconds after any resampling.
        candles: candles used (inside ``--from``/``--to``).
        first_ns: open time of the first candle used.
        last_ns: open time of the last candle used.
        first_open: open of the first candle (the buy-and-hold entry price).
        last_close: close of the last candle (the mark at the end).
        pair: the pair metadata used (fees, decimals).
    """

    symbol: str
    files: tuple[str, ...]
    interval_s: int
    candles: int
    first_ns: int
    last_ns: int
    first_open: Decimal
    last_close: Decimal
    pair: PairInfo


@dataclass(frozen=True, slots=True, kw_only=True)
class ClosedTrade:
    """A round trip: an entry matched FIFO with the exit that closed it.

    Attributes:
        strategy: the strategy whose fill opened the position.
        exit_strategy: whose fill closed it (``"risk"`` for stop-loss/take-profit exits).
        symbol: the symbol.
        side: ``"long"`` or ``"short"`` (a short on one symbol happens only as an arbitrage leg).
        entry_time: time of the entry fill (the fill candle's open time), ns UTC.
        exit_time: time of the exit fill, ns UTC (for an open trade: the last candle's time).
        entry_price: (quantity-weighted) entry fill price.
        exit_price: exit fill price (for an open trade: the last close, a mark, not a fill).
        quantity: base quantity closed.
        fees: entry fee share plus exit fee, in ``currency``.
        pnl: ``(exit - entry) * quantity`` (sign flipped for shorts) minus ``fees``.
        currency: the quote currency of the symbol, in which fees and pnl are counted.
        is_open: True for a position still open at the end (marked, not closed).
    """

    strategy: str
    exit_strategy: str
    symbol: str
    side: str
    entry_time: int
    exit_time: int
    entry_price: Decimal
    exit_price: Decimal
    quantity: Decimal
    fees: Decimal
    pnl: Decimal
    currency: str
    is_open: bool = False


@dataclass(frozen=True, slots=True)
class EquityPoint:
    """Equity at ``ts`` (ns UTC): the value at the close of the candles before ``ts``."""

    ts: int
    equity: Decimal


@dataclass(frozen=True, slots=True, kw_only=True)
class BacktestResult:
    """Everything a run produced; see the module docstring for units.

    Attributes:
        config: the run configuration.
        symbols: per-symbol information, in input order.
        trades: closed trades, in exit order (then entry order).
        open_trades: positions still open at the end, marked at the last close.
        equity: the equity curve, sampled every ``config.equity_interval_s`` plus the end.
        benchmark: buy-and-hold of the cash split evenly over the symbols quoted in the cash
            currency (or pegged to the accounting currency), bought at the first open without
            fees, at the same sample times as ``equity``.
        fills: every fill, in execution order.
        initial_cash: equal to ``config.cash``.
        initial_equity: equity at the start in the accounting currency.
        final_equity: the ledger's equity at the end in the accounting currency.
        final_balances: ``(currency, amount)`` of the ledger at the end, sorted.
        warnings: data warnings (gaps, duplicates, out-of-order rows) and run warnings.
        no_risk_limits: True when the RiskEngine was bypassed.
        candles: candles processed (all symbols).
        risk_rejections: ``(reason, count)`` of signals the risk rules refused, sorted.
        order_rejections: ``(reason, count)`` of orders the fill model refused, sorted.
        trade_log_sha256: sha256 (hex) of :func:`trade_log_bytes` of ``fills``.
    """

    config: RunConfig
    symbols: tuple[SymbolInfo, ...]
    trades: tuple[ClosedTrade, ...]
    open_trades: tuple[ClosedTrade, ...]
    equity: tuple[EquityPoint, ...]
    benchmark: tuple[EquityPoint, ...]
    fills: tuple[Fill, ...]
    initial_cash: Decimal
    initial_equity: Decimal
    final_equity: Decimal
    final_balances: tuple[tuple[str, Decimal], ...]
    warnings: tuple[str, ...] = ()
    no_risk_limits: bool = False
    candles: int = 0
    risk_rejections: tuple[tuple[str, int], ...] = ()
    order_rejections: tuple[tuple[str, int], ...] = ()
    trade_log_sha256: str = field(default="")


TRADE_LOG_HEADER = (
    "fill_id,client_order_id,strategy,symbol,side,price,qty,fee,fee_currency,liquidity,ts_event_ns"
)


def trade_log_bytes(fills: Sequence[Fill]) -> bytes:
    """The canonical trade log: a header and one CSV line per fill, ``\\n`` terminated.

    Decimals are written with ``str`` (exactly as computed); the process-local ``Fill.ts`` is
    left out because it is clock-dependent, ``ts_event_ns`` (the market time) is in.
    """
    lines = [TRADE_LOG_HEADER]
    # str() and the enum values looked up once: an f-string's format() of a Decimal costs
    # twice its str(), and an enum's .value is a property (the log is built on every run)
    side = {s: s.value for s in Side}
    liquidity = {x: x.value for x in Liquidity}
    for f in fills:
        lines.append(",".join((
            f.fill_id, f.client_order_id, f.strategy, f.symbol, side[f.side], str(f.price),
            str(f.qty), str(f.fee), f.fee_currency, liquidity[f.liquidity], str(f.ts_event_ns))))
    lines.append("")
    return "\n".join(lines).encode()


def trade_log_sha256(fills: Sequence[Fill]) -> str:
    """Hex sha256 of :func:`trade_log_bytes`."""
    return hashlib.sha256(trade_log_bytes(fills)).hexdigest()

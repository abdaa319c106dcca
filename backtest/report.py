"""Backtest reports: ``summary.json``, ``trades.csv``, PNG charts and one self-contained HTML page.

:func:`write_report` writes, into one directory:

* ``summary.json``: the run configuration and flags (``no_risk_limits`` is stated, never
  implied), per-symbol data, and the metrics of :mod:`trading.performance` overall, per strategy
  and for the buy-and-hold benchmark. Decimals are JSON *strings* in plain notation (exact);
  ratios are numbers; an undefined metric is ``null``.
* ``trades.csv``: one row per round trip, closed trades first (exit order) then the positions
  still open at the end (``is_open=true``, marked at the last close). Times are ISO 8601 UTC,
  Decimals are written exactly in plain notation (never ``1E+1``).
* ``equity.png``, ``drawdown.png`` and ``trades_<BASE>-<QUOTE>.png`` per symbol.
* ``report.html``: the same tables and charts in one file: images are base64 ``data:`` URIs,
  styles inline, no script and no external reference (a Content-Security-Policy forbids any).

Units and scopes:

* Equity metrics are in the run's accounting currency. *Overall* uses the ledger's equity
  curve. A *strategy's* curve is the initial equity plus that strategy's cumulative trade P&L
  (closed trades at their exit time, open ones marked at the end), sampled at the ledger curve's
  times: realised-only, so its volatility is understated between exits. It exists only when all
  of the strategy's trades are counted in the accounting currency (or a USD stablecoin when that
  is USD); otherwise its equity metrics are ``null`` and ``equity_basis`` says why.
* Trade metrics (trades, win rate, profit factor, average win/loss) use closed trades only.
  Exposure counts open positions too. Money per trade is in the symbol's quote currency, so the
  money figures are maps ``{currency: amount}``: BTC and USDT are never added together.
* Fees and turnover come from the fills (every execution, open positions included): fees per
  fee currency, turnover ``sum(price × qty)`` per quote currency.
"""

from __future__ import annotations

import base64
import csv
import json
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

from trading import performance as pf

from . import _report_html, _report_plots
from ._result import BacktestResult, ClosedTrade, EquityPoint

__all__ = [
    "TRADES_CSV_COLUMNS",
    "build_summary",
    "format_summary_table",
    "iso_utc",
    "summary_rows",
    "write_report",
    "write_trades_csv",
]

TRADES_CSV_COLUMNS = (
    "strategy", "exit_strategy", "symbol", "side", "entry_time", "exit_time", "entry_price",
    "exit_price", "quantity", "fees", "pnl", "currency", "is_open",
)
"""``trades.csv`` header, in order."""

SCHEMA_VERSION = 1
_USD_LIKE = frozenset({"USD", "ZUSD", "USDT", "USDC"})

DEFINITIONS = {
    "total_return": "E_last / E_first - 1",
    "cagr": "(E_last / E_first) ** (365 days / span) - 1",
    "annualized_volatility": "stdev(r, ddof=1) * sqrt(P); r = E_i / E_(i-1) - 1, "
                             "P = 365 days / median sampling interval",
    "sharpe": "mean(r) / stdev(r, ddof=1) * sqrt(P), risk-free rate 0",
    "sortino": "mean(r) / sqrt(sum(min(r, 0)^2) / N) * sqrt(P), target 0",
    "max_drawdown": "max over t of 1 - E_t / max(E_s, s <= t)",
    "max_drawdown_duration": "longest time from a peak to the first point back at or above it "
                             "(or to the end)",
    "calmar": "cagr / max_drawdown",
    "win_rate": "closed trades with pnl > 0 / closed trades",
    "profit_factor": "sum(pnl > 0) / |sum(pnl < 0)|, per currency",
    "average_win": "mean pnl of winning closed trades, per currency",
    "average_loss": "mean pnl of losing closed trades, per currency",
    "exposure_time": "share of the run with at least one position open",
    "fees": "sum of fill fees, per fee currency",
    "turnover": "sum of fill price * qty, per quote currency",
}


# --------------------------------------------------------------------------------------------
# Text helpers
# --------------------------------------------------------------------------------------------


def iso_utc(ts_ns: int) -> str:
    """ISO 8601 UTC with a ``Z``: whole seconds bare, else microseconds or nanoseconds."""
    secs, frac = divmod(ts_ns, 1_000_000_000)
    base = datetime.fromtimestamp(secs, tz=UTC).strftime("%Y-%m-%dT%H:%M:%S")
    if frac == 0:
        return base + "Z"
    if frac % 1000 == 0:
        return f"{base}.{frac // 1000:06d}Z"
    return f"{base}.{frac:09d}Z"


def _dec(d: Decimal) -> str:
    """Exact plain notation (``format(d, 'f')`` keeps every digit and never uses exponents)."""
    return format(d, "f")


def _money_map(values: Mapping[str, Decimal]) -> dict[str, str]:
    return {cur: _dec(v) for cur, v in sorted(values.items())}


def _float_map(values: Mapping[str, float | None]) -> dict[str, float | None]:
    return dict(sorted(values.items()))


def _ts_fields(prefix: str, ts: int | None) -> dict[str, Any]:
    return {prefix: None if ts is None else iso_utc(ts), f"{prefix}_ns": ts}


# --------------------------------------------------------------------------------------------
# Summary
# --------------------------------------------------------------------------------------------


def _curve(points: Sequence[EquityPoint]) -> list[tuple[int, Decimal]]:
    return [(p.ts, p.equity) for p in points]


def _in_accounting(currency: str, result: BacktestResult) -> bool:
    cfg = result.config
    acct = cfg.accounting_currency
    return (currency in (acct, cfg.cash_currency)
            or (acct in _USD_LIKE and currency in _USD_LIKE))


def _strategy_curve(base: Sequence[tuple[int, Decimal]], start: Decimal,
                    trades: Iterable[ClosedTrade]) -> list[tuple[int, Decimal]]:
    """``start`` plus the cumulative pnl of trades exited at or before each time of ``base``."""
    events = sorted((t.exit_time, t.pnl) for t in trades)
    out: list[tuple[int, Decimal]] = []
    acc = start
    i = 0
    for ts, _ in base:
        while i < len(events) and events[i][0] <= ts:
            acc = pf.money_sum((acc, events[i][1]))
            i += 1
        out.append((ts, acc))
    if out and i < len(events):  # exits after the last sample (should not happen): keep them
        out[-1] = (out[-1][0], pf.money_sum((acc, *(p for _, p in events[i:]))))
    return out


def _curve_metrics(perf: pf.Performance) -> dict[str, Any]:
    dd_ns = perf.max_drawdown_duration_ns
    return {
        **_ts_fields("start", perf.start_ns),
        **_ts_fields("end", perf.end_ns),
        "initial_equity": None if perf.initial_equity is None else _dec(perf.initial_equity),
        "final_equity": None if perf.final_equity is None else _dec(perf.final_equity),
        "net_pnl": None if perf.net_pnl is None else _dec(perf.net_pnl),
        "total_return": perf.total_return,
        "cagr": perf.cagr,
        "annualized_volatility": perf.annualized_volatility,
        "sharpe": perf.sharpe,
        "sortino": perf.sortino,
        "max_drawdown": perf.max_drawdown,
        "max_drawdown_amount": _dec(perf.max_drawdown_amount),
        "max_drawdown_duration_ns": dd_ns,
        "max_drawdown_duration_days": dd_ns / pf.DAY_NS,
        "calmar": perf.calmar,
        "periods_per_year": perf.periods_per_year,
    }


_NULL_CURVE = dict.fromkeys(
    ("start", "start_ns", "end", "end_ns", "initial_equity", "final_equity", "net_pnl",
     "total_return", "cagr", "annualized_volatility", "sharpe", "sortino", "max_drawdown",
     "max_drawdown_amount", "max_drawdown_duration_ns", "max_drawdown_duration_days", "calmar",
     "periods_per_year"))


def _trade_metrics(result: BacktestResult, closed: Sequence[ClosedTrade],
                   still_open: Sequence[ClosedTrade], strategy: str | None,
                   span: tuple[int, int] | None) -> dict[str, Any]:
    by_cur: dict[str, list[ClosedTrade]] = {}
    for t in closed:
        by_cur.setdefault(t.currency, []).append(t)
    quote = {s.symbol: s.pair.quote for s in result.symbols}
    fills = [f for f in result.fills if strategy is None or f.strategy == strategy]
    fees: dict[str, list[Decimal]] = {}
    legs: dict[str, list[tuple[Decimal, Decimal]]] = {}
    for f in fills:
        fees.setdefault(f.fee_currency, []).append(f.fee)
        legs.setdefault(quote.get(f.symbol, f.symbol.rpartition("/")[2]), []).append(
            (f.price, f.qty))
    exposure = (None if span is None
                else pf.exposure_time([*closed, *still_open], span[0], span[1]))
    return {
        "trades": len(closed),
        "open_trades": len(still_open),
        "wins": sum(1 for t in closed if t.pnl > 0),
        "losses": sum(1 for t in closed if t.pnl < 0),
        "win_rate": pf.win_rate(closed),
        "trade_pnl": _money_map({c: pf.money_sum(t.pnl for t in ts) for c, ts in by_cur.items()}),
        "gross_profit": _money_map({c: pf.gross_profit(ts) for c, ts in by_cur.items()}),
        "gross_loss": _money_map({c: pf.gross_loss(ts) for c, ts in by_cur.items()}),
        "profit_factor": _float_map({c: pf.profit_factor(ts) for c, ts in by_cur.items()}),
        "average_win": {c: None if v is None else _dec(v) for c, v in sorted(
            (c, pf.average_win(ts)) for c, ts in by_cur.items())},
        "average_loss": {c: None if v is None else _dec(v) for c, v in sorted(
            (c, pf.average_loss(ts)) for c, ts in by_cur.items())},
        "exposure_time": exposure,
        "fills": len(fills),
        "fees": _money_map({c: pf.money_sum(v) for c, v in fees.items()}),
        "turnover": _money_map({c: pf.notional(v) for c, v in legs.items()}),
    }


def build_summary(result: BacktestResult) -> dict[str, Any]:
    """The content of ``summary.json`` (JSON-ready: Decimals as exact strings)."""
    cfg = result.config
    equity = _curve(result.equity)
    span = (equity[0][0], equity[-1][0]) if equity else None
    overall_perf = pf.compute_performance(equity)
    overall = {
        "equity_basis": "ledger",
        **_curve_metrics(overall_perf),
        **_trade_metrics(result, result.trades, result.open_trades, None, span),
    }
    names = list(cfg.strategies)
    for t in (*result.trades, *result.open_trades):
        if t.strategy not in names:
            names.append(t.strategy)
    strategies: dict[str, Any] = {}
    for name in names:
        closed = [t for t in result.trades if t.strategy == name]
        still_open = [t for t in result.open_trades if t.strategy == name]
        foreign = sorted({t.currency for t in (*closed, *still_open)
                          if not _in_accounting(t.currency, result)})
        if foreign or not equity:
            basis = ("unavailable: trades in " + ", ".join(foreign)) if foreign else None
            curve_part = {**_NULL_CURVE,
                          **_ts_fields("start", None if span is None else span[0]),
                          **_ts_fields("end", None if span is None else span[1])}
        else:
            basis = "realised trade P&L on the initial equity"
            curve = _strategy_curve(equity, result.initial_equity, [*closed, *still_open])
            curve_part = _curve_metrics(pf.compute_performance(curve))
        strategies[name] = {"equity_basis": basis, **curve_part,
                            **_trade_metrics(result, closed, still_open, name, span)}
    bench = _curve(result.benchmark)
    benchmark = {
        "description": "buy-and-hold: the cash split evenly over the symbols quoted in the "
                       "cash currency, bought at the first open without fees",
        **_curve_metrics(pf.compute_performance(bench)),
        "exposure_time": 1.0 if bench else None,
    }
    notes = []
    if result.no_risk_limits or cfg.no_risk_limits:
        notes.append("Risk limits were OFF for this run (--no-risk-limits): no limit or "
                     "circuit breaker removed any trade.")
    return {
        "schema_version": SCHEMA_VERSION,
        "flags": {
            "no_risk_limits": bool(result.no_risk_limits or cfg.no_risk_limits),
            "engine": cfg.engine,
        },
        "notes": notes,
        "config": {
            "engine": cfg.engine,
            "strategies": list(cfg.strategies),
            "params": [list(p) for p in cfg.params],
            "data_files": list(cfg.data_files),
            **_ts_fields("from", cfg.start_ns),
            **_ts_fields("to", cfg.end_ns),
            "timeframe": cfg.timeframe,
            "slippage_bps": _dec(cfg.slippage_bps),
            "spread_bps": _dec(cfg.spread_bps),
            "cash": _dec(cfg.cash),
            "cash_currency": cfg.cash_currency,
            "accounting_currency": cfg.accounting_currency,
            "equity_interval_s": cfg.equity_interval_s,
            "risk_limits": dict(cfg.risk_limits),
        },
        "accounting_currency": cfg.accounting_currency,
        "initial_cash": _dec(result.initial_cash),
        "initial_equity": _dec(result.initial_equity),
        "final_equity": _dec(result.final_equity),
        "final_balances": {c: _dec(v) for c, v in result.final_balances},
        "candles": result.candles,
        "trade_log_sha256": result.trade_log_sha256,
        "symbols": [
            {"symbol": s.symbol, "files": list(s.files), "interval_s": s.interval_s,
             "candles": s.candles, **_ts_fields("first", s.first_ns),
             **_ts_fields("last", s.last_ns), "first_open": _dec(s.first_open),
             "last_close": _dec(s.last_close), "quote": s.pair.quote,
             "fee_taker": _dec(s.pair.fee_taker), "fee_maker": _dec(s.pair.fee_maker)}
            for s in result.symbols
        ],
        "overall": overall,
        "strategies": strategies,
        "benchmark": benchmark,
        "risk_rejections": dict(result.risk_rejections),
        "order_rejections": dict(result.order_rejections),
        "warnings": list(result.warnings),
        "definitions": DEFINITIONS,
    }


# --------------------------------------------------------------------------------------------
# The table (terminal and HTML)
# --------------------------------------------------------------------------------------------


def _pct(x: Any) -> str:
    if x is None:
        return "-"
    # CAGR over a few minutes extrapolates to absurd figures; keep the column readable.
    return f"{100 * x:.3g}%" if abs(x) >= 1e4 else f"{100 * x:.2f}%"


def _num(x: Any) -> str:
    if x is None:
        return "-"
    return f"{x:.3g}" if abs(x) >= 1e6 else f"{x:.2f}"


def _short(s: str | None) -> str:
    """A Decimal string rounded to 8 decimals for display (summary.json keeps every digit)."""
    if s is None:
        return "-"
    d = Decimal(s).quantize(Decimal("1e-8")).normalize()
    return _dec(d if d != 0 else Decimal(0))


def _per_cur(m: Any, fmt: Any = _short) -> str:
    if not isinstance(m, Mapping):
        return "-"
    if not m:
        return "0"
    return "; ".join(f"{fmt(v)} {c}" for c, v in m.items())


def _days(x: Any) -> str:
    if x is None:
        return "-"
    minutes = round(x * 1440)
    d, rest = divmod(minutes, 1440)
    return f"{d}d {rest // 60:02d}h{rest % 60:02d}m"


_ROWS: tuple[tuple[str, str, Any], ...] = (
    ("Start", "start", lambda v: "-" if v is None else v),
    ("End", "end", lambda v: "-" if v is None else v),
    ("Final equity", "final_equity", _short),
    ("Total return", "total_return", _pct),
    ("CAGR", "cagr", _pct),
    ("Volatility (ann.)", "annualized_volatility", _pct),
    ("Sharpe", "sharpe", _num),
    ("Sortino", "sortino", _num),
    ("Max drawdown", "max_drawdown", _pct),
    ("Max DD duration", "max_drawdown_duration_days", _days),
    ("Calmar", "calmar", _num),
    ("Trades", "trades", lambda v: "-" if v is None else str(v)),
    ("Win rate", "win_rate", _pct),
    ("Profit factor", "profit_factor", lambda v: _per_cur(v, _num)),
    ("Average win", "average_win", _per_cur),
    ("Average loss", "average_loss", _per_cur),
    ("Exposure time", "exposure_time", _pct),
    ("Fees", "fees", _per_cur),
    ("Turnover", "turnover", _per_cur),
)


def summary_rows(summary: Mapping[str, Any]) -> tuple[list[str], list[list[str]]]:
    """``(header, rows)`` of the metric table: overall, each strategy, buy-and-hold."""
    cols: list[tuple[str, Mapping[str, Any]]] = [("Overall", summary["overall"])]
    cols += list(summary["strategies"].items())
    cols.append(("Buy & hold", summary["benchmark"]))
    header = ["Metric", *(name for name, _ in cols)]
    rows = []
    for label, key, fmt in _ROWS:
        rows.append([label, *(fmt(scope.get(key)) if key in scope else "-"
                              for _, scope in cols)])
    return header, rows


def format_summary_table(summary: BacktestResult | Mapping[str, Any]) -> str:
    """The end-of-run summary as a fixed-width text table (plus the flags and the hash)."""
    if isinstance(summary, BacktestResult):
        summary = build_summary(summary)
    header, rows = summary_rows(summary)
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    line = "  ".join("-" * w for w in widths)

    def fmt(r: list[str]) -> str:
        return "  ".join(c.ljust(w) if i == 0 else c.rjust(w)
                         for i, (c, w) in enumerate(zip(r, widths, strict=True))).rstrip()

    out = [fmt(header), line, *(fmt(r) for r in rows)]
    out.append(f"Equity in {summary['accounting_currency']}; "
               f"trade log sha256 {summary['trade_log_sha256'] or '-'}")
    out.extend(summary["notes"])
    if summary["warnings"]:
        out.append(f"{len(summary['warnings'])} data warning(s); see summary.json")
    return "\n".join(out) + "\n"


# --------------------------------------------------------------------------------------------
# Files
# --------------------------------------------------------------------------------------------


def _trade_row(t: ClosedTrade) -> list[str]:
    return [t.strategy, t.exit_strategy, t.symbol, t.side, iso_utc(t.entry_time),
            iso_utc(t.exit_time), _dec(t.entry_price), _dec(t.exit_price), _dec(t.quantity),
            _dec(t.fees), _dec(t.pnl), t.currency, "true" if t.is_open else "false"]


def write_trades_csv(result: BacktestResult, path: Path) -> None:
    """Write ``trades.csv``: :data:`TRADES_CSV_COLUMNS`, closed trades then open ones."""
    with path.open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh, lineterminator="\n")
        w.writerow(TRADES_CSV_COLUMNS)
        for t in (*result.trades, *result.open_trades):
            w.writerow(_trade_row(t))


def _symbol_file(symbol: str) -> str:
    return "trades_" + "".join(ch if ch.isalnum() else "-" for ch in symbol) + ".png"


def write_report(result: BacktestResult, out_dir: Path, *,
                 prices: Mapping[str, Sequence[tuple[int, Decimal]]] | None = None,
                 html_trade_rows: int = 500) -> Path:
    """Write the whole report into ``out_dir`` (created if missing); return ``report.html``.

    Args:
        result: the finished run.
        out_dir: the report directory.
        prices: optional ``{symbol: [(ts_ns, close), ...]}`` for the trade-marker charts. The
            result does not carry the candles; without this the chart draws the symbol's fill
            prices (and first open / last close) as its price line.
        html_trade_rows: trades listed in the HTML page (all of them are in ``trades.csv``).
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    summary = build_summary(result)
    (out_dir / "summary.json").write_text(
        json.dumps(summary, indent=2, allow_nan=False) + "\n", encoding="utf-8")
    write_trades_csv(result, out_dir / "trades.csv")

    acct = result.config.accounting_currency
    equity = _curve(result.equity)
    charts: list[tuple[str, str, str, bytes]] = [
        ("equity-chart", "equity.png", f"Equity ({acct}) vs buy & hold",
         _report_plots.equity_png(equity, _curve(result.benchmark),
                                  title=f"Equity ({acct}) vs buy & hold", currency=acct)),
        ("drawdown-chart", "drawdown.png", "Drawdown",
         _report_plots.drawdown_png(equity, title="Drawdown from the running peak")),
    ]
    all_trades = (*result.trades, *result.open_trades)
    for s in result.symbols:
        mine = [t for t in all_trades if t.symbol == s.symbol]
        given = prices is not None and s.symbol in prices
        line = list(prices[s.symbol]) if prices and given else _fill_path(result, s)
        entries = [(t.entry_time, t.entry_price, t.side == "long") for t in mine]
        exits = [(t.exit_time, t.exit_price, t.side != "long") for t in mine if not t.is_open]
        title = (f"{s.symbol}: trades (▲ buy, ▼ sell; outlined = entry)"
                 + ("" if given else "; price line through the fills"))
        charts.append((f"trades-chart-{_symbol_file(s.symbol)[7:-4]}", _symbol_file(s.symbol),
                       title, _report_plots.trades_png(line, entries, exits, title=title)))
    for _, name, _, png in charts:
        (out_dir / name).write_bytes(png)

    header, rows = summary_rows(summary)
    html = _report_html.render(
        summary=summary,
        table=(header, rows),
        charts=[(cid, title, base64.b64encode(png).decode("ascii"))
                for cid, _, title, png in charts],
        trade_columns=TRADES_CSV_COLUMNS,
        trade_rows=[_trade_row(t) for t in all_trades[:html_trade_rows]],
        trades_total=len(all_trades),
    )
    path = out_dir / "report.html"
    path.write_text(html, encoding="utf-8")
    return path


def _fill_path(result: BacktestResult, s: Any) -> list[tuple[int, Decimal]]:
    pts = [(s.first_ns, s.first_open)]
    pts += sorted((f.ts_event_ns, f.price) for f in result.fills if f.symbol == s.symbol)
    pts.append((s.last_ns, s.last_close))
    return sorted(pts, key=lambda p: p[0])

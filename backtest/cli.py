"""``python main.py --mode backtest``: flags, input validation, the run, the summary.

``add_arguments`` adds the backtest flags to the shared parser (``config.load_settings(argv,
extend=add_arguments)``) and ``run_backtest(settings)`` runs it. Exit status: 0 done; 2 bad
input (one line on stderr naming the file and line; no report written); 3 an engine or feature
not built yet; 1 the report writer failed. ``--sweep``/``--oos`` go to
``backtest._sweep.run_sweep`` (same statuses).

Money: ``--cash`` is held in the *cash currency*: ``--quote-currency`` (default USD) when a
symbol is quoted in it, else the first stablecoin quote (USDT, USDC, DAI) when that is USD,
else the first symbol's quote currency, which then also becomes the accounting currency.
Strategies that size in a notional currency get, unless ``--param`` says otherwise,
``notional_currency`` = the accounting currency, ``notional`` = ``--order-notional`` and the
stablecoin quotes as 1:1 pegs.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any, TextIO

from config import Settings
from protocol.candles import parse_timeframe
from protocol.instruments import PairInfo
from trading import Portfolio, RiskLimits
from trading.strategies import (
    REGISTRY,
    STABLECOINS,
    StrategyConfigError,
    build_strategies,
    standard_params,
)

from ._actor_engine import ActorEngine
from ._data import BacktestInputError, LoadedSymbol, load_inputs, merge_candles, pair_for
from ._engine import FastEngine
from ._progress import Progress
from ._result import BacktestResult, RunConfig, SymbolInfo, trade_log_sha256
from ._sweep import add_sweep_arguments, run_sweep
from ._trades import closed_trades

__all__ = ["DEFAULT_STRATEGIES", "add_arguments", "prepare", "run_backtest", "run_prepared"]

DEFAULT_STRATEGIES = ("momentum", "mean_reversion", "arbitrage", "sma_cross")
EXIT_OK, EXIT_FAILED, EXIT_INPUT, EXIT_UNSUPPORTED = 0, 1, 2, 3
_NS = 1_000_000_000


def add_arguments(parser: argparse.ArgumentParser) -> list[str]:
    """Add the backtest flags to ``parser``; return their ``dest`` names (for ``extras``)."""
    g = parser.add_argument_group("backtest (--mode backtest)")
    g.add_argument("--data", nargs="+", metavar="FILE", default=[],
                   help="candle files (Kraken OHLCVT, timestamp_ms CSV, Kraken trades CSV)")
    g.add_argument("--from", dest="date_from", metavar="ISO", default=None,
                   help="first candle time (inclusive, UTC unless an offset is given)")
    g.add_argument("--to", dest="date_to", metavar="ISO", default=None,
                   help="end time (exclusive)")
    g.add_argument("--strategy", action="append", metavar="NAME", default=None,
                   help=f"strategy to run, repeatable (default: {', '.join(DEFAULT_STRATEGIES)})")
    g.add_argument("--report", metavar="DIR", default=None, help="write the report here")
    g.add_argument("--engine", choices=("fast", "actors"), default="fast",
                   help="fast synchronous loop (default) or the actor tree in virtual time")
    g.add_argument("--symbol", action="append", metavar="FILE=BASE/QUOTE", default=[],
                   help="symbol of a data file when its name does not tell")
    g.add_argument("--timeframe", metavar="TF", default=None, help="resample to 5m, 1h, 1d ...")
    g.add_argument("--no-risk-limits", action="store_true", default=False,
                   help="bypass the risk engine (cross-checks; the summary says so)")
    g.add_argument("--slippage-bps", metavar="BPS", default="0",
                   help="added to buys / taken from sells at the next open (default 0)")
    g.add_argument("--spread-bps", metavar="BPS", default="2",
                   help="full spread of the synthetic books around candle closes (default 2)")
    g.add_argument("--param", action="append", metavar="STRATEGY.KEY=VALUE", default=[],
                   help="strategy parameter, repeatable")
    g.add_argument("--sweep", action="append", metavar="STRATEGY.KEY=START:STOP:STEP",
                   default=[], help="parameter grid dimension (or STRATEGY.KEY=A,B,C), "
                   "repeatable: the cartesian product runs on all cores")
    g.add_argument("--oos", metavar="FRACTION", default=None,
                   help="out-of-sample fraction: the last FRACTION of the time range is "
                   "reported beside the in-sample part")
    return ["data", "date_from", "date_to", "strategy", "report", "engine", "symbol",
            "timeframe", "no_risk_limits", "slippage_bps", "spread_bps", "param", "sweep",
            "oos", *add_sweep_arguments(parser)]


# --------------------------------------------------------------------------- validation


def _iso_ns(text: str, flag: str) -> int:
    try:
        dt = datetime.fromisoformat(text.strip())
    except ValueError:
        raise BacktestInputError(f"{flag} {text!r}: not an ISO 8601 date/time") from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return int(dt.timestamp()) * _NS


def _decimal(text: str, flag: str) -> Decimal:
    try:
        value = Decimal(str(text))
    except InvalidOperation:
        raise BacktestInputError(f"{flag} {text!r}: not a number") from None
    if not value.is_finite() or value < 0:
        raise BacktestInputError(f"{flag} {text!r}: must be a finite number >= 0")
    return value


def _params(items: Sequence[str]) -> dict[str, dict[str, str]]:
    out: dict[str, dict[str, str]] = {}
    for item in items:
        key, sep, value = item.partition("=")
        strategy, dot, name = key.partition(".")
        if not sep or not dot or not strategy or not name:
            raise BacktestInputError(f"--param {item!r}: expected STRATEGY.KEY=VALUE")
        out.setdefault(strategy.strip(), {})[name.strip()] = value
    return out


def _symbols(items: Sequence[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in items:
        path, sep, sym = item.rpartition("=")
        if not sep or not path or not sym:
            raise BacktestInputError(f"--symbol {item!r}: expected FILE=BASE/QUOTE")
        out[path] = sym.strip()
    return out


@dataclasses.dataclass(slots=True, kw_only=True)
class Prepared:
    """A validated run, ready for :func:`run_prepared` (the bench reuses it)."""

    config: RunConfig
    loaded: list[LoadedSymbol]
    pairs: dict[str, PairInfo]
    params: dict[str, dict[str, str]]
    limits: RiskLimits | None
    quote_pegs: tuple[str, ...]


def _accounting(settings: Settings, pairs: Mapping[str, PairInfo]) -> tuple[str, str]:
    quotes = list(dict.fromkeys(p.quote for p in pairs.values()))
    acct = settings.quote_currency
    if acct in quotes:
        return acct, acct
    if acct == "USD":
        stable = next((q for q in quotes if q in STABLECOINS), None)
        if stable is not None:
            return stable, "USD"
    return quotes[0], quotes[0]


def prepare(settings: Settings) -> Prepared:
    """Validate the flags, load the data and build the run configuration.

    Raises:
        BacktestInputError: any bad input, with a one-line message.
    """
    x: Mapping[str, Any] = settings.extras
    data = list(x.get("data") or [])
    if not data:
        raise BacktestInputError("--data: give at least one candle file")
    names = list(x.get("strategy") or DEFAULT_STRATEGIES)
    for n in names:
        if n not in REGISTRY:
            raise BacktestInputError(f"--strategy {n!r}: unknown (known: "
                                     f"{', '.join(sorted(REGISTRY))})")
    if len(set(names)) != len(names):
        raise BacktestInputError(f"--strategy: duplicate names in {names}")
    start = _iso_ns(x["date_from"], "--from") if x.get("date_from") else None
    end = _iso_ns(x["date_to"], "--to") if x.get("date_to") else None
    if start is not None and end is not None and end <= start:
        raise BacktestInputError("--to must be after --from")
    tf = x.get("timeframe") or ""
    try:
        tf_s = parse_timeframe(tf) if tf else None
    except ValueError as exc:
        raise BacktestInputError(f"--timeframe: {exc}") from None
    slippage = _decimal(x.get("slippage_bps", "0"), "--slippage-bps")
    spread = _decimal(x.get("spread_bps", "2"), "--spread-bps")
    user_params = _params(x.get("param") or [])
    loaded = load_inputs(data, symbols=_symbols(x.get("symbol") or []), timeframe_s=tf_s,
                         start_ns=start, end_ns=end)
    pairs = {ls.symbol: pair_for(ls.symbol, ls.candles) for ls in loaded}
    cash_ccy, acct = _accounting(settings, pairs)
    pegs = tuple(q for q in dict.fromkeys(p.quote for p in pairs.values())
                 if acct == "USD" and q in STABLECOINS)
    for n in user_params:
        if n not in names:
            raise BacktestInputError(f"--param {n}.*: strategy {n!r} is not among {names}")
    params = standard_params(names, user_params, acct, pegs, settings.order_notional)
    no_risk = bool(x.get("no_risk_limits"))
    limits = None if no_risk else RiskLimits(
        max_position_usd=settings.max_position_usd,
        max_total_exposure_usd=settings.max_exposure_usd,
        max_open_positions=settings.max_open_positions, stop_loss_pct=settings.stop_loss,
        take_profit_pct=settings.take_profit,
        daily_loss_limit_usd=settings.daily_loss_limit_usd, max_drawdown=settings.max_drawdown)
    interval = min(ls.interval_s for ls in loaded)
    config = RunConfig(
        engine=str(x.get("engine") or "fast"), strategies=tuple(names),
        params=tuple(sorted((s, k, v) for s, kv in user_params.items() for k, v in kv.items())),
        data_files=tuple(data), start_ns=start, end_ns=end, timeframe=tf,
        slippage_bps=slippage, spread_bps=spread, no_risk_limits=no_risk, cash=settings.cash,
        cash_currency=cash_ccy, accounting_currency=acct,
        equity_interval_s=max(interval, 3600),
        risk_limits=() if limits is None else tuple(
            (f.name, str(getattr(limits, f.name))) for f in dataclasses.fields(limits)),
    )
    return Prepared(config=config, loaded=loaded, pairs=pairs, params=params, limits=limits,
                    quote_pegs=pegs)


def merged_candles(loaded: Sequence[LoadedSymbol]) -> list[Any]:
    """All candles in (open time, input order), preloaded as objects (a list).

    Benchmarks and tests time the engines on these. :func:`run_prepared` and the CLI use the
    lazy column-store sequence (:func:`backtest._data.merge_candles`) instead, which builds
    each candle when the loop reaches it (a year of minute data stays small in memory).
    """
    return list(merge_candles(loaded))


def run_prepared(p: Prepared, candles: Sequence[Any] | None = None, *,
                 progress: Callable[[int], None] | None = None) -> BacktestResult:
    """Run the engine on a prepared configuration and build the result.

    Args:
        p: the prepared run.
        candles: the merged candles (default: the lazy merge of ``p.loaded``'s columns).
        progress: called with the candles done so far, every few tens of thousands of candles
            (the fast engine only; the actor engine runs without it).

    Raises:
        BacktestInputError: a strategy parameter or symbol is invalid.
    """
    cfg = p.config
    try:
        strategies = build_strategies(cfg.strategies, p.params, p.pairs)
    except StrategyConfigError as exc:
        raise BacktestInputError(f"--param/--strategy: {exc}") from exc
    cash_ccy, acct = cfg.cash_currency, cfg.accounting_currency
    if acct == "USD":
        portfolio = Portfolio({cash_ccy: cfg.cash})
    else:
        portfolio = Portfolio({cash_ccy: cfg.cash}, usd_equivalents=(acct,), pegged={},
                              cross=())
    eligible = [ls for ls in p.loaded if ls.symbol.partition("/")[2] == cash_ccy]
    units = {ls.symbol: cfg.cash / len(eligible) / ls.candles[0].open for ls in eligible}
    # Both engines take the same arguments and return the same output (backtest._actor_engine).
    engine_cls = ActorEngine if cfg.engine == "actors" else FastEngine
    engine = engine_cls(strategies, p.pairs, portfolio, risk_limits=p.limits,
                        slippage_bps=cfg.slippage_bps, spread_bps=cfg.spread_bps,
                        equity_interval_s=cfg.equity_interval_s, benchmark_units=units,
                        benchmark_cash=Decimal(0) if eligible else cfg.cash)
    engine.set_first_opens({ls.symbol: ls.candles[0].open for ls in p.loaded})
    initial = portfolio.equity_usd()
    seq = candles if candles is not None else merge_candles(p.loaded)
    out = (engine.run(seq, progress) if progress is not None and isinstance(engine, FastEngine)
           else engine.run(seq))
    trades, still = closed_trades(out.fills, out.last_candles)
    warnings = [w for ls in p.loaded for w in ls.warnings] + out.warnings
    syms = tuple(
        SymbolInfo(symbol=ls.symbol, files=ls.files, interval_s=ls.interval_s,
                   candles=len(ls.candles), first_ns=ls.candles[0].ts_event_ns,
                   last_ns=ls.candles[-1].ts_event_ns, first_open=ls.candles[0].open,
                   last_close=ls.candles[-1].close, pair=p.pairs[ls.symbol])
        for ls in p.loaded)
    return BacktestResult(
        config=cfg, symbols=syms,
        trades=tuple(sorted(trades, key=lambda t: (t.exit_time, t.entry_time))),
        open_trades=still, equity=tuple(out.equity), benchmark=tuple(out.benchmark),
        fills=tuple(out.fills), initial_cash=cfg.cash, initial_equity=initial,
        final_equity=portfolio.equity_usd(),
        final_balances=tuple(sorted(portfolio.balances().items())),
        warnings=tuple(warnings), no_risk_limits=cfg.no_risk_limits, candles=out.candles,
        risk_rejections=tuple(sorted(out.risk_rejections.items())),
        order_rejections=tuple(sorted(out.order_rejections.items())),
        trade_log_sha256=trade_log_sha256(out.fills),
    )


# --------------------------------------------------------------------------- summary


def print_summary(r: BacktestResult, elapsed: float, file: TextIO) -> None:
    """The end-of-run table (per strategy and overall) and the trade log hash."""
    cfg = r.config
    acct = cfg.accounting_currency
    w = file.write
    w(f"backtest: {r.candles} candles, {len(r.symbols)} symbol(s), engine {cfg.engine}, "
      f"{elapsed:.2f} s ({r.candles / elapsed if elapsed > 0 else 0:,.0f} candles/s)\n")
    if r.no_risk_limits:
        w("RISK LIMITS OFF (--no-risk-limits): no limit, stop-loss or breaker was applied\n")
    rows = [("strategy", "trades", "wins", "losses", "win%", "pnl", "fees")]
    for name in cfg.strategies + (("risk",) if not r.no_risk_limits else ()):
        ts = [t for t in r.trades if t.strategy == name]
        if name == "risk" and not ts:
            continue
        wins = sum(1 for t in ts if t.pnl > 0)
        losses = sum(1 for t in ts if t.pnl < 0)
        pnl: dict[str, Decimal] = {}
        fees: dict[str, Decimal] = {}
        for t in ts:
            pnl[t.currency] = pnl.get(t.currency, Decimal(0)) + t.pnl
            fees[t.currency] = fees.get(t.currency, Decimal(0)) + t.fees
        rows.append((name, str(len(ts)), str(wins), str(losses),
                     f"{100 * wins / len(ts):.1f}" if ts else "-",
                     " ".join(f"{v:.4f} {k}" for k, v in sorted(pnl.items())) or "0",
                     " ".join(f"{v:.4f} {k}" for k, v in sorted(fees.items())) or "0"))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        w("  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row)).rstrip() + "\n")
    ret = (r.final_equity / r.initial_equity - 1) * 100 if r.initial_equity else Decimal(0)
    bench = r.benchmark[-1].equity if r.benchmark else Decimal(0)
    bret = (bench / r.initial_cash - 1) * 100 if r.initial_cash else Decimal(0)
    w(f"equity: {r.initial_equity:.2f} -> {r.final_equity:.2f} {acct} ({ret:+.3f} %); "
      f"buy and hold {bench:.2f} ({bret:+.3f} %); open positions {len(r.open_trades)}\n")
    if r.risk_rejections:
        w("risk rejections: " + ", ".join(f"{k} {v}" for k, v in r.risk_rejections) + "\n")
    if r.order_rejections:
        w("order rejections: " + ", ".join(f"{k} {v}" for k, v in r.order_rejections) + "\n")
    if r.warnings:
        w(f"{len(r.warnings)} warning(s), first: {r.warnings[0]}\n")
    w(f"trade log sha256 {r.trade_log_sha256} ({len(r.fills)} fills)\n")


def run_backtest(settings: Settings, *, out: TextIO | None = None,
                 err: TextIO | None = None) -> int:
    """Run ``--mode backtest`` with ``settings`` and return the exit status."""
    out = sys.stdout if out is None else out
    err = sys.stderr if err is None else err
    x = settings.extras
    if x.get("sweep") or x.get("oos"):
        return run_sweep(settings, out=out, err=err)
    started = time.perf_counter()  # wall clock only for the speed figure shown to the user
    try:
        prepared = prepare(settings)
        candles = merge_candles(prepared.loaded)
        # The bar (candles/s, ETA) draws on a TTY or with --progress; the engine reports every
        # few tens of thousands of candles, so it costs nothing measurable.
        bar = Progress(len(candles), label="backtest", unit="candles", stream=err,
                       enabled=x.get("progress"))
        report_to = None
        if bar.enabled:
            def report_to(done: int) -> None:
                bar.update(done, events=done - bar.events)
        try:
            result = run_prepared(prepared, candles, progress=report_to)
        finally:
            bar.close()
    except BacktestInputError as exc:
        err.write(f"backtest: error: {exc}\n")
        return EXIT_INPUT
    print_summary(result, time.perf_counter() - started, out)
    report = x.get("report")
    if report:
        try:
            from backtest.report import write_report
        except ImportError as exc:
            err.write(f"backtest: report writer unavailable: {exc}\n")
            return EXIT_FAILED
        write_report(result, Path(report))
        out.write(f"report written to {report}\n")
    return EXIT_OK

"""Risk rules: approve or reject signals, emit stop-loss/take-profit exits, detect halts.

:class:`RiskEngine` is pure logic called by the risk actor (or the backtest loop). It owns the
:class:`~trading.portfolio.Portfolio` updates that come from the market (marks) and from fills,
so **apply fills through** :meth:`RiskEngine.on_fill` (or :meth:`on_order_event`), not to the
portfolio directly, or the in-flight and pending-exit state drifts.

Approval (:meth:`RiskEngine.evaluate`) is all or nothing over the signals passed in (one signal,
or the legs of one arbitrage group), checked in this order; the first failure rejects the lot
with a metric-label ``reason`` and a human ``detail``:

* ``breaker_open``: the breaker is open. Nothing new passes; risk's own reduce-only exits
  (stop-loss, take-profit) still do, so a halt never leaves a losing position unprotected.
* ``invalid``: unknown symbol, qty ≤ 0, limit without price, a group whose legs disagree on
  ``group_id``/``group_size``, a ``reduce_only`` signal that would not reduce the position.
* ``no_price``: no ``reference_price``, limit price or mark for the symbol, or no USD rate for
  its quote currency.
* ``daily_loss`` / ``drawdown``: a signal that *grows* a position while the day's loss is over
  the limit or the drawdown is over ``max_drawdown`` (the actor trips the breaker on
  :meth:`check_halt`; this also covers the gap before it does).
* ``position_limit``: the symbol's position after the order (including approved orders that
  have not filled yet) would be worth more than ``max_position_usd``.
* ``exposure_limit``: Σ |position| × price over all symbols would exceed
  ``max_total_exposure_usd``.
* ``open_positions``: the order would open a new position beyond ``max_open_positions``.

Signals that do not grow their position (reduce_only exits, or a plain signal that reduces) pass
the last four rules. A reduce_only signal larger than the position is trimmed to it. Prices for
exposure: the signal's ``reference_price`` (else its limit price, else the last mark) for its own
symbol, the last mark (else the average entry) for the others.

Positions are per symbol, so an arbitrage group's legs count as separate positions; the exits
(:meth:`on_market`) sell at most the base currency actually held, so closing one leg of a
triangle never tries to sell coins the account no longer has.

``risk_score()`` = the largest of exposure / max_total_exposure, open positions /
max_open_positions, today's loss / daily_loss_limit and drawdown / max_drawdown, clamped to
[0, 1].
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal

from protocol.instruments import PairInfo
from protocol.messages import (
    BookEvent,
    CandleEvent,
    Fill,
    MarketEvent,
    OrderCancelled,
    OrderEvent,
    OrderRejected,
    OrderRequest,
    OrderType,
    RiskRejection,
    Side,
    Signal,
    TickerEvent,
    TradeEvent,
)

from ._fastinit import fast_constructor
from .ids import ClientOrderIds
from .portfolio import Portfolio

__all__ = ["RISK_REASONS", "RISK_STRATEGY", "RiskEngine", "RiskLimits", "refused_by_open_breaker"]

_new_order = fast_constructor(OrderRequest)  # one per approved signal: trading._fastinit

RISK_STRATEGY = "risk"
"""The ``strategy`` of the exit signals the engine emits itself."""

RISK_REASONS = (
    "breaker_open", "invalid", "no_price", "daily_loss", "drawdown",
    "position_limit", "exposure_limit", "open_positions",
)
"""Every ``RiskRejection.reason`` the engine produces (metric label values)."""

ZERO = Decimal(0)
ONE = Decimal(1)
TWO = Decimal(2)


@dataclass(frozen=True, slots=True, kw_only=True)
class RiskLimits:
    max_position_usd: Decimal = Decimal(1000)
    max_total_exposure_usd: Decimal = Decimal(5000)
    max_open_positions: int = 5
    stop_loss_pct: Decimal = Decimal("0.02")
    take_profit_pct: Decimal = Decimal("0.04")
    daily_loss_limit_usd: Decimal = Decimal(500)
    max_drawdown: Decimal = Decimal("0.10")


class _Reject(Exception):  # internal control flow only; never escapes evaluate()
    def __init__(self, signal: Signal, reason: str, detail: str) -> None:
        super().__init__(reason)
        self.signal = signal
        self.reason = reason
        self.detail = detail


def _protective(signal: Signal) -> bool:
    """Risk's own exits and arbitrage unwinds reduce exposure: they pass an open breaker."""
    return signal.reduce_only and (signal.strategy == RISK_STRATEGY
                                   or signal.reason.startswith("unwind "))


def refused_by_open_breaker(signals: Sequence[Signal]) -> bool:
    """True when an open breaker refuses this group (``breaker_open``): not all of it is
    protective. :meth:`RiskEngine.evaluate` asks this first; a caller that knows the breaker
    is open may ask it alone, since such a refusal changes nothing in the engine."""
    return not all(_protective(sig) for sig in signals)


class RiskEngine:
    """Pre-trade checks, protective exits and halt detection over one portfolio.

    Args:
        limits: the limits.
        portfolio: the ledger (the engine marks it and applies fills to it).
        pairs: symbol → pair metadata.
        ids: the client order id generator for approved orders.
    """

    def __init__(self, limits: RiskLimits, portfolio: Portfolio, pairs: Mapping[str, PairInfo],
                 ids: ClientOrderIds) -> None:
        self.limits = limits
        self.portfolio = portfolio
        self._pairs = dict(pairs)
        self._ids = ids
        self._inflight: dict[str, tuple[str, Decimal]] = {}  # cl_ord_id → (symbol, signed left)
        self._inflight_sym: dict[str, Decimal] = {}
        self._pending_exit: dict[str, str | None] = {}  # symbol → exit cl_ord_id once approved
        self._exit_ids: dict[str, str] = {}  # exit cl_ord_id → symbol
        # symbol → (stop, take) thresholds of the current position, refreshed on every fill
        self._levels: dict[str, tuple[Decimal, Decimal]] = {}
        self._day: int | None = None
        self._day_start = ZERO

    # ------------------------------------------------------------------ approval

    def evaluate(self, signals: Sequence[Signal], *, now: float, breaker_open: bool
                 ) -> list[OrderRequest] | RiskRejection:
        """Approve all of ``signals`` (one signal or one arbitrage group) or reject them all.

        Returns:
            The orders to send, with fresh client order ids, or one :class:`RiskRejection`
            naming the first signal and rule that failed.
        """
        if not signals:
            return []
        try:
            if breaker_open and refused_by_open_breaker(signals):
                # Halted: nothing new. Risk's own protective exits (stop-loss, take-profit)
                # still pass: a halt must not leave a losing position unprotected.
                raise _Reject(signals[0], "breaker_open", "circuit breaker is open")
            sized = self._check(signals)
        except _Reject as rej:
            s = rej.signal
            if s.strategy == RISK_STRATEGY and s.reduce_only and rej.reason != "breaker_open":
                # the exit cannot go out as emitted; let on_market emit a fresh one later
                self._pending_exit.pop(s.symbol, None)
            return RiskRejection(strategy=s.strategy, symbol=s.symbol, reason=rej.reason,
                                 detail=rej.detail, ts=now)
        orders: list[OrderRequest] = []
        for s, qty in sized:
            cid = self._ids.next()
            signed = qty if s.side is Side.BUY else -qty
            self._inflight[cid] = (s.symbol, signed)
            self._add_inflight(s.symbol, signed)
            if s.strategy == RISK_STRATEGY and s.reduce_only and s.symbol in self._pending_exit:
                self._pending_exit[s.symbol] = cid
                self._exit_ids[cid] = s.symbol
            orders.append(_new_order(
                client_order_id=cid, strategy=s.strategy, symbol=s.symbol, side=s.side, qty=qty,
                order_type=s.order_type, limit_price=s.limit_price, ts_recv=s.ts_recv,
                group_id=s.group_id, group_size=s.group_size, reduce_only=s.reduce_only,
            ))
        return orders

    def _check(self, signals: Sequence[Signal]) -> list[tuple[Signal, Decimal]]:
        first = signals[0]
        if len(signals) > 1 or first.group_size != 1:
            gid = first.group_id
            for s in signals:
                if s.group_id != gid or gid is None or s.group_size != len(signals):
                    raise _Reject(s, "invalid", f"group {gid!r} has {len(signals)} legs, "
                                                f"signal says {s.group_size} ({s.group_id!r})")
        pf = self.portfolio
        lim = self.limits
        # The group's legs so far: symbol -> (signed qty incl. in-flight, USD value) after them,
        # in order. The whole book's state (every position's, and the total exposure) is built
        # only when a leg grows a position (the limits read it): exits never need it.
        legs: dict[str, tuple[Decimal, Decimal]] = {}
        steps: list[tuple[str, Decimal, Decimal]] = []
        out: list[tuple[Signal, Decimal]] = []
        for s in signals:
            pair = self._pairs.get(s.symbol)
            if pair is None:
                raise _Reject(s, "invalid", f"unknown symbol {s.symbol}")
            qty = s.qty
            if not qty.is_finite() or qty <= 0:
                raise _Reject(s, "invalid", f"qty must be > 0, got {qty}")
            if s.order_type is OrderType.LIMIT and (s.limit_price is None or s.limit_price <= 0):
                raise _Reject(s, "invalid", "limit order without a positive limit price")
            price = s.reference_price or s.limit_price or pf.mark_price(s.symbol)
            if price is None:
                raise _Reject(s, "no_price", f"no reference price or mark for {s.symbol}")
            rate = pf.usd_rate(pair.quote)
            if rate is None:
                raise _Reject(s, "no_price", f"no USD rate for {pair.quote}")
            cur = legs[s.symbol][0] if s.symbol in legs else (
                pf.position_qty(s.symbol) + self._inflight_sym.get(s.symbol, ZERO))
            sign = 1 if s.side is Side.BUY else -1
            if s.reduce_only:
                if s.side is Side.SELL:
                    # Spot: a reduce-only sell may sell what the account holds of the base
                    # (after sells already in flight), whichever strategy or arbitrage leg
                    # bought it: the per-symbol position of a triangle says nothing about it.
                    held = pf.balance(pair.base) + min(self._inflight_sym.get(s.symbol, ZERO),
                                                       ZERO)
                    if held <= 0:
                        raise _Reject(s, "invalid", f"reduce_only sell: no {pair.base} held")
                    if qty > held:
                        qty = pair.round_qty(held)
                        if qty <= 0:
                            raise _Reject(s, "invalid", f"{pair.base} held is below the lot")
                elif not cur or cur > 0:
                    raise _Reject(s, "invalid", f"reduce_only buy {qty} would not reduce "
                                                f"position {cur} of {s.symbol}")
                elif qty > abs(cur):
                    qty = pair.round_qty(abs(cur))
                    if qty <= 0:
                        raise _Reject(s, "invalid", f"position {cur} is below the lot size")
            new = cur + qty * sign
            value = abs(new) * price * rate
            grows = abs(new) > abs(cur) or (new and cur and (new > 0) != (cur > 0))
            if grows:
                halt = self._halt_state()
                if halt is not None:
                    raise _Reject(s, halt[0], halt[1])
                if value > lim.max_position_usd:
                    raise _Reject(s, "position_limit", f"{s.symbol} position would be "
                                  f"{value:.2f} USD > {lim.max_position_usd}")
                hyp, total = self._exposure_after(steps)
                old_value = hyp[s.symbol][1] if s.symbol in hyp else ZERO
                after = total - old_value + value
                if after > lim.max_total_exposure_usd:
                    raise _Reject(s, "exposure_limit", f"total exposure would be {after:.2f} "
                                  f"USD > {lim.max_total_exposure_usd}")
                if not cur:
                    count = sum(1 for q, _ in hyp.values() if q)
                    if count + 1 > lim.max_open_positions:
                        raise _Reject(s, "open_positions", f"{count} positions open, "
                                      f"limit {lim.max_open_positions}")
            legs[s.symbol] = (new, value)
            steps.append((s.symbol, new, value))
            out.append((s, qty))
        return out

    def _exposure_after(self, steps: Sequence[tuple[str, Decimal, Decimal]]
                        ) -> tuple[dict[str, tuple[Decimal, Decimal]], Decimal]:
        """:meth:`_exposure_state` with the group's earlier legs (symbol, new qty, value)
        applied in order: the same sums, in the same order, as keeping it up to date."""
        hyp, total = self._exposure_state()
        for sym, new, value in steps:
            total = total - (hyp[sym][1] if sym in hyp else ZERO) + value
            hyp[sym] = (new, value)
        return hyp, total

    def _exposure_state(self) -> tuple[dict[str, tuple[Decimal, Decimal]], Decimal]:
        """Positions incl. in-flight orders and their USD values at the marks."""
        pf = self.portfolio
        hyp: dict[str, tuple[Decimal, Decimal]] = {}
        total = ZERO
        symbols = set(pf.open_symbols())
        symbols.update(s for s, q in self._inflight_sym.items() if q)
        for sym in sorted(symbols):  # sorted: the sum's rounding must not depend on set order
            q = pf.position_qty(sym) + self._inflight_sym.get(sym, ZERO)
            price = pf.mark_price(sym) or pf.avg_entry(sym) or ZERO
            v = pf.position_value_usd(sym, q, price) or ZERO
            hyp[sym] = (q, v)
            total += v
        return hyp, total

    def _day_loss(self) -> Decimal:
        if self._day is None:
            return ZERO
        return self._day_start - self.portfolio.net_pnl_usd()

    def _halt_state(self) -> tuple[str, str] | None:
        lim = self.limits
        loss = self._day_loss()
        if loss > lim.daily_loss_limit_usd:
            return "daily_loss", f"today's loss {loss:.2f} USD > {lim.daily_loss_limit_usd}"
        dd = self.portfolio.drawdown()
        if dd > lim.max_drawdown:
            return "drawdown", f"drawdown {dd:.4f} > {lim.max_drawdown}"
        return None

    # ------------------------------------------------------------------ market and fills

    def on_market(self, event: MarketEvent) -> list[Signal]:
        """Mark the portfolio and emit a stop-loss / take-profit exit when one is hit.

        The mark is the mid of a book or ticker, a trade's price or a candle's close. Each
        position gets at most one exit in flight: another is emitted only after the first is
        rejected, cancelled, or has not closed the position when its order is done.
        """
        sym = event.symbol
        cls = event.__class__
        # exact-type checks first (the backtest's candles and stop probes), isinstance after
        if cls is CandleEvent:
            mark = event.close  # type: ignore[union-attr]
        elif cls is TradeEvent:
            mark = event.price  # type: ignore[union-attr]
        elif isinstance(event, BookEvent):
            if not event.bids or not event.asks:
                return []
            mark = (event.bids[0].price + event.asks[0].price) / TWO
        elif isinstance(event, TickerEvent):
            mark = (event.bid + event.ask) / TWO
        elif isinstance(event, TradeEvent):
            mark = event.price
        elif isinstance(event, CandleEvent):
            mark = event.close
        else:  # pragma: no cover - MarketEvent is a closed union
            return []
        pf = self.portfolio
        pf.mark(sym, mark)
        levels = self._levels.get(sym)
        if levels is None or sym in self._pending_exit:
            return []
        pos = pf.position_qty(sym)
        if pos <= 0:
            # Spot: a negative per-symbol position is the conversion leg of an arbitrage (the
            # coins were sold for another currency), never a short to cover; "covering" it
            # would buy exposure out of nothing.
            return []
        stop, take = levels
        reason = "stop_loss" if mark <= stop else "take_profit" if mark >= take else None
        if reason is None:
            return []
        pair = self._pairs[sym]
        qty = abs(pos)
        if pos > 0:  # spot: never sell more base than the account holds
            qty = min(qty, self.portfolio.balance(pair.base))
        qty = pair.round_qty(qty)
        if qty <= 0:
            return []
        self._pending_exit[sym] = None
        return [Signal(
            strategy=RISK_STRATEGY, symbol=sym, side=Side.SELL if pos > 0 else Side.BUY, qty=qty,
            reason=reason, ts_recv=event.ts_recv, reduce_only=True, reference_price=mark,
        )]

    def on_fill(self, fill: Fill) -> None:
        """Apply ``fill`` to the portfolio and update in-flight and exit state."""
        pair = self._pairs[fill.symbol]
        self.portfolio.apply_fill(fill, pair)
        signed = fill.qty if fill.side is Side.BUY else -fill.qty
        entry = self._inflight.get(fill.client_order_id)
        if entry is not None:
            sym, left = entry
            left -= signed
            self._add_inflight(sym, -signed)
            self._inflight[fill.client_order_id] = (sym, left)
            if not left or (left > 0) != (entry[1] > 0):  # done; _done undoes an overfill
                self._done(fill.client_order_id)
        self._refresh_levels(fill.symbol)

    def _refresh_levels(self, sym: str) -> None:
        pf = self.portfolio
        pos = pf.position_qty(sym)
        avg = pf.avg_entry(sym)
        if not pos or avg is None:
            self._levels.pop(sym, None)
            self._pending_exit.pop(sym, None)
            return
        lim = self.limits
        if pos > 0:
            self._levels[sym] = (avg * (ONE - lim.stop_loss_pct), avg * (ONE + lim.take_profit_pct))
        else:
            self._levels[sym] = (avg * (ONE + lim.stop_loss_pct), avg * (ONE - lim.take_profit_pct))

    def _add_inflight(self, sym: str, delta: Decimal) -> None:
        """Move the symbol's net in-flight quantity by ``delta`` (a zero net is dropped).

        The net can be zero while orders are still in flight (a buy and a sell of the same
        size), so a missing key means zero and the dict is never indexed directly.
        """
        net = self._inflight_sym.get(sym, ZERO) + delta
        if net:
            self._inflight_sym[sym] = net
        else:
            self._inflight_sym.pop(sym, None)

    def _done(self, cid: str) -> None:
        """An order is finished: release its in-flight rest and its exit marker."""
        entry = self._inflight.pop(cid, None)
        if entry is not None:
            sym, left = entry
            self._add_inflight(sym, -left)
        sym_exit = self._exit_ids.pop(cid, None)
        if sym_exit is not None and self._pending_exit.get(sym_exit) == cid:
            del self._pending_exit[sym_exit]

    def on_order_event(self, event: OrderEvent) -> None:
        """Feed every broker event here: fills update the ledger, rejects/cancels free state."""
        if isinstance(event, Fill):
            self.on_fill(event)
        elif isinstance(event, OrderRejected | OrderCancelled):
            self._done(event.client_order_id)

    def clear_pending_exits(self) -> None:
        """Forget emitted exits (after a breaker reset) so live positions get fresh ones."""
        self._pending_exit.clear()
        self._exit_ids.clear()

    def inflight_qty(self, symbol: str) -> Decimal:
        """Signed quantity approved for ``symbol`` and not yet filled, cancelled or rejected."""
        return self._inflight_sym.get(symbol, ZERO)

    # ------------------------------------------------------------------ halts and score

    def check_halt(self, *, utc_day: int) -> str | None:
        """Return ``"daily_loss"`` or ``"drawdown"`` when trading must stop, else None.

        Args:
            utc_day: the current UTC day number (e.g. ``int(ts // 86400)``); the first call on a
                new day records the day's starting net P&L (realized + unrealized − fees).
        """
        if self._day != utc_day:
            self._day = utc_day
            self._day_start = self.portfolio.net_pnl_usd()
        halt = self._halt_state()
        return None if halt is None else halt[0]

    def risk_score(self) -> float:
        """max(exposure, open-position, daily-loss, drawdown utilisation), clamped to [0, 1]."""
        lim = self.limits
        pf = self.portfolio
        ratios = [
            float(pf.exposure_usd() / lim.max_total_exposure_usd)
            if lim.max_total_exposure_usd else 0.0,
            pf.open_position_count() / lim.max_open_positions if lim.max_open_positions else 0.0,
            float(max(self._day_loss(), ZERO) / lim.daily_loss_limit_usd)
            if lim.daily_loss_limit_usd else 0.0,
            float(pf.drawdown() / lim.max_drawdown) if lim.max_drawdown else 0.0,
        ]
        return min(1.0, max(0.0, *ratios))

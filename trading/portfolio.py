"""Portfolio and ledger: balances, positions, realized/unrealized P&L, fees, drawdown.

Everything is ``Decimal`` and exact. Balances move by the fill's own numbers (base ± qty, quote
∓ price·qty, fee debited in its currency), and realized P&L uses **FIFO lots**: each closing fill
matches the oldest open lots, so every P&L figure is a sum of products of the fills' decimals
and an independent recomputation from the fill list gives the same result to the last digit
(``tests/test_portfolio.py`` checks that with hypothesis). The position's average entry price is
``cost / qty`` of its open lots; it is reported and used by the stop-loss/take-profit rules but
never fed back into the ledger, which is why the ledger stays exact. Arithmetic uses the current
decimal context (28 significant digits by default), ample for prices and lot sizes of real pairs.

Positions are per symbol and netted across strategies (one account). A closing fill's realized
P&L is attributed to the fill's strategy. A sell with no long position opens a short position:
the ledger does not forbid it (spot balances come from the initial holdings); the paper matcher
is what refuses to sell base currency the account does not have.

USD conversion rule (``usd_rate``), first match wins, for a currency X:

1. X is one of ``usd_equivalents`` → 1.
2. a mark of ``X/U`` for a USD equivalent U → that mark.
3. X is a key of ``pegged`` (``USDT`` → ``USD``) → the rate of its peg target (1 for USD).
4. a mark of ``X/P`` for a pegged currency P → mark × rate(P)  (``SOL/USDT`` counts as USD).
5. a mark of ``X/C`` for a cross currency C (``BTC`` by default) → mark × rate(C), where rate(C)
   is found by steps 1-4 only (one hop, no chains).
6. otherwise X has no USD price: it counts as 0 in :meth:`Portfolio.equity_usd` and is listed by
   :meth:`Portfolio.unpriced_currencies`; the high-water mark is not moved while a non-zero
   balance is unpriced, so a missing mark never shows up as a drawdown.

Amounts held in a non-USD quote (realized P&L of ``ETH/BTC`` is in BTC) are converted at the
*current* rate when reported in USD.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from decimal import Decimal

from protocol.instruments import PairInfo
from protocol.messages import Fill, Side

from ._portfolio_lots import ZERO, _add, _amounts, _Lot, _Position, _Strategy
from ._portfolio_records import Amounts as Amounts
from ._portfolio_records import LotRecord as LotRecord
from ._portfolio_records import PortfolioSnapshot as PortfolioSnapshot
from ._portfolio_records import Position as Position
from ._portfolio_records import PositionRecord as PositionRecord
from ._portfolio_records import StrategyRecord as StrategyRecord
from ._portfolio_records import StrategyStats as StrategyStats

# enum members bound once: ``Side.BUY`` costs ~60 ns a lookup, a global ~8 (the fill path)
_BUY = Side.BUY

__all__ = [
    "DrawdownNotTracked",
    "LotRecord",
    "Portfolio",
    "PortfolioSnapshot",
    "Position",
    "PositionRecord",
    "StrategyRecord",
    "StrategyStats",
]

ONE = Decimal(1)


class DrawdownNotTracked(RuntimeError):
    """A drawdown figure was asked of a portfolio whose tracking was stopped."""


# --------------------------------------------------------------------------- the portfolio


class Portfolio:
    """The account's ledger. Not thread-safe; one owner (the risk actor or the backtest loop).

    Args:
        initial_balances: currency → amount at the start.
        usd_equivalents: currencies worth exactly one USD.
        pegged: currency → the currency it is treated as (stablecoins).
        cross: currencies used as a one-hop bridge to USD (``X/BTC × BTC/USD``).
    """

    def __init__(
        self,
        initial_balances: Mapping[str, Decimal],
        *,
        usd_equivalents: Iterable[str] = ("USD",),
        pegged: Mapping[str, str] | None = None,
        cross: Iterable[str] = ("BTC",),
    ) -> None:
        self._usd = tuple(usd_equivalents)
        self._pegged = dict({"USDT": "USD", "USDC": "USD"} if pegged is None else pegged)
        for src, dst in self._pegged.items():
            if dst in self._pegged or dst == src:
                raise ValueError(f"peg target of {src} must not itself be pegged: {dst}")
        self._cross = tuple(cross)
        self._balances: dict[str, Decimal] = {k: Decimal(v) for k, v in initial_balances.items()}
        self._positions: dict[str, _Position] = {}
        self._open: dict[str, _Position] = {}
        self._strategies: dict[str, _Strategy] = {}
        self._marks: dict[str, Decimal] = {}
        self._realized: dict[str, Decimal] = {}  # by quote currency
        self._fees: dict[str, Decimal] = {}  # by fee currency
        self._paths: dict[str, tuple[tuple[str, ...], str | None, tuple[tuple[str, str], ...],
                                     tuple[tuple[str, str], ...]]] = {}
        self._hwm: Decimal | None = None
        self._equity: Decimal | None = None  # at the last high-water update
        self._max_dd = ZERO
        self._fills = 0
        # Speed (a backtest marks on every candle), without changing a single result:
        # * usd_rate(ccy) is cached until a mark its computation read (``_reads``: the marks
        #   it found and the ones it looked for and missed) is written;
        # * a mark of a symbol no non-zero balance's rate read (not in ``_relevant``) cannot
        #   change the equity, so the high-water update (idempotent on an unchanged state) is
        #   skipped; ``_hwm_stale`` forces it after carry_high_water(). Which marks a rate
        #   reads depends only on which marks exist, so ``_relevant`` is recomputed when the
        #   balances move or a symbol gets its first mark.
        self._rates: dict[str, Decimal | None] = {}
        self._reads: dict[str, tuple[str, ...]] = {}  # ccy -> the marks its cached rate read
        # symbol -> ccys whose cached rate read it (a superset: stale entries only cost an
        # extra recomputation)
        self._dependents: dict[str, set[str]] = {}
        self._relevant: frozenset[str] | None = None  # None: recompute from the balances
        self._hwm_stale = False
        self._tracking = True  # see stop_drawdown_tracking()
        self._update_hwm()

    # ------------------------------------------------------------------ conversion

    def _path(self, ccy: str) -> tuple[tuple[str, ...], str | None, tuple[tuple[str, str], ...],
                                       tuple[tuple[str, str], ...]]:
        path = self._paths.get(ccy)
        if path is None:
            direct = tuple(f"{ccy}/{u}" for u in self._usd)
            peg = self._pegged.get(ccy)
            via_peg = tuple((f"{ccy}/{p}", p) for p in self._pegged if p != ccy)
            via_cross = tuple((f"{ccy}/{c}", c) for c in self._cross if c != ccy)
            path = (direct, peg, via_peg, via_cross)
            self._paths[ccy] = path
        return path

    def usd_rate(self, ccy: str, *, _cross: bool = True) -> Decimal | None:
        """The USD value of one unit of ``ccy`` per the module's conversion rule, or None."""
        if _cross:
            rates = self._rates
            if ccy in rates:
                return rates[ccy]
            reads: list[str] = []
            r = rates[ccy] = self._rate(ccy, True, reads)
            self._reads[ccy] = tuple(reads)
            dependents = self._dependents
            for sym in reads:
                who = dependents.get(sym)
                if who is None:
                    dependents[sym] = {ccy}
                else:
                    who.add(ccy)
            return r
        return self._rate(ccy, False, [])

    def _rate(self, ccy: str, _cross: bool, reads: list[str]) -> Decimal | None:
        """``ccy``'s rate; appends to ``reads`` every mark looked up (found or not)."""
        if ccy in self._usd:
            return ONE
        direct, peg, via_peg, via_cross = self._path(ccy)
        marks = self._marks
        for sym in direct:
            reads.append(sym)
            m = marks.get(sym)
            if m is not None:
                return m
        if peg is not None:
            return self._rate(peg, False, reads)
        for sym, via in via_peg:
            reads.append(sym)
            m = marks.get(sym)
            if m is not None:
                r = self._rate(via, False, reads)
                if r is not None:
                    return m * r
        if _cross:
            for sym, via in via_cross:
                reads.append(sym)
                m = marks.get(sym)
                if m is not None:
                    r = self._rate(via, False, reads)
                    if r is not None:
                        return m * r
        return None

    def _to_usd(self, book: Mapping[str, Decimal]) -> Decimal:
        total = ZERO
        for ccy, amount in book.items():
            if amount:
                r = self.usd_rate(ccy)
                if r is not None:
                    total += amount * r
        return total

    # ------------------------------------------------------------------ updates

    def mark(self, symbol: str, price: Decimal) -> None:
        """Set the mark (mid) of ``symbol`` and update the high-water mark and drawdown."""
        marks = self._marks
        if symbol not in marks:
            # a first mark can only shorten a rate's lookups (a stale set is a superset):
            # recomputed to stay tight
            self._relevant = None
        marks[symbol] = price
        dependents = self._dependents.pop(symbol, None)
        if dependents is not None:
            rates = self._rates
            for ccy in dependents:
                rates.pop(ccy, None)
        if not self._tracking:
            return
        relevant = self._relevant
        if relevant is None:
            relevant = self._relevant = self._relevant_symbols()
        if symbol in relevant or self._hwm_stale:
            self._update_hwm()

    def relevant_symbols(self) -> frozenset[str]:
        """The symbols whose mark can move the equity now (the others' marks cannot)."""
        relevant = self._relevant
        if relevant is None:
            relevant = self._relevant = self._relevant_symbols()
        return relevant

    def equity_bound(self, highs: Mapping[str, Decimal]) -> Decimal | None:
        """An upper bound of the equity while each symbol in ``highs`` is marked anywhere at or
        below its value (and the others stay as they are), or None when there is none.

        Every rate is a product of marks and every counted balance is positive, so the equity
        is non-decreasing in each mark: the equity at the highs bounds it. A negative balance
        breaks that (None). Nothing is cached or changed.
        """
        saved_marks, saved_rates = self._marks, self._rates
        self._marks = {**saved_marks, **highs}
        self._rates = {}
        try:
            total = ZERO
            for ccy, amount in self._balances.items():
                if amount:
                    if amount < 0:
                        return None
                    r = self._rate(ccy, True, [])
                    if r is not None:
                        total += amount * r
            return total
        finally:
            self._marks, self._rates = saved_marks, saved_rates

    def _relevant_symbols(self) -> frozenset[str]:
        out: set[str] = set()
        for ccy, amount in self._balances.items():
            if amount:
                self.usd_rate(ccy)  # cached, with the marks it read
                out.update(self._reads[ccy])
        return frozenset(out)

    def _set_marks(self, marks: dict[str, Decimal]) -> None:
        self._marks = marks
        self._rates.clear()
        self._dependents.clear()
        self._relevant = None

    def apply_fill(self, fill: Fill, pair: PairInfo) -> Decimal:
        """Book one fill: balances, the symbol's FIFO lots, realized P&L, fees, stats.

        A symbol with no mark yet is marked at the fill price (so equity can be computed);
        an existing mark is left alone (marks are mids, set by :meth:`mark`).

        Returns:
            The realized P&L of this fill in the quote currency (gross of fees).
        """
        qty = fill.qty
        price = fill.price
        notional = price * qty
        base = pair.base
        quote = pair.quote
        bal = self._balances
        fee_ccy = fill.fee_currency
        # which balances are zero: the relevant marks (_relevant) change only with that
        zeros = (not bal.get(base), not bal.get(quote), not bal.get(fee_ccy))
        if fill.side is _BUY:
            signed = qty
            bal[base] = bal.get(base, ZERO) + qty
            bal[quote] = bal.get(quote, ZERO) - notional
        else:
            signed = -qty
            bal[base] = bal.get(base, ZERO) - qty
            bal[quote] = bal.get(quote, ZERO) + notional
        symbol = fill.symbol
        pos = self._positions.get(symbol)
        if pos is None:
            pos = self._positions[symbol] = _Position(symbol, base, quote)
        strat = self._strategies.get(fill.strategy)
        if strat is None:
            strat = self._strategies[fill.strategy] = _Strategy()
        fee = fill.fee
        if fee:
            bal[fee_ccy] = bal.get(fee_ccy, ZERO) - fee
            for book in (self._fees, pos.fees, strat.fees):  # _add, inlined (every fill)
                book[fee_ccy] = book.get(fee_ccy, ZERO) + fee
        realized, net = pos.apply(signed, price, fee if fee_ccy == quote else ZERO)
        pos.trades += 1
        strat.trades += 1
        if net is not None:
            _add(self._realized, quote, realized)
            _add(strat.realized, quote, realized)
            if net > 0:
                strat.wins += 1
            elif net < 0:
                strat.losses += 1
        if pos.qty:
            self._open[symbol] = pos
        else:
            self._open.pop(symbol, None)
        self._fills += 1
        if symbol not in self._marks:
            self._marks[symbol] = price
            for ccy in self._dependents.pop(symbol, ()):
                self._rates.pop(ccy, None)
            self._relevant = None  # a first mark (see mark())
        elif zeros != (not bal.get(base), not bal.get(quote), not bal.get(fee_ccy)):
            self._relevant = None  # a balance became zero or stopped being zero
        if self._tracking:
            self._update_hwm()
        return realized

    def _update_hwm(self) -> None:
        self._hwm_stale = False
        total = ZERO
        rates = self._rates  # usd_rate's cache, read inline: this runs on every mark
        for ccy, amount in self._balances.items():
            if amount:
                r = rates[ccy] if ccy in rates else self.usd_rate(ccy)
                if r is None:
                    return  # an unpriced holding: do not move the high-water mark on guesswork
                total += amount * r
        self._equity = total
        hwm = self._hwm
        if hwm is None or total > hwm:
            self._hwm = total
        elif hwm > 0:
            dd = (hwm - total) / hwm
            if dd > self._max_dd:
                self._max_dd = dd

    # ------------------------------------------------------------------ queries

    def balance(self, ccy: str) -> Decimal:
        return self._balances.get(ccy, ZERO)

    def balances(self) -> dict[str, Decimal]:
        """A copy of the balances by currency."""
        return dict(self._balances)

    def mark_price(self, symbol: str) -> Decimal | None:
        return self._marks.get(symbol)

    def position_qty(self, symbol: str) -> Decimal:
        """Signed position of ``symbol`` (0 when flat). Cheap; for hot paths."""
        pos = self._open.get(symbol)
        return pos.qty if pos is not None else ZERO

    def avg_entry(self, symbol: str) -> Decimal | None:
        pos = self._open.get(symbol)
        return pos.avg if pos is not None else None

    def _view(self, pos: _Position) -> Position:
        m = self._marks.get(pos.symbol)
        return Position(
            symbol=pos.symbol, base=pos.base, quote=pos.quote, qty=pos.qty,
            avg_entry_price=pos.avg, cost=pos.cost, realized=pos.realized,
            fees=_amounts(pos.fees), trades=pos.trades, mark=m,
            unrealized=None if m is None else pos.qty * m - pos.cost,
        )

    def position(self, symbol: str) -> Position | None:
        """The position of ``symbol`` (also when flat, if it ever traded), or None."""
        pos = self._positions.get(symbol)
        return None if pos is None else self._view(pos)

    def open_positions(self) -> tuple[Position, ...]:
        """Non-flat positions, in the order they were (re)opened."""
        return tuple(self._view(p) for p in self._open.values())

    def open_position_count(self) -> int:
        return len(self._open)

    def open_symbols(self) -> tuple[str, ...]:
        return tuple(self._open)

    def equity_usd(self) -> Decimal:
        """Σ balance × USD rate over priced currencies (unpriced ones count as 0)."""
        return self._to_usd(self._balances)

    def unpriced_currencies(self) -> tuple[str, ...]:
        return tuple(c for c, a in self._balances.items() if a and self.usd_rate(c) is None)

    def realized_pnl_usd(self) -> Decimal:
        """Realized P&L, gross of fees, converted at current rates."""
        return self._to_usd(self._realized)

    def realized_pnl(self) -> dict[str, Decimal]:
        """Realized P&L by quote currency (exact, no conversion)."""
        return dict(self._realized)

    def fees(self) -> dict[str, Decimal]:
        """Fees paid by fee currency (exact, no conversion)."""
        return dict(self._fees)

    def fees_usd(self) -> Decimal:
        return self._to_usd(self._fees)

    def unrealized_pnl_usd(self) -> Decimal:
        """Σ (qty × mark − cost) × rate(quote) over open positions with a mark and a rate."""
        total = ZERO
        marks = self._marks
        for sym, pos in self._open.items():
            m = marks.get(sym)
            if m is not None:
                r = self.usd_rate(pos.quote)
                if r is not None:
                    total += (pos.qty * m - pos.cost) * r
        return total

    def net_pnl_usd(self) -> Decimal:
        """Realized + unrealized − fees, in USD at current rates."""
        return self.realized_pnl_usd() + self.unrealized_pnl_usd() - self.fees_usd()

    def exposure_usd(self) -> Decimal:
        """Σ |qty| × mark × rate(quote) over open positions (unmarked ones at average entry)."""
        total = ZERO
        marks = self._marks
        for sym, pos in self._open.items():
            m = marks.get(sym)
            r = self.usd_rate(pos.quote)
            if r is not None:
                total += abs(pos.qty) * (m if m is not None else pos.avg or ZERO) * r
        return total

    def position_value_usd(self, symbol: str, qty: Decimal, price: Decimal | None = None
                           ) -> Decimal | None:
        """|qty| × price (default: the mark) × rate(quote of symbol), or None if unpriced."""
        if price is None:
            price = self._marks.get(symbol)
            if price is None:
                return None
        quote = symbol.partition("/")[2]
        r = self.usd_rate(quote)
        return None if r is None else abs(qty) * price * r

    def carry_high_water(self, value: Decimal | None) -> None:
        """Keep a high-water mark from before a restart (drawdown survives restarts)."""
        if value is not None and (self._hwm is None or value > self._hwm):
            self._hwm = value
            self._hwm_stale = True  # the next mark re-measures the drawdown from it

    def stop_drawdown_tracking(self) -> None:
        """Stop updating the high-water mark and drawdown on every mark and fill.

        For a backtest whose drawdown nothing reads any more: it runs without the risk engine
        (its reports measure drawdown on the equity samples), or its breaker has latched for
        the rest of the run. Recomputing the equity on every mark is most of a mark's cost.
        Afterwards :attr:`high_water_usd`, :meth:`drawdown` and :meth:`max_drawdown` raise
        :class:`DrawdownNotTracked` rather than answer with a stale figure.
        """
        self._tracking = False

    @property
    def tracks_drawdown(self) -> bool:
        return self._tracking

    def _tracked(self) -> None:
        if not self._tracking:
            raise DrawdownNotTracked("this portfolio's drawdown tracking was stopped "
                                     "(stop_drawdown_tracking)")

    @property
    def high_water_usd(self) -> Decimal | None:
        self._tracked()
        return self._hwm

    def drawdown(self) -> Decimal:
        """(high-water − equity) / high-water as of the last fully priced mark/fill, ≥ 0."""
        self._tracked()
        hwm, eq = self._hwm, self._equity
        if hwm is None or eq is None or hwm <= 0 or eq >= hwm:
            return ZERO
        return (hwm - eq) / hwm

    def max_drawdown(self) -> Decimal:
        self._tracked()
        return self._max_dd

    @property
    def fill_count(self) -> int:
        return self._fills

    def strategy_stats(self) -> dict[str, StrategyStats]:
        return {
            name: StrategyStats(
                strategy=name, trades=s.trades, wins=s.wins, losses=s.losses,
                realized=_amounts(s.realized), fees=_amounts(s.fees),
                realized_usd=self._to_usd(s.realized), fees_usd=self._to_usd(s.fees),
            )
            for name, s in self._strategies.items()
        }

    # ------------------------------------------------------------------ persistence

    def snapshot(self) -> PortfolioSnapshot:
        """A frozen record of the whole state (restore with :meth:`restore`)."""
        return PortfolioSnapshot(
            balances=_amounts(self._balances),
            positions=tuple(
                PositionRecord(
                    symbol=p.symbol, base=p.base, quote=p.quote,
                    lots=tuple(LotRecord(qty=lot.qty, price=lot.price, fee=lot.fee)
                               for lot in p.lots),
                    realized=p.realized, fees=_amounts(p.fees), trades=p.trades,
                )
                for p in self._positions.values()
            ),
            strategies=tuple(
                StrategyRecord(strategy=n, trades=s.trades, wins=s.wins, losses=s.losses,
                               realized=_amounts(s.realized), fees=_amounts(s.fees))
                for n, s in self._strategies.items()
            ),
            marks=_amounts(self._marks),
            high_water=self._hwm,
            max_drawdown=self._max_dd,
            fills=self._fills,
        )

    @classmethod
    def restore(
        cls,
        snapshot: PortfolioSnapshot,
        *,
        usd_equivalents: Iterable[str] = ("USD",),
        pegged: Mapping[str, str] | None = None,
        cross: Iterable[str] = ("BTC",),
    ) -> Portfolio:
        """Rebuild a portfolio from :meth:`snapshot` output (conversion config is not stored)."""
        self = cls(dict(snapshot.balances), usd_equivalents=usd_equivalents, pegged=pegged,
                   cross=cross)
        self._set_marks(dict(snapshot.marks))
        for rec in snapshot.positions:
            pos = _Position(rec.symbol, rec.base, rec.quote)
            for lr in rec.lots:
                pos.lots.append(_Lot(lr.qty, lr.price, lr.fee))
                pos.qty += lr.qty
                pos.cost += lr.qty * lr.price
            pos.avg = pos.cost / pos.qty if pos.qty else None
            pos.realized = rec.realized
            pos.fees = dict(rec.fees)
            pos.trades = rec.trades
            self._positions[rec.symbol] = pos
            if pos.qty:
                self._open[rec.symbol] = pos
            for ccy, amt in rec.fees:
                _add(self._fees, ccy, amt)
        for srec in snapshot.strategies:
            s = _Strategy()
            s.trades, s.wins, s.losses = srec.trades, srec.wins, srec.losses
            s.realized = dict(srec.realized)
            s.fees = dict(srec.fees)
            self._strategies[srec.strategy] = s
            for ccy, amt in srec.realized:
                _add(self._realized, ccy, amt)
        self._hwm = snapshot.high_water
        self._max_dd = snapshot.max_drawdown
        self._fills = snapshot.fills
        self._equity = None
        self._relevant = None
        self._update_hwm()
        return self

"""Arbitrage on executable book prices: direct (two markets, pegged quotes) and triangular.

Only :class:`~protocol.messages.BookEvent` is used (other events are ignored): the latest book
per symbol is kept, and on each book update every cycle through that symbol is re-priced.

Pricing model (what "executable" means here). A leg converts one currency into another at the
top of the book: buying base with quote costs ``ask * (1 + fee_taker)`` per unit of base;
selling base yields ``bid * (1 - fee_taker)`` of quote per unit. Fees are the pair's taker fee
(every leg is a market order) charged in the quote currency, Kraken's default. A cycle's
multiplier is the product of its legs' rates; it trades when ``multiplier - 1 >= min_profit``
(default 0.2 %, net of all fees).

Size: the start amount is capped by the configured notional (default 100 USD-equivalent,
converted with book mids; a start currency with no route to the notional currency cannot be
sized and is skipped) and by the best-level quantity of every leg, carried through the rates
so all legs stay inside top-of-book depth. Quantities are then rounded down to each pair's lot,
leg after leg (each leg spends what the previous one actually yields), the profit is re-checked
after rounding, and ``ordermin``/``costmin`` are enforced.

* **Triangular**: every 3-pair cycle over three currencies among the configured symbols is
  discovered at construction, in both directions, starting from the preferred start currency
  (``start_currencies`` order, else the currency quoted by both of its pairs, else
  alphabetical). Three legs go out with one ``group_id`` and ``group_size=3``.
* **Direct**: the same base in two markets whose quotes are pegged (``pegs``, e.g.
  ``USDT=USD``, 1:1) or convertible through a third book. Buy where the ask is cheap, sell where
  the bid is rich; two legs, ``group_size=2``. The proceeds stay in the other quote currency:
  with a peg that is the point (it is worth the same); with a conversion book the conversion is
  priced (executable, with its fee) but not traded, and when triangular is enabled the very same
  opportunity is the triangle through that book, which closes the loop, so direct-via-book
  cycles are only built when ``triangular`` is off.

Orders are MARKET signals sized to the top-of-book quantity, with ``reference_price`` the level
they were priced at. We chose market over limit because a Signal has no time-in-force: a limit
that misses would rest on the book and leave the cycle half open, whereas a market order sized
within the best level fills at that price unless the book moved, and a partial or failed leg is
unwound (:func:`~trading.strategies.unwind.plan_unwind`).

Firing discipline: a cycle fires once per change of its books' top levels (the last fired
top-of-book state is remembered per cycle), never while this strategy has legs in flight on
any of its symbols, and when several cycles are profitable on one update the best net profit
goes first and cycles sharing a symbol with a chosen one are skipped (their depth is claimed).
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal

import numpy as np

from protocol.instruments import PairInfo
from protocol.messages import BookEvent, BookLevel, Fill, MarketEvent, Side, Signal

from ._base import NO_SIGNALS, PositionKeeper, QuoteValuer, resolve_symbols
from ._kernel import BookKernel, BookTimeline, TickColumn

__all__ = ["Arbitrage", "ArbitrageConfig", "Cycle", "CycleLeg"]

_ONE = Decimal(1)
_ZERO = Decimal(0)
_INF = float("inf")

# The float screen (Arbitrage.on_market) skips a cycle when its float gross multiplier is below
# (1 + min_profit) * (1 - _SCREEN_MARGIN). Why that never changes a decision: the float gross is
# ~10 correctly rounded IEEE operations on correctly rounded conversions, so it is within
# 10 * 2**-53 (~1.2e-15, relative) of the real-number product; the Decimal gross of _price is
# within ~1e-26 of the same product (28-digit context). A float gross 1e-9 below the threshold
# therefore means a Decimal gross far below it, where _price returns None. Everything closer
# (or outside the screen's domain: a non-positive or non-finite price) is priced exactly.
_SCREEN_MARGIN = 1e-9


@dataclass(frozen=True, slots=True, kw_only=True)
class ArbitrageConfig:
    """Arbitrage parameters (the seed's defaults).

    Attributes:
        symbols: symbols whose books are used; empty means every configured pair.
        min_profit: minimum net profit fraction after all taker fees (inclusive).
        notional: the most to put into one cycle, in ``notional_currency``.
        notional_currency: the currency of ``notional``.
        pegs: ``A=B`` entries: currency A is worth exactly one B (e.g. ``USDT=USD``).
        direct: look for two-market opportunities.
        triangular: look for three-pair cycles.
        start_currencies: preferred start (and end) currency of a triangle, in order.
        pending_timeout_s: forget an unacknowledged leg after this many seconds (0: never).
    """

    symbols: tuple[str, ...] = ()
    min_profit: Decimal = Decimal("0.002")
    notional: Decimal = Decimal(100)
    notional_currency: str = "USD"
    pegs: tuple[str, ...] = ()
    direct: bool = True
    triangular: bool = True
    start_currencies: tuple[str, ...] = ("USD", "EUR", "USDT", "USDC", "GBP", "BTC", "ETH")
    pending_timeout_s: Decimal = Decimal(30)

    def __post_init__(self) -> None:
        if self.min_profit < 0:
            raise ValueError("min_profit must be >= 0")
        if self.notional <= 0:
            raise ValueError("notional must be > 0")
        for peg in self.pegs:
            a, sep, b = peg.partition("=")
            if not sep or not a or not b or a == b:
                raise ValueError(f"peg must look like A=B: {peg!r}")


@dataclass(frozen=True, slots=True)
class CycleLeg:
    """One conversion ``src -> dst`` through ``symbol``; ``emit=False`` only prices it."""

    symbol: str
    side: Side
    src: str
    dst: str
    fee: Decimal
    emit: bool = True


@dataclass(frozen=True, slots=True)
class Cycle:
    """A discovered opportunity shape: ``kind`` is ``"triangular"`` or ``"direct"``."""

    kind: str
    start: str
    legs: tuple[CycleLeg, ...]

    @property
    def symbols(self) -> tuple[str, ...]:
        return tuple(leg.symbol for leg in self.legs)

    @property
    def path(self) -> str:
        return "->".join([self.start, *(leg.dst for leg in self.legs)])


_Screen = tuple["Cycle", tuple[str, ...], tuple[tuple[str, bool, float], ...]]


@dataclass(frozen=True, slots=True)
class _Plan:
    cycle: Cycle
    profit: Decimal
    qtys: tuple[Decimal, ...]
    prices: tuple[Decimal, ...]


def _leg(pair: PairInfo, src: str, dst: str, *, emit: bool = True) -> CycleLeg:
    side = Side.BUY if (pair.quote, pair.base) == (src, dst) else Side.SELL
    return CycleLeg(pair.symbol, side, src, dst, pair.fee_taker, emit)


def _links(pair: PairInfo, a: str, b: str) -> bool:
    return {pair.base, pair.quote} == {a, b}


class Arbitrage:
    """Direct and triangular arbitrage over the latest books; see the module docstring."""

    def __init__(
        self, config: ArbitrageConfig, pairs: Mapping[str, PairInfo], *, name: str = "arbitrage"
    ) -> None:
        self.name = name
        self.explain = True
        self.config = config
        self.symbols = resolve_symbols(name, config.symbols, pairs)
        self._pairs = pairs
        self._pegs = {tuple(p.split("=", 1)) for p in config.pegs}
        usd_pegged = [a if b == config.notional_currency else b for a, b in self._pegs
                      if config.notional_currency in (a, b)]
        self._valuer = QuoteValuer(config.notional_currency, usd_pegged)
        self._keeper = PositionKeeper(name, pairs, config.pending_timeout_s)
        self._books: dict[str, BookEvent] = {}
        self._fired: dict[Cycle, tuple[object, ...]] = {}
        self._groups = 0
        self.cycles = self._discover()
        self._by_symbol: dict[str, list[Cycle]] = {}
        for cycle in self.cycles:
            for sym in dict.fromkeys(cycle.symbols):
                self._by_symbol.setdefault(sym, []).append(cycle)
        self._mid_books: dict[str, BookEvent] = {}
        self._floats: dict[str, tuple[float, float]] = {}  # symbol -> (best bid, best ask)
        # Per symbol, its cycles with what the float screen needs: (cycle, symbols,
        # ((symbol, is_buy, 1 + fee or 1 - fee as float), ...)).
        self._screens: dict[str, list[_Screen]] = {
            sym: [(c, c.symbols, tuple(
                (leg.symbol, leg.side is Side.BUY,
                 float(_ONE + leg.fee) if leg.side is Side.BUY else float(_ONE - leg.fee))
                for leg in c.legs)) for c in cycles]
            for sym, cycles in self._by_symbol.items()
        }
        self._screen_threshold = (1.0 + float(config.min_profit)) * (1.0 - _SCREEN_MARGIN)

    @property
    def keeper(self) -> PositionKeeper:
        """In-flight legs (read-only use)."""
        return self._keeper

    # ------------------------------------------------------------------ discovery

    def _pegged(self, a: str, b: str) -> bool:
        return (a, b) in self._pegs or (b, a) in self._pegs

    def _start_of(self, ccys: Sequence[str], trio_pairs: Sequence[PairInfo]) -> str:
        for pref in self.config.start_currencies:
            if pref in ccys:
                return pref
        quoted = {c: sum(p.quote == c for p in trio_pairs) for c in ccys}
        return sorted(ccys, key=lambda c: (-quoted[c], c))[0]

    def _discover(self) -> list[Cycle]:
        pairs = [self._pairs[s] for s in self.symbols]
        cycles: list[Cycle] = []
        if self.config.triangular:
            for trio in itertools.combinations(pairs, 3):
                ccys = sorted({c for p in trio for c in (p.base, p.quote)})
                if len(ccys) != 3 or any(sum(c in (p.base, p.quote) for p in trio) != 2
                                         for c in ccys):
                    continue
                start = self._start_of(ccys, trio)
                x, y = (c for c in ccys if c != start)
                for path in ((start, x, y, start), (start, y, x, start)):
                    legs = tuple(
                        _leg(next(p for p in trio if _links(p, u, v)), u, v)
                        for u, v in itertools.pairwise(path)
                    )
                    cycles.append(Cycle("triangular", start, legs))
        if self.config.direct:
            for a, b in itertools.permutations(pairs, 2):
                if a.base != b.base or a.quote == b.quote:
                    continue
                # buy on a (spend a.quote), sell on b (receive b.quote), get back to a.quote.
                dlegs = [_leg(a, a.quote, a.base), _leg(b, b.base, b.quote)]
                if not self._pegged(a.quote, b.quote):
                    if self.config.triangular:
                        continue  # the triangle through the conversion book covers it
                    conv = next((p for p in pairs if _links(p, a.quote, b.quote)), None)
                    if conv is None:
                        continue
                    dlegs.append(_leg(conv, b.quote, a.quote, emit=False))
                cycles.append(Cycle("direct", a.quote, tuple(dlegs)))
        return cycles

    # ------------------------------------------------------------------ events

    def on_market(self, event: MarketEvent) -> Sequence[Signal]:
        if type(event) is not BookEvent:
            return NO_SIGNALS
        symbol = event.symbol
        self._store(event)
        screens = self._screens.get(symbol)
        if not screens:
            return NO_SIGNALS
        keeper = self._keeper
        keeper.expire(event.ts_recv)
        pending = keeper._pending  # hot path: the keeper's per-symbol counts
        books = self._books
        floats = self._floats
        threshold = self._screen_threshold
        plans: list[_Plan] = []
        for cycle, cyc_syms, legs in screens:
            if pending and any(s in pending for s in cyc_syms):
                continue
            # Cheap exact-equivalent screen (see _screen): only a cycle that may pay is priced.
            gross = 1.0
            for sym, buy, factor in legs:
                tops = floats.get(sym)
                if tops is None:
                    break
                if buy:
                    ask = tops[1]
                    if not 0.0 < ask < _INF:
                        gross = _INF  # out of the float screen's domain: price it exactly
                        break
                    gross /= ask * factor
                else:
                    bid = tops[0]
                    if not 0.0 < bid < _INF:
                        gross = _INF
                        break
                    gross *= bid * factor
            else:
                if gross < threshold:
                    continue
            if any(sym not in books for sym in cyc_syms):
                continue
            state = self._top_state(cycle)
            if state is None or self._fired.get(cycle) == state:
                continue
            plan = self._price(cycle)
            if plan is not None:
                plans.append(plan)
        if not plans:
            return NO_SIGNALS
        kind_rank = {"triangular": 0, "direct": 1}
        plans.sort(key=lambda p: (-p.profit, kind_rank[p.cycle.kind], p.cycle.path,
                                  p.cycle.symbols))
        out: list[Signal] = []
        claimed: set[str] = set()
        for plan in plans:
            syms = set(plan.cycle.symbols)
            if syms & claimed:
                continue
            claimed |= syms
            self._fired[plan.cycle] = self._top_state(plan.cycle) or ()
            out.extend(self._emit(plan, event.ts_recv))
        return out

    def _store(self, event: BookEvent) -> None:
        """Remember ``event`` as its symbol's latest book (what on_market does first)."""
        symbol = event.symbol
        self._books[symbol] = event
        bids, asks = event.bids, event.asks
        if bids and asks:
            # The valuer needs this book's mid only when a cycle is sized (rare): remember the
            # book and compute the (identical) mid then, see _sync_valuer.
            self._mid_books[symbol] = event
            self._floats[symbol] = (float(bids[0].price), float(asks[0].price))
        else:
            self._floats.pop(symbol, None)

    # ------------------------------------------------------------------ book kernel

    def book_kernel(self) -> BookKernel:
        """The backtest's book-skipping view: the float screen over the whole timeline."""
        return _ArbKernel(self)

    def _sync_valuer(self) -> None:
        valuer = self._valuer
        for sym, book in self._mid_books.items():
            mid = book.mid
            if mid is not None:
                valuer.observe(sym, mid)

    def _top_state(self, cycle: Cycle) -> tuple[object, ...] | None:
        state: list[object] = []
        for leg in cycle.legs:
            book = self._books.get(leg.symbol)
            if book is None or not book.bids or not book.asks:
                return None
            state.append((book.bids[0], book.asks[0]))
        return tuple(state)

    def _level(self, leg: CycleLeg) -> BookLevel:
        book = self._books[leg.symbol]
        return book.asks[0] if leg.side is Side.BUY else book.bids[0]

    def _price(self, cycle: Cycle) -> _Plan | None:
        """Size and price one cycle on the current books; None when it does not pay."""
        levels = [self._level(leg) for leg in cycle.legs]
        # rate: units of dst per unit of src; per_base: base units traded per unit of src.
        rates: list[Decimal] = []
        for leg, lvl in zip(cycle.legs, levels, strict=True):
            if lvl.price <= 0 or lvl.qty <= 0:
                return None
            if leg.side is Side.BUY:
                rates.append(_ONE / (lvl.price * (_ONE + leg.fee)))
            else:
                rates.append(lvl.price * (_ONE - leg.fee))
        gross = _ONE
        for r in rates:
            gross *= r
        if gross - _ONE < self.config.min_profit:
            return None
        # Largest start amount every level can absorb.
        self._sync_valuer()
        cap = self._valuer.notional_in(cycle.start, self.config.notional)
        if cap is None:
            return None
        carried = _ONE  # units of the leg's src per unit of start
        for leg, lvl, r in zip(cycle.legs, levels, rates, strict=True):
            base_per_start = carried * r if leg.side is Side.BUY else carried
            cap = min(cap, lvl.qty / base_per_start)
            carried *= r
        return self._round(cycle, levels, cap)

    def _round(self, cycle: Cycle, levels: Sequence[BookLevel], amount: Decimal) -> _Plan | None:
        """Walk the legs with lot-rounded quantities and re-check the profit."""
        qtys: list[Decimal] = []
        spent: Decimal | None = None
        have = amount
        for leg, lvl in zip(cycle.legs, levels, strict=True):
            pair = self._pairs[leg.symbol]
            p, f = lvl.price, leg.fee
            if leg.side is Side.BUY:
                q = pair.round_qty(have / (p * (_ONE + f)))
                cost, have = q * p * (_ONE + f), q
            else:
                q = pair.round_qty(have)
                cost, have = q, q * p * (_ONE - f)
            if leg.emit and (q <= 0 or q < pair.ordermin or q * p < pair.costmin):
                return None
            if spent is None:
                spent = cost
            qtys.append(q)
        if not spent:
            return None
        profit = have / spent - _ONE
        if profit < self.config.min_profit:
            return None
        return _Plan(cycle, profit, tuple(qtys), tuple(lvl.price for lvl in levels))

    def _emit(self, plan: _Plan, ts_recv: float) -> list[Signal]:
        self._groups += 1
        group_id = f"{self.name}-{self._groups}"
        cycle = plan.cycle
        emitted = [i for i, leg in enumerate(cycle.legs) if leg.emit]
        out = []
        for n, i in enumerate(emitted, 1):
            leg = cycle.legs[i]
            reason = (
                f"{cycle.kind} {cycle.path} net {plan.profit:.6f} >= {self.config.min_profit} "
                f"after fees, leg {n}/{len(emitted)}"
            ) if self.explain else cycle.kind
            out.append(
                self._keeper.signal(
                    leg.symbol, leg.side, plan.qtys[i], price=plan.prices[i], reason=reason,
                    ts_recv=ts_recv, group_id=group_id, group_size=len(emitted),
                )
            )
        return out

    def on_fill(self, fill: Fill) -> None:
        self._keeper.on_fill(fill)

    def on_order_closed(self, client_order_id: str, filled_qty: Decimal) -> None:
        self._keeper.on_order_closed(client_order_id, filled_qty)


class _ArbKernel:
    """Arbitrage over a backtest's synthetic books: on_market's float screen, vectorized.

    ``on_market`` prices a cycle exactly only when its float gross passes the screen
    (``_screen_threshold``, itself 1e-9 below the real threshold); here the same gross is
    computed for every position of the merged timeline from the latest synthetic top of book of
    each leg, with a further 1e-9 of room for the float conversions of those tops (they are
    rounded from the Decimal books in a different order), so every position where on_market
    could price a cycle through the candle's symbol is a candidate. Non-positive or non-finite
    tops are out of the screen's domain and always candidates, as in on_market.
    """

    def __init__(self, strategy: Arbitrage) -> None:
        self._s = strategy

    def candidates(self, timeline: BookTimeline) -> TickColumn:
        s = self._s
        n = timeline.n
        out = np.zeros(n, dtype=bool)
        threshold = s._screen_threshold * (1.0 - _SCREEN_MARGIN)
        tops: dict[str, tuple[TickColumn, TickColumn]] = {}
        seen: set[Cycle] = set()
        for screens in s._screens.values():
            for cycle, cyc_syms, legs in screens:
                if cycle in seen:
                    continue
                seen.add(cycle)
                if any(not timeline.has(sym) for sym in cyc_syms):
                    continue  # a leg with no data never has a book: nothing to price
                gross = np.ones(n)
                outside = np.zeros(n, dtype=bool)
                with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
                    for sym, buy, factor in legs:
                        if sym not in tops:
                            tops[sym] = timeline.latest_tops(sym)
                        bid, ask = tops[sym]
                        px = ask if buy else bid
                        outside |= ~((px > 0.0) & (px < np.inf)) & ~np.isnan(px)
                        gross = gross / (px * factor) if buy else gross * (px * factor)
                    ready = ~np.isnan(gross) | outside
                    for sym in cyc_syms:
                        ready &= ~np.isnan(tops[sym][0])
                    hit = ready & ((gross >= threshold) | outside)
                out |= hit & timeline.is_symbol(cyc_syms)
        return np.flatnonzero(out)

    def act(self, symbol: str, books: Mapping[str, BookEvent]) -> Sequence[Signal]:
        s = self._s
        for sym, book in books.items():
            if sym != symbol:
                s._store(book)
        return s.on_market(books[symbol])

"""The executor's broker for ``--engine actors``: the fast path's candle fill rules, as a Broker.

:class:`CandleBroker` implements ``actors.executor.Broker`` with exactly the semantics of the
fast loop (``backtest._engine``), through the same helpers and the same
:class:`~trading.PaperMatcher`:

* an order from a candle-driven strategy or from risk (stop-loss / take-profit exits) waits for
  its symbol's **next candle** and fills at that candle's open (plus slippage) against a
  one-level, unlimited-depth book, taker fee (:func:`~backtest._engine.open_book`);
* an order from a **book-driven** strategy (arbitrage, and the unwinds the executor plans for
  it) executes at once against the latest synthetic close book of its symbol, leg after leg;
* resting limit orders fill when a later candle's range goes strictly beyond the limit
  (``PaperMatcher.on_candle``, maker fee);
* while the breaker is open, an order that is not reduce-only is rejected (``breaker_open``)
  when it would execute, as in the fast loop.

The broker keeps its own balances, updated by its own fills with the ledger's arithmetic, so a
second leg sees the first leg's fill before the risk actor has booked it: it is the exchange's
view, equal to the ledger's whenever the actors are idle. Event timestamps are the market time
of the last candle or book seen (not ``trio.current_time()``), so the fills are the same
objects the fast loop produces.

:meth:`CandleBroker.has_work` tells the replay, before it delivers a candle, whether the candle
fills anything (an order waiting for the symbol's open, or a resting limit of the symbol that
the range goes strictly beyond), so a candle that fills nothing costs the executor no wake-up.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Mapping
from decimal import Decimal

from protocol.instruments import PairInfo
from protocol.messages import (
    BookEvent,
    CandleEvent,
    Fill,
    MarketEvent,
    OrderEvent,
    OrderRejected,
    OrderRequest,
    OrderType,
    Side,
)
from trading import PaperMatcher

from ._engine import open_book

__all__ = ["CandleBroker"]

_NS = 1_000_000_000
_ZERO = Decimal(0)
_ONE = Decimal(1)
_BPS = Decimal(10_000)


class CandleBroker:
    """A simulated exchange with the candle semantics of the fast backtest path.

    Args:
        pairs: pair metadata by symbol.
        balances: the account's starting balances (the ledger's).
        immediate: names of the book-driven strategies whose orders execute at once.
        halted: True while the trading breaker is open.
        slippage_bps: slippage of next-open fills.
        fill_id_prefix: prefix of exchange order and fill ids (the fast path uses ``"bt"``).
    """

    def __init__(
        self,
        pairs: Mapping[str, PairInfo],
        balances: Mapping[str, Decimal],
        *,
        immediate: Collection[str],
        halted: Callable[[], bool],
        slippage_bps: Decimal = _ZERO,
        fill_id_prefix: str = "bt",
    ) -> None:
        self.pairs = dict(pairs)
        self.balances: dict[str, Decimal] = dict(balances)
        self.matcher = PaperMatcher(self.pairs, fill_id_prefix=fill_id_prefix)
        self._immediate = frozenset(immediate)
        self._halted = halted
        slip = slippage_bps / _BPS
        self._buy_mult = _ONE + slip
        self._sell_mult = _ONE - slip
        self._slip = bool(slip)
        self._books: dict[str, BookEvent] = {}
        self._pending: dict[str, list[OrderRequest]] = {}
        self._resting = False
        # symbol -> (side, limit) of the resting limits, refreshed whenever the matcher's book
        # of resting orders may have changed (every change goes through this broker).
        self._limits: dict[str, list[tuple[Side, Decimal]]] = {}
        self._now = 0.0

    # ------------------------------------------------------------------ queries

    def has_work(self, candle: CandleEvent) -> bool:
        """True when ``candle`` would fill something: an order waiting for its symbol's next
        open, or a resting limit of its symbol that its range goes strictly beyond (the
        matcher's rule, ``PaperMatcher.on_candle``)."""
        sym = candle.symbol
        if sym in self._pending:
            return True
        limits = self._limits.get(sym)
        if limits:
            low, high = candle.low, candle.high
            for side, price in limits:
                if low < price if side is Side.BUY else high > price:
                    return True
        return False

    def pending(self) -> dict[str, int]:
        """Orders still waiting for a next open, counted by symbol."""
        return {sym: len(orders) for sym, orders in self._pending.items()}

    # ------------------------------------------------------------------ Broker protocol

    async def submit(self, order: OrderRequest) -> list[OrderEvent]:
        if order.strategy in self._immediate:
            return self._execute(order, self._books.get(order.symbol))
        # A decision on a closed candle fills at the symbol's next open.
        self._pending.setdefault(order.symbol, []).append(order)
        return []

    async def cancel_all(self, reason: str) -> list[OrderEvent]:
        events = self.matcher.cancel_all(now=self._now, reason=reason)
        self._refresh_resting()
        return list(events)

    def on_market(self, event: MarketEvent) -> list[OrderEvent]:
        if isinstance(event, CandleEvent):
            self._now = event.ts_event_ns / _NS
            out: list[OrderEvent] = []
            orders = self._pending.pop(event.symbol, None)
            if orders:
                book = open_book(event, self._buy_mult, self._sell_mult, self._slip)
                for order in orders:
                    out.extend(self._execute(order, book))
            if self._resting:
                fills = self.matcher.on_candle(event, now=self._now)
                if fills:
                    out.extend(self._settle(fills))
                    self._refresh_resting()
            return out
        if isinstance(event, BookEvent):
            # Synthetic close books: what immediate orders execute against. They never fill
            # resting limits (the fast loop fills those from the candle range only).
            self._now = event.ts_event_ns / _NS
            self._books[event.symbol] = event
        return []

    # ------------------------------------------------------------------ execution

    def _available(self, currency: str) -> Decimal:
        return self.balances.get(currency, _ZERO)

    def _execute(self, order: OrderRequest, book: BookEvent | None) -> list[OrderEvent]:
        if not order.reduce_only and self._halted():
            return [OrderRejected(client_order_id=order.client_order_id, strategy=order.strategy,
                                  symbol=order.symbol, reason="breaker_open", ts=self._now)]
        events = self._settle(self.matcher.submit(order, book, available=self._available,
                                                  now=self._now))
        if order.order_type is OrderType.LIMIT:
            self._refresh_resting()
        return events

    def _refresh_resting(self) -> None:
        # A stale entry could only make has_work say True for nothing (an extra stage); a
        # missing one would make the replay skip a fill, which it detects and fails on.
        open_orders = self.matcher.open_orders()
        limits: dict[str, list[tuple[Side, Decimal]]] = {}
        for oo in open_orders:
            if oo.order.limit_price is not None:
                limits.setdefault(oo.order.symbol, []).append(
                    (oo.order.side, oo.order.limit_price))
        self._limits = limits
        self._resting = bool(open_orders)

    def _settle(self, events: Iterable[OrderEvent]) -> list[OrderEvent]:
        """Book fills into the exchange balances with the ledger's arithmetic."""
        bal = self.balances
        out = list(events)
        for ev in out:
            if isinstance(ev, Fill):
                base, quote = self.pairs[ev.symbol].base, self.pairs[ev.symbol].quote
                notional = ev.price * ev.qty
                if ev.side.sign > 0:
                    bal[base] = bal.get(base, _ZERO) + ev.qty
                    bal[quote] = bal.get(quote, _ZERO) - notional
                else:
                    bal[base] = bal.get(base, _ZERO) - ev.qty
                    bal[quote] = bal.get(quote, _ZERO) + notional
                if ev.fee:
                    bal[ev.fee_currency] = bal.get(ev.fee_currency, _ZERO) - ev.fee
        return out

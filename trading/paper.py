"""Paper fill model: Kraken-like validation, book walking, resting limits, deterministic ids.

:class:`PaperMatcher` is pure logic (no trio, no clock): the executor's PaperBroker and the fast
backtest loop call it with the current book and ``now``, and it returns the events Kraken would
have produced. The rules, each chosen to err on the side of the trader getting *worse* results:

Validation (in this order, Kraken's error strings, PROTOCOL.md §4/§8):

* unknown symbol → ``EQuery:Unknown asset pair``; a ``client_order_id`` that is already open →
  ``EGeneral:Invalid arguments:cl_ord_id``.
* quantity is rounded *down* to ``lot_decimals`` (never up: no accidental size); ≤ 0 before or
  after rounding → ``EGeneral:Invalid arguments:volume``.
* limit orders need a positive ``limit_price`` (``EGeneral:Invalid arguments:price``) that is a
  multiple of the tick (``10**-price_decimals``) → else ``EOrder:Tick size check failed``.
* qty < ``ordermin`` → ``EOrder:Order minimum not met``; qty × price < ``costmin`` →
  ``EOrder:Cost minimum not met`` (price: the limit, or the best opposite level for a market
  order, like Kraken's estimate).
* a market order with no opposite liquidity left → ``EOrder:Insufficient liquidity`` (paper-only
  reason: there is no book to fill against; it keeps the EOrder prefix so the error mapping of
  protocol.kraken treats it as an order rejection).
* funds, net of what this matcher already reserves for resting orders: a buy needs the quote
  cost of its taker fills plus taker fee, plus ``limit × (1 + fee_maker)`` per unit that will
  rest; a sell needs the whole base quantity. Else ``EOrder:Insufficient funds``. Fees are
  charged in the quote currency (Kraken's spot default) and are not rounded.

Execution:

* A market order walks the opposite side level by level and produces **one Fill per level**
  (like Kraken's per-match trades in the ``executions`` stream), each at the level price with
  the taker fee ``price × qty × fee_taker``. When depth runs out the remainder is cancelled
  (``OrderCancelled`` reason ``"ioc_insufficient_depth"``): a market order never rests.
* A limit order that is marketable on arrival takes liquidity the same way, only at levels at or
  better than its limit; the rest rests as a maker order.
* Liquidity consumed from a ``BookEvent`` is remembered per symbol, so a second order against
  the *same* (identical object) book only sees what is left; any new book object for the symbol
  (passed to :meth:`submit` or :meth:`on_book`) resets it, since a fresh book already reflects
  the market after our trades (or their absence).
* A resting limit fills as maker at its own limit price only when the market trades *through*
  it: :meth:`on_book` fills the whole remainder when the best opposite price is strictly better
  than the limit (best ask < buy limit, best bid > sell limit); :meth:`on_trade` fills
  ``min(remaining, trade.qty)`` when a trade prints strictly through the limit;
  :meth:`on_candle` fills the whole remainder when the candle's low (high) is strictly below
  (above) a buy (sell) limit. Touching the limit is not enough: queue position is unknown.

Exchange order ids are ``<prefix>O<n>`` and fill ids ``<prefix>T<n>`` (counters shared across
symbols); every event is stamped with the ``now`` passed in.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from decimal import ROUND_DOWN, Decimal

from protocol.instruments import PairInfo
from protocol.messages import (
    BookEvent,
    BookLevel,
    CandleEvent,
    Fill,
    Liquidity,
    OrderAccepted,
    OrderCancelled,
    OrderRejected,
    OrderRequest,
    OrderType,
    Side,
    TradeEvent,
)

from ._fastinit import fast_constructor

# enum members bound once: ``Side.BUY`` costs ~60 ns a lookup, a global ~8 (the fill path)
_BUY = Side.BUY
_MARKET = OrderType.MARKET
_LIMIT = OrderType.LIMIT
_TAKER = Liquidity.TAKER
_MAKER = Liquidity.MAKER

# Fills and acceptances are built on every execution: see trading._fastinit.
_new_fill = fast_constructor(Fill)
_new_accepted = fast_constructor(OrderAccepted)


__all__ = [
    "REJECT_COST_MIN",
    "REJECT_DUPLICATE",
    "REJECT_FUNDS",
    "REJECT_NO_LIQUIDITY",
    "REJECT_ORDER_MIN",
    "REJECT_PRICE",
    "REJECT_TICK",
    "REJECT_UNKNOWN_PAIR",
    "REJECT_VOLUME",
    "MatcherEvent",
    "OpenOrder",
    "PaperMatcher",
]

REJECT_UNKNOWN_PAIR = "EQuery:Unknown asset pair"
REJECT_DUPLICATE = "EGeneral:Invalid arguments:cl_ord_id"
REJECT_VOLUME = "EGeneral:Invalid arguments:volume"
REJECT_PRICE = "EGeneral:Invalid arguments:price"
REJECT_TICK = "EOrder:Tick size check failed"
REJECT_ORDER_MIN = "EOrder:Order minimum not met"
REJECT_COST_MIN = "EOrder:Cost minimum not met"
REJECT_FUNDS = "EOrder:Insufficient funds"
REJECT_NO_LIQUIDITY = "EOrder:Insufficient liquidity"

CANCEL_IOC = "ioc_insufficient_depth"

MatcherEvent = OrderAccepted | OrderRejected | OrderCancelled | Fill

ZERO = Decimal(0)
ONE = Decimal(1)


@dataclass(frozen=True, slots=True, kw_only=True)
class OpenOrder:
    """A resting order as the matcher sees it."""

    order: OrderRequest
    exchange_order_id: str
    remaining: Decimal


class _Resting:
    __slots__ = ("eid", "order", "per_unit", "remaining", "reserve_ccy")

    def __init__(self, order: OrderRequest, eid: str, remaining: Decimal, reserve_ccy: str,
                 per_unit: Decimal) -> None:
        self.order = order
        self.eid = eid
        self.remaining = remaining
        self.reserve_ccy = reserve_ccy
        self.per_unit = per_unit  # reserved amount per unit of remaining qty


class _Consumed:
    """Liquidity taken from one specific book object, by side and price."""

    __slots__ = ("asks", "bids", "book")

    def __init__(self, book: BookEvent) -> None:
        self.book = book
        self.bids: dict[Decimal, Decimal] = {}
        self.asks: dict[Decimal, Decimal] = {}


class PaperMatcher:
    """Kraken-like paper execution against the current order book.

    Args:
        pairs: symbol → pair metadata (precisions, minimums, fees).
        fill_id_prefix: prefix of the deterministic exchange order and fill ids.
    """

    def __init__(self, pairs: Mapping[str, PairInfo], *, fill_id_prefix: str) -> None:
        self._pairs = dict(pairs)
        self._prefix = fill_id_prefix
        self._n_orders = 0
        self._n_fills = 0
        self._resting: dict[str, dict[str, _Resting]] = {}  # symbol → cl_ord_id → order
        self._by_id: dict[str, _Resting] = {}
        self._reserved: dict[str, Decimal] = {}
        self._consumed: dict[str, _Consumed] = {}

    # ------------------------------------------------------------------ queries

    def open_orders(self) -> tuple[OpenOrder, ...]:
        return tuple(
            OpenOrder(order=r.order, exchange_order_id=r.eid, remaining=r.remaining)
            for r in self._by_id.values()
        )

    def reserved(self, ccy: str) -> Decimal:
        """Funds held by resting orders in ``ccy`` (quote for buys, base for sells)."""
        return self._reserved.get(ccy, ZERO)

    # ------------------------------------------------------------------ helpers

    def _reject(self, order: OrderRequest, reason: str, now: float) -> list[MatcherEvent]:
        return [OrderRejected(client_order_id=order.client_order_id, strategy=order.strategy,
                              symbol=order.symbol, reason=reason, ts=now)]

    def _fill(self, order: OrderRequest, price: Decimal, qty: Decimal, fee_rate: Decimal,
              quote: str, liquidity: Liquidity, now: float, ts_event_ns: int,
              done: bool) -> Fill:
        self._n_fills += 1
        return _new_fill(
            fill_id=f"{self._prefix}T{self._n_fills}", client_order_id=order.client_order_id,
            strategy=order.strategy, symbol=order.symbol, side=order.side, price=price, qty=qty,
            fee=price * qty * fee_rate, fee_currency=quote, liquidity=liquidity, ts=now,
            ts_event_ns=ts_event_ns, order_done=done,
        )

    def _consumption(self, book: BookEvent) -> _Consumed:
        c = self._consumed.get(book.symbol)
        if c is None or c.book is not book:
            c = self._consumed[book.symbol] = _Consumed(book)
        return c

    @staticmethod
    def _walk(levels: tuple[BookLevel, ...], used: dict[Decimal, Decimal], qty: Decimal,
              limit: Decimal | None, is_buy: bool) -> list[tuple[Decimal, Decimal]]:
        takes: list[tuple[Decimal, Decimal]] = []
        remaining = qty
        for lvl in levels:
            p = lvl.price
            if limit is not None and (p > limit if is_buy else p < limit):
                break
            avail = lvl.qty - used.get(p, ZERO) if used else lvl.qty
            if avail <= 0:
                continue
            take = avail if avail < remaining else remaining
            takes.append((p, take))
            remaining -= take
            if not remaining:
                break
        return takes

    # ------------------------------------------------------------------ orders

    def submit(
        self,
        order: OrderRequest,
        book: BookEvent | None,
        *,
        available: Callable[[str], Decimal],
        now: float,
    ) -> list[MatcherEvent]:
        """Validate and execute one order against ``book``.

        Args:
            order: the approved order.
            book: the latest book of ``order.symbol`` (None if none yet).
            available: currency → ledger balance, *not* net of this matcher's reservations
                (the matcher subtracts those itself).
            now: timestamp for the events.

        Returns:
            ``[OrderRejected]``, or ``[OrderAccepted, Fill..., OrderCancelled?]``.
        """
        checked = self._check(order, now)
        if isinstance(checked, list):
            return checked
        pair, qty = checked
        is_buy = order.side is _BUY
        limit: Decimal | None = None
        if order.order_type is _LIMIT:
            limit = order.limit_price
            if limit is None or not limit.is_finite() or limit <= 0:
                return self._reject(order, REJECT_PRICE, now)
            if limit.normalize().as_tuple().exponent < -pair.price_decimals:  # type: ignore[operator]
                return self._reject(order, REJECT_TICK, now)
        if qty < pair.ordermin:
            return self._reject(order, REJECT_ORDER_MIN, now)
        levels: tuple[BookLevel, ...] = ()
        used: dict[Decimal, Decimal] = {}
        consumed: _Consumed | None = None
        if book is not None:
            consumed = self._consumption(book)
            levels, used = (book.asks, consumed.asks) if is_buy else (book.bids, consumed.bids)
        takes = self._walk(levels, used, qty, limit, is_buy) if levels else []
        if limit is None:
            if not takes:
                return self._reject(order, REJECT_NO_LIQUIDITY, now)
            ref_price = takes[0][0]
        else:
            ref_price = limit
        if pair.costmin and qty * ref_price < pair.costmin:
            return self._reject(order, REJECT_COST_MIN, now)

        taken = ZERO
        notional = ZERO
        for p, q in takes:
            taken += q
            notional += p * q
        rest = qty - taken if limit is not None else ZERO
        if is_buy:
            fund_ccy = pair.quote
            per_unit = limit * (ONE + pair.fee_maker) if limit is not None else ZERO
            need = notional * (ONE + pair.fee_taker) + rest * per_unit
        else:
            fund_ccy = pair.base
            per_unit = ONE
            need = qty if limit is not None else taken
        if need > available(fund_ccy) - self._reserved.get(fund_ccy, ZERO):
            return self._reject(order, REJECT_FUNDS, now)

        ts_ns = book.ts_event_ns if book is not None else 0
        for p, q in takes:
            used[p] = used.get(p, ZERO) + q
        events, eid = self._accept(order, pair, takes, now, ts_ns, taken == qty)
        if limit is None:
            if taken < qty:
                events.append(OrderCancelled(client_order_id=order.client_order_id,
                                             reason=CANCEL_IOC, ts=now))
        elif rest > 0:
            r = _Resting(order, eid, rest, fund_ccy, per_unit)
            self._by_id[order.client_order_id] = r
            self._resting.setdefault(order.symbol, {})[order.client_order_id] = r
            self._reserved[fund_ccy] = self._reserved.get(fund_ccy, ZERO) + rest * per_unit
        return events

    def fill_at(self, order: OrderRequest, price: Decimal, *,
                available: Callable[[str], Decimal], now: float,
                ts_event_ns: int) -> list[MatcherEvent]:
        """A MARKET order filled whole at ``price`` (unlimited depth): a backtest next-open fill.

        The same checks, fees and fill as :meth:`submit` on a one-level book of unlimited
        depth at ``price`` (the backtest's synthetic next-open book), without building the
        book; the engine parity tests hold the two to the same trade log. Returns the fill, or
        the rejection: not the ``OrderAccepted`` before the fill, which the backtest has no
        use for (its exchange order id is still used up, so later ids are those of submit).

        Raises:
            ValueError: ``order`` is not a market order.
        """
        if order.order_type is not _MARKET:
            raise ValueError("fill_at takes market orders only")
        checked = self._check(order, now)
        if isinstance(checked, list):
            return checked
        pair, qty = checked
        if qty < pair.ordermin:
            return self._reject(order, REJECT_ORDER_MIN, now)
        notional = price * qty
        if pair.costmin and notional < pair.costmin:
            return self._reject(order, REJECT_COST_MIN, now)
        if order.side is _BUY:
            fund_ccy = pair.quote
            need = notional * (ONE + pair.fee_taker)
        else:
            fund_ccy = pair.base
            need = qty
        if need > available(fund_ccy) - self._reserved.get(fund_ccy, ZERO):
            return self._reject(order, REJECT_FUNDS, now)
        self._n_orders += 1
        return [self._fill(order, price, qty, pair.fee_taker, pair.quote, _TAKER, now,
                           ts_event_ns, True)]

    def _check(self, order: OrderRequest, now: float
               ) -> tuple[PairInfo, Decimal] | list[MatcherEvent]:
        """The pair and the lot-rounded quantity, or the rejection (checks every order takes)."""
        pair = self._pairs.get(order.symbol)
        if pair is None:
            return self._reject(order, REJECT_UNKNOWN_PAIR, now)
        if order.client_order_id in self._by_id:
            return self._reject(order, REJECT_DUPLICATE, now)
        qty = order.qty
        if qty <= 0:
            return self._reject(order, REJECT_VOLUME, now)
        # same_quantum: the usual quantity already has the lot's exponent (cheaper than as_tuple)
        if not qty.same_quantum(pair.lot) and qty.as_tuple().exponent < -pair.lot_decimals:  # type: ignore[operator]
            qty = qty.quantize(pair.lot, rounding=ROUND_DOWN)
            if qty <= 0:
                return self._reject(order, REJECT_VOLUME, now)
        return pair, qty

    def _accept(self, order: OrderRequest, pair: PairInfo,
                takes: Sequence[tuple[Decimal, Decimal]], now: float, ts_ns: int,
                complete: bool) -> tuple[list[MatcherEvent], str]:
        """``[OrderAccepted, Fill per take]`` (taker fills) and the exchange order id;
        ``complete``: the takes fill the whole order (its last fill says so)."""
        self._n_orders += 1
        eid = f"{self._prefix}O{self._n_orders}"
        events: list[MatcherEvent] = [
            _new_accepted(client_order_id=order.client_order_id, exchange_order_id=eid, ts=now)
        ]
        last = len(takes) - 1
        for k, (p, q) in enumerate(takes):
            events.append(self._fill(order, p, q, pair.fee_taker, pair.quote, _TAKER,
                                     now, ts_ns, complete and k == last))
        return events, eid

    def _release(self, r: _Resting, qty: Decimal) -> None:
        self._reserved[r.reserve_ccy] -= qty * r.per_unit

    def _remove(self, r: _Resting) -> None:
        del self._by_id[r.order.client_order_id]
        by_sym = self._resting[r.order.symbol]
        del by_sym[r.order.client_order_id]
        if not by_sym:
            del self._resting[r.order.symbol]

    def cancel(self, client_order_id: str, *, now: float, reason: str = "cancelled"
               ) -> list[OrderCancelled]:
        """Cancel one resting order; ``[]`` when it is not open (already filled or unknown)."""
        r = self._by_id.get(client_order_id)
        if r is None:
            return []
        self._release(r, r.remaining)
        self._remove(r)
        return [OrderCancelled(client_order_id=client_order_id, reason=reason, ts=now)]

    def cancel_all(self, *, now: float, reason: str = "cancel_all") -> list[OrderCancelled]:
        """Cancel every resting order, oldest first."""
        out: list[OrderCancelled] = []
        for cid in list(self._by_id):
            out.extend(self.cancel(cid, now=now, reason=reason))
        return out

    # ------------------------------------------------------------------ market data

    def _maker_fill(self, r: _Resting, qty: Decimal, now: float, ts_ns: int) -> Fill:
        pair = self._pairs[r.order.symbol]
        assert r.order.limit_price is not None  # resting orders are limits
        fill = self._fill(r.order, r.order.limit_price, qty, pair.fee_maker, pair.quote,
                          _MAKER, now, ts_ns, qty == r.remaining)
        self._release(r, qty)
        r.remaining -= qty
        if not r.remaining:
            self._remove(r)
        return fill

    def on_book(self, book: BookEvent, *, now: float) -> list[Fill]:
        """Take a new book: reset consumed liquidity, fill resting limits it trades through."""
        self._consumed.pop(book.symbol, None)
        resting = self._resting.get(book.symbol)
        if not resting:
            return []
        bid = book.bids[0].price if book.bids else None
        ask = book.asks[0].price if book.asks else None
        out: list[Fill] = []
        for r in list(resting.values()):
            lim = r.order.limit_price
            assert lim is not None
            if (ask is not None and ask < lim) if r.order.side is _BUY else (
                    bid is not None and bid > lim):
                out.append(self._maker_fill(r, r.remaining, now, book.ts_event_ns))
        return out

    def on_trade(self, trade: TradeEvent, *, now: float) -> list[Fill]:
        """Fill resting limits a public trade printed strictly through, up to its size."""
        resting = self._resting.get(trade.symbol)
        if not resting:
            return []
        out: list[Fill] = []
        left = trade.qty
        price = trade.price
        for r in list(resting.values()):
            if left <= 0:
                break
            lim = r.order.limit_price
            assert lim is not None
            if price < lim if r.order.side is _BUY else price > lim:
                q = r.remaining if r.remaining <= left else left
                left -= q
                out.append(self._maker_fill(r, q, now, trade.ts_event_ns))
        return out

    def on_candle(self, candle: CandleEvent, *, now: float) -> list[Fill]:
        """Fill resting limits whose price the candle's range went strictly beyond."""
        resting = self._resting.get(candle.symbol)
        if not resting:
            return []
        out: list[Fill] = []
        for r in list(resting.values()):
            lim = r.order.limit_price
            assert lim is not None
            if candle.low < lim if r.order.side is _BUY else candle.high > lim:
                out.append(self._maker_fill(r, r.remaining, now, candle.ts_event_ns))
        return out

"""Shared plumbing for strategies: the protocol, prices per event, sizing, position bookkeeping.

Nothing here does I/O or imports trio. A strategy is a plain object the actor shell (live, paper,
``--engine actors``) and the fast backtest loop both drive through exactly three calls:
``on_market(event) -> signals``, ``on_fill(fill)`` and ``on_order_closed(client_order_id,
filled_qty)``.

Position bookkeeping (why "intents"): a strategy emits a :class:`~protocol.messages.Signal`
before anyone has assigned a client order id, and the order may take a while to fill. Without a
record of what is in flight, the next tick would enter again. :class:`PositionKeeper` records each
emitted signal as a pending *intent*; fills bind the intent to their ``client_order_id`` (oldest
unbound intent with the same symbol and side, FIFO, because risk and the executor keep signal
order) and shrink it; ``on_order_closed`` releases it. An id the keeper has never seen (an order
rejected before any fill, or a risk rejection the shell reports with its own id) releases the
oldest unbound intent. As a last resort an intent expires after ``pending_timeout_s`` seconds of
``ts_recv`` time, so a lost notification cannot freeze a strategy forever.
"""

from __future__ import annotations

import dataclasses
import typing
from collections import deque
from collections.abc import Collection, Iterable, Mapping, Sequence
from decimal import Decimal, InvalidOperation
from typing import Protocol, TypeVar

from protocol.instruments import PairInfo
from protocol.messages import (
    BookEvent,
    CandleEvent,
    Fill,
    MarketEvent,
    OrderType,
    Side,
    Signal,
    TickerEvent,
    TradeEvent,
)

from .._fastinit import fast_constructor

# enum members bound once: ``Side.BUY`` costs ~60 ns a lookup, a global ~8 (the fill path)
_BUY = Side.BUY
_SELL = Side.SELL
_MARKET = OrderType.MARKET

__all__ = [
    "NO_SIGNALS",
    "PRICE_SOURCES",
    "PositionKeeper",
    "PriceFilter",
    "QuoteValuer",
    "Strategy",
    "StrategyConfigError",
    "event_price",
    "parse_config",
    "quiet",
    "resolve_symbols",
    "size_order",
    "split_symbol",
]

RISK_EXIT_STRATEGY = "risk"
"""The ``strategy`` of risk's own exits (``trading.risk.RISK_STRATEGY``); every strategy is
told about their fills."""

NO_SIGNALS: tuple[Signal, ...] = ()
"""The shared empty result: returning it allocates nothing on the hot path."""

_new_signal = fast_constructor(Signal)  # one per decision: see trading._fastinit
_ZERO = Decimal(0)
_TWO = Decimal(2)


class StrategyConfigError(ValueError):
    """A strategy name or parameter is unknown or malformed.

    Attributes:
        strategy: the strategy name the error is about.
        key: the offending parameter (empty for an unknown strategy name).
    """

    def __init__(self, message: str, *, strategy: str, key: str = "") -> None:
        super().__init__(message)
        self.strategy = strategy
        self.key = key


class Strategy(Protocol):
    """What the actor shells and the backtest loop call; see the module docstring."""

    name: str
    symbols: tuple[str, ...]
    # Optional, like the backtest's candle_kernel()/book_kernel(): ``explain``, True by
    # default: a signal's reason carries the figures behind the decision, for the logs and
    # the journal. A backtest's fast path, which reads no reason, sets it False where it is
    # there: the reason is then the rule's name alone; the decision never depends on it.

    def on_market(self, event: MarketEvent) -> Sequence[Signal]: ...

    def on_fill(self, fill: Fill) -> None: ...

    def on_order_closed(self, client_order_id: str, filled_qty: Decimal) -> None: ...


def quiet(strategies: Iterable[object]) -> None:
    """Turn ``explain`` off on every strategy that has one (see :class:`Strategy`): what a
    backtest does, since it reads no signal's reason and their figures cost a tenth of a run."""
    for s in strategies:
        if hasattr(s, "explain"):
            s.explain = False


# --------------------------------------------------------------------------- prices


PRICE_SOURCES = ("auto", "book", "ticker", "trade", "candle")
_KIND = {BookEvent: "book", TickerEvent: "ticker", TradeEvent: "trade", CandleEvent: "candle"}


def event_price(event: MarketEvent) -> Decimal | None:
    """The one price a single-market strategy acts on, or None when the event has none.

    BookEvent -> mid of the best bid and ask; TickerEvent -> last trade (mid when last is 0);
    TradeEvent -> trade price; CandleEvent -> close.
    """
    cls = type(event)
    if cls is CandleEvent:
        return event.close  # type: ignore[union-attr]
    if cls is BookEvent:
        return event.mid  # type: ignore[union-attr]
    if cls is TradeEvent:
        return event.price  # type: ignore[union-attr]
    if cls is TickerEvent:
        t = typing.cast(TickerEvent, event)
        if t.last > 0:
            return t.last
        if t.bid > 0 and t.ask > 0:
            return (t.bid + t.ask) / _TWO
    return None


class PriceFilter:
    """Decides which event kind feeds a symbol's indicator, so samples are never mixed.

    A paper session delivers books, tickers and trades for the same symbol; a lookback of "20
    samples" only means something if all samples are of one kind. ``"auto"`` locks each symbol to
    the first kind it sees; any other source name accepts only that kind.
    """

    __slots__ = ("_locked", "_source")

    def __init__(self, source: str) -> None:
        if source not in PRICE_SOURCES:
            raise ValueError(f"price_source must be one of {PRICE_SOURCES}, got {source!r}")
        self._source = source
        self._locked: dict[str, str] = {}

    def price(self, event: MarketEvent) -> Decimal | None:
        if event.__class__ is CandleEvent:  # hot path of candle backtests
            want = self._source
            if want == "candle" or (want == "auto" and self._locked.setdefault(
                    event.symbol, "candle") == "candle"):
                return event.close
            return None
        kind = _KIND.get(type(event))
        if kind is None:
            return None
        want = self._source
        if want == "auto":
            want = self._locked.setdefault(event.symbol, kind)
        if kind != want:
            return None
        return event_price(event)


# --------------------------------------------------------------------------- sizing


def resolve_symbols(
    strategy: str, wanted: Sequence[str], pairs: Mapping[str, PairInfo]
) -> tuple[str, ...]:
    """The symbols a strategy trades: ``wanted``, or every configured pair when it is empty.

    Raises:
        StrategyConfigError: a wanted symbol has no pair metadata (it could not be sized).
    """
    if not wanted:
        return tuple(sorted(pairs))
    missing = [s for s in wanted if s not in pairs]
    if missing:
        raise StrategyConfigError(
            f"{strategy}: no pair metadata for {', '.join(missing)}", strategy=strategy,
            key="symbols",
        )
    return tuple(dict.fromkeys(wanted))


def split_symbol(symbol: str) -> tuple[str, str]:
    """``"BTC/USD"`` -> ``("BTC", "USD")`` (WS v2 names; the slash is mandatory)."""
    base, sep, quote = symbol.partition("/")
    if not sep or not base or not quote:
        raise ValueError(f"symbol must look like BASE/QUOTE: {symbol!r}")
    return base, quote


class QuoteValuer:
    """Converts a notional in ``currency`` (default USD) into a pair's quote currency.

    It learns the latest price of every symbol it is shown. A quote currency equal to the
    notional currency (or listed in ``pegs`` as 1:1 to it) needs nothing; otherwise the latest
    price of ``QUOTE/CURRENCY`` or ``CURRENCY/QUOTE`` is used, and a pair without one cannot be
    sized (the strategy then skips it rather than guessing).
    """

    __slots__ = ("_currency", "_pegs", "_prices")

    def __init__(self, currency: str = "USD", pegs: Sequence[str] = ()) -> None:
        self._currency = currency
        self._pegs = frozenset(pegs)
        self._prices: dict[str, Decimal] = {}

    def observe(self, symbol: str, price: Decimal) -> None:
        self._prices[symbol] = price

    def converts(self, quote: str) -> bool:
        """Whether sizing in ``quote`` reads an observed price (False: 1:1 with the notional)."""
        return quote != self._currency and quote not in self._pegs

    def can_size(self, quote: str, symbols: Collection[str]) -> bool:
        """Whether a pair quoted in ``quote`` can ever be sized when only ``symbols`` are
        observed (False: no order in that quote will ever be sized, whatever the prices)."""
        cur = self._currency
        return (not self.converts(quote) or f"{quote}/{cur}" in symbols
                or f"{cur}/{quote}" in symbols)

    def notional_in(self, quote: str, notional: Decimal) -> Decimal | None:
        cur = self._currency
        if quote == cur or quote in self._pegs:
            return notional
        p = self._prices.get(f"{quote}/{cur}")
        if p is not None and p > 0:
            return notional / p
        p = self._prices.get(f"{cur}/{quote}")
        if p is not None and p > 0:
            return notional * p
        return None


def size_order(pair: PairInfo, notional_quote: Decimal, price: Decimal) -> Decimal | None:
    """Base quantity worth ``notional_quote`` at ``price``, rounded down to the lot.

    Returns None when the result is below the pair's ``ordermin`` or ``costmin`` (Kraken would
    reject it, so the strategy does not ask).
    """
    if price <= 0:
        return None
    qty = pair.round_qty(notional_quote / price)
    if qty <= 0 or qty < pair.ordermin or qty * price < pair.costmin:
        return None
    return qty


# --------------------------------------------------------------------------- bookkeeping


@dataclasses.dataclass(slots=True)
class _Intent:
    symbol: str
    side: Side
    remaining: Decimal
    ts: float
    order_id: str | None = None
    reduce_only: bool = False


class PositionKeeper:
    """Positions (base quantity per symbol) from a strategy's own fills, plus in-flight intents.

    Fees charged in the base currency reduce the position (Kraken can charge either side);
    fees in the quote currency do not touch it. A position smaller than the pair's lot or
    ``ordermin`` is dust: it cannot be sold, so the symbol counts as flat.

    Args:
        name: the strategy name stamped on signals.
        pairs: pair metadata by symbol (lot precision, minimums, base currency).
        pending_timeout_s: an intent older than this (in ``ts_recv`` seconds) is forgotten;
            0 disables expiry.
    """

    __slots__ = ("_disorder", "_dust", "_intents", "_pairs", "_pending", "_refusing", "_timeout",
                 "name", "positions")

    def __init__(
        self, name: str, pairs: Mapping[str, PairInfo], pending_timeout_s: Decimal | float = 0
    ) -> None:
        self.name = name
        self._pairs = pairs
        self._timeout = float(pending_timeout_s)
        self.positions: dict[str, Decimal] = {}
        self._intents: deque[_Intent] = deque()
        # symbol -> number of intents in ``_intents``: has_pending() is asked on every tick by
        # every strategy (and per cycle leg by arbitrage), so it must not scan the deque.
        self._pending: dict[str, int] = {}
        # True once an intent was appended with an older ts_recv than the one before it: only
        # then can an intent behind a live one be expired (expire's full sweep).
        self._disorder = False
        self._dust = {s: max(p.lot, p.ordermin) for s, p in pairs.items()}
        self._refusing = False  # see refuse_everything()

    def refuse_everything(self) -> None:
        """Every signal from now on will be refused (a backtest whose breaker latched for the
        rest of the run): while no intent is in flight, :meth:`signal` records none.

        The refusal's ``on_order_closed`` releases the first intent without an order; with
        none in flight that is the one just recorded, so recording nothing leaves the same
        state for less work (a tripped backtest hears tens of thousands of refusals). With
        older intents in flight, signals are recorded as usual.
        """
        self._refusing = True

    @property
    def refuses_silently(self) -> bool:
        """Refusing everything, and every intent in flight is bound to its order: a refused
        signal's release then takes the signal's own intent, so it changes nothing here."""
        return self._refusing and all(i.order_id is not None for i in self._intents)

    # ---- queries

    def position(self, symbol: str) -> Decimal:
        return self.positions.get(symbol, _ZERO)

    def has_pending(self, symbol: str) -> bool:
        return symbol in self._pending

    def pending_count(self) -> int:
        return len(self._intents)

    def is_long(self, symbol: str) -> bool:
        pos = self.positions.get(symbol)
        return pos is not None and pos >= self._dust.get(symbol, _ZERO) and pos > 0

    def is_flat(self, symbol: str) -> bool:
        """No sellable position and nothing in flight for ``symbol``."""
        return not self.is_long(symbol) and not self.has_pending(symbol)

    # ---- signals

    def signal(
        self,
        symbol: str,
        side: Side,
        qty: Decimal,
        *,
        price: Decimal,
        reason: str,
        ts_recv: float,
        reduce_only: bool = False,
        group_id: str | None = None,
        group_size: int = 1,
    ) -> Signal:
        """Build a market signal and record it as a pending intent."""
        intents = self._intents
        if intents or not self._refusing:
            if intents and ts_recv < intents[-1].ts:
                self._disorder = True
            intents.append(_Intent(symbol, side, qty, ts_recv, None, reduce_only))
            pending = self._pending
            pending[symbol] = pending.get(symbol, 0) + 1
        return _new_signal(
            strategy=self.name,
            symbol=symbol,
            side=side,
            qty=qty,
            order_type=_MARKET,
            reason=reason,
            ts_recv=ts_recv,
            group_id=group_id,
            group_size=group_size,
            reduce_only=reduce_only,
            reference_price=price,
        )

    def exit_signal(self, symbol: str, *, price: Decimal, reason: str, ts_recv: float) -> Signal:
        """Sell the whole (lot-rounded) long position as a reduce-only market signal."""
        pair = self._pairs[symbol]
        qty = pair.round_qty(self.position(symbol))
        return self.signal(
            symbol, _SELL, qty, price=price, reason=reason, ts_recv=ts_recv, reduce_only=True
        )

    # ---- events

    def expire(self, now: float) -> None:
        """Forget intents older than the timeout (call with the event's ``ts_recv``)."""
        if self._timeout <= 0:
            return
        intents = self._intents
        if not intents:
            return
        while intents and now - intents[0].ts > self._timeout:
            self._forget(intents.popleft())
        # Later intents can be older only if ts_recv went backwards; sweep them too.
        if not intents:
            self._disorder = False
        elif self._disorder and any(now - i.ts > self._timeout for i in intents):
            for i in intents:
                if now - i.ts > self._timeout:
                    self._forget(i)
            self._intents = deque(i for i in intents if now - i.ts <= self._timeout)

    def _forget(self, intent: _Intent) -> None:
        """Count ``intent`` out of ``_pending`` (the caller removes it from ``_intents``)."""
        pending = self._pending
        n = pending[intent.symbol] - 1
        if n:
            pending[intent.symbol] = n
        else:
            del pending[intent.symbol]

    def _remove(self, intent: _Intent) -> None:
        self._intents.remove(intent)
        self._forget(intent)

    def on_fill(self, fill: Fill) -> None:
        if fill.strategy == RISK_EXIT_STRATEGY:
            # Risk's stop-loss / take-profit sold the symbol's whole position, this
            # strategy's share included: without this the strategy would stay "long" forever
            # and its own exit would be refused (review finding).
            if fill.side is _SELL and self.positions.get(fill.symbol, _ZERO) > 0:
                self.positions[fill.symbol] = max(
                    _ZERO, self.positions[fill.symbol] - fill.qty)
            return
        if fill.strategy != self.name:
            return
        delta = fill.qty if fill.side is _BUY else -fill.qty
        pair = self._pairs.get(fill.symbol)
        if pair is not None and fill.fee_currency == pair.base:
            delta -= fill.fee
        self.positions[fill.symbol] = self.positions.get(fill.symbol, _ZERO) + delta
        intent = self._find(fill.client_order_id)
        if intent is None:
            for i in self._intents:
                if i.order_id is None and i.symbol == fill.symbol and i.side is fill.side:
                    intent = i
                    intent.order_id = fill.client_order_id
                    break
        if intent is not None:
            intent.remaining -= fill.qty
            if intent.remaining <= 0:
                self._remove(intent)
            elif fill.order_done:
                # The order ended short of the signal: risk cut the exit to what the account
                # still held (another strategy or an arbitrage leg sold the rest of this one's
                # base). The cut part is gone: without this the strategy would keep a phantom
                # position and wait on the intent for ever (a backtest has no intent timeout).
                if intent.reduce_only and intent.side is _SELL:
                    left = self.positions.get(fill.symbol, _ZERO) - intent.remaining
                    self.positions[fill.symbol] = left if left > 0 else _ZERO
                self._remove(intent)

    def on_order_closed(self, client_order_id: str, filled_qty: Decimal) -> None:
        """Release the intent of an order that will not fill (further)."""
        del filled_qty  # fills already shrank the intent; what is left will never come
        intent = self._find(client_order_id)
        if intent is None:
            intent = next((i for i in self._intents if i.order_id is None), None)
        if intent is not None:
            self._remove(intent)

    def _find(self, client_order_id: str) -> _Intent | None:
        for i in self._intents:
            if i.order_id == client_order_id:
                return i
        return None


# --------------------------------------------------------------------------- config parsing

C = TypeVar("C")


def _convert(strategy: str, key: str, raw: str, hint: object) -> object:
    try:
        if hint is Decimal:
            value = Decimal(raw.strip())
            if not value.is_finite():
                raise InvalidOperation
            return value
        if hint is int:
            return int(raw)
        if hint is bool:
            low = raw.strip().lower()
            if low in ("1", "true", "yes", "on"):
                return True
            if low in ("0", "false", "no", "off"):
                return False
            raise ValueError(raw)
        if hint is str:
            return raw.strip()
        if typing.get_origin(hint) is tuple:
            return tuple(p.strip() for p in raw.split(",") if p.strip())
    except (ValueError, InvalidOperation) as exc:
        raise StrategyConfigError(
            f"{strategy}.{key}: cannot parse {raw!r} as {getattr(hint, '__name__', hint)}",
            strategy=strategy,
            key=key,
        ) from exc
    raise StrategyConfigError(
        f"{strategy}.{key}: unsupported parameter type {hint!r}", strategy=strategy, key=key
    )


def parse_config(cls: type[C], strategy: str, params: Mapping[str, str]) -> C:
    """Build the frozen config dataclass ``cls`` from string parameters (CLI / config file).

    Decimal, int, bool, str and ``tuple[str, ...]`` (comma separated) fields are supported;
    missing keys keep their defaults.

    Raises:
        StrategyConfigError: an unknown key or an unparsable value, naming both.
    """
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    kwargs: dict[str, object] = {}
    for key, raw in params.items():
        if key not in names:
            raise StrategyConfigError(
                f"{strategy}: unknown parameter {key!r} (known: {', '.join(sorted(names))})",
                strategy=strategy,
                key=key,
            )
        kwargs[key] = _convert(strategy, key, raw, hints[key])
    try:
        return cls(**kwargs)
    except (ValueError, TypeError) as exc:
        raise StrategyConfigError(f"{strategy}: {exc}", strategy=strategy) from exc

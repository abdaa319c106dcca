"""The one-level synthetic books the backtest loops build around candles (shared by both)."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from protocol.messages import BookEvent, BookLevel, CandleEvent
from trading import twin_of

__all__ = ["synthetic_book"]

_NEW = object.__new__
_LevelTwin = twin_of(BookLevel)
_BookTwin = twin_of(BookEvent)


def synthetic_book(c: CandleEvent, bid_p: Decimal, ask_p: Decimal, qty: Decimal) -> BookEvent:
    """A one-level synthetic book for candle ``c``, equal to what ``BookEvent(...)`` builds,
    filled through twin classes (``trading.twin_of``): the loop builds one or two per candle."""
    bid: Any = _NEW(_LevelTwin)
    bid.price = bid_p
    bid.qty = qty
    bid.__class__ = BookLevel
    ask: Any = _NEW(_LevelTwin)
    ask.price = ask_p
    ask.qty = qty
    ask.__class__ = BookLevel
    b: Any = _NEW(_BookTwin)
    b.symbol = c.symbol
    b.bids = (bid,)
    b.asks = (ask,)
    b.ts_event_ns = c.ts_event_ns
    b.ts_recv = 0.0
    b.synthetic = True
    b.__class__ = BookEvent
    book: BookEvent = b
    return book

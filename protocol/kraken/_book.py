"""Kraken L2 order book with CRC32 checksum verification (PROTOCOL.md §6 v2, §7 v1).

Maintenance (§6): a snapshot replaces the book; an update applies **every** level in array
order (a price may repeat in one message); ``qty == 0`` deletes; then each side is truncated
to the subscribed depth (Kraken sends no deletes for levels that fall out of scope); only then
is the message's checksum verified.

Checksum: top 10 asks (ascending) then top 10 bids (descending); each level's price and qty
become digit tokens ("." removed, leading zeros stripped), concatenated, CRC32 (unsigned).
v2 formats each value with the pair's ``price_precision``/``qty_precision`` from the
``instrument`` channel, because JSON numbers lose trailing zeros (0.566 must be "5660" at
precision 4). v1 values are fixed-decimal strings, and ``Decimal(text)`` keeps their exponent,
so v1 formats each value from its own decimal text.

Data structure: per side a ``dict`` price -> ``BookLevel`` plus an ascending ``list`` of prices
kept with ``bisect``. Updates touch one or two levels of a list of at most ``depth`` (<= 1000)
Decimals, so ``insert``/``del`` (a C ``memmove``) beat a tree here and need no third-party
package. Each side caches its best levels and their checksum bytes and rebuilds only from the
best rank a message touched (see ``_Side``): the checksum is still computed and compared on
every message, but from cached bytes when the top 10 did not move.
"""

from __future__ import annotations

import zlib
from bisect import bisect_left
from collections.abc import Callable, Iterable, Sequence
from dataclasses import fields
from decimal import Decimal
from itertools import islice
from typing import Any

from protocol.kraken._codec import BookFrame
from protocol.kraken._errors import KrakenError
from protocol.messages import BookEvent, BookLevel

CHECKSUM_LEVELS = 10


class BookOutOfSync(KrakenError):
    """The local book no longer mirrors Kraken's: resubscribe for a fresh snapshot.

    Raised for an update that arrives before any snapshot or after a checksum mismatch.
    """

    def __init__(self, message: str, *, symbol: str) -> None:
        super().__init__(message)
        self.symbol = symbol


class ChecksumMismatch(BookOutOfSync):
    """The book's CRC32 after applying a message differs from the one Kraken sent with it."""

    def __init__(self, *, symbol: str, expected: int, actual: int) -> None:
        super().__init__(
            f"book checksum mismatch for {symbol}: expected {expected}, computed {actual}",
            symbol=symbol,
        )
        self.expected = expected
        self.actual = actual


def _token_own(value: Decimal) -> str:
    # format "f" keeps the Decimal's exponent: Decimal("0.00000500") -> "0.00000500".
    return format(value, "f").replace(".", "").lstrip("0")


def _value_token(value: Decimal, fmt: str | None) -> str:
    """One value's checksum token: formatted with ``fmt`` (v2), or from its own text (v1)."""
    if fmt is None:
        return _token_own(value)
    return format(value, fmt).replace(".", "").lstrip("0")


def _text_from_pairs(
    asks: Iterable[tuple[Decimal, Decimal]],
    bids: Iterable[tuple[Decimal, Decimal]],
    price_fmt: str | None,
    qty_fmt: str | None,
) -> str:
    parts: list[str] = []
    append = parts.append
    for side in (asks, bids):
        for price, qty in side:
            if price_fmt is None or qty_fmt is None:
                append(_token_own(price))
                append(_token_own(qty))
            else:
                append(format(price, price_fmt).replace(".", "").lstrip("0"))
                append(format(qty, qty_fmt).replace(".", "").lstrip("0"))
    return "".join(parts)


def _top(levels: Sequence[BookLevel]) -> Iterable[tuple[Decimal, Decimal]]:
    return ((lvl.price, lvl.qty) for lvl in islice(levels, CHECKSUM_LEVELS))


def checksum_text_v2(
    asks: Sequence[BookLevel],
    bids: Sequence[BookLevel],
    *,
    price_precision: int,
    qty_precision: int,
) -> str:
    """The string Kraken's v2 CRC32 covers; levels best first, only the first 10 are used."""
    return _text_from_pairs(
        _top(asks), _top(bids), f".{price_precision}f", f".{qty_precision}f"
    )


def checksum_v2(
    asks: Sequence[BookLevel],
    bids: Sequence[BookLevel],
    *,
    price_precision: int,
    qty_precision: int,
) -> int:
    """Kraken WS v2 book checksum of ``asks`` (ascending) and ``bids`` (descending)."""
    text = checksum_text_v2(
        asks, bids, price_precision=price_precision, qty_precision=qty_precision
    )
    return zlib.crc32(text.encode("ascii"))


def checksum_text_v1(asks: Sequence[BookLevel], bids: Sequence[BookLevel]) -> str:
    """The string Kraken's v1 CRC32 covers, each value formatted from its own decimal text."""
    return _text_from_pairs(_top(asks), _top(bids), None, None)


def checksum_v1(asks: Sequence[BookLevel], bids: Sequence[BookLevel]) -> int:
    """Kraken WS v1 book checksum (PROTOCOL.md §7): levels parsed with ``Decimal(text)``."""
    return zlib.crc32(checksum_text_v1(asks, bids).encode("ascii"))


_CLEAN = 1 << 62  # a ``_Side.stale`` rank meaning "nothing cached is out of date"
# Widest view kept cached: a one-off ``bids(1000)`` must not make every later message rebuild
# 1000 levels; wider requests are built directly.
_MAX_CACHED = 100


class _Side:
    """One side of the book plus the caches that make verifying and publishing it cheap.

    ``levels`` maps price -> the ``BookLevel`` Kraken sent (immutable, so it is shared with the
    frame and every published event instead of being rebuilt); ``keys`` holds the prices
    ascending for ``bisect`` (the best bid is the last key, the best ask the first).

    Caches, best first:

    * ``top``: the best ``width`` levels as a tuple, ready for a ``BookEvent``;
    * ``text``: the checksum bytes of the best ``CHECKSUM_LEVELS`` levels, joined from
      ``toks``, their tokens in rank order;
    * ``tokens``: each price's checksum token, dropped when its level changes (a level that
      only moved rank keeps it), and ``price_tokens``, the price's half, which never changes
      while the price is in the book.

    Invalidation is by rank (0 = best). An insert or delete at rank ``r`` shifts the ranks
    after it but leaves ranks ``< r`` as they were; a quantity change at rank ``r`` touches
    rank ``r`` only. So each cache keeps the smallest shifted rank since it was built
    (``stale`` for ``top``, ``text_from`` for ``text``) and the ranks changed in place
    (``spots``, ``text_spots``); a rebuild keeps the prefix, patches the spots in it and
    rebuilds the rest. A message that touched nothing within the top ``CHECKSUM_LEVELS``
    reuses ``text`` as it is. Deep books mostly change below the top 10, and most changes are
    quantity changes, so the caches are mostly reused (bench/bench_ws.py, bench_book.py).
    """

    __slots__ = (
        "is_bids",
        "keys",
        "levels",
        "price_tokens",
        "spots",
        "stale",
        "text",
        "text_from",
        "text_spots",
        "tokens",
        "toks",
        "top",
        "width",
    )

    def __init__(self, *, is_bids: bool) -> None:
        self.is_bids = is_bids
        self.levels: dict[Decimal, BookLevel] = {}
        self.keys: list[Decimal] = []
        self.tokens: dict[Decimal, str] = {}
        self.price_tokens: dict[Decimal, str] = {}
        self.top: tuple[BookLevel, ...] = ()
        self.width = CHECKSUM_LEVELS
        self.stale = 0
        self.spots: list[int] = []
        self.text = b""
        self.toks: list[str] = []
        self.text_from = 0
        self.text_spots: list[int] = []

    def load(self, levels: Sequence[BookLevel]) -> None:
        book: dict[Decimal, BookLevel] = {}
        for lvl in levels:  # in message order: a later level for the same price wins
            if lvl.qty:
                book[lvl.price] = lvl
            else:
                book.pop(lvl.price, None)
        self.levels = book
        self.keys = sorted(book)
        self.tokens.clear()
        self.price_tokens.clear()
        self.invalidate()

    def invalidate(self) -> None:
        """Drop every cached view (a snapshot, or new checksum precisions)."""
        self.stale = self.text_from = 0
        self.spots.clear()
        self.text_spots.clear()

    def update(self, levels: Sequence[BookLevel]) -> None:
        book, keys = self.levels, self.keys
        is_bids = self.is_bids
        low = _CLEAN  # best rank this message shifted
        for lvl in levels:
            price = lvl.price
            if lvl.qty:
                if price in book:
                    book[price] = lvl
                    self.tokens.pop(price, None)
                    # Deep in the book (worse than the widest cached rank) no cache cares, and
                    # one comparison is cheaper than the bisect that finds the exact rank.
                    width = self.width
                    if len(keys) > width and (
                        price < keys[-width] if is_bids else price > keys[width - 1]
                    ):
                        continue
                    i = bisect_left(keys, price)
                    self._changed_in_place(len(keys) - 1 - i if is_bids else i)
                    continue
                book[price] = lvl
                i = bisect_left(keys, price)
                keys.insert(i, price)
            elif price in book:
                del book[price]
                self.tokens.pop(price, None)
                self.price_tokens.pop(price, None)
                i = bisect_left(keys, price)
                del keys[i]
                if is_bids:
                    i -= 1  # rank is counted before the delete: n_before - 1 - i
            else:
                continue  # deleting an absent level is a no-op
            rank = len(keys) - 1 - i if is_bids else i
            if rank < low:
                low = rank
        if low < self.stale:
            self.stale = low
        if low < self.text_from:
            self.text_from = low

    def _changed_in_place(self, rank: int) -> None:
        if rank < self.width:
            spots = self.spots
            spots.append(rank)
            if len(spots) > CHECKSUM_LEVELS:  # nobody reads this side: fold, stay bounded
                self.stale = min(self.stale, *spots)
                spots.clear()
        if rank < CHECKSUM_LEVELS:
            spots = self.text_spots
            spots.append(rank)
            if len(spots) > CHECKSUM_LEVELS:  # a book that does not verify (yet)
                self.text_from = min(self.text_from, *spots)
                spots.clear()

    def truncate(self, depth: int) -> None:
        keys = self.keys
        excess = len(keys) - depth
        if excess <= 0:
            return
        book, tokens, price_tokens = self.levels, self.tokens, self.price_tokens
        dropped = keys[:excess] if self.is_bids else keys[depth:]
        for price in dropped:
            del book[price]
            tokens.pop(price, None)
            price_tokens.pop(price, None)
        if self.is_bids:
            del keys[:excess]
        else:
            del keys[depth:]
        # Ranks >= depth went away; that matters to the caches only when depth < their width.
        if depth < self.stale:
            self.stale = depth
        if depth < self.text_from:
            self.text_from = depth

    def _at(self, rank: int) -> BookLevel:
        keys = self.keys
        return self.levels[keys[-1 - rank] if self.is_bids else keys[rank]]

    def best(self, n: int) -> tuple[BookLevel, ...]:
        """The best ``n`` levels, best first, from the cache (patched or rebuilt as needed)."""
        if n <= 0:
            return ()
        if n > _MAX_CACHED:
            book, keys = self.levels, self.keys
            if self.is_bids:
                return tuple(book[p] for p in reversed(keys[-n:]))
            return tuple(book[p] for p in keys[:n])
        if n > self.width:
            self.stale = min(self.stale, self.width)  # ranks past the old width never cached
            self.width = n
        stale = self.stale
        spots = self.spots
        if stale != _CLEAN or spots:
            top = self.top[:stale]
            keep = len(top)
            for rank in spots:
                if rank < keep:
                    top = (*top[:rank], self._at(rank), *top[rank + 1 :])
            spots.clear()
            if stale != _CLEAN:
                keys, book = self.keys, self.levels
                hi = self.width
                if self.is_bids:
                    size = len(keys)
                    fresh = [book[p] for p in reversed(keys[max(size - hi, 0) : size - keep])]
                else:
                    fresh = [book[p] for p in keys[keep:hi]]
                top = (*top, *fresh)
                self.stale = _CLEAN
            self.top = top
        top = self.top
        return top if n >= len(top) else top[:n]

    def all(self) -> tuple[BookLevel, ...]:
        book = self.levels
        keys = reversed(self.keys) if self.is_bids else self.keys
        return tuple(book[p] for p in keys)

    def checksum_bytes(self, price_fmt: str | None, qty_fmt: str | None) -> bytes:
        """The checksum input of this side's top ``CHECKSUM_LEVELS`` levels (cached)."""
        start = self.text_from
        spots = self.text_spots
        if start >= CHECKSUM_LEVELS and not spots:
            return self.text
        top = self.best(CHECKSUM_LEVELS)
        toks = self.toks
        del toks[start:]
        keep = len(toks)
        for rank in spots:
            if rank < keep:
                toks[rank] = self._token(top[rank], price_fmt, qty_fmt)
        spots.clear()
        for lvl in top[keep:]:
            toks.append(self._token(lvl, price_fmt, qty_fmt))
        text = self.text = "".join(toks).encode("ascii")
        self.text_from = _CLEAN
        return text

    def _token(self, lvl: BookLevel, price_fmt: str | None, qty_fmt: str | None) -> str:
        price = lvl.price
        token = self.tokens.get(price)
        if token is None:
            # A price's half never changes while it is in the book; only the quantity's is new.
            head = self.price_tokens.get(price)
            if head is None:
                head = self.price_tokens[price] = _value_token(price, price_fmt)
            token = self.tokens[price] = head + _value_token(lvl.qty, qty_fmt)
        return token


class OrderBook:
    """One symbol's L2 book, kept exactly as Kraken's and verified message by message.

    Args:
        symbol: the symbol frames must carry (v2 naming).
        depth: the subscribed depth; each side is truncated to it after every message.
        price_precision: decimals for v2 checksums (``instrument`` ``price_precision``).
        qty_precision: decimals for v2 checksums (``instrument`` ``qty_precision``).
        v1: verify with the v1 algorithm (values formatted from their own text).

    Without precisions a v2 book applies messages but skips verification until
    ``set_precision`` is called. Levels handed out (``bids``, ``asks``, ``to_event``) are the
    immutable ``BookLevel`` objects of the frames that set them, and an unchanged side returns
    the same tuple again. Not thread-safe; plain synchronous code, so it is atomic with
    respect to trio cancellation.
    """

    __slots__ = (
        "_ask",
        "_bid",
        "_last_ts_event_ns",
        "_last_ts_recv",
        "_price_fmt",
        "_qty_fmt",
        "_synced",
        "_v1",
        "checksums_verified",
        "depth",
        "symbol",
    )

    def __init__(
        self,
        symbol: str,
        *,
        depth: int,
        price_precision: int | None = None,
        qty_precision: int | None = None,
        v1: bool = False,
    ) -> None:
        if depth < 1:
            raise ValueError(f"depth must be positive, not {depth}")
        self.symbol = symbol
        self.depth = depth
        self._v1 = v1
        self._price_fmt: str | None = None
        self._qty_fmt: str | None = None
        self._bid = _Side(is_bids=True)
        self._ask = _Side(is_bids=False)
        self._synced = False
        self._last_ts_event_ns = 0
        self._last_ts_recv = 0.0
        self.checksums_verified = 0
        if price_precision is not None and qty_precision is not None:
            self.set_precision(price_precision, qty_precision)

    def set_precision(self, price_precision: int, qty_precision: int) -> None:
        """Set the v2 checksum precisions (e.g. once the ``instrument`` snapshot arrived)."""
        if price_precision < 0 or qty_precision < 0:
            raise ValueError("precisions must be non-negative")
        self._price_fmt = f".{price_precision}f"
        self._qty_fmt = f".{qty_precision}f"
        for side in (self._bid, self._ask):
            side.tokens.clear()
            side.price_tokens.clear()
            side.invalidate()

    @property
    def is_synced(self) -> bool:
        """True after a snapshot and until a checksum mismatch."""
        return self._synced

    @property
    def verifies(self) -> bool:
        """Whether ``apply`` checks checksums (v1, or v2 with known precisions)."""
        return self._v1 or self._price_fmt is not None

    def apply(self, frame: BookFrame) -> None:
        """Apply one book message, truncate to depth, then verify its checksum.

        Raises:
            ChecksumMismatch: on this very message; the book is then out of sync until the
                next snapshot.
            BookOutOfSync: an update before any snapshot, or after a mismatch.
            ValueError: the frame is for another symbol (a wiring bug).
        """
        if frame.symbol != self.symbol:
            raise ValueError(f"frame for {frame.symbol} applied to the {self.symbol} book")
        bid, ask = self._bid, self._ask
        if frame.is_snapshot:
            bid.load(frame.bids)
            ask.load(frame.asks)
            self._synced = True
        elif not self._synced:
            raise BookOutOfSync(f"{self.symbol} book update without a snapshot", symbol=self.symbol)
        else:
            if frame.bids:
                bid.update(frame.bids)
            if frame.asks:
                ask.update(frame.asks)
        depth = self.depth
        if len(bid.keys) > depth:
            bid.truncate(depth)
        if len(ask.keys) > depth:
            ask.truncate(depth)
        self._last_ts_event_ns = frame.ts_event_ns
        self._last_ts_recv = frame.ts_recv
        if frame.checksum is not None and (self._v1 or self._price_fmt is not None):
            # checksum() inlined: this runs for every message of every book.
            price_fmt, qty_fmt = self._price_fmt, self._qty_fmt
            asks = ask.checksum_bytes(price_fmt, qty_fmt)
            actual = zlib.crc32(bid.checksum_bytes(price_fmt, qty_fmt), zlib.crc32(asks))
            if actual != frame.checksum:
                self._synced = False
                raise ChecksumMismatch(symbol=self.symbol, expected=frame.checksum, actual=actual)
            self.checksums_verified += 1

    def _checksum_bytes(self) -> tuple[bytes, bytes]:
        if not self.verifies:
            raise ValueError(f"{self.symbol}: v2 checksum needs price/qty precision")
        price_fmt, qty_fmt = self._price_fmt, self._qty_fmt
        return (
            self._ask.checksum_bytes(price_fmt, qty_fmt),
            self._bid.checksum_bytes(price_fmt, qty_fmt),
        )

    def checksum_text(self) -> str:
        """The string the checksum covers (for debugging a mismatch)."""
        asks, bids = self._checksum_bytes()
        return (asks + bids).decode("ascii")

    def checksum(self) -> int:
        """CRC32 of the current top 10 levels, as Kraken computes it."""
        asks, bids = self._checksum_bytes()
        # CRC32 chains: crc(asks + bids) == crc32(bids, crc32(asks)), so no concatenation.
        return zlib.crc32(bids, zlib.crc32(asks))

    def bids(self, n: int | None = None) -> tuple[BookLevel, ...]:
        """Bids, best (highest) first; all of them when ``n`` is None."""
        return self._bid.all() if n is None else self._bid.best(n)

    def asks(self, n: int | None = None) -> tuple[BookLevel, ...]:
        """Asks, best (lowest) first; all of them when ``n`` is None."""
        return self._ask.all() if n is None else self._ask.best(n)

    def to_event(
        self,
        *,
        levels: int = 10,
        ts_event_ns: int | None = None,
        ts_recv: float | None = None,
    ) -> BookEvent:
        """A ``BookEvent`` of the top ``levels``; timestamps default to the last message's.

        Cheap when called after every message: each side's tuple comes from its cache, rebuilt
        only from the best rank the message touched.
        """
        bids = self._bid.best(levels)
        asks = self._ask.best(levels)
        ts_ns = self._last_ts_event_ns if ts_event_ns is None else ts_event_ns
        ts = self._last_ts_recv if ts_recv is None else ts_recv
        setters = _EVENT_SETTERS
        if setters is None:
            return BookEvent(symbol=self.symbol, bids=bids, asks=asks, ts_event_ns=ts_ns,
                             ts_recv=ts)
        # Slots filled directly: see _event_setters.
        s0, s1, s2, s3, s4, s5 = setters
        event: BookEvent = _object_new(BookEvent)
        s0(event, self.symbol)
        s1(event, bids)
        s2(event, asks)
        s3(event, ts_ns)
        s4(event, ts)
        s5(event, False)
        return event

    def __len__(self) -> int:
        return len(self._bid.keys) + len(self._ask.keys)

    def __repr__(self) -> str:
        return (
            f"OrderBook({self.symbol!r}, depth={self.depth}, bids={len(self._bid.keys)}, "
            f"asks={len(self._ask.keys)}, synced={self._synced})"
        )


def _event_setters() -> tuple[Callable[[BookEvent, Any], None], ...] | None:
    """Slot writers of ``BookEvent``, or ``None`` if its shape is not the one expected.

    ``to_event`` runs once per WebSocket message; a frozen dataclass's ``__init__`` sets each
    field through ``object.__setattr__``, half the cost of the whole call. Writing the slots
    directly builds an equal object (tests compare both ways). Should ``BookEvent`` gain a
    field or a ``__post_init__``, this returns ``None`` and ``to_event`` uses the constructor.
    """
    names = ("symbol", "bids", "asks", "ts_event_ns", "ts_recv", "synthetic")
    if tuple(f.name for f in fields(BookEvent)) != names or hasattr(BookEvent, "__post_init__"):
        return None
    return tuple(getattr(BookEvent, name).__set__ for name in names)


_EVENT_SETTERS = _event_setters()
_object_new = object.__new__

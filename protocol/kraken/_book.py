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

Data structure: per side a ``dict`` price -> qty plus an ascending ``list`` of prices kept with
``bisect``. Updates touch one or two levels of a list of at most ``depth`` (<= 1000) Decimals,
so ``insort``/``del`` (a C ``memmove``) beat a tree here and need no third-party package.
"""

from __future__ import annotations

import zlib
from bisect import bisect_left, insort
from collections.abc import Iterable, Sequence
from decimal import Decimal
from itertools import islice

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


class OrderBook:
    """One symbol's L2 book, kept exactly as Kraken's and verified message by message.

    Args:
        symbol: the symbol frames must carry (v2 naming).
        depth: the subscribed depth; each side is truncated to it after every message.
        price_precision: decimals for v2 checksums (``instrument`` ``price_precision``).
        qty_precision: decimals for v2 checksums (``instrument`` ``qty_precision``).
        v1: verify with the v1 algorithm (values formatted from their own text).

    Without precisions a v2 book applies messages but skips verification until
    ``set_precision`` is called. Not thread-safe; plain synchronous code, so it is atomic with
    respect to trio cancellation.
    """

    __slots__ = (
        "_ask_keys",
        "_ask_tokens",
        "_asks",
        "_bid_keys",
        "_bid_tokens",
        "_bids",
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
        # Both sides ascending by price: bids' best is the last key, asks' best the first.
        self._bids: dict[Decimal, Decimal] = {}
        self._asks: dict[Decimal, Decimal] = {}
        self._bid_keys: list[Decimal] = []
        self._ask_keys: list[Decimal] = []
        # Checksum tokens of levels that were in the top 10, dropped whenever the level changes:
        # the top of the book changes far less often than it is checksummed.
        self._bid_tokens: dict[Decimal, str] = {}
        self._ask_tokens: dict[Decimal, str] = {}
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
        self._bid_tokens.clear()
        self._ask_tokens.clear()

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
        if frame.is_snapshot:
            self._bids, self._bid_keys = self._load(frame.bids)
            self._asks, self._ask_keys = self._load(frame.asks)
            self._bid_tokens.clear()
            self._ask_tokens.clear()
            self._synced = True
        elif not self._synced:
            raise BookOutOfSync(f"{self.symbol} book update without a snapshot", symbol=self.symbol)
        else:
            if frame.bids:
                self._update(self._bids, self._bid_keys, self._bid_tokens, frame.bids)
            if frame.asks:
                self._update(self._asks, self._ask_keys, self._ask_tokens, frame.asks)
        self._truncate()
        self._last_ts_event_ns = frame.ts_event_ns
        self._last_ts_recv = frame.ts_recv
        if frame.checksum is not None and self.verifies:
            actual = self.checksum()
            if actual != frame.checksum:
                self._synced = False
                raise ChecksumMismatch(symbol=self.symbol, expected=frame.checksum, actual=actual)
            self.checksums_verified += 1

    @staticmethod
    def _load(levels: Sequence[BookLevel]) -> tuple[dict[Decimal, Decimal], list[Decimal]]:
        book: dict[Decimal, Decimal] = {}
        for lvl in levels:
            if lvl.qty:
                book[lvl.price] = lvl.qty
            else:
                book.pop(lvl.price, None)
        return book, sorted(book)

    @staticmethod
    def _update(
        book: dict[Decimal, Decimal],
        keys: list[Decimal],
        tokens: dict[Decimal, str],
        levels: Sequence[BookLevel],
    ) -> None:
        for lvl in levels:
            price = lvl.price
            tokens.pop(price, None)
            if lvl.qty:
                if price not in book:
                    insort(keys, price)
                book[price] = lvl.qty
            elif price in book:
                del book[price]
                del keys[bisect_left(keys, price)]

    def _truncate(self) -> None:
        excess = len(self._ask_keys) - self.depth
        if excess > 0:
            for price in self._ask_keys[self.depth :]:
                del self._asks[price]
                self._ask_tokens.pop(price, None)
            del self._ask_keys[self.depth :]
        excess = len(self._bid_keys) - self.depth
        if excess > 0:
            for price in self._bid_keys[:excess]:
                del self._bids[price]
                self._bid_tokens.pop(price, None)
            del self._bid_keys[:excess]

    def _tokens(
        self, keys: Iterable[Decimal], book: dict[Decimal, Decimal], cache: dict[Decimal, str]
    ) -> list[str]:
        out = []
        for price in keys:
            token = cache.get(price)
            if token is None:
                pair = ((price, book[price]),)
                token = cache[price] = _text_from_pairs(pair, (), self._price_fmt, self._qty_fmt)
            out.append(token)
        return out

    def checksum_text(self) -> str:
        """The string the checksum covers (for debugging a mismatch)."""
        if not self.verifies:
            raise ValueError(f"{self.symbol}: v2 checksum needs price/qty precision")
        n = CHECKSUM_LEVELS
        asks = self._tokens(self._ask_keys[:n], self._asks, self._ask_tokens)
        bids = self._tokens(reversed(self._bid_keys[-n:]), self._bids, self._bid_tokens)
        return "".join(asks) + "".join(bids)

    def checksum(self) -> int:
        """CRC32 of the current top 10 levels, as Kraken computes it."""
        return zlib.crc32(self.checksum_text().encode("ascii"))

    def bids(self, n: int | None = None) -> tuple[BookLevel, ...]:
        """Bids, best (highest) first; all of them when ``n`` is None."""
        keys = self._bid_keys if n is None else self._bid_keys[-n:] if n > 0 else []
        bids = self._bids
        return tuple(BookLevel(p, bids[p]) for p in reversed(keys))

    def asks(self, n: int | None = None) -> tuple[BookLevel, ...]:
        """Asks, best (lowest) first; all of them when ``n`` is None."""
        keys = self._ask_keys if n is None else self._ask_keys[: max(n, 0)]
        asks = self._asks
        return tuple(BookLevel(p, asks[p]) for p in keys)

    def to_event(
        self,
        *,
        levels: int = 10,
        ts_event_ns: int | None = None,
        ts_recv: float | None = None,
    ) -> BookEvent:
        """A ``BookEvent`` of the top ``levels``; timestamps default to the last message's."""
        return BookEvent(
            symbol=self.symbol,
            bids=self.bids(levels),
            asks=self.asks(levels),
            ts_event_ns=self._last_ts_event_ns if ts_event_ns is None else ts_event_ns,
            ts_recv=self._last_ts_recv if ts_recv is None else ts_recv,
        )

    def __len__(self) -> int:
        return len(self._bid_keys) + len(self._ask_keys)

    def __repr__(self) -> str:
        return (
            f"OrderBook({self.symbol!r}, depth={self.depth}, bids={len(self._bid_keys)}, "
            f"asks={len(self._ask_keys)}, synced={self._synced})"
        )

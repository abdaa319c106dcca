"""Deterministic client order ids, usable as Kraken ``cl_ord_id``.

Kraken accepts three ``cl_ord_id`` formats (PROTOCOL.md §1.3 and §5.5): a long UUID (36
chars), a short UUID (32 hex chars) or free ASCII text of at most 18 characters; the id must be
unique among the account's *open* orders. We use the free-text form ``<prefix>-<counter>``
(counter in lowercase base 36) because it is deterministic: a backtest and its actor-engine
replay number their orders identically, so the two trade logs compare byte for byte.

Uniqueness across restarts is the caller's job: pass ``start`` (the persisted ``issued`` count of
the previous run) or a different ``prefix`` per run, so ids never repeat in the store, where the
client order id is the idempotency key.
"""

from __future__ import annotations

import re

__all__ = ["MAX_FREE_TEXT_LEN", "ClientOrderIds", "is_valid_cl_ord_id"]

MAX_FREE_TEXT_LEN = 18
"""Kraken's limit for free-text ``cl_ord_id`` values."""

_PREFIX_RE = re.compile(r"[A-Za-z0-9_]{1,12}\Z")
_LONG_UUID_RE = re.compile(
    r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}\Z"
)
_SHORT_UUID_RE = re.compile(r"[0-9a-fA-F]{32}\Z")
_DIGITS = "0123456789abcdefghijklmnopqrstuvwxyz"


def is_valid_cl_ord_id(value: str) -> bool:
    """Tell whether ``value`` has one of the three formats Kraken accepts as ``cl_ord_id``.

    Args:
        value: a candidate id.

    Returns:
        True for a long UUID, a 32-hex short UUID or printable ASCII of 1..18 characters.
    """
    if _LONG_UUID_RE.match(value) or _SHORT_UUID_RE.match(value):
        return True
    return 0 < len(value) <= MAX_FREE_TEXT_LEN and value.isascii() and value.isprintable()


# Two base-36 digits per step (every order id passes through here; a backtest makes thousands).
_PAIRS = [a + b for a in _DIGITS for b in _DIGITS]


def _base36(n: int) -> str:
    if n < 36:
        return _DIGITS[n]
    if n < 1296:
        return _PAIRS[n]  # no leading zero from 36 on
    q, r = divmod(n, 1296)
    return _base36(q) + _PAIRS[r]


class ClientOrderIds:
    """Issue ``<prefix>-<base36 counter>`` ids: deterministic, unique within one generator.

    Args:
        prefix: 1..12 characters of ``[A-Za-z0-9_]``; a run or mode tag such as ``"bt"``.
        start: the first counter value (resume from a persisted :attr:`issued`).

    Raises:
        ValueError: the prefix is malformed or too long.
    """

    __slots__ = ("_head", "_n", "_room", "prefix")

    def __init__(self, prefix: str, *, start: int = 0) -> None:
        if not _PREFIX_RE.match(prefix):
            raise ValueError(f"client order id prefix must match [A-Za-z0-9_]{{1,12}}: {prefix!r}")
        if start < 0:
            raise ValueError("start must be >= 0")
        self.prefix = prefix
        self._head = prefix + "-"
        self._room = MAX_FREE_TEXT_LEN - len(self._head)  # >= 5 base-36 digits: 60 M ids
        self._n = start

    @property
    def issued(self) -> int:
        """The counter value the next id will use (persist it to resume without repeats)."""
        return self._n

    def next(self) -> str:
        """Return a fresh id.

        Raises:
            OverflowError: the counter no longer fits in Kraken's 18 characters.
        """
        digits = _base36(self._n)
        if len(digits) > self._room:
            raise OverflowError(f"client order id counter exhausted for prefix {self.prefix!r}")
        self._n += 1
        return self._head + digits

    __next__ = next

    def __iter__(self) -> ClientOrderIds:
        return self

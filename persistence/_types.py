"""Column types that keep money exact and time zone-aware on SQLite and PostgreSQL.

Why not plain ``Numeric``: SQLite has no decimal type. A ``NUMERIC`` column there has numeric
affinity and stores ``0.1`` as a binary double, and SQLAlchemy warns that it "must convert from
floating point". ``Money`` therefore stores the canonical decimal *text* on SQLite and a real
``NUMERIC(36, 18)`` on PostgreSQL. The consequence is that SQL arithmetic on money columns is
not portable; the store does money arithmetic in Python with ``Decimal``.

Values with more than 18 fractional digits (a fee computed as price × qty × rate can have
many) are rounded half-even to 18 places on *both* dialects, so SQLite and PostgreSQL store the
same value. Non-finite values (NaN, infinities) are refused.
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Any

from sqlalchemy import DateTime, Numeric, String
from sqlalchemy.engine import Dialect
from sqlalchemy.types import TypeDecorator, TypeEngine

MONEY_PRECISION = 36
MONEY_SCALE = 18
_QUANTUM = Decimal(1).scaleb(-MONEY_SCALE)


def _canonical(value: Decimal) -> Decimal:
    if not value.is_finite():
        raise ValueError(f"refusing to store a non-finite amount: {value}")
    exponent = value.as_tuple().exponent
    if isinstance(exponent, int) and exponent < -MONEY_SCALE:
        value = value.quantize(_QUANTUM)  # default context rounding is ROUND_HALF_EVEN
    return value


def money_bind_value(value: Decimal | None, *, sqlite: bool) -> Any:
    """The DB-API parameter for a money value: canonical text on SQLite, ``Decimal`` elsewhere.

    Shared by the ``Money`` column type and the store's bulk statements (``_bulk``), so both
    paths store the same thing. Raises ``TypeError`` for floats, ``ValueError`` for NaN/inf.
    """
    if value is None:
        return None
    if not isinstance(value, Decimal):
        # ints are exact and harmless; floats are exactly what this type exists to keep out
        if isinstance(value, int) and not isinstance(value, bool):
            value = Decimal(value)
        else:
            raise TypeError(f"money must be Decimal, got {type(value).__name__}")
    value = _canonical(value)
    return str(value) if sqlite else value


class Money(TypeDecorator[Decimal]):
    """``Decimal`` stored exactly: ``NUMERIC(36, 18)`` on PostgreSQL, decimal text on SQLite."""

    impl = Numeric(MONEY_PRECISION, MONEY_SCALE, asdecimal=True)
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> TypeEngine[Any]:
        if dialect.name == "sqlite":
            return dialect.type_descriptor(String(64))
        return dialect.type_descriptor(Numeric(MONEY_PRECISION, MONEY_SCALE, asdecimal=True))

    def process_bind_param(self, value: Decimal | None, dialect: Dialect) -> Any:
        return money_bind_value(value, sqlite=dialect.name == "sqlite")

    def process_result_value(self, value: Any, dialect: Dialect) -> Decimal | None:
        if value is None:
            return None
        return value if isinstance(value, Decimal) else Decimal(str(value))


class UTCDateTime(TypeDecorator[dt.datetime]):
    """A timezone-aware UTC ``datetime``.

    PostgreSQL stores ``timestamptz``; SQLite has no time zones, so the value is stored as naive
    UTC and the UTC zone is attached again on load. Naive datetimes are refused on bind: a
    naive value is ambiguous, and guessing is how off-by-the-UTC-offset bugs are made.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: dt.datetime | None, dialect: Dialect) -> Any:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime: pass a timezone-aware UTC datetime")
        value = value.astimezone(dt.UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: dt.datetime | None, dialect: Dialect) -> Any:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=dt.UTC)
        return value.astimezone(dt.UTC)

"""Set-based bulk statements for the store's hot path (fills, orders, status history).

Why not plain Core ``conn.execute(insert(table), [dict, ...])``: for every row SQLAlchemy
builds a parameter dict, runs each column's bind processor (``Money`` canonicalisation,
``UTCDateTime`` conversion) through generic machinery and, on PostgreSQL, re-renders
multi-VALUES statements. Here rows are plain tuples converted by the same rules as the column
types (``_types``), and each batch becomes a handful of *set-based* statements instead of one
execution per row:

* SQLite: one multi-row ``INSERT ... VALUES (...), (...)`` (or ``UPDATE ... FROM (VALUES ...)``)
  per chunk of rows. A DB-API ``executemany`` steps the statement once per row, and
  ``sqlite3`` releases and re-acquires the GIL around every step: while the recorder's trio
  thread is busy, each re-acquire can wait for a forced GIL switch (5 ms), so an
  ``executemany`` running in a worker thread crawled at a few hundred rows per second next to
  a busy event loop (``bench/bench_recorder.py``). One step per chunk avoids that convoy.
* PostgreSQL: one statement over ``unnest()`` of one array parameter per column: a fixed
  statement text whatever the batch size (psycopg prepares it server-side after a few
  executions), one round trip, and the server inserts the set in one pass.

``returning`` names the key column of the rows an ``INSERT ... ON CONFLICT DO NOTHING``
actually inserted, so the store learns which fills are new without a separate lookup.
Statements run inside the store's transaction: atomicity and idempotency are unchanged. SQLite
older than 3.35 (no ``RETURNING``, no ``UPDATE ... FROM``) falls back to ``executemany`` and a
lookup of the keys already present (same result under the store's single writer).
"""

from __future__ import annotations

import datetime as dt
import sqlite3
from collections.abc import Callable, Sequence
from decimal import Decimal
from itertools import chain
from typing import Any

from sqlalchemy import DateTime, Table
from sqlalchemy.engine import Connection, Dialect

from ._types import MONEY_SCALE, money_bind_value

_TS = DateTime(timezone=True)
_SQLITE_SET_BASED = sqlite3.sqlite_version_info >= (3, 35)
_SQLITE_MAX_PARAMS = 32_766  # SQLITE_MAX_VARIABLE_NUMBER since 3.32 (999 before)
_MAX_ROWS = 500  # rows per SQLite statement (and ids per IN list): compiled once, then cached
_CACHE = 256  # distinct statement texts kept (batch sizes repeat; keep the dict bounded)
_SHORT_MONEY = MONEY_SCALE + 2  # "0." or "-" plus a digit before the point: <= MONEY_SCALE after it
_PROBE = (dt.datetime(2024, 2, 29, 23, 59, 58, 7), dt.datetime(999, 1, 2, 3, 4, 5))
_EPOCH = dt.datetime(1970, 1, 1)  # UTC, naive


class BulkSql:
    """Value converters and set-based statements for one dialect (cache one per engine)."""

    def __init__(self, dialect: Dialect) -> None:
        self.sqlite = dialect.name == "sqlite"
        self.postgresql = dialect.name == "postgresql"
        self.set_based = self.postgresql or (self.sqlite and _SQLITE_SET_BASED)
        self._dialect = dialect
        self._mark = "?" if dialect.paramstyle in ("qmark", "numeric") else "%s"
        processor = _TS.dialect_impl(dialect).bind_processor(dialect)
        self._ts_processor: Callable[[Any], Any] | None = processor
        # SQLAlchemy's SQLite DATETIME text is exactly ``isoformat(" ", "microseconds")`` (C
        # code, a fraction of the cost of its %-format); use it only if that still holds
        self._iso = self.sqlite and processor is not None and all(
            processor(p) == p.isoformat(" ", "microseconds") for p in _PROBE)
        self._sql: dict[tuple[Any, ...], str] = {}
        # (epoch second, its "YYYY-MM-DD HH:MM:SS" text): fills arrive in bursts within a
        # second, so most timestamps only format their microseconds (see ``ts_ns``)
        self._second: tuple[int, str] = (0, _EPOCH.isoformat(" "))

    # ------------------------------------------------------------------ values

    def money(self, value: Decimal | None) -> Any:
        """``value`` as the ``Money`` column type would bind it (exact; see ``_types``)."""
        # Fast path (three calls per fill row, so it counts): a finite ``Decimal`` printed
        # without an exponent whose text is at most _SHORT_MONEY characters long has at most
        # MONEY_SCALE fractional digits (the point follows at least one character), so it
        # needs no rounding and its ``str`` is the canonical text.
        if value.__class__ is Decimal:
            text = str(value)
            if "E" not in text and value.is_finite():
                if len(text) <= _SHORT_MONEY:
                    return text if self.sqlite else value
                dot = text.find(".")
                if dot < 0 or len(text) - dot - 1 <= MONEY_SCALE:
                    return text if self.sqlite else value
        if value is None:
            return None
        return money_bind_value(value, sqlite=self.sqlite)

    def ts(self, value: dt.datetime) -> Any:
        """An aware datetime as the ``UTCDateTime`` column type would bind it."""
        if value.tzinfo is None:
            raise ValueError("naive datetime: pass a timezone-aware UTC datetime")
        if value.tzinfo is not dt.UTC:
            value = value.astimezone(dt.UTC)
        if not self.sqlite:
            return value
        value = value.replace(tzinfo=None)
        if self._iso:
            return value.isoformat(" ", "microseconds")
        return self._ts_processor(value) if self._ts_processor is not None else value

    def ts_utc_naive(self, value: dt.datetime) -> Any:
        """A *naive UTC* datetime (no checks: the caller built it from UTC) as bound."""
        if self._iso:  # implies SQLite: the common case first
            return value.isoformat(" ", "microseconds")
        if self.sqlite:
            return self._ts_processor(value) if self._ts_processor is not None else value
        return value.replace(tzinfo=dt.UTC)

    def ts_ns(self, ns: int) -> Any:
        """Nanoseconds since the epoch (UTC) as bound, truncated to the microsecond.

        Integer arithmetic: exact (a float of ~1.7e18 ns is not). On SQLite the text of the
        whole second is kept from the previous call; building a datetime and formatting it
        costs several times more, and it runs once per fill.
        """
        us = ns // 1000
        if self._iso:
            second, micros = divmod(us, 1_000_000)
            cached = self._second  # one read: other threads may replace it meanwhile
            if cached[0] != second:
                cached = (second, (_EPOCH + dt.timedelta(seconds=second)).isoformat(" "))
                self._second = cached
            return f"{cached[1]}.{micros:06d}"
        return self.ts_utc_naive(_EPOCH + dt.timedelta(microseconds=us))

    # ------------------------------------------------------------------ statements

    def _keep(self, key: tuple[Any, ...], sql: str) -> str:
        if len(self._sql) < _CACHE:
            self._sql[key] = sql
        return sql

    def _chunk_rows(self, ncols: int) -> int:
        return max(1, min(_MAX_ROWS, _SQLITE_MAX_PARAMS // ncols))

    def _array_casts(self, table: Table, columns: Sequence[str]) -> str:
        return ", ".join(
            f"%b::{table.c[c].type.compile(dialect=self._dialect)}[]" for c in columns)

    def insert(self, conn: Connection, table: Table, columns: Sequence[str],
               rows: Sequence[tuple[Any, ...]], *, conflict: str | None = None,
               returning: str | None = None) -> list[Any]:
        """Insert ``rows`` (tuples in ``columns`` order) in one set-based statement per chunk.

        With ``conflict`` (the unique column) rows whose key exists are skipped
        (``ON CONFLICT (conflict) DO NOTHING``). With ``returning`` (a column name) the values
        of that column for the rows actually inserted are returned; otherwise ``[]``.
        """
        if not rows:
            return []
        tail = f" ON CONFLICT ({conflict}) DO NOTHING" if conflict else ""
        cols = ", ".join(columns)
        if not self.set_based:
            return self._insert_fallback(conn, table, columns, rows, tail, returning)
        if returning:
            tail += f" RETURNING {returning}"
        out: list[Any] = []
        if self.postgresql:
            ck: tuple[Any, ...] = ("ip", table.name, cols, tail)
            sql = self._sql.get(ck) or self._keep(ck, (
                f"INSERT INTO {table.name} ({cols}) SELECT * FROM unnest("
                f"{self._array_casts(table, columns)}){tail}"))
            params = tuple(list(column) for column in zip(*rows, strict=True))
            result = conn.exec_driver_sql(sql, params)
            if returning:
                out.extend(result.scalars())
            return out
        step = self._chunk_rows(len(columns))
        one = "(" + ", ".join([self._mark] * len(columns)) + ")"
        for i in range(0, len(rows), step):
            part = rows[i : i + step]
            n = len(part)
            ck = ("is", table.name, cols, tail, n)
            sql = self._sql.get(ck) or self._keep(ck, (
                f"INSERT INTO {table.name} ({cols}) VALUES {', '.join([one] * n)}{tail}"))
            result = conn.exec_driver_sql(sql, tuple(chain.from_iterable(part)))
            if returning:
                out.extend(result.scalars())
        return out

    def _insert_fallback(self, conn: Connection, table: Table, columns: Sequence[str],
                         rows: Sequence[tuple[Any, ...]], tail: str,
                         returning: str | None) -> list[Any]:
        existing: set[Any] = set()
        if returning:
            # the store is the only writer and holds its transaction: keys absent now are
            # exactly the keys this insert adds
            at = list(columns).index(returning)
            existing = {r[0] for r in self.select_in(conn, table, returning,
                                                     [row[at] for row in rows])}
        ck: tuple[Any, ...] = ("ie", table.name, ", ".join(columns), tail)
        sql = self._sql.get(ck) or self._keep(ck, (
            f"INSERT INTO {table.name} ({', '.join(columns)}) "
            f"VALUES ({', '.join([self._mark] * len(columns))}){tail}"))
        conn.exec_driver_sql(sql, list(rows))
        if not returning:
            return []
        at = list(columns).index(returning)
        new: list[Any] = []
        for row in rows:
            if row[at] not in existing:
                existing.add(row[at])
                new.append(row[at])
        return new

    def update(self, conn: Connection, table: Table, columns: Sequence[str], key: str,
               rows: Sequence[tuple[Any, ...]]) -> None:
        """``UPDATE table SET columns WHERE key = ...`` for each row ``(*values, key_value)``."""
        if not rows:
            return
        names = [*columns, key]
        if self.postgresql:
            ck: tuple[Any, ...] = ("up", table.name, *names)
            sql = self._sql.get(ck) or self._keep(ck, (
                f"UPDATE {table.name} AS t SET "
                + ", ".join(f"{c} = v.{c}" for c in columns)
                + f" FROM unnest({self._array_casts(table, names)}) AS v({', '.join(names)})"
                f" WHERE t.{key} = v.{key}"))
            conn.exec_driver_sql(sql, tuple(list(c) for c in zip(*rows, strict=True)))
            return
        if not self.set_based:
            sets = ", ".join(f"{c} = {self._mark}" for c in columns)
            conn.exec_driver_sql(
                f"UPDATE {table.name} SET {sets} WHERE {key} = {self._mark}", list(rows))
            return
        # SQLite names the columns of a VALUES list column1, column2, ...
        sets = ", ".join(f"{c} = v.column{i}" for i, c in enumerate(columns, 1))
        one = "(" + ", ".join([self._mark] * len(names)) + ")"
        step = self._chunk_rows(len(names))
        for i in range(0, len(rows), step):
            part = rows[i : i + step]
            n = len(part)
            ck = ("us", table.name, *names, n)
            sql = self._sql.get(ck) or self._keep(ck, (
                f"UPDATE {table.name} SET {sets} FROM (VALUES {', '.join([one] * n)}) AS v "
                f"WHERE {table.name}.{key} = v.column{len(names)}"))
            conn.exec_driver_sql(sql, tuple(chain.from_iterable(part)))

    def select_in(self, conn: Connection, table: Table, column: str, keys: Sequence[Any], *,
                  columns: Sequence[str] = ()) -> list[Any]:
        """Rows of ``columns`` (default: ``column``) whose ``column`` is one of ``keys``.

        PostgreSQL takes the keys as one array parameter (``= ANY(...)``); SQLite as ``IN``
        lists of at most 500 parameters.
        """
        if not keys:
            return []
        wanted = ", ".join(columns or (column,))
        if self.postgresql:
            ck: tuple[Any, ...] = ("sp", table.name, column, wanted)
            sql = self._sql.get(ck) or self._keep(ck, (
                f"SELECT {wanted} FROM {table.name} WHERE {column} = ANY("
                f"{self._array_casts(table, [column])})"))
            return list(conn.exec_driver_sql(sql, (list(keys),)))
        out: list[Any] = []
        for i in range(0, len(keys), _MAX_ROWS):
            part = tuple(keys[i : i + _MAX_ROWS])
            n = len(part)
            ck = ("ss", table.name, column, wanted, n)
            sql = self._sql.get(ck) or self._keep(ck, (
                f"SELECT {wanted} FROM {table.name} WHERE {column} IN "
                f"({', '.join([self._mark] * n)})"))
            out.extend(conn.exec_driver_sql(sql, part))
        return out

"""Driver-level bulk statements for the store's hot path (fills, status history, order updates).

Why not plain Core ``conn.execute(insert(table), [dict, ...])``: for every row SQLAlchemy
builds a parameter dict, runs each column's bind processor (``Money`` canonicalisation,
``UTCDateTime`` conversion) through generic machinery and, on PostgreSQL, re-renders
multi-VALUES statements. Profiling the recorder showed that per-row overhead cost more than the
database itself (``bench/bench_recorder.py``: about 25 % of a raw ``executemany``). Here the
SQL text is rendered once per dialect and table, rows are plain tuples converted by the same
rules as the column types (``_types``), and ``Connection.exec_driver_sql`` hands them to the
DB-API ``executemany`` (in-process on SQLite, pipelined by psycopg 3 on PostgreSQL). The
statement still runs inside the store's transaction, so atomicity and idempotency
(``ON CONFLICT DO NOTHING``) are unchanged.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Sequence
from decimal import Decimal
from typing import Any

from sqlalchemy import DateTime
from sqlalchemy.engine import Connection, Dialect

from ._types import MONEY_SCALE, money_bind_value

_TS = DateTime(timezone=True)


class BulkSql:
    """Value converters and SQL text for one dialect (cache one per engine)."""

    def __init__(self, dialect: Dialect) -> None:
        self.sqlite = dialect.name == "sqlite"
        self._mark = "?" if dialect.paramstyle in ("qmark", "numeric") else "%s"
        processor = _TS.dialect_impl(dialect).bind_processor(dialect)
        self._ts_processor: Callable[[Any], Any] | None = processor
        self._sql: dict[str, str] = {}

    def money(self, value: Decimal | None) -> Any:
        """``value`` as the ``Money`` column type would bind it (exact; see ``_types``)."""
        if value is None:
            return None
        if self.sqlite and type(value) is Decimal and value.is_finite():
            # fast path: ``str`` is already the canonical text unless the value needs rounding
            # (more than MONEY_SCALE fractional digits) or is in exponent form
            text = str(value)
            dot = text.find(".")
            if "E" not in text and (dot < 0 or len(text) - dot - 1 <= MONEY_SCALE):
                return text
        return money_bind_value(value, sqlite=self.sqlite)

    def ts(self, value: dt.datetime) -> Any:
        """An aware datetime as the ``UTCDateTime`` column type would bind it."""
        if value.tzinfo is None:
            raise ValueError("naive datetime: pass a timezone-aware UTC datetime")
        if value.tzinfo is not dt.UTC:
            value = value.astimezone(dt.UTC)
        if self.sqlite:
            value = value.replace(tzinfo=None)
        return self._ts_processor(value) if self._ts_processor is not None else value

    def insert(self, table: str, columns: Sequence[str], *, conflict: str | None = None) -> str:
        """``INSERT INTO table (columns) VALUES (...)``, with ``ON CONFLICT (conflict) DO
        NOTHING`` when ``conflict`` names the unique column (same text on both dialects)."""
        key = f"i:{table}:{','.join(columns)}:{conflict}"
        sql = self._sql.get(key)
        if sql is None:
            sql = (f"INSERT INTO {table} ({', '.join(columns)}) "
                   f"VALUES ({', '.join([self._mark] * len(columns))})")
            if conflict:
                sql += f" ON CONFLICT ({conflict}) DO NOTHING"
            self._sql[key] = sql
        return sql

    def update(self, table: str, columns: Sequence[str], key_column: str) -> str:
        """``UPDATE table SET c1 = ?, ... WHERE key_column = ?`` (parameters in that order)."""
        key = f"u:{table}:{','.join(columns)}:{key_column}"
        sql = self._sql.get(key)
        if sql is None:
            sets = ", ".join(f"{c} = {self._mark}" for c in columns)
            sql = f"UPDATE {table} SET {sets} WHERE {key_column} = {self._mark}"
            self._sql[key] = sql
        return sql

    def select_in(self, table: str, column: str, n: int, *,
                  columns: Sequence[str] = ()) -> str:
        """``SELECT columns FROM table WHERE column IN (n parameters)`` (default: ``column``)."""
        key = f"s:{table}:{column}:{n}:{','.join(columns)}"
        sql = self._sql.get(key)
        if sql is None:
            sql = (f"SELECT {', '.join(columns or (column,))} FROM {table} WHERE {column} IN "
                   f"({', '.join([self._mark] * n)})")
            if len(self._sql) < 256:  # a few distinct sizes repeat; keep the cache bounded
                self._sql[key] = sql
        return sql

    @staticmethod
    def executemany(conn: Connection, sql: str, rows: Sequence[tuple[Any, ...]]) -> None:
        if rows:
            conn.exec_driver_sql(sql, list(rows))

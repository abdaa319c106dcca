"""The store's errors, translated from SQLAlchemy/DB-API errors at the boundary.

::

    StoreError                  anything the store could not do
    ├── StoreUnavailable        the database cannot be reached or written right now
    │                           (connection refused or dropped, read-only or missing SQLite
    │                           file, lock timeout): retrying later can succeed
    └── SchemaError             the schema is missing or not at the migration head
"""

from __future__ import annotations

from sqlalchemy import exc as sa_exc


class StoreError(Exception):
    """The store could not complete an operation. ``operation`` names it."""

    def __init__(self, message: str, *, operation: str = "") -> None:
        super().__init__(message)
        self.operation = operation


class StoreUnavailable(StoreError):
    """The database is unreachable or not writable; the same call may succeed later."""


class SchemaError(StoreError):
    """The database schema is missing or older than the code (run ``db upgrade``)."""


_SQLITE_UNAVAILABLE = (
    "unable to open",
    "readonly",
    "database is locked",
    "disk I/O",
    "database or disk is full",
    "cannot commit",
)


def translate(exc: Exception, operation: str) -> StoreError:
    """Map a SQLAlchemy error to ours (the caller does ``raise translate(e, op) from e``).

    ``OperationalError`` covers connection refused/dropped on psycopg and "unable to open
    database file" / "attempt to write a readonly database" / "database is locked" on SQLite:
    all of them are conditions of the environment, so they are ``StoreUnavailable`` (sqlite3
    also reports SQL errors as ``OperationalError``; those are plain ``StoreError``). A
    connection SQLAlchemy marked invalidated is the same. Everything else (integrity, data,
    programming errors) is a plain ``StoreError``: retrying will not help by itself.
    """
    message = f"{operation}: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
    if isinstance(exc, sa_exc.DBAPIError) and exc.connection_invalidated:
        return StoreUnavailable(message, operation=operation)
    text = str(exc)
    if "no such table" in text or ("relation" in text and "does not exist" in text):
        return SchemaError(message, operation=operation)
    if isinstance(exc, sa_exc.OperationalError) and "sqlite3" in text:
        # sqlite3 raises OperationalError for SQL errors too; only these are the environment
        if any(m in text for m in _SQLITE_UNAVAILABLE):
            return StoreUnavailable(message, operation=operation)
        return StoreError(message, operation=operation)
    if isinstance(exc, sa_exc.OperationalError | sa_exc.InterfaceError | sa_exc.TimeoutError):
        return StoreUnavailable(message, operation=operation)
    return StoreError(message, operation=operation)

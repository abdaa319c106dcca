"""Alembic environment: runs migrations on the connection ``persistence._engine`` passes in.

When started from the ``alembic`` command line instead, the URL comes from ``-x url=...``.
``render_as_batch`` is on for SQLite, whose ALTER TABLE cannot change columns in place.
Logging is left to the application (no ``fileConfig``), so migrating on start does not
reconfigure the app's loggers.
"""

from __future__ import annotations

from typing import Any

from alembic import context
from sqlalchemy.engine import Connection

from persistence._engine import make_engine
from persistence._models import Base

config = context.config


def _migrate(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=Base.metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def _run() -> None:
    connection: Any = config.attributes.get("connection")
    if connection is not None:
        _migrate(connection)
        return
    if context.is_offline_mode():
        context.configure(
            url=context.get_x_argument(as_dictionary=True).get("url"),
            target_metadata=Base.metadata,
            literal_binds=True,
        )
        with context.begin_transaction():
            context.run_migrations()
        return
    engine = make_engine(context.get_x_argument(as_dictionary=True).get("url"))
    try:
        with engine.begin() as conn:
            _migrate(conn)
    finally:
        engine.dispose()


_run()

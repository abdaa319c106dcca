"""Engine factory and the Alembic entry points (``db upgrade`` / ``db current``).

SQLite is the default (``sqlite:///trading.db``, no server needed); any SQLAlchemy URL works,
PostgreSQL through psycopg 3 (``postgresql+psycopg://user@host/db``).

SQLite settings, applied on every new connection:

* ``journal_mode=WAL``: readers (reports, ``db current``) never block the recorder's writer.
* ``synchronous=FULL`` by default: in WAL mode, ``NORMAL`` is safe against a crash of the
  process but can lose the last commits on power loss or an OS crash; ``FULL`` syncs the WAL on
  every commit. The order written ahead of sending must survive exactly that, so ``FULL`` is
  the default; the recorder commits whole batches, so the cost is one fsync per batch, not per
  event. Pass ``sqlite_synchronous="NORMAL"`` where losing the last moments is acceptable
  (backtests, benchmarks).
* ``foreign_keys=ON`` (SQLite leaves it off by default) and a busy timeout, so a second
  connection waits for the writer's lock instead of failing at once with "database is locked".
"""

from __future__ import annotations

import pathlib
from typing import Any, Literal

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError

from ._errors import StoreError, translate

DEFAULT_URL = "sqlite:///trading.db"
BUSY_TIMEOUT_S = 10.0
_HERE = pathlib.Path(__file__).resolve().parent

SQLiteSynchronous = Literal["OFF", "NORMAL", "FULL", "EXTRA"]


def normalise_url(url: str | None) -> str:
    """Return ``url`` with PostgreSQL pointed at psycopg 3 (SQLAlchemy's default is psycopg2).

    ``postgres://`` and ``postgresql://`` become ``postgresql+psycopg://``; ``None`` is the
    default SQLite file.
    """
    if not url:
        return DEFAULT_URL
    for prefix in ("postgres://", "postgresql://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    return url


def make_engine(
    url: str | None = None, *, sqlite_synchronous: SQLiteSynchronous = "FULL", echo: bool = False
) -> Engine:
    """Create an engine for ``url`` with the settings described in the module docstring.

    The engine is safe to use from worker threads (``trio.to_thread.run_sync``): connections
    come from a pool and each call checks one out.
    """
    url = normalise_url(url)
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if sqlite_synchronous not in ("OFF", "NORMAL", "FULL", "EXTRA"):
            raise ValueError(f"bad sqlite_synchronous {sqlite_synchronous!r}")
        engine = create_engine(
            url,
            echo=echo,
            # pooled connections move between trio's worker threads; the pool hands each one
            # to a single thread at a time, which is what sqlite3 actually needs
            connect_args={"check_same_thread": False, "timeout": BUSY_TIMEOUT_S},
        )

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
            cur = dbapi_conn.cursor()
            try:
                if parsed.database not in (None, "", ":memory:"):
                    cur.execute("PRAGMA journal_mode=WAL")
                cur.execute(f"PRAGMA synchronous={sqlite_synchronous}")
                cur.execute("PRAGMA foreign_keys=ON")
                # No automatic checkpoints: one would run inside whichever commit crosses the
                # threshold (often an order's write-ahead, on the tick-to-order path). The
                # recorder checkpoints between batches (Store.checkpoint); SQLite also folds
                # the log back when the last connection closes.
                cur.execute("PRAGMA wal_autocheckpoint=0")
                cur.execute(f"PRAGMA busy_timeout={int(BUSY_TIMEOUT_S * 1000)}")
            finally:
                cur.close()

        return engine
    connect_args: dict[str, Any] = {}
    if parsed.get_backend_name() == "postgresql":
        connect_args["connect_timeout"] = 5
    # pre-ping: after the server went away, a pooled connection is replaced instead of failing
    # the first write after the server came back
    engine = create_engine(url, echo=echo, pool_pre_ping=True, connect_args=connect_args)
    return engine


def _alembic_config(engine: Engine) -> Config:
    # The ini file sits next to this module and is found from here, so the commands work from
    # any working directory (the CLI, tests, an installed package).
    cfg = Config(str(_HERE / "alembic.ini"))
    cfg.set_main_option("script_location", str(_HERE / "migrations"))
    cfg.attributes["engine"] = engine
    return cfg


def _run(url: str | Engine, operation: str, fn: Any) -> Any:
    engine = url if isinstance(url, Engine) else make_engine(url)
    try:
        with engine.begin() as conn:
            cfg = _alembic_config(engine)
            cfg.attributes["connection"] = conn
            return fn(cfg, conn)
    except SQLAlchemyError as exc:
        raise translate(exc, operation) from exc
    finally:
        if not isinstance(url, Engine):
            engine.dispose()


def head_revision() -> str:
    """The newest migration revision shipped with this code."""
    cfg = Config(str(_HERE / "alembic.ini"))
    cfg.set_main_option("script_location", str(_HERE / "migrations"))
    head = ScriptDirectory.from_config(cfg).get_current_head()
    if head is None:  # pragma: no cover - the package always ships a revision
        raise StoreError("no migration revisions found", operation="head")
    return head


def upgrade_to_head(url: str | Engine | None = None) -> str:
    """Create or upgrade the schema at ``url`` to the newest revision and return it.

    Idempotent: at head it does nothing. Raises ``StoreUnavailable`` if the database cannot be
    reached.
    """
    _run(
        url if url is not None else DEFAULT_URL,
        "upgrade",
        lambda cfg, _c: command.upgrade(cfg, "head"),
    )
    return head_revision()


def downgrade(url: str | Engine | None, revision: str) -> None:
    """Downgrade the schema at ``url`` to ``revision`` (``"base"`` drops every table)."""
    _run(
        url if url is not None else DEFAULT_URL,
        "downgrade",
        lambda cfg, _c: command.downgrade(cfg, revision),
    )


def current(url: str | Engine | None = None) -> str | None:
    """The revision the database at ``url`` is at, or ``None`` for an empty database."""
    return _run(  # type: ignore[no-any-return]
        url if url is not None else DEFAULT_URL,
        "current",
        lambda _cfg, conn: MigrationContext.configure(conn).get_current_revision(),
    )

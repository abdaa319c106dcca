"""Alembic migrations on SQLite and PostgreSQL: empty → head → base, and models == head."""

from __future__ import annotations

import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from persistence import Base, current, downgrade, head_revision, make_engine, upgrade_to_head
from tests.test_persistence_support import db_url, pg_url, sqlite_url  # noqa: F401

TABLES = {t.name for t in Base.metadata.sorted_tables}


def tables(url: str) -> set[str]:
    engine = make_engine(url)
    try:
        return set(sa.inspect(engine).get_table_names()) - {"alembic_version"}
    finally:
        engine.dispose()


def test_upgrade_from_empty_to_head_and_back(db_url: str) -> None:  # noqa: F811
    assert current(db_url) is None
    assert tables(db_url) == set()
    assert upgrade_to_head(db_url) == head_revision()
    assert current(db_url) == head_revision()
    assert tables(db_url) == TABLES
    assert upgrade_to_head(db_url) == head_revision()  # idempotent
    downgrade(db_url, "base")
    assert current(db_url) is None
    assert tables(db_url) == set()
    upgrade_to_head(db_url)
    assert tables(db_url) == TABLES


def test_models_and_migration_head_agree(db_url: str) -> None:  # noqa: F811
    upgrade_to_head(db_url)
    engine = make_engine(db_url)
    try:
        with engine.connect() as conn:
            ctx = MigrationContext.configure(conn, opts={"compare_type": True})
            diff = compare_metadata(ctx, Base.metadata)
    finally:
        engine.dispose()
    assert diff == []

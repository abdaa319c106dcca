"""Shared test configuration.

``trio_mode = true`` (pyproject) makes every ``async def test_*`` a trio test; use the
``autojump_clock`` fixture for anything that sleeps, backs off or times out.
"""

from __future__ import annotations

import datetime as dt
import pathlib
from collections.abc import Iterator
from decimal import Decimal

import pytest

from persistence import Store

ROOT = pathlib.Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared"
FIXTURES = pathlib.Path(__file__).resolve().parent / "fixtures"


@pytest.fixture
def fixtures_dir() -> pathlib.Path:
    return FIXTURES


#: The fixed clock of ``open_store``'s row timestamps.
T0 = dt.datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=dt.UTC)


def open_store(path: pathlib.Path, sync: str = "NORMAL") -> Store:
    """A SQLite store at ``path`` (paper mode's ``synchronous=NORMAL`` unless told), its run
    started with 1,000 USD."""
    store = Store(f"sqlite:///{path}", sqlite_synchronous=sync,  # type: ignore[arg-type]
                  clock=lambda: T0)
    store.start_run(mode="paper", initial_balances={"USD": Decimal(1000)})
    return store


@pytest.fixture
def db(tmp_path: pathlib.Path) -> pathlib.Path:
    """The SQLite file of the ``store`` fixture."""
    return tmp_path / "trading.db"


@pytest.fixture
def store(db: pathlib.Path) -> Iterator[Store]:
    s = open_store(db)
    yield s
    s.close()

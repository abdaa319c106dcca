"""Shared test configuration.

``trio_mode = true`` (pyproject) makes every ``async def test_*`` a trio test; use the
``autojump_clock`` fixture for anything that sleeps, backs off or times out.
"""

from __future__ import annotations

import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared"
FIXTURES = pathlib.Path(__file__).resolve().parent / "fixtures"


@pytest.fixture
def fixtures_dir() -> pathlib.Path:
    return FIXTURES

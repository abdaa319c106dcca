"""The persistence package's public surface and its one-way imports (DESIGN.md rooms)."""

from __future__ import annotations

import ast
import pathlib

import persistence

ROOT = pathlib.Path(persistence.__file__).resolve().parent

EXPECTED = {
    "DEFAULT_URL",
    "Base",
    "BalanceSnapshot",
    "BreakerLatch",
    "EquityPoint",
    "EquitySnapshot",
    "Money",
    "OpenOrder",
    "Position",
    "PositionSnapshot",
    "Recordable",
    "RecoveredState",
    "SchemaError",
    "Store",
    "StoreError",
    "StoreUnavailable",
    "StrategyPnl",
    "TradeRow",
    "UTCDateTime",
    "current",
    "downgrade",
    "head_revision",
    "make_engine",
    "normalise_url",
    "redact_config",
    "upgrade_to_head",
    "utc_now",
}


def test_public_surface() -> None:
    public = {n for n in dir(persistence) if not n.startswith("_")}
    assert public == EXPECTED


def test_persistence_imports_only_protocol() -> None:
    ours = {"actors", "trading", "monitoring", "backtest", "main", "config"}
    for path in ROOT.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                assert name.split(".")[0] not in ours, f"{path}: imports {name}"

"""`make demo`: paper mode offline over the bundled data trades and exits with the summary."""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent


def test_demo_replay_trades_offline_and_prints_summary(tmp_path: pathlib.Path) -> None:
    env = {**os.environ, "KRAKEN_WS_URL": "ws://127.0.0.1:9/v2"}  # no network is used
    result = subprocess.run(
        [sys.executable, "main.py", "--mode", "paper", "--replay", "data/demo", "--speed", "0",
         "--exit-at-end", "--pairs", "BTC/USDT,ETH/USDT,ETH/BTC", "--quote-currency", "USDT",
         "--db", f"sqlite:///{tmp_path / 'demo.db'}", "--metrics-addr", "127.0.0.1:0"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "books are SYNTHETIC" in result.stderr
    out = result.stdout
    assert "paper trading summary" in out
    fills = int(out.split("fills", 1)[1].split()[0])
    assert fills > 0
    for strategy in ("momentum", "mean_reversion", "arbitrage"):
        assert f"\n{strategy} " in out, out

"""After a restart, rebuilt strategies know the positions their earlier fills opened."""

from __future__ import annotations

import pathlib
from decimal import Decimal

from actors.app import Application
from config import load_settings
from persistence import Store
from protocol.messages import Fill, OrderRequest, Side


def test_rebuilt_strategy_knows_its_positions_from_committed_fills(
        tmp_path: pathlib.Path) -> None:
    url = f"sqlite:///{tmp_path / 'restart.db'}"
    store = Store(url)
    store.start_run(mode="paper", initial_balances={"USD": Decimal(10_000)})
    order = OrderRequest(client_order_id="r1-0", strategy="momentum", symbol="BTC/USD",
                         side=Side.BUY, qty=Decimal("0.01"))
    store.record_order_ahead(order)
    store.write_batch([Fill(fill_id="P1", client_order_id="r1-0", strategy="momentum",
                            symbol="BTC/USD", side=Side.BUY, price=Decimal(60_000),
                            qty=Decimal("0.01"), fee=Decimal("1.56"), fee_currency="USD")])
    store.close()

    settings = load_settings(["--mode", "paper", "--db", url, "--metrics-addr", "127.0.0.1:0",
                              "--strategies", "momentum,mean_reversion"], {})
    app = Application(settings, store=Store(url), run_tag="r2")
    assert app.portfolio.position_qty("BTC/USD") == Decimal("0.01")
    momentum = app._build_strategy("momentum")
    other = app._build_strategy("mean_reversion")
    assert momentum.keeper.positions["BTC/USD"] == Decimal("0.01")  # type: ignore[attr-defined]
    assert not other.keeper.positions.get("BTC/USD")  # type: ignore[attr-defined]

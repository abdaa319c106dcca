"""Throughput of the pure trading core: marks, risk checks, paper fills, ledger updates.

Run: ``.venv/bin/python bench/bench_trading_core.py``. Prints events/s for each hot path and
its ratio to a baseline measured in the same run (a bare loop building the same Decimal mid).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from decimal import Decimal as D

from protocol.instruments import PairInfo
from protocol.messages import BookEvent, BookLevel, Fill, OrderRequest, Side, Signal
from trading.ids import ClientOrderIds
from trading.paper import PaperMatcher
from trading.portfolio import Portfolio
from trading.risk import RiskEngine, RiskLimits

PAIR = PairInfo(symbol="BTC/USD", base="BTC", quote="USD", price_decimals=1, lot_decimals=8)
N = 100_000


def books(n: int) -> list[BookEvent]:
    out = []
    for i in range(n):
        p = D(60000) + D(i % 500) / 10
        out.append(BookEvent(symbol="BTC/USD",
                             bids=(BookLevel(p - D("0.1"), D(1)), BookLevel(p - D(1), D(3))),
                             asks=(BookLevel(p + D("0.1"), D(1)), BookLevel(p + D(1), D(3)))))
    return out


def timed(label: str, n: int, fn: Callable[[], object], baseline: float | None = None) -> float:
    t0 = time.perf_counter()
    fn()
    dt = time.perf_counter() - t0
    rate = n / dt
    ratio = f"  ({baseline / rate:.1f}x baseline cost)" if baseline else ""
    print(f"{label:<40} {rate:>12,.0f} /s{ratio}")
    return rate


def main() -> None:
    bks = books(N)

    def base() -> None:
        for b in bks:
            _ = (b.bids[0].price + b.asks[0].price) / 2

    baseline = timed("baseline: Decimal mid", N, base)

    eng = RiskEngine(RiskLimits(), Portfolio({"USD": D(10**6)}), {"BTC/USD": PAIR},
                     ClientOrderIds("b"))
    timed("risk.on_market (mark + SL/TP), flat", N, lambda: [eng.on_market(b) for b in bks],
          baseline)
    sig = Signal(strategy="m", symbol="BTC/USD", side=Side.BUY, qty=D("0.001"),
                 reference_price=D(60000))
    timed("risk.evaluate (approve one signal)", N // 10,
          lambda: [eng.evaluate([sig], now=0, breaker_open=False) for _ in range(N // 10)],
          baseline)

    m = PaperMatcher({"BTC/USD": PAIR}, fill_id_prefix="p")
    pf = Portfolio({"USD": D(10**9), "BTC": D(10**3)})
    orders = [OrderRequest(client_order_id=f"c{i}", strategy="m", symbol="BTC/USD",
                           side=Side.BUY if i % 2 else Side.SELL, qty=D("1.5"))
              for i in range(N)]

    def paper() -> None:
        for o, b in zip(orders, bks, strict=True):
            for ev in m.submit(o, b, available=pf.balance, now=0.0):
                if isinstance(ev, Fill):
                    pf.apply_fill(ev, PAIR)
            pf.mark("BTC/USD", (b.bids[0].price + b.asks[0].price) / 2)

    timed("submit market (2 levels) + 2 fills + mark", N, paper, baseline)
    print(f"fills booked: {pf.fill_count}, equity {pf.equity_usd():.2f} USD")


if __name__ == "__main__":
    main()

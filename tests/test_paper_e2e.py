"""Paper trading end to end over a real loopback WebSocket.

The Kraken-protocol test server (scripted mode) streams books for BTC/USD, ETH/USD and ETH/BTC
with valid checksums; the whole actor tree runs in paper mode against it. The script makes a
BTC rally (momentum), an ETH dip (mean reversion) and a cheap ETH/BTC (triangular arbitrage);
each strategy must trade, every fill must carry its taker fee, and an independent
recomputation of balances and realized P&L from the fills must equal the portfolio exactly.
"""

from __future__ import annotations

import pathlib
from collections import defaultdict, deque
from decimal import Decimal
from typing import Any

import trio

from actors.app import Application
from config import load_settings
from protocol.kraken import checksum_v2
from protocol.messages import BookLevel, Fill, Side
from tests.kraken_ws_server import open_kraken_ws_server

PRECISION = {"BTC/USD": (1, 8), "ETH/USD": (2, 8), "ETH/BTC": (5, 8)}
SYMBOLS = tuple(PRECISION)


def num(value: Decimal) -> str:
    text = format(value, "f")
    return text.rstrip("0").rstrip(".") if "." in text else text


def book_frame(symbol: str, mid: Decimal) -> str:
    """A full snapshot (5 levels a side, 1 tick apart, 1-tick half spread) with its checksum."""
    pp, qp = PRECISION[symbol]
    tick = Decimal(1).scaleb(-pp)
    mid = mid.quantize(tick)
    qty = Decimal("50")
    bids = [BookLevel(mid - tick * (i + 1), qty) for i in range(5)]
    asks = [BookLevel(mid + tick * (i + 1), qty) for i in range(5)]
    checksum = checksum_v2(asks, bids, price_precision=pp, qty_precision=qp)

    def side(levels: list[BookLevel]) -> str:
        return ",".join(f'{{"price":{num(lv.price)},"qty":{num(lv.qty)}}}' for lv in levels)

    return (f'{{"channel":"book","type":"snapshot","data":[{{"symbol":"{symbol}",'
            f'"bids":[{side(bids)}],"asks":[{side(asks)}],"checksum":{checksum},'
            f'"timestamp":"2024-01-02T00:00:00.000000Z"}}]}}')


def recompute_balances(fills: list[Fill], start: dict[str, Decimal]) -> dict[str, Decimal]:
    balances: dict[str, Decimal] = defaultdict(Decimal, start)
    for f in fills:
        base, quote = f.symbol.split("/")
        sign = 1 if f.side is Side.BUY else -1
        balances[base] += sign * f.qty
        balances[quote] -= sign * f.qty * f.price
        balances[f.fee_currency] -= f.fee
    return {k: v for k, v in balances.items() if v != 0}


def recompute_realized(fills: list[Fill]) -> dict[str, Decimal]:
    """FIFO realized P&L per quote currency, gross of fees (fees are booked separately)."""
    lots: dict[str, deque[list[Decimal]]] = defaultdict(deque)
    realized: dict[str, Decimal] = defaultdict(Decimal)
    for f in fills:
        quote = f.symbol.split("/")[1]
        signed = f.qty if f.side is Side.BUY else -f.qty
        queue = lots[f.symbol]
        while signed and queue and (queue[0][0] > 0) != (signed > 0):
            lot = queue[0]
            take = min(abs(signed), abs(lot[0]))
            direction = 1 if lot[0] > 0 else -1
            realized[quote] += direction * take * (f.price - lot[1])
            lot[0] -= direction * take
            signed += direction * take
            if lot[0] == 0:
                queue.popleft()
        if signed:
            queue.append([signed, f.price])
    return dict(realized)


async def push_round(server: Any, mids: dict[str, Decimal]) -> None:
    for symbol in SYMBOLS:
        server.push(book_frame(symbol, mids[symbol]))
    await trio.sleep(0.03)  # let every actor see this round before the next one


async def test_paper_trading_end_to_end(tmp_path: pathlib.Path) -> None:
    with trio.fail_after(60):
        async with open_kraken_ws_server(symbols=SYMBOLS, scripted=True,
                                         heartbeat_interval=0.5) as server:
            settings = load_settings([
                "--mode", "paper", "--ws-url", server.url, "--metrics-addr", "127.0.0.1:0",
                "--db", f"sqlite:///{tmp_path / 'e2e.db'}",
                "--strategies", "momentum,mean_reversion,arbitrage",
            ], {})
            app = Application(settings, run_tag="e2e")
            async with trio.open_nursery() as nursery:
                await nursery.start(app.run)
                await server.wait_connections(1)
                # The server records requests but has no "subscribed" event: poll (bounded).
                while not any(r.get("params", {}).get("channel") == "book"  # noqa: ASYNC110
                              for r in server.requests):
                    await trio.sleep(0.01)
                await trio.sleep(0.1)
                btc, eth = Decimal("60000"), Decimal("3000")
                wiggle = [Decimal(1), Decimal(-1)]
                # Warm-up: a quiet, consistent market (ETH/BTC = ETH/USD / BTC/USD).
                for i in range(30):
                    w = wiggle[i % 2]
                    b, e = btc + 6 * w, eth + Decimal("0.3") * w
                    await push_round(server, {"BTC/USD": b, "ETH/USD": e, "ETH/BTC": e / b})
                # Momentum: BTC rallies 1 %.
                for step in range(1, 5):
                    b = btc * (1 + Decimal("0.0025") * step)
                    await push_round(server, {"BTC/USD": b, "ETH/USD": eth, "ETH/BTC": eth / b})
                # Mean reversion: ETH dips 2 % (ETH/BTC follows, so no triangle yet).
                e = eth * Decimal("0.98")
                await push_round(server, {"BTC/USD": b, "ETH/USD": e, "ETH/BTC": e / b})
                # Triangular arbitrage: ETH/BTC 1.5 % cheap against ETH/USD / BTC/USD.
                await push_round(server, {"BTC/USD": b, "ETH/USD": e,
                                          "ETH/BTC": e / b * Decimal("0.985")})
                for _ in range(100):
                    if {"momentum", "mean_reversion", "arbitrage"} <= {f.strategy
                                                                       for f in app.fills}:
                        break
                    await trio.sleep(0.02)
                await trio.sleep(0.2)
                app.request_stop()

    fills = list(app.fills)
    strategies = {f.strategy for f in fills}
    assert {"momentum", "mean_reversion", "arbitrage"} <= strategies, fills
    arbitrage_symbols = {f.symbol for f in fills if f.strategy == "arbitrage"}
    assert arbitrage_symbols == set(SYMBOLS)  # all three legs of the triangle
    for f in fills:
        pair = app.pairs[f.symbol]
        assert f.fee == f.price * f.qty * pair.fee_taker
        assert f.fee > 0
    portfolio = app.portfolio
    assert recompute_balances(fills, {"USD": settings.cash}) == {
        k: v for k, v in portfolio.balances().items() if v != 0}
    assert recompute_realized(fills) == {k: v for k, v in portfolio.realized_pnl().items()}
    assert portfolio.fees() == {
        ccy: sum((f.fee for f in fills if f.fee_currency == ccy), Decimal(0))
        for ccy in {f.fee_currency for f in fills}}

"""``--record FILE`` in paper mode: the live session's raw frames, replayable to the same books."""

from __future__ import annotations

import pathlib
from typing import Any

import trio

from actors.app import Application
from actors.recording import segment_paths
from actors.replay import iter_frames
from config import load_settings
from protocol.messages import BookEvent
from tests.kraken_ws_server import open_kraken_ws_server


async def test_paper_record_replays_to_the_books_the_system_saw(tmp_path: pathlib.Path) -> None:
    out = tmp_path / "rec" / "kraken"
    with trio.fail_after(60):
        async with open_kraken_ws_server(symbols=["BTC/USD", "ETH/USD"],
                                         updates_per_second=200) as server:
            settings = load_settings([
                "--mode", "paper", "--ws-url", server.url, "--metrics-addr", "127.0.0.1:0",
                "--db", f"sqlite:///{tmp_path / 'r.db'}", "--pairs", "BTC/USD,ETH/USD",
                "--strategies", "momentum", "--record", str(out)], {})
            app = Application(settings, run_tag="rec")
            seen: dict[str, BookEvent] = {}

            async with trio.open_nursery() as nursery:
                await nursery.start(app.run)
                with trio.fail_after(20):
                    while len(app.broker.mids()) < 2:  # noqa: ASYNC110 - app state, no event
                        await trio.sleep(0.05)
                await trio.sleep(0.5)
                server.pause()  # freeze the market so the last books are final
                await trio.sleep(0.3)
                for symbol in ("BTC/USD", "ETH/USD"):
                    book = app.book_of(symbol)
                    assert book is not None
                    seen[symbol] = book
                app.request_stop()
    segments = segment_paths(out)
    assert segments, "nothing was recorded"
    last: dict[str, Any] = {}
    for path in segments:
        for _, event in iter_frames(path):
            if isinstance(event, BookEvent):
                last[event.symbol] = event
    for symbol, book in seen.items():
        assert last[symbol].bids == book.bids, symbol
        assert last[symbol].asks == book.asks, symbol

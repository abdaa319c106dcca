"""``record``: raw WS v2 frames to rotated .jsonl.gz that replay to the books the live side saw.

Real loopback WebSocket server (``tests/kraken_ws_server.py``) and real time, each test bounded
by ``trio.fail_after``.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest
import trio

from actors.recording import FrameWriter, RecordError, WsRecorder, record_command, segment_paths
from actors.replay import iter_frames, merge, replay_files
from protocol.kraken import KrakenWsSession, Subscription
from protocol.messages import BookEvent, BookLevel, MarketEvent
from tests.kraken_ws_server import KrakenWsTestServer, open_kraken_ws_server

SYMBOLS = ("BTC/USD", "ETH/USD")


def _count_lines(path: Path) -> int:
    with gzip.open(path, "rt") as fh:
        return sum(1 for _ in fh)


def _last_books(paths: list[Path]) -> dict[str, BookEvent]:
    books: dict[str, BookEvent] = {}
    for _, ev in merge(iter_frames(p) for p in paths):
        if isinstance(ev, BookEvent):
            books[ev.symbol] = ev
    return books


def _server_books(server: KrakenWsTestServer) -> dict[str, tuple[list[BookLevel], ...]]:
    return {s: server.book_levels(s, 10) for s in SYMBOLS}


def _as_levels(ev: BookEvent) -> tuple[list[BookLevel], list[BookLevel]]:
    return list(ev.bids), list(ev.asks)


async def _quiesce(server: KrakenWsTestServer, recorder: WsRecorder) -> None:
    """Stop the market and wait until the frames in flight have reached the recorder."""
    server.pause()
    want = _server_books(server)
    # Polling: the books are compared as a whole, no single event marks "caught up".
    while {s: (list(b.bids(10)), list(b.asks(10)))  # noqa: ASYNC110
           for s, b in recorder.books.items()} != want:
        await trio.sleep(0.02)
    await trio.sleep(0.1)


async def test_recording_replays_to_the_live_books(tmp_path: Path) -> None:
    out = tmp_path / "rec.jsonl.gz"
    writer = FrameWriter(out, max_bytes=40_000)
    with trio.fail_after(20):
        async with open_kraken_ws_server(symbols=SYMBOLS, updates_per_second=400,
                                         heartbeat_interval=0.05, trade_every=5) as server:
            recorder = WsRecorder(server.url, SYMBOLS, writer, seed=1)
            session = KrakenWsSession(server.url, subscriptions=[
                Subscription(channel="book", symbols=SYMBOLS, depth=10)], seed=1)
            send, recv = trio.open_memory_channel[MarketEvent](100_000)
            async with trio.open_nursery() as nursery:
                await nursery.start(recorder.run)
                await nursery.start(session.run, send)

                async def drain() -> None:
                    async for _ in recv:
                        pass

                nursery.start_soon(drain)
                while len(writer.segments) < 3:  # noqa: ASYNC110
                    await trio.sleep(0.05)
                await _quiesce(server, recorder)
                expected = _server_books(server)
                live = {s: session.book(s) for s in SYMBOLS}
                nursery.cancel_scope.cancel()
    segments = segment_paths(out)
    assert len(segments) >= 4 and segments == writer.segments
    assert [p.name for p in segments[:2]] == ["rec.0001.jsonl.gz", "rec.0002.jsonl.gz"]
    assert not [p for p in segments[0].parent.iterdir() if p.suffix == ".part"]
    for sym in SYMBOLS:
        book = live[sym]
        assert book is not None
        assert (list(book.bids(10)), list(book.asks(10))) == expected[sym]
    # The whole recording, through the replay's decoder and checksum-verified books ...
    replayed = _last_books(replay_files([tmp_path]))
    assert {s: _as_levels(replayed[s]) for s in SYMBOLS} == expected
    # ... and the last segment alone: it starts with rebuilt snapshots, so it replays too.
    alone = _last_books([segments[-1]])
    assert {s: _as_levels(alone[s]) for s in SYMBOLS} == expected
    # Lines are the frames as received, plus marked preambles at segment starts.
    with gzip.open(segments[1], "rt") as fh:
        lines = [json.loads(ln) for ln in fh]
    assert lines[0]["synthetic"] is True and '"instrument"' in lines[0]["raw"]
    assert all(set(r) == {"t", "raw"} for r in lines if "synthetic" not in r)
    assert writer.lines == sum(_count_lines(p) for p in segments)


async def test_reconnect_keeps_recording(tmp_path: Path) -> None:
    out = tmp_path / "rec.jsonl.gz"
    writer = FrameWriter(out)
    with trio.fail_after(20):
        async with open_kraken_ws_server(symbols=SYMBOLS, updates_per_second=300,
                                         heartbeat_interval=0.05) as server:
            recorder = WsRecorder(server.url, SYMBOLS, writer, backoff_initial=0.05, seed=2)
            async with trio.open_nursery() as nursery:
                await nursery.start(recorder.run)
                await trio.sleep(0.2)
                await server.drop_connections()
                await server.wait_connections(2)
                await trio.sleep(0.3)
                await _quiesce(server, recorder)
                expected = _server_books(server)
                nursery.cancel_scope.cancel()
    assert recorder.connections == 2
    replayed = _last_books(segment_paths(out))
    assert {s: _as_levels(replayed[s]) for s in SYMBOLS} == expected


async def test_refused_subscription_ends_the_recorder(tmp_path: Path) -> None:
    writer = FrameWriter(tmp_path / "rec.jsonl.gz")
    with trio.fail_after(10):
        async with open_kraken_ws_server(symbols=SYMBOLS, reject_symbols={
                "ETH/USD": "Currency pair not supported ETH/USD"}) as server:
            recorder = WsRecorder(server.url, SYMBOLS, writer)
            with pytest.raises(RecordError, match="not supported"):
                await recorder.run()
    # What was received is still there, under its final name.
    assert len(segment_paths(tmp_path / "rec.jsonl.gz")) == 1


def test_writer_rotates_by_time_and_continues_numbering(tmp_path: Path) -> None:
    out = tmp_path / "x.jsonl.gz"
    w = FrameWriter(out, max_seconds=10)
    for t in range(25):
        if w.due(float(t)):
            w.open_segment(float(t))
        w.write(float(t), '{"channel":"heartbeat"}')
    assert w.current is not None and w.current.name.endswith(".part")
    assert replay_files([tmp_path]) == w.segments  # the open .part is not replayed
    w.close()
    assert [p.name for p in segment_paths(out)] == [f"x.000{i}.jsonl.gz" for i in (1, 2, 3)]
    w2 = FrameWriter(out)
    w2.write(30.0, '{"channel":"heartbeat"}')
    w2.close()
    assert segment_paths(out)[-1].name == "x.0004.jsonl.gz"


def test_record_command_usage(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert record_command(["--pairs", "BTCUSD", "--out", str(tmp_path / "r")]) == 2
    assert record_command(["--out", str(tmp_path / "r")]) == 2
    assert capsys.readouterr().err.count("main.py record: error:") == 2

"""The WS recorder: raw Kraken WebSocket v2 frames to rotated, compressed JSON lines.

``python main.py record --pairs BTC/USD,ETH/USD --out FILE`` connects to the public WS v2
endpoint, subscribes ``instrument``, ``book`` (``--depth``), ``trade`` and ``ticker`` for the
pairs, and writes every frame it receives, unmodified, with its receive time::

    {"t": 1717000000.123456, "raw": "<the frame text>"}

one per line into gzip segments ``FILE.0001.jsonl.gz``, ``FILE.0002.jsonl.gz`` ... (``FILE``
minus a ``.jsonl.gz``/``.jsonl`` suffix). ``actors.replay`` (``--replay FILE|DIR``) and the
backtests read them through the same decoder and checksum-verified books as the live session.

Why its own small loop and not ``KrakenWsSession``: the session consumes frames into events and
has no raw-frame hook yet (the diff for an ``on_raw_frame`` hook is in the issue report); a
recorder must keep the bytes exactly as received. The loop subscribes with ``req_id``s, checks
every ack (a refused subscription, e.g. an unknown pair, ends the recorder with
:class:`RecordError`), treats ``stale_after`` seconds of silence as a dead connection, and
reconnects with capped exponential backoff. After a reconnect Kraken sends fresh snapshots,
which the recording keeps like any other frame.

Rotation: a segment is closed when it holds ``max_bytes`` of uncompressed lines or spans
``max_seconds``. Each segment must replay on its own (the replay decodes each file with its own
books), so a new segment starts with the last ``instrument`` frame and, for each book, a
snapshot rebuilt from the recorder's own checksum-verified copy of it (with the CRC32 of that
state), marked ``"synthetic": true`` in the line; every other line is a frame as received.
A segment is written as ``NAME.part`` and renamed when closed, so a crash never leaves a
truncated gzip stream under a name the replay picks up (``.part`` files can be recovered with
``zcat``, up to the last flush; the writer flushes once a second).

Receive times are wall-clock Unix seconds (``time.time`` by default, injectable): stamping data
at the edge is the one place the wall clock belongs; nothing here makes decisions on it.
"""

from __future__ import annotations

import argparse
import gzip
import json
import logging
import os
import random
import re
import ssl
import sys
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any
from urllib.parse import urlsplit

import trio
import trio_websocket

from protocol.kraken import (
    BookFrame,
    ChecksumMismatch,
    DecodeError,
    InstrumentFrame,
    MethodResponse,
    OrderBook,
    decode_v2,
)

__all__ = ["FrameWriter", "RecordError", "WsRecorder", "record_command", "segment_paths"]

log = logging.getLogger(__name__)

_SEGMENT = re.compile(r"\.(\d{4,})\.jsonl\.gz$")


class RecordError(Exception):
    """The recorder cannot go on (a refused subscription, an unwritable output)."""


def _stem(path: Path) -> Path:
    name = path.name
    for suffix in (".jsonl.gz", ".jsonl", ".gz"):
        if name.endswith(suffix):
            return path.with_name(name[: -len(suffix)])
    return path


def segment_paths(path: Path) -> list[Path]:
    """The finished segments of ``path`` (``FILE.0001.jsonl.gz`` ...), in order."""
    stem = _stem(path)
    found = []
    for p in stem.parent.glob(stem.name + ".*.jsonl.gz"):
        m = _SEGMENT.search(p.name)
        if m and p.name == f"{stem.name}.{m.group(1)}.jsonl.gz":
            found.append((int(m.group(1)), p))
    return [p for _, p in sorted(found)]


class FrameWriter:
    """Rotating gzip JSON-lines writer (see the module docstring).

    Args:
        path: ``FILE`` (segments are numbered after it, continuing after existing ones).
        max_bytes: uncompressed bytes per segment.
        max_seconds: receive-time span per segment.
        flush_seconds: receive-time interval between gzip flushes (readable up to there).
    """

    def __init__(self, path: Path, *, max_bytes: int = 256 * 1024 * 1024,
                 max_seconds: float = 3600.0, flush_seconds: float = 1.0) -> None:
        if max_bytes <= 0 or max_seconds <= 0:
            raise ValueError("max_bytes and max_seconds must be > 0")
        self._stem = _stem(path)
        self._max_bytes = max_bytes
        self._max_seconds = max_seconds
        self._flush_seconds = flush_seconds
        existing = segment_paths(path)
        self._next = 1 + (int(_SEGMENT.search(existing[-1].name).group(1))  # type: ignore[union-attr]
                          if existing else 0)
        self._fh: gzip.GzipFile | None = None
        self._part: Path | None = None
        self._bytes = 0
        self._started = 0.0
        self._flushed = 0.0
        self.segments: list[Path] = []
        self.lines = 0

    @property
    def current(self) -> Path | None:
        """The ``.part`` file being written, if any."""
        return self._part

    def due(self, t: float) -> bool:
        """Whether the open segment is full (then the caller rotates with a preamble)."""
        return self._fh is not None and (self._bytes >= self._max_bytes
                                         or t - self._started >= self._max_seconds)

    def open_segment(self, t: float, preamble: Sequence[tuple[float, str]] = ()) -> None:
        """Close the open segment (if any) and start the next with ``preamble`` lines."""
        self.close()
        final = self._stem.with_name(f"{self._stem.name}.{self._next:04d}.jsonl.gz")
        self._next += 1
        self._part = final.with_name(final.name + ".part")
        self._part.parent.mkdir(parents=True, exist_ok=True)
        # A long-lived handle owned by the writer and closed by close() (no with-block).
        self._fh = gzip.open(self._part, "wb", compresslevel=6)  # noqa: SIM115
        self._bytes = 0
        self._started = self._flushed = t
        for pt, raw in preamble:
            self._line(pt, raw, synthetic=True)

    def write(self, t: float, raw: str) -> None:
        """Append one received frame (opens the first segment on demand)."""
        if self._fh is None:
            self.open_segment(t)
        self._line(t, raw, synthetic=False)
        if t - self._flushed >= self._flush_seconds:
            assert self._fh is not None
            self._fh.flush()
            self._flushed = t

    def _line(self, t: float, raw: str, *, synthetic: bool) -> None:
        record: dict[str, Any] = {"t": round(t, 6), "raw": raw}
        if synthetic:
            record["synthetic"] = True
        data = (json.dumps(record, separators=(",", ":")) + "\n").encode()
        assert self._fh is not None
        self._fh.write(data)
        self._bytes += len(data)
        self.lines += 1

    def close(self) -> None:
        """Finish the open segment and give it its final name (idempotent)."""
        if self._fh is None or self._part is None:
            return
        self._fh.close()
        final = self._part.with_name(self._part.name.removesuffix(".part"))
        os.replace(self._part, final)
        self.segments.append(final)
        self._fh = None
        self._part = None


def _num(value: Any) -> str:
    return format(value, "f")


def snapshot_frame(book: OrderBook, depth: int, t: float) -> str:
    """A v2 ``book`` snapshot of ``book``'s current top ``depth`` levels with its CRC32."""
    def levels(side: Sequence[Any]) -> list[str]:
        return [f'{{"price":{_num(lv.price)},"qty":{_num(lv.qty)}}}' for lv in side]

    stamp = datetime.fromtimestamp(t, tz=UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    return ('{"channel":"book","type":"snapshot","data":[{"symbol":' + json.dumps(book.symbol)
            + ',"bids":[' + ",".join(levels(book.bids(depth))) + '],"asks":['
            + ",".join(levels(book.asks(depth))) + f'],"checksum":{book.checksum()},'
            + f'"timestamp":"{stamp}"}}]}}')


class SessionTap:
    """``--record FILE`` in paper mode: every raw frame the live session reads, as it came.

    Plugged into ``KrakenWsSession(on_raw_frame=...)``, so the recording is exactly what the
    trading system saw (no second connection). It runs on the event loop: a buffered gzip
    write per frame. At each rotation the new segment starts with the last ``instrument``
    frame and a checksummed snapshot of every synced book (marked synthetic), so every segment
    replays on its own, as with ``main.py record``.

    Args:
        writer: where the frames go.
        clock: Unix seconds of "now" (receive timestamps).
        books: the session's books by symbol, read at a rotation.
        depth: levels per side in the rotation snapshots.
    """

    def __init__(self, writer: FrameWriter, *, clock: Callable[[], float],
                 books: Callable[[], Sequence[OrderBook]], depth: int) -> None:
        self._writer = writer
        self._clock = clock
        self._books = books
        self._depth = depth
        self._instrument: str | None = None

    def __call__(self, raw: str) -> None:
        t = self._clock()
        if '"channel":"instrument"' in raw[:64] and '"type":"snapshot"' in raw[:120]:
            self._instrument = raw  # the full pair list (acks and updates are not)
        if self._writer.due(t):
            preamble = [(t, self._instrument)] if self._instrument else []
            preamble += [(t, snapshot_frame(book, self._depth, t)) for book in self._books()
                         if book.is_synced]
            self._writer.open_segment(t, preamble)
        self._writer.write(t, raw)

    def close(self) -> None:
        self._writer.close()


class WsRecorder:
    """Record raw frames of a public Kraken WS v2 connection into a :class:`FrameWriter`.

    Args:
        url: ``wss://ws.kraken.com/v2`` (or a loopback test server).
        symbols: v2 pairs (``BTC/USD``).
        writer: where frames go.
        depth: book depth to subscribe.
        channels: public channels besides ``instrument``.
        stale_after: seconds of silence that mean the connection is dead.
        backoff_initial, backoff_max: reconnect delays (doubling, jittered +-20 %).
        wall_clock: receive-time stamps (Unix seconds).
        seed: jitter seed.
    """

    def __init__(self, url: str, symbols: Sequence[str], writer: FrameWriter, *,
                 depth: int = 10, channels: Sequence[str] = ("book", "trade", "ticker"),
                 stale_after: float = 15.0, backoff_initial: float = 0.5,
                 backoff_max: float = 30.0, wall_clock: Callable[[], float] = time.time,
                 seed: int | None = None) -> None:
        self._url = url
        self._symbols = tuple(symbols)
        self._writer = writer
        self._depth = depth
        self._channels = tuple(channels)
        self._stale_after = stale_after
        self._backoff = (backoff_initial, backoff_max)
        self._clock = wall_clock
        self._rng = random.Random(seed)
        self._instrument: str | None = None
        self._host_header = ""
        self._resource = "/"
        self._precisions: dict[str, tuple[int, int]] = {}
        self.books: dict[str, OrderBook] = {}
        self.frames = 0
        self.connections = 0
        self.checksum_mismatches = 0

    def _preamble(self, t: float) -> list[tuple[float, str]]:
        out = [(t, self._instrument)] if self._instrument else []
        for sym in self._symbols:
            book = self.books.get(sym)
            if book is not None and book.is_synced:
                out.append((t, snapshot_frame(book, self._depth, t)))
        return out

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
                  ) -> None:
        """Record until cancelled; ``started()`` once the first connection is subscribed.

        Cancellation closes the current segment cleanly (it keeps its final name).

        Raises:
            RecordError: a subscription was refused.
        """
        started = False

        def on_subscribed() -> None:
            nonlocal started
            if not started:
                started = True
                task_status.started()

        attempt = 0
        try:
            while True:
                frames_before = self.frames
                try:
                    await self._connection(on_subscribed)
                except (trio_websocket.HandshakeError, trio_websocket.ConnectionClosed,
                        trio.BrokenResourceError, OSError, trio.TooSlowError) as exc:
                    delay = min(self._backoff[1], self._backoff[0] * 2 ** min(attempt, 16))
                    delay *= 1 + self._rng.uniform(-0.2, 0.2)
                    # A connection that got subscribed resets the backoff.
                    attempt = 0 if started and self.frames > frames_before else attempt + 1
                    log.warning("recorder: connection lost (%s); reconnecting in %.2fs",
                                type(exc).__name__, delay)
                    await trio.sleep(delay)
        finally:
            self._writer.close()

    async def _connection(self, on_subscribed: Callable[[], None]) -> None:
        """One connection, to its loss. Errors leave as themselves, never as a group."""
        error: BaseException | None = None
        async with trio.open_nursery() as ws_nursery:  # trio-websocket's reader task
            stream = await self._open_stream()
            try:
                ws = await trio_websocket.wrap_client_stream(
                    ws_nursery, stream, self._host_header, self._resource,
                    message_queue_size=1024)
                self.connections += 1
                try:
                    await self._pump(ws, on_subscribed)
                except Exception as exc:
                    error = exc
            finally:
                # No close handshake (the peer is usually gone); closing the stream ourselves
                # also avoids trio-websocket leaving the socket open after an abnormal close.
                await trio.aclose_forcefully(stream)
                ws_nursery.cancel_scope.cancel()
        if error is not None:
            raise error

    async def _open_stream(self) -> trio.SocketStream | trio.SSLStream[trio.SocketStream]:
        parts = urlsplit(self._url)
        host = parts.hostname or ""
        secure = parts.scheme == "wss"
        port = parts.port or (443 if secure else 80)
        self._host_header = host if port in (80, 443) else f"{host}:{port}"
        self._resource = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        with trio.fail_after(10):
            if secure:
                return await trio.open_ssl_over_tcp_stream(
                    host, port, ssl_context=ssl.create_default_context(),
                    https_compatible=True)
            return await trio.open_tcp_stream(host, port)

    async def _pump(self, ws: trio_websocket.WebSocketConnection,
                    on_subscribed: Callable[[], None]) -> None:
        expected: dict[int, int] = {1: 1}
        await ws.send_message(json.dumps({"method": "subscribe", "req_id": 1,
                                          "params": {"channel": "instrument"}}))
        for i, channel in enumerate(self._channels, start=2):
            params: dict[str, Any] = {"channel": channel, "symbol": list(self._symbols)}
            if channel == "book":
                params["depth"] = self._depth
            expected[i] = len(self._symbols)
            await ws.send_message(json.dumps({"method": "subscribe", "req_id": i,
                                              "params": params}))
        while True:
            with trio.fail_after(self._stale_after):
                raw = await ws.get_message()
            t = self._clock()
            if self._writer.due(t):
                self._writer.open_segment(t, self._preamble(t))
            text = raw if isinstance(raw, str) else raw.decode()
            self._writer.write(t, text)
            self.frames += 1
            self._observe(text, t, expected)
            if expected and not any(expected.values()):
                expected.clear()
                on_subscribed()

    def _observe(self, raw: str, t: float, expected: dict[int, int]) -> None:
        try:
            frames = decode_v2(raw, ts_recv=t)
        except DecodeError:
            return  # recorded as received; the replay skips it the same way
        for frame in frames:
            if isinstance(frame, BookFrame):
                self._apply(frame)
            elif isinstance(frame, MethodResponse) and frame.req_id in expected:
                if not frame.success:
                    raise RecordError(f"subscription refused: {frame.error}")
                expected[frame.req_id] -= 1
            elif isinstance(frame, InstrumentFrame):
                self._instrument = raw
                for pair in frame.pairs:
                    self._precisions[pair.symbol] = (pair.price_precision, pair.qty_precision)

    def _apply(self, frame: BookFrame) -> None:
        book = self.books.get(frame.symbol)
        if frame.is_snapshot or book is None:
            if not frame.is_snapshot:
                return
            pp, qp = self._precisions.get(frame.symbol, (None, None))
            book = OrderBook(frame.symbol, depth=self._depth, price_precision=pp,
                             qty_precision=qp)
            self.books[frame.symbol] = book
        elif not book.is_synced:
            return
        try:
            book.apply(frame)
        except ChecksumMismatch:
            # Recorded as received (the replay sees the same mismatch); the rotation just
            # cannot rebuild this book until the next snapshot.
            self.checksum_mismatches += 1
            log.warning("recorder: checksum mismatch on %s", frame.symbol)


# --------------------------------------------------------------------------- the command


class _Usage(Exception):
    pass


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> Any:
        raise _Usage(message)


def _parser() -> argparse.ArgumentParser:
    p = _Parser(prog="main.py record", description="record raw Kraken WS v2 frames")
    p.add_argument("--pairs", required=True, help="comma-separated v2 pairs, e.g. BTC/USD,ETH/USD")
    p.add_argument("--out", required=True, metavar="FILE",
                   help="FILE.jsonl.gz: segments FILE.0001.jsonl.gz ... are written")
    p.add_argument("--ws-url", default=None,
                   help="public WS v2 URL [env KRAKEN_WS_URL; default wss://ws.kraken.com/v2]")
    p.add_argument("--depth", type=int, default=10, choices=(10, 25, 100, 500, 1000))
    p.add_argument("--channels", default="book,trade,ticker",
                   help="public channels besides instrument (default book,trade,ticker)")
    p.add_argument("--rotate-mb", type=float, default=256.0,
                   help="uncompressed MB per segment (default 256)")
    p.add_argument("--rotate-minutes", type=float, default=60.0,
                   help="minutes per segment (default 60)")
    p.add_argument("--duration", type=float, default=None,
                   help="stop after this many seconds (default: until Ctrl-C)")
    return p


def record_command(argv: Sequence[str], *, err: IO[str] | None = None) -> int:
    """``main.py record ...``: returns 0 on a clean stop (Ctrl-C or ``--duration``), 1 on a
    refused subscription, 2 on a usage error."""
    err = sys.stderr if err is None else err
    try:
        args = _parser().parse_args(list(argv))
        pairs = [p.strip().upper() for p in args.pairs.split(",") if p.strip()]
        channels = [c.strip() for c in args.channels.split(",") if c.strip()]
        if not pairs or any("/" not in p for p in pairs):
            raise _Usage(f"--pairs {args.pairs!r}: expected BASE/QUOTE,...")
        if not set(channels) <= {"book", "trade", "ticker", "ohlc"}:
            raise _Usage(f"--channels {args.channels!r}: book, trade, ticker, ohlc")
        writer = FrameWriter(Path(args.out), max_bytes=int(args.rotate_mb * 1024 * 1024),
                             max_seconds=args.rotate_minutes * 60)
    except (_Usage, ValueError) as exc:
        err.write(f"main.py record: error: {exc}\n")
        return 2
    url = args.ws_url or os.environ.get("KRAKEN_WS_URL") or "wss://ws.kraken.com/v2"
    recorder = WsRecorder(url, pairs, writer, depth=args.depth, channels=channels)

    async def main() -> None:
        with trio.move_on_after(args.duration if args.duration else float("inf")):
            await recorder.run()

    try:
        trio.run(main)
    except KeyboardInterrupt:
        pass
    except RecordError as exc:
        err.write(f"main.py record: {exc}\n")
        return 1
    err.write(f"main.py record: {recorder.frames} frames in {len(writer.segments)} "
              f"segment(s): {', '.join(map(str, writer.segments))}\n")
    return 0

"""The replay source: recorded frames or candle files fed through the same path as a live feed.

Inputs (one or more files, or a directory of them, merged in time order):

* JSON lines of recorded WebSocket frames:
  - the v1 recordings of ``shared/data/kraken-ws-v1`` (``{"ts", "dir": "recv", "msg"}``),
    decoded by ``V1Decoder``;
  - our own recordings (``{"t": <unix seconds>, "raw": "<v2 frame text>"}``, optionally
    gzip-compressed, ``.jsonl.gz``), decoded by ``decode_v2``.
  Books are maintained and checksum-verified exactly as in the live session.
* Candle CSV files (Kraken OHLCVT without header, or ``timestamp_ms,open,high,low,close,volume``
  with a header). Candles carry no book, so a top of book is **synthesized** around each close
  (``spread_bps`` wide, ``depth_levels`` levels of ``level_notional`` each) and every such
  ``BookEvent`` is marked ``synthetic=True``; the run logs that it is synthetic.

``speed`` scales time: 1 replays in real time, 10 ten times faster, 0 as fast as possible.
Time comes from ``trio.sleep_until`` so backtests under MockClock replay in virtual time.
"""

from __future__ import annotations

import gzip
import heapq
import json
import logging
from collections.abc import Callable, Iterable, Iterator, Sequence
from decimal import Decimal
from pathlib import Path
from typing import IO, Any

import trio

from protocol.kraken import (
    BookFrame,
    DecodeError,
    InstrumentFrame,
    OrderBook,
    V1Decoder,
    decode_v2,
)
from protocol.messages import (
    BookEvent,
    BookLevel,
    CandleEvent,
    MarketEvent,
    TickerEvent,
    TradeEvent,
)

log = logging.getLogger(__name__)

Timed = tuple[float, MarketEvent]  # (unix seconds, event)


class ReplayError(Exception):
    """A replay input that cannot be read; the message names the file (and line)."""


def replay_files(paths: Sequence[str | Path]) -> list[Path]:
    files: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            files.extend(sorted(p for p in path.iterdir() if p.is_file()
                                and p.suffix in (".jsonl", ".gz", ".csv")))
        elif path.is_file():
            files.append(path)
        else:
            raise ReplayError(f"replay input {path} does not exist")
    if not files:
        raise ReplayError(f"no replay files in {', '.join(map(str, paths))}")
    return files


def _open_text(path: Path) -> IO[str]:
    if path.suffix == ".gz":
        return gzip.open(path, "rt", encoding="utf-8")
    return path.open("r", encoding="utf-8")


def _book_events(book: OrderBook, frame: BookFrame, levels: int) -> Iterator[BookEvent]:
    book.apply(frame)
    yield book.to_event(levels=levels, ts_event_ns=frame.ts_event_ns, ts_recv=frame.ts_recv)


def iter_frames(path: Path, *, levels: int = 10) -> Iterator[Timed]:
    """Decode one JSON-lines recording (v1 or v2) into timed market events."""
    v1 = V1Decoder()
    books: dict[str, OrderBook] = {}
    precisions: dict[str, tuple[int, int]] = {}
    with _open_text(path) as handle:
        for lineno, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ReplayError(f"{path}:{lineno}: not JSON ({exc.msg})") from None
            if "raw" in record:
                t = float(record["t"])
                try:
                    frames: tuple[Any, ...] = decode_v2(record["raw"], ts_recv=t)
                except DecodeError:
                    continue  # the live session skips these too (counted there)
            elif record.get("dir") == "recv":
                t = float(record["ts"])
                try:
                    frames = v1.decode(record["msg"], ts_recv=t)
                except DecodeError:
                    continue
            else:
                continue
            for frame in frames:
                if isinstance(frame, InstrumentFrame):
                    for pair in frame.pairs:
                        precisions[pair.symbol] = (pair.price_precision, pair.qty_precision)
                        if pair.symbol in books:
                            books[pair.symbol].set_precision(*precisions[pair.symbol])
                elif isinstance(frame, BookFrame):
                    book = books.get(frame.symbol)
                    if book is None:
                        if "raw" in record:
                            price_p, qty_p = precisions.get(frame.symbol, (None, None))
                            book = OrderBook(frame.symbol, depth=1000, price_precision=price_p,
                                             qty_precision=qty_p)
                        else:
                            book = OrderBook(frame.symbol, depth=v1.depth(frame.symbol) or 1000,
                                             v1=True)
                        books[frame.symbol] = book
                    if not frame.is_snapshot and not book.is_synced:
                        continue
                    for event in _book_events(book, frame, levels):
                        yield t, event
                elif isinstance(frame, TickerEvent | TradeEvent | CandleEvent):
                    yield t, frame


def synthetic_book(candle: CandleEvent, *, spread_bps: Decimal, depth_levels: int,
                   level_notional: Decimal, ts_recv: float) -> BookEvent:
    """A book around a candle close: best bid/ask ``spread_bps`` apart, levels 1 bp apart."""
    close = candle.close
    half = close * spread_bps / Decimal(20000)
    step = close / Decimal(10000)
    qty = (level_notional / close).quantize(Decimal("0.00000001")) if close > 0 else Decimal(0)
    bids = tuple(BookLevel(close - half - step * i, qty) for i in range(depth_levels))
    asks = tuple(BookLevel(close + half + step * i, qty) for i in range(depth_levels))
    return BookEvent(symbol=candle.symbol, bids=bids, asks=asks, ts_event_ns=candle.ts_event_ns,
                     ts_recv=ts_recv, synthetic=True)


CandleLoader = Callable[[Path], Iterable[CandleEvent]]


def load_candle_file(path: Path) -> tuple[CandleEvent, ...]:
    """Parse a candle CSV whose name tells its symbol (``binance_BTC_USDT_1m_...csv``,
    ``kraken_XBTUSD_60.csv``); gaps and duplicates are logged, never filled."""
    from protocol.candles import parse_candles, symbol_from_name

    named = symbol_from_name(str(path))
    if named is None:
        raise ReplayError(f"{path}: cannot tell the symbol from the file name")
    symbol, interval = named
    with path.open("r", encoding="utf-8") as handle:
        series = parse_candles(handle, path=str(path), symbol=symbol, interval_s=interval)
    for warning in series.warnings:
        log.warning("replay input: %s", warning)
    return series.candles


def merge(streams: Iterable[Iterator[Timed]]) -> Iterator[Timed]:
    """Merge timed streams by (time, stream index, sequence): one deterministic order."""
    keyed = (
        ((t, index, seq, event) for seq, (t, event) in enumerate(stream))
        for index, stream in enumerate(streams)
    )
    for t, _, _, event in heapq.merge(*keyed, key=lambda item: item[:3]):
        yield t, event


class ReplayFeed:
    """A feed actor that publishes recorded events, paced by ``speed``."""

    def __init__(
        self,
        paths: Sequence[str | Path],
        *,
        out: trio.abc.SendChannel[MarketEvent],
        speed: float = 1.0,
        candle_loader: CandleLoader | None = None,
        spread_bps: Decimal = Decimal("2"),
        depth_levels: int = 5,
        level_notional: Decimal = Decimal("5000"),
        on_end: Callable[[int], None] | None = None,
        levels: int = 10,
        symbols: set[str] | None = None,
        skip: int = 0,
        on_publish: Callable[[int], None] | None = None,
    ) -> None:
        self._skip = skip  # events a crashed incarnation already published: never re-trade them
        self._on_publish = on_publish
        self._files = replay_files(paths)
        self._symbols = symbols
        self._out = out
        self._speed = speed
        self._candle_loader = candle_loader
        self._spread_bps = spread_bps
        self._depth_levels = depth_levels
        self._level_notional = level_notional
        self._on_end = on_end
        self._levels = levels
        self.published = skip

    def _stream(self, path: Path) -> Iterator[Timed]:
        if path.suffix == ".csv":
            if self._candle_loader is None:
                raise ReplayError(f"{path}: candle files need a candle loader")
            log.info("replaying candles from %s: books are SYNTHETIC (%s bps spread around "
                     "each close)", path.name, self._spread_bps)
            return self._candle_stream(path)
        return iter_frames(path, levels=self._levels)

    def _candle_stream(self, path: Path) -> Iterator[Timed]:
        assert self._candle_loader is not None
        for candle in self._candle_loader(path):
            # A candle is known when it closes: publish it at its close time.
            t = candle.ts_event_ns / 1e9 + candle.interval_s
            yield t, synthetic_book(candle, spread_bps=self._spread_bps,
                                    depth_levels=self._depth_levels,
                                    level_notional=self._level_notional, ts_recv=0.0)

    async def run(self, *, task_status: trio.TaskStatus[Any] = trio.TASK_STATUS_IGNORED) -> None:
        events = merge(self._stream(path) for path in self._files)
        task_status.started()
        start = trio.current_time()
        first: float | None = None
        seen = 0
        for t, event in events:
            if self._symbols is not None and event.symbol not in self._symbols:
                continue
            seen += 1
            if seen <= self._skip:
                continue
            if first is None:
                first = t
            if self._speed > 0:
                await trio.sleep_until(start + (t - first) / self._speed)
            else:
                await trio.lowlevel.checkpoint()
            now = trio.current_time()
            await self._out.send(_restamp(event, now))
            self.published += 1
            if self._on_publish is not None:
                self._on_publish(self.published)
        log.info("replay finished: %d events published", self.published)
        if self._on_end is not None:
            self._on_end(self.published)
        await trio.sleep_forever()


def _restamp(event: MarketEvent, ts_recv: float) -> MarketEvent:
    """Stamp the replay's receive time (tick-to-order latency is measured from it)."""
    if isinstance(event, BookEvent):
        return BookEvent(symbol=event.symbol, bids=event.bids, asks=event.asks,
                         ts_event_ns=event.ts_event_ns, ts_recv=ts_recv,
                         synthetic=event.synthetic)
    if isinstance(event, TickerEvent):
        return TickerEvent(symbol=event.symbol, bid=event.bid, bid_qty=event.bid_qty,
                           ask=event.ask, ask_qty=event.ask_qty, last=event.last,
                           ts_event_ns=event.ts_event_ns, ts_recv=ts_recv)
    if isinstance(event, TradeEvent):
        return TradeEvent(symbol=event.symbol, side=event.side, price=event.price,
                          qty=event.qty, trade_id=event.trade_id,
                          ts_event_ns=event.ts_event_ns, ts_recv=ts_recv)
    return CandleEvent(symbol=event.symbol, interval_s=event.interval_s, open=event.open,
                       high=event.high, low=event.low, close=event.close,
                       volume=event.volume, ts_event_ns=event.ts_event_ns, ts_recv=ts_recv)

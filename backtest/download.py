"""``python main.py data download``: Kraken history into OHLCVT candle files, resumable.

::

    python main.py data download --pair BTC/USD --timeframe 1m --since 2024-01-01 --out DIR

writes ``DIR/kraken_<ALTNAME>_<MINUTES>.csv`` (``kraken_XBTUSD_1.csv``): Kraken's OHLCVT export
format (no header; ``time,open,high,low,close,volume,trades``, ``time`` the interval start in
Unix seconds), which :func:`protocol.candles.parse_candles` and ``--mode backtest --data`` read
(the file name tells the symbol and interval).

Sources (all through :class:`protocol.kraken.KrakenRestClient`, ``--rest-url`` /
``KRAKEN_REST_URL``):

* ``OHLC`` when the request is fresh and its 720-entry window covers ``--since`` (recent
  history only: 12 hours of 1m candles). The last, uncommitted candle is dropped.
* otherwise ``Trades``, paginated with its ``since`` cursor (Kraken's ``last``), aggregated into
  candles of the timeframe (open = first trade, close = last, volume = sum, trades = count).
  Intervals without trades are omitted (as in Kraken's own OHLCVT files; the loaders report
  them as gaps); the OHLC path drops its zero-trade candles for the same reason.

A candle is written only once it is complete: when a trade of a later interval has arrived, or
at the end when its interval ends by the end time (``--until``, default the server's time at the
start of the run). Trades at or after the end are not consumed: the cursor stops after the last
trade before it, and the candle the end falls in stays open in the state. So the file holds
exactly the candles that end by ``--until``, whatever the page boundaries were, and running the
command again later *updates* it from where it stopped.

Resume: ``DIR/kraken_<ALTNAME>_<MINUTES>.csv.state.json`` holds the cursor, the last trade id,
the open candle and the committed size of the CSV. Each page is committed in two steps: the
completed candles are appended to the CSV and fsynced, then the new state is written to a
temporary file, fsynced and renamed over the old one. A run killed between the two leaves CSV
bytes the state does not account for; the next run truncates the CSV back to the committed
size before it continues from the committed cursor. So an interrupted and resumed download
produces the same file as an uninterrupted one: no trade is counted twice or lost. Trades are
de-duplicated by Kraken's trade id (a cursor that returns the boundary trade again is harmless)
and never re-enter a candle already written.

Rate limit: Kraken limits public calls per IP without publishing the number (PROTOCOL.md §3.1;
ccxt paces them at 1/s). The client's call-counter limiter is given public costs of 1 on a
20-unit counter decaying 1 unit/s (the PRO model, 2 units of headroom): a burst of 18 calls,
then one per second. It waits; it never breaches. A ``EAPI:Rate limit exceeded`` anyway
saturates the model (the client does that) and the page is retried after the wait.

Exit status: 0 done, 1 failed (network, Kraken error; the state stays committed, run again to
resume), 2 usage error or a state/CSV that does not match the request.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any, TextIO

import trio

from protocol.candles import parse_timeframe
from protocol.kraken import (
    CallCounterLimiter,
    KrakenError,
    KrakenRestClient,
    PairRegistry,
    RateLimited,
    RateLimitTier,
    UnknownPair,
)

from ._progress import Progress

__all__ = ["DownloadError", "DownloadSummary", "data_command", "download", "output_path"]

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
OHLC_WINDOW = 720
OHLC_MINUTES = frozenset({1, 5, 15, 30, 60, 240, 1440, 10080, 21600})
PUBLIC_COSTS = {"Trades": 1.0, "OHLC": 1.0, "AssetPairs": 1.0, "Time": 1.0}
_NS = 1_000_000_000
_RATE_LIMIT_RETRIES = 5


class DownloadError(Exception):
    """A request that cannot proceed (bad arguments, a state file of another download)."""


def public_limiter() -> CallCounterLimiter:
    """The pacing of public calls described in the module docstring."""
    return CallCounterLimiter(RateLimitTier.PRO, costs=PUBLIC_COSTS)


def output_path(out_dir: Path, altname: str, timeframe_s: int) -> Path:
    """``DIR/kraken_XBTUSD_1.csv``: the name the backtest loaders read the symbol from."""
    return out_dir / f"kraken_{altname}_{timeframe_s // 60}.csv"


@dataclass(slots=True, kw_only=True)
class _State:
    pair: str
    timeframe_s: int
    since_s: int
    cursor: str
    last_trade_id: int | None = None
    written_until: int = 0  # end (unix s) of the last candle written
    open_candle: list[str] | None = None  # [bucket, o, h, l, c, v, n] while accumulating
    csv_bytes: int = 0
    trades: int = 0
    candles: int = 0


@dataclass(frozen=True, slots=True, kw_only=True)
class DownloadSummary:
    """What one run did."""

    path: Path
    source: str  # "ohlc" or "trades"
    candles_written: int
    trades_read: int
    pages: int
    end_s: int


class _Candle:
    __slots__ = ("bucket", "close", "count", "high", "low", "open", "volume")

    def __init__(self, bucket: int, price: Decimal, qty: Decimal, count: int = 1) -> None:
        self.bucket = bucket
        self.open = self.high = self.low = self.close = price
        self.volume = qty
        self.count = count

    def add(self, price: Decimal, qty: Decimal) -> None:
        if price > self.high:
            self.high = price
        if price < self.low:
            self.low = price
        self.close = price
        self.volume += qty
        self.count += 1

    def row(self) -> str:
        return (f"{self.bucket},{self.open},{self.high},{self.low},{self.close},{self.volume},"
                f"{self.count}\n")

    def dump(self) -> list[str]:
        return [str(self.bucket), str(self.open), str(self.high), str(self.low),
                str(self.close), str(self.volume), str(self.count)]

    @classmethod
    def load(cls, v: Sequence[str]) -> _Candle:
        c = cls(int(v[0]), Decimal(v[1]), Decimal(v[5]), int(v[6]))
        c.open, c.high, c.low, c.close = Decimal(v[1]), Decimal(v[2]), Decimal(v[3]), Decimal(v[4])
        return c


# --------------------------------------------------------------------------- commit protocol


class _Files:
    def __init__(self, csv_path: Path) -> None:
        self.csv = csv_path
        self.state = csv_path.with_name(csv_path.name + ".state.json")

    def load(self) -> _State | None:
        self.csv.parent.mkdir(parents=True, exist_ok=True)
        if not self.state.exists():
            if self.csv.exists() and self.csv.stat().st_size:
                raise DownloadError(f"{self.csv} exists without its state file "
                                    f"{self.state.name}: remove it or choose another --out")
            return None
        try:
            st = _State(**json.loads(self.state.read_text(encoding="utf-8")))
        except (ValueError, TypeError) as exc:
            raise DownloadError(f"{self.state}: unreadable state file ({exc})") from None
        size = self.csv.stat().st_size if self.csv.exists() else 0
        if size < st.csv_bytes:
            raise DownloadError(f"{self.csv} is shorter than its state says ({size} < "
                                f"{st.csv_bytes} bytes): it was modified; start afresh")
        if size > st.csv_bytes:
            # The tail a killed run appended but never committed: the cursor in the state is
            # from before it, so these candles will be rebuilt from the same trades.
            with self.csv.open("r+b") as fh:
                fh.truncate(st.csv_bytes)
        return st

    def commit(self, st: _State, rows: Sequence[str]) -> None:
        if rows:
            data = "".join(rows).encode("ascii")
            with self.csv.open("ab") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            st.csv_bytes += len(data)
            st.candles += len(rows)
        tmp = self.state.with_name(self.state.name + ".tmp")
        with tmp.open("w", encoding="utf-8") as fh:
            fh.write(json.dumps(asdict(st), indent=1))
            fh.flush()
            os.fsync(fh.fileno())
        tmp.replace(self.state)


# --------------------------------------------------------------------------- the download


async def _call(fn: Callable[[], Any]) -> Any:
    """One REST call, retried after a rate-limit answer (the limiter then makes it wait)."""
    for attempt in range(_RATE_LIMIT_RETRIES + 1):
        try:
            return await fn()
        except RateLimited:
            if attempt == _RATE_LIMIT_RETRIES:
                raise
    raise AssertionError("unreachable")


async def download(
    client: KrakenRestClient,
    *,
    pair: str,
    timeframe_s: int,
    since_s: int,
    out_dir: Path,
    until_s: int | None = None,
    page_size: int | None = None,
    progress: Progress | None = None,
    use_ohlc: bool = True,
) -> DownloadSummary:
    """Download (or continue downloading) ``pair`` candles into ``out_dir``.

    Cancellation-safe: every page is committed atomically (see the module docstring), so a
    cancelled or killed run loses at most the page in flight, which the next run fetches again.

    Raises:
        DownloadError: unknown pair, or a state file of a different request.
        KrakenError: the exchange refused a call or could not be reached (after retries).
    """
    try:
        info_map = await _call(lambda: client.asset_pairs([pair]))
        registry = PairRegistry.from_asset_pairs(info_map)
        symbol = registry.symbol(pair)
        altname = registry.altname(pair)
    except (UnknownPair, KrakenError) as exc:
        if isinstance(exc, KrakenError) and "Unknown asset pair" not in str(exc):
            raise
        raise DownloadError(f"--pair {pair}: unknown to Kraken") from None
    files = _Files(output_path(out_dir, altname, timeframe_s))
    st = await trio.to_thread.run_sync(files.load)
    if st is not None and (st.pair != symbol or st.timeframe_s != timeframe_s
                           or st.since_s != since_s):
        raise DownloadError(f"{files.state} belongs to another download ({st.pair} "
                            f"{st.timeframe_s}s since {st.since_s}): use another --out")
    now_s = int((await _call(client.server_time)).unixtime)
    if until_s is None:
        until_s = now_s
    minutes = timeframe_s // 60
    # OHLC holds the 720 most recent intervals, counted back from the server's present.
    if (st is None and use_ohlc and minutes in OHLC_MINUTES
            and since_s >= now_s - (OHLC_WINDOW - 1) * timeframe_s):
        return await _from_ohlc(client, files, symbol=symbol, altname=altname,
                                timeframe_s=timeframe_s, since_s=since_s, until_s=until_s)
    if progress is not None:
        progress.total = float(max(1, until_s - since_s))
    if st is None:
        st = _State(pair=symbol, timeframe_s=timeframe_s, since_s=since_s, cursor=str(since_s),
                    written_until=since_s - since_s % timeframe_s)
        await trio.to_thread.run_sync(files.commit, st, ())
    return await _from_trades(client, files, st, altname=altname, until_s=until_s,
                              page_size=page_size, progress=progress)


async def _from_ohlc(client: KrakenRestClient, files: _Files, *, symbol: str, altname: str,
                     timeframe_s: int, since_s: int, until_s: int) -> DownloadSummary:
    series = await _call(lambda: client.ohlc(altname, interval=timeframe_s // 60))
    rows: list[str] = []
    end = since_s - since_s % timeframe_s
    first = since_s - since_s % timeframe_s
    for c in series.candles[:-1]:  # the last one is the current, uncommitted candle
        if c.time < first or c.time + timeframe_s > until_s or c.count == 0:
            continue
        rows.append(f"{c.time},{c.open},{c.high},{c.low},{c.close},{c.volume},{c.count}\n")
        end = c.time + timeframe_s
    # The cursor continues after the last written candle when the command is run again.
    st = _State(pair=symbol, timeframe_s=timeframe_s, since_s=since_s,
                cursor=str(end * _NS - 1), written_until=end)
    await trio.to_thread.run_sync(files.commit, st, rows)
    return DownloadSummary(path=files.csv, source="ohlc", candles_written=len(rows),
                           trades_read=0, pages=1, end_s=until_s)


async def _from_trades(client: KrakenRestClient, files: _Files, st: _State, *, altname: str,
                       until_s: int, page_size: int | None, progress: Progress | None
                       ) -> DownloadSummary:
    tf = st.timeframe_s
    cur = _Candle.load(st.open_candle) if st.open_candle else None
    pages = written = read = 0
    while True:
        cursor = st.cursor
        page = await _call(lambda c=cursor: client.recent_trades(altname, since=c,  # type: ignore[misc]
                                                                   count=page_size))
        pages += 1
        rows: list[str] = []
        last_time: Decimal | None = None
        fresh = 0
        past_end = False
        consumed_ns: int | None = None
        for t in page.trades:
            if t.time >= until_s:
                # Stop at the end time: later trades are left to the next run, which resumes
                # right after the last trade consumed here (same-time trades are never split:
                # they are all before the end or all after it).
                past_end = True
                break
            if t.trade_id is not None and st.last_trade_id is not None \
                    and t.trade_id <= st.last_trade_id:
                continue  # the boundary trade again: already counted
            sec = int(t.time)
            if sec < st.written_until:
                continue  # belongs to a candle already written
            bucket = sec - sec % tf
            if cur is not None and bucket != cur.bucket:
                rows.append(cur.row())
                st.written_until = cur.bucket + tf
                cur = None
            if cur is None:
                cur = _Candle(bucket, t.price, t.volume)
            else:
                cur.add(t.price, t.volume)
            if t.trade_id is not None:
                st.last_trade_id = t.trade_id
            last_time = t.time
            consumed_ns = int(t.time * _NS)
            fresh += 1
        read += fresh
        st.trades += fresh
        finished = past_end or not page.trades or page.last == cursor
        if not past_end:
            st.cursor = page.last
        elif consumed_ns is not None:
            st.cursor = str(consumed_ns)
        if finished and cur is not None and cur.bucket + tf <= until_s:
            rows.append(cur.row())
            st.written_until = cur.bucket + tf
            cur = None
        st.open_candle = cur.dump() if cur is not None else None
        # In a thread (fsync blocks), not cancellable: a commit is never torn by a cancel.
        await trio.to_thread.run_sync(files.commit, st, rows)
        written += len(rows)
        if progress is not None:
            at = int(last_time) if last_time is not None else until_s
            progress.update(min(at, until_s) - st.since_s, events=fresh,
                            note=f"{written} candles")
        if finished:
            break
    return DownloadSummary(path=files.csv, source="trades", candles_written=written,
                           trades_read=read, pages=pages, end_s=until_s)


# --------------------------------------------------------------------------- the command


def _iso_s(text: str, flag: str) -> int:
    try:
        dt = datetime.fromisoformat(text.strip())
    except ValueError:
        if text.strip().isdigit():
            return int(text.strip())
        raise DownloadError(f"{flag} {text!r}: not an ISO 8601 date/time or Unix seconds"
                            ) from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return int(dt.timestamp())


class _Usage(Exception):
    pass


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> Any:  # one line, exit 2, like the main CLI
        raise _Usage(message)


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="main.py data", description="market data tools")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    d = sub.add_parser("download", help="download Kraken candles (resumable)")
    d.add_argument("--pair", required=True, help="BASE/QUOTE, e.g. BTC/USD")
    d.add_argument("--timeframe", default="1m", help="1m, 5m, 15m, 1h, 4h or 1d (default 1m)")
    d.add_argument("--since", required=True, help="first candle (ISO 8601, UTC by default)")
    d.add_argument("--until", default=None,
                   help="stop at this time (default: the server's time when the run starts)")
    d.add_argument("--out", required=True, metavar="DIR", help="output directory")
    d.add_argument("--rest-url", default=None,
                   help="Kraken REST base URL [env KRAKEN_REST_URL; default "
                   "https://api.kraken.com]")
    d.add_argument("--page-size", type=int, default=None,
                   help="Trades rows per request (Kraken: 1..1000, default 1000)")
    d.add_argument("--no-ohlc", action="store_true", help="always aggregate trades")
    d.add_argument("--progress", action="store_true", default=None,
                   help="draw the progress bar even when stderr is not a terminal")
    return parser


def data_command(argv: Sequence[str], *, err: TextIO | None = None,
                 out: TextIO | None = None) -> int:
    """``main.py data ...``: parse ``argv`` (after ``data``) and run; returns the exit status."""
    err = sys.stderr if err is None else err
    out = sys.stdout if out is None else out
    parser = _parser()
    try:
        args = parser.parse_args(list(argv))
        tf = parse_timeframe(args.timeframe)
        since = _iso_s(args.since, "--since")
        until = _iso_s(args.until, "--until") if args.until else None
        if until is not None and until <= since:
            raise DownloadError("--until must be after --since")
        if args.page_size is not None and not 1 <= args.page_size <= 1000:
            raise DownloadError("--page-size must be in 1..1000")
    except (_Usage, DownloadError, ValueError) as exc:
        err.write(f"main.py data: error: {exc}\n")
        return EXIT_USAGE
    url = args.rest_url or os.environ.get("KRAKEN_REST_URL") or "https://api.kraken.com"

    async def main() -> DownloadSummary:
        async with KrakenRestClient(base_url=url, limiter=public_limiter()) as client:
            bar = Progress(0, label=args.pair, unit="trades", stream=err,
                           enabled=args.progress)
            try:
                return await download(client, pair=args.pair, timeframe_s=tf, since_s=since,
                                      out_dir=Path(args.out), until_s=until,
                                      page_size=args.page_size, progress=bar,
                                      use_ohlc=not args.no_ohlc)
            finally:
                bar.close()

    try:
        summary = trio.run(main)
    except DownloadError as exc:
        err.write(f"main.py data: error: {exc}\n")
        return EXIT_USAGE
    except KrakenError as exc:
        err.write(f"main.py data: failed: {exc} (progress is saved: run the same command "
                  "again to resume)\n")
        return EXIT_FAILED
    out.write(f"{summary.path}: {summary.candles_written} candle(s) written from "
              f"{summary.source} ({summary.trades_read} trades, {summary.pages} request(s)), "
              f"up to {datetime.fromtimestamp(summary.end_s, tz=UTC).isoformat()}\n")
    return EXIT_OK

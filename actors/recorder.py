"""The recorder actor: batches order, fill and system events into the store.

The database never sits on the trading path: producers send events on a bounded, lossless
channel and the recorder writes them in batches (``batch_size`` events or ``flush_interval``
seconds after the oldest one arrived, whichever comes first), one transaction per batch, in a
worker thread (``trio.to_thread.run_sync``).

Losing nothing is the rule:

* Events are removed from the backlog only after their batch committed.
* When a write fails (PostgreSQL refuses connections, the SQLite file is not writable, ...),
  the recorder keeps the batch, calls ``on_write_error`` (the app trips the circuit breaker
  with a clear log line) and retries with exponential backoff until the database is back; it
  then logs the recovery and carries on. Any exception from the store is retried, not only
  ``StoreUnavailable``: dropping a batch to "unblock" would lose fills.
* The backlog is bounded (``max_backlog``). When it is full the recorder calls
  ``on_backlog_full`` (the app trips the breaker) and stops receiving, so the channel's
  backpressure reaches the producers, which block rather than drop.
* On cancellation (shutdown) it drains what is already waiting in its channel and flushes the
  backlog, shielded, within ``shutdown_timeout`` seconds; anything still unwritten when that
  deadline passes goes to ``on_unwritten`` (the app spills it to disk, ``persistence._spill``).

A write in the worker thread is not abandoned on cancellation (``abandon_on_cancel=False``):
the transaction finishes and its events leave the backlog before the cancellation is
delivered, so a batch is never half-known.

Time: batching and backoff use ``trio.current_time()`` (MockClock-friendly); the write
*latency* reported to the observer is measured with an injected ``timer`` (default
``time.perf_counter``) because it is a measurement of real I/O, not logic.
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, get_args

import trio

from persistence import Recordable

log = logging.getLogger(__name__)

#: Seconds between the recorder's SQLite WAL checkpoints (see ``Recorder._maybe_checkpoint``).
CHECKPOINT_INTERVAL = 30.0

#: The classes of ``persistence.Recordable``: what the store can hold.
RECORDABLE_TYPES: tuple[type, ...] = get_args(Recordable)

_EXACT_TYPES = frozenset(RECORDABLE_TYPES)


class BatchWriter(Protocol):
    """What the recorder needs from a store (``persistence.Store`` satisfies it)."""

    def write_batch(self, events: Sequence[Recordable]) -> None: ...


def _ignore(*_args: Any) -> None:
    return None


def _log_lost(events: list[Recordable]) -> None:
    log.error("recorder: %d unwritten events are lost", len(events))


@dataclass(frozen=True, slots=True)
class RecorderStatistics:
    backlog: int
    peak_backlog: int
    written: int  # events committed
    batches: int  # transactions committed
    failed_writes: int  # write attempts that raised
    backlog_full_episodes: int
    db_available: bool  # False between a failed write and the next successful one
    inline_batches: int = 0  # of ``batches``, written on the event loop (``inline_max``)


class Recorder:
    """Persistence writer actor.

    Args:
        store: where batches go (``write_batch`` is called in a worker thread).
        receive: this incarnation's clone of the supervisor-owned event channel; the recorder
            closes it (and only it) when ``run`` returns.
        batch_size: the most events per transaction; a full batch is written at once.
        flush_interval: about the longest an event waits in the backlog before a write starts
            (while the database keeps up).
        max_backlog: events held before ``on_backlog_full`` fires and receiving pauses.
        on_backlog_full: called with a reason when the backlog fills (once per episode).
        on_write_error: called with a reason after every failed write attempt.
        on_write_recovered: called with a message when writing works again after failures.
        observe_write: called with (seconds, events) after every committed batch.
        observe_backlog: called with the backlog size whenever it changes by a batch or more.
        retry_initial, retry_max: exponential backoff between failed attempts, in seconds.
        shutdown_timeout: deadline of the shielded final flush on cancellation.
        in_thread: run ``write_batch`` in a worker thread (default). ``False`` calls it inline,
            which blocks the event loop but keeps virtual-time backtests deterministic
            (no real I/O racing MockClock's autojump; SUPERVISION.md §6 caveat 1).
        drain_interval: while a write runs in the worker thread or a batch is being gathered
            for it, events wait in the channel and are taken in bursts this often (seconds):
            the longest a producer can wait on a full channel while the backlog still has
            room, and about the most a batch's write starts late.
        inline_max: batches of at most this many events are first offered to the store's
            ``try_write_batch_now`` on the event loop (default 0: never). A SQLite store that
            does not sync its commits writes a small batch in well under a millisecond, and
            on the loop it skips the worker thread's GIL hand-overs, which stall the loop for
            up to the switch interval while an order's write-ahead waits for the same lock
            (``bench/bench_tick_to_order.py``). The store declines when the write would wait
            for anything; the batch then goes to the worker thread as usual.
        on_unwritten: called with the events still unwritten when the shutdown deadline
            passes (the app spills them to disk for the next start); by default they are
            logged as lost.
        timer: real-time clock for the write-latency measurement only.
    """

    def __init__(
        self,
        store: BatchWriter,
        receive: trio.abc.ReceiveChannel[Recordable],
        *,
        batch_size: int = 500,
        flush_interval: float = 0.2,
        max_backlog: int = 50_000,
        on_backlog_full: Callable[[str], None] = _ignore,
        on_write_error: Callable[[str], None] = _ignore,
        on_write_recovered: Callable[[str], None] = _ignore,
        observe_write: Callable[[float, int], None] = _ignore,
        observe_backlog: Callable[[int], None] = _ignore,
        retry_initial: float = 0.1,
        retry_max: float = 10.0,
        shutdown_timeout: float = 5.0,
        in_thread: bool = True,
        drain_interval: float = 0.002,
        inline_max: int = 0,
        on_unwritten: Callable[[list[Recordable]], None] | None = None,
        timer: Callable[[], float] = time.perf_counter,
    ) -> None:
        if batch_size < 1 or max_backlog < batch_size:
            raise ValueError("need 1 <= batch_size <= max_backlog")
        self._store = store
        self._receive = receive
        self._batch_size = batch_size
        self._flush_interval = flush_interval
        self._max_backlog = max_backlog
        self._on_backlog_full = on_backlog_full
        self._on_write_error = on_write_error
        self._on_write_recovered = on_write_recovered
        self._observe_write = observe_write
        self._observe_backlog = observe_backlog
        self._retry_initial = retry_initial
        self._retry_max = retry_max
        self._shutdown_timeout = shutdown_timeout
        self._in_thread = in_thread
        self._timer = timer
        self._write_now: Callable[[Sequence[Recordable]], bool] | None = (
            getattr(store, "try_write_batch_now", None) if inline_max > 0 else None)
        self._inline_max = inline_max
        self._on_unwritten = on_unwritten or _log_lost
        self._inline_batches = 0

        # memory channels have receive_nowait; other ReceiveChannels (a network stream later)
        # only the awaited receive
        self._receive_nowait: Callable[[], Recordable] | None = getattr(
            receive, "receive_nowait", None
        )
        self._backlog: list[Recordable] = []
        self._oldest_at = math.inf  # trio time the oldest unwritten event arrived
        self._closed = False  # the channel ended: write what is left, then return
        self._work = trio.Event()  # pump → writer: something to look at
        self._space = trio.Event()  # writer → pump: the backlog shrank
        self._full = False
        self._peak = 0
        self._written = 0
        self._last_checkpoint = -math.inf
        self._batches = 0
        self._failed = 0
        self._full_episodes = 0
        self._failing_since: float | None = None
        self._drain_interval = drain_interval
        self._writing: trio.Event | None = None  # set when the write in the worker thread ends

    def statistics(self) -> RecorderStatistics:
        return RecorderStatistics(
            backlog=len(self._backlog),
            peak_backlog=self._peak,
            written=self._written,
            batches=self._batches,
            failed_writes=self._failed,
            backlog_full_episodes=self._full_episodes,
            db_available=self._failing_since is None,
            inline_batches=self._inline_batches,
        )

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Record until the channel ends (returns after the last write) or cancellation.

        Ready immediately: ``task_status.started()`` is called once the receiving task runs.
        On cancellation the final flush runs shielded for at most ``shutdown_timeout`` seconds,
        then ``Cancelled`` propagates.
        """
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._pump)
                task_status.started()
                await self._writer()
        finally:
            with trio.CancelScope(shield=True):
                if self._backlog or not self._closed:
                    with trio.move_on_after(self._shutdown_timeout):
                        await self._final_flush()
                    if self._backlog:
                        # the database is away: what still waits in the channel beyond the
                        # backlog's bound would die with it when the channel closes below
                        unwritten = self._backlog + self._take_rest()
                        log.error(
                            "recorder: shutdown deadline (%.1fs) passed with %d events "
                            "unwritten",
                            self._shutdown_timeout,
                            len(unwritten),
                        )
                        self._call_hook(self._on_unwritten, unwritten)
                await self._close_receive()

    def _take_rest(self) -> list[Recordable]:
        """Everything still buffered in the channel, without waiting."""
        rest: list[Recordable] = []
        if self._receive_nowait is not None:
            with contextlib.suppress(trio.WouldBlock, trio.EndOfChannel, trio.ClosedResourceError):
                while True:
                    rest.append(self._receive_nowait())
        return rest

    async def _close_receive(self) -> None:
        # Memory channels close synchronously (``with chan:``, python-trio/trio#746); other
        # ReceiveChannels (a network stream later) only have ``aclose``.
        close: Callable[[], None] | None = getattr(self._receive, "close", None)
        if close is not None:
            close()
        else:
            await self._receive.aclose()

    # ------------------------------------------------------------------ receiving

    def _notify_work(self) -> None:
        self._work.set()

    def _accept(self, event: Recordable) -> None:
        # exact-type set lookup first: cheaper than isinstance over ten types, per event
        if type(event) not in _EXACT_TYPES and not isinstance(event, RECORDABLE_TYPES):
            # not something the store can hold: keeping it would wedge the batch forever
            log.error("recorder: dropping unrecordable %s", type(event).__name__)
            return
        if not self._backlog:
            self._oldest_at = trio.current_time()
            self._notify_work()
        self._backlog.append(event)
        n = len(self._backlog)
        if n > self._peak:
            self._peak = n
        if n % self._batch_size == 0:
            self._notify_work()
            self._call_hook(self._observe_backlog, n)

    async def _pump(self) -> None:
        while True:
            if len(self._backlog) >= self._max_backlog:
                if not self._full:
                    self._full = True
                    self._full_episodes += 1
                    reason = (
                        f"recorder backlog full ({len(self._backlog)} events): the database "
                        "is not keeping up; producers are blocked until it drains"
                    )
                    log.error("%s", reason)
                    self._call_hook(self._on_backlog_full, reason)
                self._space = trio.Event()
                await self._space.wait()
                continue
            if self._full and len(self._backlog) <= self._max_backlog // 2:
                self._full = False
                log.warning("recorder backlog drained to %d events", len(self._backlog))
            if self._writing is not None and self._receive_nowait is not None:
                # A write is in flight, so nothing received now can be written before it ends:
                # let events gather in the channel's buffer and take them in bursts (at the
                # write's end, or every ``drain_interval`` so producers never wait on a full
                # buffer for longer than that) instead of one wake-up per event. Each wake-up
                # costs the event loop about as much as the producer's own send, and the
                # worker thread needs that time (the GIL) to write.
                with trio.move_on_after(self._drain_interval):
                    await self._writing.wait()
                if self._drain():
                    return
                continue
            try:
                event = await self._receive.receive()
            except (trio.EndOfChannel, trio.ClosedResourceError):
                self._closed = True
                self._notify_work()
                return
            self._accept(event)
            if self._receive_nowait is None:
                continue
            if self._in_thread and len(self._backlog) < self._batch_size:
                # The writer waits for a full batch (or its flush deadline, far longer than
                # this): let the rest of a burst gather in the channel too, rather than
                # handing each event over with a wake-up of its own.
                await trio.sleep(self._drain_interval)
            # Take what else is already buffered without a checkpoint per event: one trip
            # through the scheduler per burst instead of per event (bench_recorder.py).
            if self._drain():
                return

    def _drain(self) -> bool:
        """Move what the channel holds into the backlog (up to its bound), without waiting.

        Returns True once the channel has ended (``_closed`` is set and the writer told).

        The loop does nothing per event but take and append: the checks ``_accept`` makes per
        event run once per burst in ``_took`` (in C where they can). While a write is in
        flight every Python-level step here holds the GIL the worker thread needs.
        """
        receive_nowait = self._receive_nowait
        assert receive_nowait is not None
        backlog = self._backlog
        append = backlog.append
        start = len(backlog)
        ended = False
        try:
            for _ in range(self._max_backlog - start):
                append(receive_nowait())
        except trio.WouldBlock:
            pass
        except (trio.EndOfChannel, trio.ClosedResourceError):
            ended = True
        if len(backlog) > start:
            self._took(start)
        if ended:
            self._closed = True
            self._notify_work()
        return ended

    def _took(self, start: int) -> None:
        """Bookkeeping for the events appended to the backlog from index ``start`` on."""
        backlog = self._backlog
        if not _EXACT_TYPES.issuperset(map(type, backlog[start:])):
            # rare: a subclass (kept) or something unrecordable (dropped, see ``_accept``)
            fresh = backlog[start:]
            del backlog[start:]
            for event in fresh:
                if type(event) in _EXACT_TYPES or isinstance(event, RECORDABLE_TYPES):
                    backlog.append(event)
                else:
                    log.error("recorder: dropping unrecordable %s", type(event).__name__)
        n = len(backlog)
        if n == start:
            return
        if start == 0:
            self._oldest_at = trio.current_time()
            self._notify_work()
        if n > self._peak:
            self._peak = n
        if n // self._batch_size != start // self._batch_size:
            # crossed a batch boundary: a full batch may be waiting for the writer
            self._notify_work()
            self._call_hook(self._observe_backlog, n)

    # ------------------------------------------------------------------ writing

    async def _writer(self) -> None:
        while True:
            if not self._backlog:
                if self._closed:
                    return
                self._work = trio.Event()
                await self._work.wait()
                continue
            if len(self._backlog) < self._batch_size and not self._closed:
                with trio.move_on_at(self._oldest_at + self._flush_interval):
                    while len(self._backlog) < self._batch_size and not self._closed:
                        self._work = trio.Event()
                        await self._work.wait()
            await self._write_next()

    async def _write_next(self) -> None:
        """Write the oldest batch, retrying with backoff until it commits."""
        batch = self._backlog[: self._batch_size]
        delay = self._retry_initial
        while True:
            if await self._attempt(batch):
                return
            await trio.sleep(delay)
            delay = min(delay * 2, self._retry_max)

    async def _attempt(self, batch: list[Recordable]) -> bool:
        started = self._timer()
        started_at = trio.current_time()
        try:
            if self._in_thread and self._write_now is not None and len(
                    batch) <= self._inline_max and self._write_now(batch):
                self._inline_batches += 1
            elif self._in_thread:
                self._writing = trio.Event()
                try:
                    await trio.to_thread.run_sync(self._store.write_batch, batch)
                finally:
                    self._writing.set()
                    self._writing = None
            else:
                self._store.write_batch(batch)
        except Exception as exc:  # any failure keeps the batch; Cancelled is not an Exception
            self._failed += 1
            if self._failing_since is None:
                self._failing_since = trio.current_time()
            reason = (
                f"database write failed, holding {len(self._backlog)} events and retrying: "
                f"{type(exc).__name__}: {exc}"
            )
            log.error("recorder: %s", reason)
            self._call_hook(self._on_write_error, reason)
            return False
        # committed: no checkpoint between the write returning and the events leaving the
        # backlog, so a cancellation cannot make us write them twice
        del self._backlog[: len(batch)]
        # what is left arrived before this write ended; count its wait from the write's start
        # (a slight overestimate of its age, so it is never held longer than flush_interval)
        self._oldest_at = started_at if self._backlog else math.inf
        self._written += len(batch)
        self._batches += 1
        self._space.set()
        self._call_hook(self._observe_write, self._timer() - started, len(batch))
        self._call_hook(self._observe_backlog, len(self._backlog))
        if self._failing_since is not None:
            message = (
                f"database writes recovered after {trio.current_time() - self._failing_since:.1f}"
                f"s; {len(self._backlog)} events still queued"
            )
            self._failing_since = None
            log.warning("recorder: %s", message)
            self._call_hook(self._on_write_recovered, message)
        await self._maybe_checkpoint()
        return True

    async def _maybe_checkpoint(self) -> None:
        """Fold SQLite's write-ahead log back into the database file here, off the order path.

        The app's SQLite connections do not checkpoint automatically (an automatic checkpoint
        runs inside whichever commit crosses the threshold, often an order's write-ahead, and
        costs milliseconds of tick-to-order); the recorder does it between batches instead.
        """
        checkpoint = getattr(self._store, "checkpoint", None)
        now = trio.current_time()
        if checkpoint is None or now - self._last_checkpoint < CHECKPOINT_INTERVAL:
            return
        self._last_checkpoint = now
        try:
            if self._in_thread:
                await trio.to_thread.run_sync(checkpoint)
            else:
                checkpoint()
        except Exception as exc:  # a failed checkpoint loses nothing: the log just grows
            log.warning("recorder: WAL checkpoint failed: %s", exc)

    async def _final_flush(self) -> None:
        # take what producers already handed over; do not wait for more
        if not self._closed:
            # receive_nowait is on memory channels, not on trio.abc.ReceiveChannel
            receive_nowait: Callable[[], Recordable] | None = getattr(
                self._receive, "receive_nowait", None
            )
            while receive_nowait is not None and len(self._backlog) < self._max_backlog:
                try:
                    self._accept(receive_nowait())
                except (trio.WouldBlock, trio.EndOfChannel, trio.ClosedResourceError):
                    break
        while self._backlog:
            await self._write_next()

    @staticmethod
    def _call_hook(hook: Callable[..., None], *args: Any) -> None:
        # a broken metrics or alert hook must not take the recorder (and its backlog) down
        try:
            hook(*args)
        except Exception:
            log.exception("recorder: hook %r failed", hook)

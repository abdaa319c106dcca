"""Builds the actor tree of DESIGN.md from settings and runs it.

::

    root  (rest_for_one)
    ├── recorder         persistence writer (when a store is configured)
    ├── metrics          /metrics and /healthz
    ├── risk             limits, exposure, drawdown, the trading gate
    ├── executor         approved orders -> PaperBroker
    ├── strategies       (one_for_one) one actor per strategy
    └── feeds            (one_for_one) one Kraken WS connection, or the replay source

State that must outlive an actor's restart (the ledger behind risk, the paper exchange behind
the executor, the breaker) belongs to the :class:`Application`, not to the actor incarnation;
everything an incarnation builds for itself (strategies' indicators, sessions, sockets) is
rebuilt on restart. Channels are opened here and handed to the supervisors, which give each
incarnation fresh clones.
"""

from __future__ import annotations

import functools
import logging
import math
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import trio

from config import Settings
from monitoring import HealthReport, Metrics
from persistence import EquitySnapshot, Store
from protocol.instruments import PairInfo
from protocol.kraken import KrakenWsSession, Subscription
from protocol.messages import (
    BookEvent,
    Fill,
    MarketEvent,
    OrderEvent,
    OrderRejected,
)
from trading import ClientOrderIds, Portfolio, RiskEngine, RiskLimits
from trading.risk import RISK_REASONS
from trading.strategies import STABLECOINS, Strategy, build_strategies, standard_params

from ._breaker import BreakerState, CircuitBreaker
from ._channels import FanOut, open_lossless_channel
from ._supervisor import (
    Backoff,
    ChildSpec,
    RestartStrategy,
    Supervisor,
    SupervisorEvent,
    SupervisorGaveUp,
)
from .console import ConsoleActor, status_line, summary_table
from .executor import ExecutionState, ExecutorActor, PaperBroker
from .feed import FeedActor
from .journal import (
    DuplicateOrderId,
    StoreJournal,
    SystemEvents,
    persist_stranded,
    probe_write,
    restore,
    spill,
)
from .monitor import MetricsBridge, MonitorActor, feed_ages
from .recorder import Recorder
from .recording import FrameWriter, SessionTap
from .replay import ReplayFeed, load_candle_file
from .risk import RiskActor
from .strategy import StrategyActor
from .wiring import (
    ExecutionTap,
    OrderedWrites,
    TimedBroker,
    Wiring,
    check_settings,
    load_pairs,
    market_key,
)

log = logging.getLogger(__name__)

ORDER_STATUSES = ("accepted", "filled", "rejected", "cancelled")
#: Small batches (~1-2 ms): on SQLite a batch holds the lock a write-ahead waits for. One cut
#: short by the flush interval is written on the event loop if it can be (``inline_max``).
RECORDER_BATCH = 100
#: Breaker thresholds for storms (DESIGN.md: checksum storms and repeated rejects halt trading).
CHECKSUM_STORM_COUNT, CHECKSUM_STORM_WINDOW = 10, 60.0
ORDER_REJECT_COUNT, ORDER_REJECT_WINDOW = 50, 60.0
VALIDATION_REJECTS = ("EOrder:", "EGeneral:Invalid", "not sent", "write_ahead_failed")
#: The paper exchange's "endpoints", as ``trading_exchange_request_duration_seconds{endpoint}``.
PAPER_ENDPOINTS = ("paper:AddOrder", "paper:CancelAll")



class Application:
    """The running system: the root supervisor plus what the CLI needs to stop and report."""

    def __init__(
        self,
        settings: Settings,
        *,
        store: Store | None = None,
        metrics: Metrics | None = None,
        strategy_factory: Callable[[str], Strategy] | None = None,
        run_tag: str = "paper",
        version: str = "0.1.0",
        backoff: Backoff | None = None,
        epoch_offset: float = 0.0,
        pairs: dict[str, PairInfo] | None = None,
    ) -> None:
        self._backoff = backoff or Backoff(initial=0.5, maximum=30.0, jitter=0.1)
        self.settings = settings
        self.run_tag = run_tag
        self.exit_code = 0
        self.metrics = metrics or Metrics()
        self.metrics_port: int | None = None
        self.breaker = CircuitBreaker("trading", latching=True)
        self.actor_states: dict[str, str] = {}
        self.feed_last_seen: dict[str, float] = {}
        self.fills: list[Fill] = []  # every fill of this run, in order (reports and tests)
        self._history: tuple[Fill, ...] = ()  # fills of earlier runs (recovered account)
        self._finished = trio.Event()
        self._stop_requested = trio.Event()
        self._nursery: trio.Nursery | None = None
        self._probing = False
        self._recorder_now: Recorder | None = None  # the current recorder incarnation
        self._mismatches: dict[str, deque[float]] = {}
        self._rejects: deque[float] = deque()
        self._latches = OrderedWrites("breaker state")
        self.replay_published = 0  # survives feed restarts: a restarted replay resumes
        self._recording: FrameWriter | None = None  # --record: one writer across feed restarts
        self.epoch_offset = epoch_offset
        self.store = store
        self.pairs = pairs or load_pairs(self._needed_symbols())
        quote = settings.quote_currency
        cash = {quote: settings.cash}
        self.run_id: str | None = None
        latched: str | None = None
        if store is not None:
            restored = restore(store, mode=settings.mode, config=settings.public_dict(),
                               version=version, cash=cash, pairs=self.pairs,
                               reset_breaker=settings.reset_breaker)
            self.portfolio = restored.portfolio
            self.run_id = restored.run_id
            latched = restored.breaker_reason
            self._history = restored.fills
        else:
            self.portfolio = Portfolio(cash)
        self.engine = RiskEngine(self._limits(), self.portfolio, self.pairs,
                                 ClientOrderIds(self._id_prefix()))
        # Paper fill ids are the store's idempotency key and a new process counts them from 1
        # again: without a per-run prefix a restarted run's fills would be dropped as replays
        # of the previous run's (found by the crash test).
        self.broker = PaperBroker(self.pairs, self.portfolio.balances(),
                                  latency=settings.paper_latency,
                                  fill_id_prefix=f"P{self.run_id}-" if self.run_id else "P")
        self._journal = StoreJournal(store) if store is not None else None
        self.execution = ExecutionState()  # survives executor restarts (outbox, routing)
        self._strategy_factory = strategy_factory or self._build_strategy
        self.bridge = MetricsBridge(self.metrics, usd_rate=self.portfolio.usd_rate)

        size = settings.channel_size
        self.wiring = Wiring(
            market=FanOut("market"),
            signals=open_lossless_channel(size),
            orders=open_lossless_channel(size),
            order_events=open_lossless_channel(size),
            events=open_lossless_channel(size * 16),
        )
        self.system = SystemEvents(self.wiring.events[0])
        self.breaker.add_listener(self.bridge.breaker_changed)
        self.breaker.add_listener(self._on_breaker)
        if latched is not None:
            log.critical("the trading breaker was latched before this start (%s): trading stays "
                         "halted until --reset-breaker", latched)
            self.breaker.restore(latched)
        for name in settings.strategies:
            self.wiring.feedback[name] = open_lossless_channel(size)
        self.feed_names = ["replay"] if settings.replay else ["kraken"]
        self.metrics.initialise(
            actors=["recorder", "metrics", "console", "risk", "executor", "strategies", "feeds",
                    *settings.strategies, *self.feed_names],
            feeds={name: ["book", "ticker", "trade"] for name in self.feed_names},
            symbols=list(self.pairs), strategies=[*settings.strategies, "risk"],
            channels=[f"strategy:{n}" for n in settings.strategies] + [
                "risk", "executor", "signals", "orders", "order_events", "events"],
            order_statuses=ORDER_STATUSES, risk_reasons=RISK_REASONS,
            supervisors=["root", "strategies", "feeds"], endpoints=PAPER_ENDPOINTS,
        )
        self._ticks = 0
        self.root = self._supervisor("root", self._children(), RestartStrategy.REST_FOR_ONE)

    # ------------------------------------------------------------------ construction

    def _needed_symbols(self) -> list[str]:
        symbols = list(self.settings.pairs)
        # Conversion pairs let the ledger value every currency in USD (e.g. USDT/USD).
        return symbols

    def _limits(self) -> RiskLimits:
        s = self.settings
        return RiskLimits(
            max_position_usd=s.max_position_usd, max_total_exposure_usd=s.max_exposure_usd,
            max_open_positions=s.max_open_positions, stop_loss_pct=s.stop_loss,
            take_profit_pct=s.take_profit, daily_loss_limit_usd=s.daily_loss_limit_usd,
            max_drawdown=s.max_drawdown,
        )

    def _id_prefix(self) -> str:
        # Client order ids are unique across runs: the run tag is part of every id.
        return self.run_tag

    def _build_strategy(self, name: str) -> Strategy:
        s = self.settings
        acct = s.quote_currency
        # Stablecoin quotes count 1:1 against a USD account (BTC/USDT next to BTC/USD).
        pegs = tuple(dict.fromkeys(p.quote for p in self.pairs.values()
                                   if acct == "USD" and p.quote in STABLECOINS))
        params = standard_params([name], {}, acct, pegs, s.order_notional)
        strategy = build_strategies([name], params, self.pairs)[0]
        # A new strategy object (at start-up after a restart, or after a crash) knows nothing
        # of the positions it opened: replay the account's fills so it does.
        for fill in (*self._history, *self.fills):
            strategy.on_fill(fill)
        return strategy

    def _supervisor(self, name: str, children: list[ChildSpec],
                    strategy: RestartStrategy) -> Supervisor:
        s = self.settings
        return Supervisor(name, children, strategy=strategy, max_restarts=s.max_restarts,
                          period=s.restart_period, backoff=self._backoff,
                          observer=self.observe, on_give_up=self.on_give_up)

    def _children(self) -> list[ChildSpec]:
        w = self.wiring
        s = self.settings
        risk_market = w.market.subscribe("risk", max_buffer_size=s.channel_size, key=market_key)
        exec_market = w.market.subscribe("executor", max_buffer_size=s.channel_size,
                                         key=market_key)
        feedback_sends = {f"fb_{n}": send for n, (send, _) in w.feedback.items()}

        def risk(signals: Any, market: Any, order_events: Any, orders: Any, events: Any,
                 unwinds: Any, **feedback: Any) -> RiskActor:
            return RiskActor(self.engine, self.breaker, signals=signals, market=market,
                             unwinds=unwinds,
                             order_events=order_events, orders=orders,
                             events=events if self.store is not None else None,
                             epoch_clock=self.epoch_time,
                             feedback={k[3:]: v for k, v in feedback.items()},
                             observer=self.bridge)

        def executor(orders: Any, market: Any, order_events: Any, signals: Any, events: Any,
                     **feedback: Any) -> ExecutorActor:
            return ExecutorActor(TimedBroker(self.broker, self.metrics), orders=orders,
                                 market=market,
                                 order_events=order_events, signals=signals,
                                 events=events if self.store is not None else None,
                                 feedback={k[3:]: v for k, v in feedback.items()},
                                 journal=self._journal,
                                 observer=ExecutionTap(self.bridge, self.fills,
                                                        self._count_order_event),
                                 pairs=self.pairs, prices=self.broker.mids,
                                 state=self.execution, on_journal_error=self._on_journal_error)

        children = []
        if self.store is not None:
            children.append(ChildSpec("recorder", self._recorder,
                                      channels={"receive": w.events[1]}))
        children += [
            ChildSpec("metrics", self._monitor),
            ChildSpec("console", lambda: ConsoleActor(self.status_line)),
            ChildSpec("risk", risk, channels={
                "signals": w.signals[1], "market": risk_market, "order_events": w.order_events[1],
                "orders": w.orders[0], "events": w.events[0], "unwinds": w.unwinds[1],
                **feedback_sends}),
            ChildSpec("executor", executor, channels={
                "orders": w.orders[1], "market": exec_market, "order_events": w.order_events[0],
                "signals": w.unwinds[0], "events": w.events[0], **feedback_sends}),
        ]
        strategy_children = []
        for name in s.strategies:
            market = w.market.subscribe(f"strategy:{name}", max_buffer_size=s.channel_size,
                                        key=market_key)

            def make(market: Any, feedback: Any, signals: Any, _name: str = name
                     ) -> StrategyActor:
                return StrategyActor(self._strategy_factory(_name), market=market,
                                     feedback=feedback, signals=signals,
                                     on_signals=self.bridge.signals)

            strategy_children.append(ChildSpec(name, make, channels={
                "market": market, "feedback": w.feedback[name][1], "signals": w.signals[0]}))
        children.append(ChildSpec("strategies", lambda: self._supervisor(
            "strategies", strategy_children, RestartStrategy.ONE_FOR_ONE)))
        feeds = [ChildSpec(self.feed_names[0], self._feed, channels={"out": w.market})]
        children.append(ChildSpec("feeds", lambda: self._supervisor(
            "feeds", feeds, RestartStrategy.ONE_FOR_ONE)))
        return children

    def _monitor(self) -> MonitorActor:
        s = self.settings
        return MonitorActor(self.bridge, self.health, host=s.metrics_host, port=s.metrics_port,
                            channel_stats=self.wiring.statistics, engine=self.engine,
                            on_bound=self._metrics_bound, on_tick=self._on_tick)

    def _recorder(self, receive: trio.MemoryReceiveChannel[Any]) -> Recorder:
        assert self.store is not None
        metrics = self.metrics
        recorder: Recorder

        def observe_write(seconds: float, n: int) -> None:
            metrics.db_write("batch", seconds, recorder.statistics().backlog)

        recorder = self._recorder_now = Recorder(
            self.store, receive, batch_size=RECORDER_BATCH, inline_max=RECORDER_BATCH - 1,
            on_backlog_full=lambda why: self.breaker.trip("recorder_backlog", latch=True),
            on_write_error=self._on_db_error,
            on_write_recovered=self._on_db_recovered,
            on_unwritten=functools.partial(spill, self.store),
            observe_write=observe_write,
            observe_backlog=metrics.db_write_backlog.set,
        )
        return recorder

    def _on_db_error(self, detail: str) -> None:
        self.metrics.db_write_failed()
        log.error("DATABASE UNAVAILABLE (%s): halting trading until writes succeed again", detail)
        self.breaker.trip("database_unavailable", latch=True)
        if self._nursery is not None and not self._probing:
            # The recorder reports its own recovery; a failed write-ahead has nobody retrying
            # it while trading is halted, so probe the database until a write succeeds.
            self._probing = True
            self._nursery.start_soon(self._probe_database)

    async def _probe_database(self) -> None:
        assert self.store is not None
        delay = 0.5
        try:
            while self.breaker.is_open and "database_unavailable" in self.breaker.reasons:
                await trio.sleep(delay)
                try:
                    await trio.to_thread.run_sync(probe_write, self.store)
                except Exception as exc:
                    log.info("database still unavailable (%s)", type(exc).__name__)
                    delay = min(delay * 2, 10.0)
                    continue
                recorder = self._recorder_now
                if recorder is not None and not recorder.statistics().db_available:
                    # A probe row goes through but the recorder's batch still fails (a batch
                    # the database refuses): stay halted; its own recovery clears the cause.
                    delay = min(delay * 2, 10.0)
                    continue
                self._on_db_recovered("write probe succeeded")
        finally:
            self._probing = False

    def _on_db_recovered(self, detail: str) -> None:
        log.warning("database writes succeed again (%s)", detail)
        # Only this cause is cleared: a trip that happened during the outage stays.
        self.breaker.resolve("database_unavailable", "database recovered")

    def _on_tick(self) -> None:
        """Once a second (metrics sampler): an equity snapshot every 10 s."""
        self._ticks += 1
        if self.store is None or self._ticks % 10:
            return
        pf = self.portfolio
        hwm = pf.high_water_usd
        if hwm is None:
            return
        try:
            self.wiring.events[0].send_nowait(EquitySnapshot(
                equity=pf.equity_usd(), realized=pf.realized_pnl_usd(),
                unrealized=pf.unrealized_pnl_usd(), drawdown=pf.drawdown(), high_water=hwm))
        except trio.WouldBlock:
            pass  # a snapshot is a sample; the next one comes in 10 s

    def _metrics_bound(self, port: int) -> None:
        self.metrics_port = port

    def _feed(self, out: FanOut[MarketEvent]) -> FeedActor | ReplayFeed:
        s = self.settings
        if s.replay:
            return ReplayFeed([s.replay], out=out, speed=s.speed, skip=self.replay_published,
                              on_publish=self._replay_progress,
                              candle_loader=load_candle_file, symbols=set(self.pairs),
                              on_end=self._replay_finished)
        subscriptions = [
            Subscription(channel="book", symbols=tuple(self.pairs), depth=s.book_depth),
            Subscription(channel="ticker", symbols=tuple(self.pairs)),
            Subscription(channel="trade", symbols=tuple(self.pairs)),
        ]
        name = self.feed_names[0]

        def session() -> KrakenWsSession:
            live: KrakenWsSession | None = None
            tap = None
            if s.record:
                if self._recording is None:
                    self._recording = FrameWriter(Path(s.record))
                tap = SessionTap(
                    self._recording, clock=self.epoch_time, depth=s.book_depth,
                    books=lambda: [b for b in (live.book(p) for p in self.pairs)
                                   if b is not None] if live is not None else [])
            live = KrakenWsSession(
                s.ws_url, subscriptions=subscriptions, stale_after=s.stale_after,
                on_event=lambda kind, detail: self._feed_event(name, kind, detail),
                on_raw_frame=tap)
            return live

        return FeedActor(name, session, out=out, observer=self.bridge,
                         last_seen=self.feed_last_seen)

    # ------------------------------------------------------------------ hooks

    def _feed_event(self, feed: str, kind: str, detail: str) -> None:
        self.bridge.feed_event(feed, kind, detail)
        # The session logs these itself; here they become metrics and persisted events.
        if kind in ("reconnecting", "checksum_mismatch", "stale"):
            self.system.emit(kind, f"feed:{feed}", detail)
        if kind == "stale":
            # No fresh prices: nothing may trade on stale books. Clears when the feed is back.
            self.breaker.trip(f"feed_stale:{feed}", latch=False)
        elif kind == "connected":
            self.breaker.resolve(f"feed_stale:{feed}", f"feed {feed} connected again")
        elif kind == "checksum_mismatch":
            now = trio.current_time()
            window = self._mismatches.setdefault(feed, deque())
            window.append(now)
            while window and now - window[0] > CHECKSUM_STORM_WINDOW:
                window.popleft()
            if len(window) >= CHECKSUM_STORM_COUNT:
                # Resubscribing fixes one bad book; a storm means the data cannot be trusted.
                self.breaker.trip(f"checksum_mismatches:{feed}", latch=True)

    def _count_order_event(self, event: OrderEvent) -> None:
        """Repeated exchange rejects halt trading (DESIGN.md, circuit breaker). Validation
        rejects (funds, minimums, precision: ``EOrder:``/``EGeneral:Invalid``) are a strategy
        sizing badly, counted per strategy in the metrics, not an exchange in trouble."""
        if not isinstance(event, OrderRejected) or event.reason.startswith(VALIDATION_REJECTS):
            return
        now = trio.current_time()
        window = self._rejects
        window.append(now)
        while window and now - window[0] > ORDER_REJECT_WINDOW:
            window.popleft()
        if len(window) >= ORDER_REJECT_COUNT:
            self.breaker.trip("order_rejects", latch=True)

    def observe(self, event: SupervisorEvent) -> None:
        self.actor_states[event.child] = {
            "started": "running", "crashed": "crashed", "restarting": "restarting",
            "stopped": "stopped", "exited": "stopped", "gave_up": "failed",
        }.get(event.kind, event.kind)
        self.bridge.supervisor_event(event)
        if event.kind in ("restarting", "gave_up"):
            self.system.emit("actor_" + event.kind, f"{event.supervisor}/{event.child}",
                             f"{event.reason} (restart {event.restart_count})")

    def on_give_up(self, error: SupervisorGaveUp) -> None:
        self.breaker.trip(f"restart_storm:{error.supervisor}", latch=True)

    def _on_journal_error(self, exc: BaseException) -> None:
        if isinstance(exc, DuplicateOrderId):
            # Not an outage: an id collision is a bug, and sending would corrupt the ledger.
            log.critical("write-ahead refused a reused client order id: %s", exc)
            self.breaker.trip("duplicate_order_id", latch=True)
            return
        self._on_db_error(f"write-ahead failed: {type(exc).__name__}")

    def _on_breaker(self, name: str, old: BreakerState, new: BreakerState, reason: str) -> None:
        if new is BreakerState.OPEN:
            log.critical("CIRCUIT BREAKER TRIPPED (%s): trading halted, open orders cancelled",
                         reason)
            self.system.emit("breaker_trip", name, reason)
            transient = reason == "database_unavailable" or reason.startswith("feed_stale")
            if self.store is not None and not transient:
                self._latches.submit(functools.partial(self.store.latch_breaker, reason))
        elif new is BreakerState.CLOSED:
            self.system.emit("breaker_reset", name, reason)
            if self.store is not None:
                self._latches.submit(functools.partial(self.store.reset_breaker, reason=reason))

    def _replay_progress(self, published: int) -> None:
        self.replay_published = published

    def _replay_finished(self, published: int) -> None:
        if self.settings.exit_at_end:
            self._stop_requested.set()

    def epoch_time(self) -> float:
        """Unix time for logic that needs calendar days (daily-loss limit): the trio clock
        plus the offset main.py measured at start (virtual in backtests)."""
        return trio.current_time() + self.epoch_offset

    def status_line(self) -> str:
        return status_line(self.portfolio, self.breaker,
                           open_orders=len(self.broker.matcher.open_orders()),
                           feed_ages=feed_ages(self.feed_last_seen, self.feed_names))

    def summary(self) -> str:
        return summary_table(self.portfolio)

    def health(self) -> HealthReport:
        state = self.breaker.state
        return HealthReport(
            actors=dict(self.actor_states), breaker_state=state.value,
            breaker_reason=self.breaker.reason,
            feed_ages_s=feed_ages(self.feed_last_seen, self.feed_names),
            stale_after_s=self.settings.stale_after if not self.settings.replay else math.inf,
            halted=state is BreakerState.OPEN,
        )

    # ------------------------------------------------------------------ running

    async def run(self, *, task_status: trio.TaskStatus[Any] = trio.TASK_STATUS_IGNORED) -> None:
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                nursery.start_soon(self._latches.run)
                await nursery.start(self._run_root)
                task_status.started()
                await self._stop_requested.wait()
                await self._settle()
                await self.root.shutdown()
                nursery.cancel_scope.cancel()
        finally:
            self._nursery = None
            self._latches.flush()  # breaker changes not yet written when the tree stopped
            self._record_stranded()
            if self._recording is not None:
                self._recording.close()
                log.info("recording written: %s", ", ".join(map(str, self._recording.segments)))
            if self._journal is not None:
                self._journal.close()
            if self.store is not None:
                try:
                    self.store.end_run()
                except Exception as exc:
                    log.error("could not stamp the end of the run: %s", exc)
            self._finished.set()

    async def _run_root(self, *, task_status: trio.TaskStatus[Any] = trio.TASK_STATUS_IGNORED
                        ) -> None:
        try:
            await self.root.run(task_status=task_status)
        except SupervisorGaveUp:
            log.critical("the root supervisor gave up: stopping")
            self.exit_code = 1
        self._stop_requested.set()

    def _record_stranded(self) -> None:
        """Persist outbox events the stop cut off from the recorder (journal.persist_stranded)."""
        if self.store is not None:
            persist_stranded(self.store, self.execution.unrecorded())

    async def _settle(self) -> None:
        """Let in-flight signals, orders and events drain before a planned stop (at most 2 s)."""
        lossless = ("signals", "orders", "order_events")
        with trio.move_on_after(2.0):
            # Polling: channels have no "drained" event, and this runs once, at shutdown.
            while any(s.depth for s in self.wiring.statistics()  # noqa: ASYNC110
                      if s.name in lossless or s.name.startswith("feedback:")):
                await trio.sleep(0.01)
            await trio.sleep(0.05)

    def request_stop(self) -> None:
        self._stop_requested.set()

    async def shutdown(self) -> None:
        await self.root.shutdown()

    async def wait_finished(self) -> None:
        await self._finished.wait()

    def book_of(self, symbol: str) -> BookEvent | None:
        return self.broker._books.get(symbol)


def build_application(settings: Settings, *, run_tag: str = "paper",
                      epoch_offset: float = 0.0,
                      pairs: dict[str, PairInfo] | None = None) -> Application:
    # Paper mode: the write-ahead guards against a crash of this process (the paper exchange
    # dies with it), which SQLite's WAL with synchronous=NORMAL survives (the crash tests kill
    # with SIGKILL); FULL adds an fsync per order, 2-9 ms of tick-to-order on this disk
    # (bench/bench_tick_to_order.py). A power cut may lose the last paper transactions. Every
    # other mode keeps FULL.
    sync: Literal["NORMAL", "FULL"] = "NORMAL" if settings.mode == "paper" else "FULL"
    store = Store(settings.db, sqlite_synchronous=sync, spill_dir=settings.spill_dir or None)
    return Application(settings, store=store,
                       run_tag=run_tag, epoch_offset=epoch_offset, pairs=pairs)


__all__ = ["Application", "build_application", "check_settings", "load_pairs", "market_key"]

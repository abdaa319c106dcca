"""The metrics contract: every Prometheus metric the system exports, defined once.

Dashboards (``grafana/dashboards/*.json``) and alert rules (``monitoring/prometheus/alerts.yml``)
use exactly these names, and tests check that they do. Conventions (prometheus.io naming
practices): prefix ``trading_``, base units (``_seconds``, ``_ratio``; money carries its currency,
``_usd``), ``_total`` on counters, and only low-cardinality labels (actor, feed, channel, symbol,
strategy, status, reason, endpoint, kind, operation).

The metrics live on a dedicated :class:`~prometheus_client.CollectorRegistry` owned by a
:class:`Metrics` instance, not on prometheus_client's process-global registry: tests and parallel
backtests build fresh instances, and nothing leaks between them (DESIGN.md: no process-global
state). :data:`METRICS` is the module-level default the live process uses.

Hot path: prometheus_client's ``.labels(...)`` takes a lock and builds a tuple on every call, so
the helper methods here cache the bound child per label tuple in a plain dict (a lookup is a few
tens of nanoseconds). Each labelled metric also has a cap on distinct label tuples
(:data:`MAX_SERIES_PER_METRIC`); past it new values are folded into ``"other"`` so a bug that feeds
an order id into a label cannot blow up Prometheus. Money arrives as ``Decimal`` and is converted
to float only here, at the metrics boundary: Prometheus samples are float64 and these gauges are
for watching, never for accounting.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from decimal import Decimal
from typing import Any, Final, Generic, TypeVar

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from ._hot import HotMetric

__all__ = [
    "BREAKER_REASONS",
    "DB_WRITE_BUCKETS",
    "EXCHANGE_BUCKETS",
    "EXCHANGE_ERROR_KINDS",
    "MAX_SERIES_PER_METRIC",
    "METRICS",
    "OTHER",
    "TICK_TO_ORDER_BUCKETS",
    "Metrics",
]

#: Buckets for ``trading_tick_to_order_seconds``: from 50 µs (an in-process paper decision) to
#: 1 s (something is badly wrong), roughly 1-2.5-5 per decade so p50/p99 interpolate well.
TICK_TO_ORDER_BUCKETS: Final = (
    50e-6, 100e-6, 250e-6, 500e-6,
    1e-3, 2.5e-3, 5e-3,
    10e-3, 25e-3, 50e-3,
    100e-3, 250e-3, 500e-3, 1.0,
)  # fmt: skip
#: Buckets for exchange REST/WS request round trips: 5 ms .. 10 s (Kraken is ~50-300 ms).
EXCHANGE_BUCKETS: Final = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
#: Buckets for one batched database write (SQLite WAL commit .. a slow PostgreSQL).
DB_WRITE_BUCKETS: Final = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)

#: The breaker trip reasons DESIGN.md names; pre-initialised so the trips series exist at zero.
BREAKER_REASONS: Final = (
    "restart_storm",
    "exchange_errors",
    "order_rejects",
    "checksum_mismatches",
    "feed_stale",
    "drawdown",
    "daily_loss",
    "manual",
)
#: The ``kind`` values of ``trading_exchange_errors_total``; pre-initialised so "no errors" is a
#: zero series (a dashboard shows 0, ``rate()`` works) rather than no series at all.
EXCHANGE_ERROR_KINDS: Final = ("rate_limit", "transport", "rejected", "auth", "other")
#: Distinct label tuples allowed per labelled metric before values fold into :data:`OTHER`.
MAX_SERIES_PER_METRIC: Final = 200
#: The label value that absorbs overflow past :data:`MAX_SERIES_PER_METRIC`.
OTHER: Final = "other"

_M = TypeVar("_M", Counter, Gauge, Histogram)


class _Children(Generic[_M]):
    """A per-metric cache of bound children with a cardinality cap.

    Not locked: a race between two threads can at worst bind the same child twice, which
    prometheus_client makes idempotent. Actors all run on one trio thread anyway.
    """

    __slots__ = ("_cache", "_metric")

    def __init__(self, metric: _M) -> None:
        self._metric: _M = metric
        self._cache: dict[tuple[str, ...], _M] = {}

    def get(self, *values: str) -> _M:
        child = self._cache.get(values)
        if child is None:
            if len(self._cache) >= MAX_SERIES_PER_METRIC:
                values = (OTHER,) * len(values)
                child = self._cache.get(values)
                if child is not None:
                    return child
            child = self._metric.labels(*values)
            self._cache[values] = child
        return child


class Metrics:
    """All of the system's metrics on one private registry.

    Attributes are the raw prometheus_client metric objects (for anything the helpers do not
    cover); the helper methods are the cheap, cardinality-safe way to record. Every helper is
    synchronous, non-blocking and safe to call from trio tasks.

    Args:
        registry: Registry to register on; a fresh one by default.
        wall_clock: Unix-time source for the ``*_timestamp_seconds`` gauges. Prometheus compares
            those against its own wall clock (``time() - x``), so they must be Unix time, unlike
            the actors' ``trio.current_time()``. Injected so tests can pin it.
    """

    def __init__(
        self,
        registry: CollectorRegistry | None = None,
        *,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.registry = registry if registry is not None else CollectorRegistry(auto_describe=True)
        self._wall_clock = wall_clock
        r = self.registry

        # --- supervision
        self.actor_up = Gauge(
            "trading_actor_up", "1 while the actor is running, 0 otherwise.", ["actor"], registry=r
        )
        self.actor_restarts = Counter(
            "trading_actor_restarts", "Actor restarts by its supervisor.", ["actor"], registry=r
        )
        self.supervisor_gave_up = Counter(
            "trading_supervisor_gave_up",
            "Restart storms after which a supervisor gave up and escalated.",
            ["supervisor"],
            registry=r,
        )
        self.circuit_breaker_open = Gauge(
            "trading_circuit_breaker_open",
            "1 while the circuit breaker is open (trading halted), 0 when closed.",
            registry=r,
        )
        self.circuit_breaker_trips = Counter(
            "trading_circuit_breaker_trips", "Circuit breaker trips by reason.", ["reason"],
            registry=r,
        )  # fmt: skip

        # --- market data
        # Touched on every market message: plain-dict metrics (see _hot.py).
        self.feed_messages = HotMetric(
            "counter",
            "trading_feed_messages",
            "Websocket data messages received, by feed and Kraken channel.",
            ("feed", "channel"),
            max_series=MAX_SERIES_PER_METRIC,
            registry=r,
        )
        self.feed_last_message_timestamp = HotMetric(
            "gauge",
            "trading_feed_last_message_timestamp_seconds",
            "Unix time of the last data message received on the feed.",
            ("feed",),
            max_series=MAX_SERIES_PER_METRIC,
            registry=r,
        )
        self.feed_reconnects = Counter(
            "trading_feed_reconnects", "Websocket reconnects by feed.", ["feed"], registry=r
        )
        self.feed_decode_errors = Counter(
            "trading_feed_decode_errors",
            "Feed frames that failed to decode or validate.",
            ["feed"],
            registry=r,
        )
        self.book_checksum_mismatches = Counter(
            "trading_book_checksum_mismatches",
            "Order-book CRC32 checksum mismatches (each forces a resubscribe).",
            ["symbol"],
            registry=r,
        )

        # --- channels
        self.channel_depth = HotMetric(
            "gauge",
            "trading_channel_depth",
            "Messages buffered in the channel now.",
            ("channel",),
            max_series=MAX_SERIES_PER_METRIC,
            registry=r,
        )
        self.channel_peak_depth = HotMetric(
            "gauge",
            "trading_channel_peak_depth",
            "Highest number of messages ever buffered in the channel.",
            ("channel",),
            max_series=MAX_SERIES_PER_METRIC,
            registry=r,
        )
        self.channel_conflated = HotMetric(
            "counter",
            "trading_channel_conflated",
            "Market events replaced by a newer one before a slow consumer read them.",
            ("channel",),
            max_series=MAX_SERIES_PER_METRIC,
            registry=r,
        )

        # --- trading flow
        self.signals = Counter(
            "trading_signals", "Signals emitted by strategies.", ["strategy"], registry=r
        )
        self.orders = Counter(
            "trading_orders",
            "Order lifecycle transitions by strategy and status.",
            ["strategy", "status"],
            registry=r,
        )
        self.risk_rejections = Counter(
            "trading_risk_rejections",
            "Signals refused by the risk supervisor, by the rule that refused them.",
            ["reason"],
            registry=r,
        )
        self.fills = Counter("trading_fills", "Executions by strategy.", ["strategy"], registry=r)
        self.fees = Counter(
            "trading_fees_usd", "Fees paid, in USD, by strategy.", ["strategy"], registry=r
        )
        self.tick_to_order = Histogram(
            "trading_tick_to_order_seconds",
            "Time from receiving the market event to submitting the order it caused.",
            buckets=TICK_TO_ORDER_BUCKETS,
            registry=r,
        )

        # --- exchange
        self.exchange_request_duration = Histogram(
            "trading_exchange_request_duration_seconds",
            "Exchange request round-trip time by endpoint.",
            ["endpoint"],
            buckets=EXCHANGE_BUCKETS,
            registry=r,
        )
        self.exchange_errors = Counter(
            "trading_exchange_errors",
            "Exchange errors by kind (rate_limit, transport, rejected, auth, other).",
            ["kind"],
            registry=r,
        )
        self.exchange_rate_limit_headroom = Gauge(
            "trading_exchange_rate_limit_headroom_ratio",
            "Fraction of the exchange rate-limit budget still available (1 = idle, 0 = throttled).",
            registry=r,
        )

        # --- portfolio and risk
        self.equity = Gauge("trading_equity_usd", "Account equity in USD.", registry=r)
        self.pnl_realized = Gauge("trading_pnl_realized_usd", "Realized P&L in USD.", registry=r)
        self.pnl_unrealized = Gauge(
            "trading_pnl_unrealized_usd", "Unrealized P&L in USD at mark.", registry=r
        )
        self.exposure = Gauge(
            "trading_exposure_usd", "Gross exposure (sum of |position notional|) in USD.",
            registry=r,
        )  # fmt: skip
        self.position_notional = Gauge(
            "trading_position_notional_usd",
            "Signed position notional in USD by symbol (negative = short).",
            ["symbol"],
            registry=r,
        )
        self.open_positions = Gauge(
            "trading_open_positions", "Number of symbols with a non-zero position.", registry=r
        )
        self.drawdown = Gauge(
            "trading_drawdown_ratio", "Drawdown from the equity peak (0..1).", registry=r
        )
        self.drawdown_limit = Gauge(
            "trading_drawdown_limit_ratio",
            "Configured maximum drawdown at which risk trips the breaker (0..1; 0 = no limit).",
            registry=r,
        )
        self.risk_score = Gauge(
            "trading_risk_score",
            "Risk utilisation score 0..1: the highest of the risk limits' used fractions.",
            registry=r,
        )

        # --- persistence
        self.db_write_duration = Histogram(
            "trading_db_write_duration_seconds",
            "Duration of one batched database write by operation.",
            ["operation"],
            buckets=DB_WRITE_BUCKETS,
            registry=r,
        )
        self.db_write_backlog = Gauge(
            "trading_db_write_backlog", "Events waiting to be written by the recorder.", registry=r
        )
        self.db_write_errors = Counter(
            "trading_db_write_errors", "Failed batched database writes.", registry=r
        )

        # Bound-child caches, one per labelled metric, keyed by the attribute name.
        self._c: dict[str, _Children[Any]] = {
            name: _Children(metric)
            for name, metric in vars(self).items()
            if isinstance(metric, Counter | Gauge | Histogram) and metric._labelnames
        }
        c = self._c
        self._actor_up: _Children[Gauge] = c["actor_up"]
        self._actor_restarts: _Children[Counter] = c["actor_restarts"]
        self._gave_up: _Children[Counter] = c["supervisor_gave_up"]
        self._trips: _Children[Counter] = c["circuit_breaker_trips"]
        self._reconnects: _Children[Counter] = c["feed_reconnects"]
        self._decode_errors: _Children[Counter] = c["feed_decode_errors"]
        self._mismatches: _Children[Counter] = c["book_checksum_mismatches"]
        self._signals: _Children[Counter] = c["signals"]
        self._orders: _Children[Counter] = c["orders"]
        self._rejections: _Children[Counter] = c["risk_rejections"]
        self._fills: _Children[Counter] = c["fills"]
        self._fees: _Children[Counter] = c["fees"]
        self._exchange: _Children[Histogram] = c["exchange_request_duration"]
        self._exchange_errors: _Children[Counter] = c["exchange_errors"]
        self._positions: _Children[Gauge] = c["position_notional"]
        self._db_write: _Children[Histogram] = c["db_write_duration"]
        for reason in BREAKER_REASONS:
            self._trips.get(reason)
        for kind in EXCHANGE_ERROR_KINDS:
            self._exchange_errors.get(kind)
        self.circuit_breaker_open.set(0)
        self.exchange_rate_limit_headroom.set(1)

    # ----------------------------------------------------------------- setup

    def initialise(
        self,
        *,
        actors: Iterable[str] = (),
        supervisors: Iterable[str] = (),
        feeds: Mapping[str, Iterable[str]] | None = None,
        symbols: Iterable[str] = (),
        strategies: Iterable[str] = (),
        channels: Iterable[str] = (),
        order_statuses: Iterable[str] = (),
        risk_reasons: Iterable[str] = (),
        endpoints: Iterable[str] = (),
    ) -> None:
        """Create the known label values at zero so their series exist before the first event.

        A labelled child that was never touched exports nothing, which makes ``rate()`` and
        ``absent()`` lie (prometheus.io instrumentation practices: initialise known labels).

        Args:
            actors: Actor names of the supervision tree.
            supervisors: Supervisor names (``trading_supervisor_gave_up_total`` at zero).
            feeds: Feed name → Kraken channels it subscribes (``book``, ``ticker``, ...). The
                feed's last-message timestamp is set to now.
            symbols: Traded symbols.
            strategies: Strategy names.
            channels: Names of the bounded inter-actor channels.
            order_statuses: Order status values to pre-create per strategy.
            risk_reasons: Risk rule names that can reject a signal.
            endpoints: Exchange endpoints whose round trips are observed (the latency
                histogram's series exist, empty, before the first request).
        """
        c = self._c
        for actor in actors:
            c["actor_up"].get(actor)
            c["actor_restarts"].get(actor)
        for supervisor in supervisors:
            c["supervisor_gave_up"].get(supervisor)
        for feed, feed_channels in (feeds or {}).items():
            # Start the staleness clock now: a feed that never delivers a message then goes
            # stale (FeedStale alert) instead of exporting no series at all.
            self.feed_last_message_timestamp.set((feed,), self._wall_clock())
            c["feed_reconnects"].get(feed)
            c["feed_decode_errors"].get(feed)
            for channel in feed_channels:
                self.feed_messages.key((feed, channel))
        for symbol in symbols:
            c["book_checksum_mismatches"].get(symbol)
            c["position_notional"].get(symbol)
        statuses = tuple(order_statuses)
        for strategy in strategies:
            c["signals"].get(strategy)
            c["fills"].get(strategy)
            c["fees"].get(strategy)
            for status in statuses:
                c["orders"].get(strategy, status)
        for channel in channels:
            self.channel_depth.key((channel,))
            self.channel_peak_depth.key((channel,))
            self.channel_conflated.key((channel,))
        for reason in risk_reasons:
            c["risk_rejections"].get(reason)
        for endpoint in endpoints:
            c["exchange_request_duration"].get(endpoint)

    def child(self, attribute: str, *label_values: str) -> Counter | Gauge | Histogram:
        """Return the cached, cardinality-capped child of the labelled metric ``attribute``.

        Not for the plain-dict hot metrics (feed messages and timestamps, channel stats): use
        their helpers.

        Actors on a hot path may keep the returned child and call ``inc``/``set``/``observe``
        on it directly (the cheapest possible recording).
        """
        child: Counter | Gauge | Histogram = self._c[attribute].get(*label_values)
        return child

    def exposition(self) -> bytes:
        """The registry in Prometheus text format 0.0.4 (what ``promtool check metrics`` reads)."""
        return generate_latest(self.registry)

    # ----------------------------------------------------------------- supervision

    def set_actor_up(self, actor: str, up: bool) -> None:
        self._actor_up.get(actor).set(1 if up else 0)

    def actor_restarted(self, actor: str) -> None:
        self._actor_restarts.get(actor).inc()

    def supervisor_gave_up_on(self, supervisor: str) -> None:
        self._gave_up.get(supervisor).inc()

    def breaker_tripped(self, reason: str) -> None:
        """Record a trip: the open gauge goes to 1 and ``trips_total{reason}`` increments."""
        self.circuit_breaker_open.set(1)
        self._trips.get(reason).inc()

    def breaker_reset(self) -> None:
        self.circuit_breaker_open.set(0)

    # ----------------------------------------------------------------- market data

    def feed_message(self, feed: str, channel: str) -> None:
        """Count one data message and stamp the feed's last-message time (Unix seconds)."""
        # Inlined dict updates: this runs once per market message.
        counts = self.feed_messages.values
        key = (feed, channel)
        if key in counts:
            counts[key] += 1
        else:
            self.feed_messages.inc(key)
        stamps = self.feed_last_message_timestamp.values
        fkey = (feed,)
        if fkey in stamps:
            stamps[fkey] = self._wall_clock()
        else:
            self.feed_last_message_timestamp.set(fkey, self._wall_clock())

    def feed_reconnected(self, feed: str) -> None:
        self._reconnects.get(feed).inc()

    def feed_decode_error(self, feed: str) -> None:
        self._decode_errors.get(feed).inc()

    def checksum_mismatch(self, symbol: str) -> None:
        self._mismatches.get(symbol).inc()

    def channel_stats(self, channel: str, depth: int, peak: int) -> None:
        """Publish a channel's current and peak buffer use (from its ``statistics()``)."""
        key = (channel,)
        self.channel_depth.set(key, depth)
        self.channel_peak_depth.set(key, peak)

    def conflated(self, channel: str, n: int = 1) -> None:
        self.channel_conflated.inc((channel,), n)

    # ----------------------------------------------------------------- trading flow

    def signal(self, strategy: str) -> None:
        self._signals.get(strategy).inc()

    def order(self, strategy: str, status: str) -> None:
        """Count an order reaching ``status`` (an ``OrderStatus.value``)."""
        self._orders.get(strategy, status).inc()

    def risk_rejection(self, reason: str) -> None:
        self._rejections.get(reason).inc()

    def fill(self, strategy: str, fee_usd: Decimal | float = 0) -> None:
        """Count one execution and add its fee (already converted to USD by the caller)."""
        self._fills.get(strategy).inc()
        if fee_usd:
            self._fees.get(strategy).inc(float(fee_usd))

    def observe_tick_to_order(self, seconds: float) -> None:
        self.tick_to_order.observe(seconds)

    # ----------------------------------------------------------------- exchange

    def exchange_request(self, endpoint: str, seconds: float) -> None:
        self._exchange.get(endpoint).observe(seconds)

    def exchange_error(self, kind: str) -> None:
        self._exchange_errors.get(kind).inc()

    def set_rate_limit_headroom(self, ratio: float) -> None:
        self.exchange_rate_limit_headroom.set(min(1.0, max(0.0, ratio)))

    # ----------------------------------------------------------------- portfolio

    def set_portfolio(
        self,
        *,
        equity: Decimal,
        realized: Decimal,
        unrealized: Decimal,
        exposure: Decimal,
        drawdown: Decimal | float,
        open_positions: int,
    ) -> None:
        """Publish a portfolio snapshot (Decimal in, float64 samples out)."""
        self.equity.set(float(equity))
        self.pnl_realized.set(float(realized))
        self.pnl_unrealized.set(float(unrealized))
        self.exposure.set(float(exposure))
        self.drawdown.set(float(drawdown))
        self.open_positions.set(open_positions)

    def set_position(self, symbol: str, notional_usd: Decimal) -> None:
        self._positions.get(symbol).set(float(notional_usd))

    def set_risk(self, *, score: float, drawdown_limit: Decimal | float | None = None) -> None:
        self.risk_score.set(score)
        if drawdown_limit is not None:
            self.drawdown_limit.set(float(drawdown_limit))

    # ----------------------------------------------------------------- persistence

    def db_write(self, operation: str, seconds: float, backlog: int) -> None:
        self._db_write.get(operation).observe(seconds)
        self.db_write_backlog.set(backlog)

    def db_write_failed(self) -> None:
        self.db_write_errors.inc()


#: The process-wide default instance; tests should build their own ``Metrics()``.
METRICS: Final = Metrics()

"""The metrics contract (monitoring/metrics.py): names, labels, helpers, cardinality cap."""

from __future__ import annotations

from decimal import Decimal

import prometheus_client
from prometheus_client import Counter, Gauge, Histogram
from prometheus_client.parser import text_string_to_metric_families

import monitoring
from monitoring._hot import HotMetric
from monitoring.metrics import (
    BREAKER_REASONS,
    EXCHANGE_ERROR_KINDS,
    MAX_SERIES_PER_METRIC,
    METRICS,
    OTHER,
    Metrics,
)

#: The names DESIGN.md / the monitoring issue require verbatim (family names, so counters are
#: listed without ``_total`` as prometheus_client reports them).
REQUIRED = {
    "trading_actor_up": ("gauge", {"actor"}),
    "trading_actor_restarts": ("counter", {"actor"}),
    "trading_circuit_breaker_open": ("gauge", set()),
    "trading_circuit_breaker_trips": ("counter", {"reason"}),
    "trading_feed_messages": ("counter", {"feed", "channel"}),
    "trading_feed_last_message_timestamp_seconds": ("gauge", {"feed"}),
    "trading_feed_reconnects": ("counter", {"feed"}),
    "trading_book_checksum_mismatches": ("counter", {"symbol"}),
    "trading_orders": ("counter", {"strategy", "status"}),
    "trading_risk_rejections": ("counter", {"reason"}),
    "trading_tick_to_order_seconds": ("histogram", set()),
    "trading_equity_usd": ("gauge", set()),
    "trading_pnl_realized_usd": ("gauge", set()),
    "trading_pnl_unrealized_usd": ("gauge", set()),
    "trading_exposure_usd": ("gauge", set()),
    "trading_drawdown_ratio": ("gauge", set()),
    "trading_channel_depth": ("gauge", {"channel"}),
    "trading_channel_peak_depth": ("gauge", {"channel"}),
    "trading_channel_conflated": ("counter", {"channel"}),
}
#: Label names allowed anywhere: all bounded by configuration or by our own code.
ALLOWED_LABELS = {
    "actor", "supervisor", "reason", "feed", "channel", "symbol", "strategy", "status",
    "endpoint", "kind", "operation",
}  # fmt: skip


def exercise_all(m: Metrics) -> None:
    """Record one value on every metric family (so each has at least one real sample)."""
    m.initialise(
        actors=["risk", "executor"],
        feeds={"public": ["book", "ticker"]},
        symbols=["BTC/USD"],
        strategies=["momentum"],
        channels=["market.momentum"],
        order_statuses=["open", "filled"],
        risk_reasons=["max_exposure"],
    )
    m.set_actor_up("risk", True)
    m.actor_restarted("risk")
    m.supervisor_gave_up_on("strategies")
    m.breaker_tripped("drawdown")
    m.feed_message("public", "book")
    m.feed_reconnected("public")
    m.feed_decode_error("public")
    m.checksum_mismatch("BTC/USD")
    m.channel_stats("market.momentum", depth=3, peak=7)
    m.conflated("market.momentum")
    m.signal("momentum")
    m.order("momentum", "filled")
    m.risk_rejection("max_exposure")
    m.fill("momentum", fee_usd=Decimal("0.26"))
    m.observe_tick_to_order(0.00021)
    m.exchange_request("AddOrder", 0.12)
    m.exchange_error("rate_limit")
    m.set_rate_limit_headroom(0.75)
    m.set_portfolio(
        equity=Decimal("10012.5"),
        realized=Decimal("10.5"),
        unrealized=Decimal("2"),
        exposure=Decimal("2500"),
        drawdown=Decimal("0.01"),
        open_positions=1,
    )
    m.set_position("BTC/USD", Decimal("-2500"))
    m.set_risk(score=0.3, drawdown_limit=Decimal("0.2"))
    m.db_write("fills", 0.004, backlog=5)
    m.db_write_failed()


def families(m: Metrics) -> dict[str, prometheus_client.Metric]:
    text = m.exposition().decode()
    return {f.name: f for f in text_string_to_metric_families(text)}


def sample(m: Metrics, name: str, **labels: str) -> float | None:
    value = m.registry.get_sample_value(name, labels)
    return value


def test_required_names_types_and_labels() -> None:
    m = Metrics()
    exercise_all(m)
    fams = families(m)
    for name, (kind, labels) in REQUIRED.items():
        assert name in fams, name
        assert fams[name].type == kind, name
        got = {k for s in fams[name].samples for k in s.labels if k not in ("le",)}
        assert got == labels, name


def test_every_family_has_a_sample_and_follows_conventions() -> None:
    m = Metrics()
    exercise_all(m)
    fams = families(m)
    ours = {n: f for n, f in fams.items() if not n.endswith("_created")}
    defined = [
        v for v in vars(m).values() if isinstance(v, Counter | Gauge | Histogram | HotMetric)
    ]
    assert len(ours) == len(defined) == 34
    for name, fam in ours.items():
        assert name.startswith("trading_"), name
        assert fam.samples, f"{name} has no sample"
        assert fam.documentation, f"{name} has no help text"
        labels = {k for s in fam.samples for k in s.labels if k != "le"}
        assert labels <= ALLOWED_LABELS, (name, labels)
        assert not name.endswith(("_ms", "_milliseconds", "_percent")), name
        if fam.type == "counter":
            assert all(s.name.endswith(("_total", "_created")) for s in fam.samples), name


def test_fresh_instances_are_independent_and_off_the_global_registry() -> None:
    a, b = Metrics(), Metrics()
    a.order("momentum", "filled")
    assert sample(a, "trading_orders_total", strategy="momentum", status="filled") == 1
    assert sample(b, "trading_orders_total", strategy="momentum", status="filled") is None
    assert METRICS.registry is not prometheus_client.REGISTRY
    assert prometheus_client.REGISTRY.get_sample_value("trading_circuit_breaker_open") is None
    assert monitoring.METRICS is METRICS


def test_breaker_helpers() -> None:
    m = Metrics()
    assert sample(m, "trading_circuit_breaker_open") == 0
    for reason in BREAKER_REASONS:  # pre-initialised so increase() sees the first trip
        assert sample(m, "trading_circuit_breaker_trips_total", reason=reason) == 0
    m.breaker_tripped("feed_stale")
    assert sample(m, "trading_circuit_breaker_open") == 1
    assert sample(m, "trading_circuit_breaker_trips_total", reason="feed_stale") == 1
    m.breaker_reset()
    assert sample(m, "trading_circuit_breaker_open") == 0
    assert sample(m, "trading_circuit_breaker_trips_total", reason="feed_stale") == 1


def test_known_label_values_exist_at_zero() -> None:
    """Series a dashboard queries exist before the first event (a paper run has no exchange
    requests and, with luck, never a restart storm)."""
    m = Metrics()
    for kind in EXCHANGE_ERROR_KINDS:
        assert sample(m, "trading_exchange_errors_total", kind=kind) == 0
    assert sample(m, "trading_supervisor_gave_up_total", supervisor="root") is None
    m.initialise(supervisors=["root", "strategies"], endpoints=["paper:AddOrder"])
    assert sample(m, "trading_supervisor_gave_up_total", supervisor="root") == 0
    assert sample(m, "trading_supervisor_gave_up_total", supervisor="strategies") == 0
    labels = {"endpoint": "paper:AddOrder"}
    assert sample(m, "trading_exchange_request_duration_seconds_count", **labels) == 0
    assert sample(m, "trading_exchange_request_duration_seconds_bucket", le="+Inf", **labels) == 0


def test_feed_timestamps_use_the_injected_wall_clock() -> None:
    now = [1_700_000_000.0]
    m = Metrics(wall_clock=lambda: now[0])
    m.initialise(feeds={"public": ["book"]})
    assert sample(m, "trading_feed_last_message_timestamp_seconds", feed="public") == now[0]
    assert sample(m, "trading_feed_messages_total", feed="public", channel="book") == 0
    now[0] += 12.5
    m.feed_message("public", "book")
    assert sample(m, "trading_feed_last_message_timestamp_seconds", feed="public") == now[0]
    assert sample(m, "trading_feed_messages_total", feed="public", channel="book") == 1


def test_money_and_ratios() -> None:
    m = Metrics()
    m.set_portfolio(
        equity=Decimal("10000.10"),
        realized=Decimal("-5.5"),
        unrealized=Decimal("1.25"),
        exposure=Decimal("300"),
        drawdown=Decimal("0.05"),
        open_positions=2,
    )
    assert sample(m, "trading_equity_usd") == 10000.1
    assert sample(m, "trading_pnl_realized_usd") == -5.5
    assert sample(m, "trading_open_positions") == 2
    m.fill("momentum", fee_usd=Decimal("0.5"))
    m.fill("momentum")
    assert sample(m, "trading_fills_total", strategy="momentum") == 2
    assert sample(m, "trading_fees_usd_total", strategy="momentum") == 0.5
    m.set_rate_limit_headroom(1.7)
    assert sample(m, "trading_exchange_rate_limit_headroom_ratio") == 1.0
    m.set_rate_limit_headroom(-0.2)
    assert sample(m, "trading_exchange_rate_limit_headroom_ratio") == 0.0


def test_tick_to_order_buckets_span_50us_to_1s() -> None:
    m = Metrics()
    m.observe_tick_to_order(0.00004)
    m.observe_tick_to_order(0.0007)
    m.observe_tick_to_order(3.0)
    assert sample(m, "trading_tick_to_order_seconds_bucket", le="5e-05") == 1
    assert sample(m, "trading_tick_to_order_seconds_bucket", le="0.001") == 2
    assert sample(m, "trading_tick_to_order_seconds_bucket", le="1.0") == 2
    assert sample(m, "trading_tick_to_order_seconds_count") == 3


def test_cardinality_cap_folds_overflow_into_other() -> None:
    m = Metrics()
    for i in range(MAX_SERIES_PER_METRIC + 50):
        m.order(f"strategy{i}", "filled")  # a bug feeding unbounded values into a label
    fam = families(m)["trading_orders"]
    series = {tuple(sorted(s.labels.items())) for s in fam.samples if s.name.endswith("_total")}
    assert len(series) == MAX_SERIES_PER_METRIC + 1
    assert sample(m, "trading_orders_total", strategy=OTHER, status=OTHER) == 50


def test_child_returns_the_cached_bound_child() -> None:
    m = Metrics()
    child = m.child("orders", "momentum", "open")
    assert child is m.child("orders", "momentum", "open")
    child.inc(2)  # type: ignore[union-attr]
    m.order("momentum", "open")
    assert sample(m, "trading_orders_total", strategy="momentum", status="open") == 3


def test_hot_metrics_cap_and_export() -> None:
    m = Metrics()
    for i in range(MAX_SERIES_PER_METRIC + 5):
        m.conflated(f"chan{i}")
    assert sample(m, "trading_channel_conflated_total", channel=OTHER) == 5
    m.channel_stats("chan0", depth=4, peak=9)
    assert sample(m, "trading_channel_depth", channel="chan0") == 4
    assert sample(m, "trading_channel_peak_depth", channel="chan0") == 9
    assert len(m.channel_conflated.values) == MAX_SERIES_PER_METRIC + 1

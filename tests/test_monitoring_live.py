"""Live checks against a real Prometheus on loopback (tests/prometheus_live.py).

The metrics server runs in this test's own trio loop (no trading system needed); Prometheus
scrapes it every second with the repository's alert rules loaded.
"""

from __future__ import annotations

import pathlib
from functools import partial

import pytest
import trio

from monitoring import HealthReport, Metrics, serve_metrics

from .prometheus_live import (
    PrometheusError,
    open_prometheus,
    requires_prometheus,
    start_prometheus,
)
from .test_monitoring_dashboards import dashboard_queries

pytestmark = [requires_prometheus, pytest.mark.slow]


async def test_scrape_and_breaker_alert_fires(tmp_path: pathlib.Path) -> None:
    metrics = Metrics()
    metrics.initialise(actors=["risk"], feeds={"public": ["book"]})
    metrics.set_actor_up("risk", True)
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            port = await nursery.start(partial(serve_metrics, metrics, HealthReport, port=0))
            async with open_prometheus(f"127.0.0.1:{port}", tmp_path / "prom") as prom:
                await prom.wait_scraped()
                up = await prom.aquery('trading_actor_up{job="trading",actor="risk"}')
                assert [s["value"][1] for s in up] == ["1"]
                rules = await prom.arules()
                assert {r["name"] for r in rules} >= {"CircuitBreakerTripped", "FeedStale"}
                assert all(r["health"] != "err" for r in rules), rules
                # Healthy: nothing fires.
                assert "CircuitBreakerTripped" not in await prom.aalert_states()

                metrics.breaker_tripped("manual")
                await prom.wait_alert("CircuitBreakerTripped", "firing")
                trips = await prom.aquery(
                    'trading_circuit_breaker_trips_total{job="trading",reason="manual"}'
                )
                assert [s["value"][1] for s in trips] == ["1"]
            nursery.cancel_scope.cancel()


async def test_dashboard_queries_accepted_by_prometheus(tmp_path: pathlib.Path) -> None:
    """Every panel expression is a valid query for a real Prometheus (HTTP 200, not bad_data).

    No scrape needed for parsing; a deliberately broken query proves the check can fail.
    """
    with trio.fail_after(60):
        async with open_prometheus("127.0.0.1:9", tmp_path / "prom") as prom:
            for where, expr in dashboard_queries():
                try:
                    await prom.aquery(expr)
                except PrometheusError as exc:
                    pytest.fail(f"{where}: {expr!r}: {exc}")
            with pytest.raises(PrometheusError, match="bad_data"):
                await prom.aquery("sum(rate(trading_orders_total[5m]) by (status)")


def test_sync_api_loads_the_repo_rules(tmp_path: pathlib.Path) -> None:
    prom = start_prometheus("127.0.0.1:9", tmp_path / "prom")
    try:
        assert [s["value"][1] for s in prom.query("vector(1)")] == ["1"]
        assert {r["name"] for r in prom.rules()} == {
            "CircuitBreakerTripped", "FeedStale", "ActorRestartStorm", "BookChecksumMismatches",
            "DrawdownNearLimit", "ExchangeErrors", "TradingSystemDown",
        }  # fmt: skip
        # Targets appear only on the scrape manager's first 5 s tick; empty or ours.
        assert all(t["labels"]["job"] == "trading" for t in prom.targets())
        assert isinstance(prom.alert_states(), dict)
    finally:
        prom.stop()
    assert prom.process.returncode is not None

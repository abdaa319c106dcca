"""The /metrics + /healthz server over a real loopback socket (httpx client)."""

from __future__ import annotations

import json
import math
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from functools import partial

import httpx
import pytest
import trio
import trio.testing

from monitoring import HealthReport, Metrics, health_payload, serve_metrics


@dataclass
class Served:
    port: int
    metrics: Metrics
    report: HealthReport = field(default_factory=HealthReport)
    fail: bool = False

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def health(self) -> HealthReport:
        if self.fail:
            raise RuntimeError("supervisor unavailable")
        return self.report


@pytest.fixture
async def served() -> AsyncIterator[Served]:
    metrics = Metrics()
    holder: list[Served] = []
    async with trio.open_nursery() as nursery:
        port = await nursery.start(
            partial(serve_metrics, metrics, lambda: holder[0].health(), port=0)
        )
        holder.append(Served(port=port, metrics=metrics))
        yield holder[0]
        nursery.cancel_scope.cancel()


async def _get(url: str, **kw: object) -> httpx.Response:
    with trio.fail_after(5):
        async with httpx.AsyncClient() as client:
            return await client.get(url, **kw)  # type: ignore[arg-type]


async def test_binds_loopback_and_reports_port(served: Served) -> None:
    assert served.port > 0
    with trio.fail_after(5):
        stream = await trio.open_tcp_stream("127.0.0.1", served.port)
        await stream.aclose()


async def test_metrics_exposition(served: Served) -> None:
    served.metrics.set_actor_up("risk", True)
    served.metrics.order("momentum", "filled")
    resp = await _get(served.base + "/metrics")
    assert resp.status_code == 200
    assert resp.headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"
    assert 'trading_actor_up{actor="risk"} 1.0' in resp.text
    assert 'trading_orders_total{status="filled",strategy="momentum"} 1.0' in resp.text
    assert "# TYPE trading_tick_to_order_seconds histogram" in resp.text


async def test_metrics_openmetrics_negotiation(served: Served) -> None:
    resp = await _get(
        served.base + "/metrics",
        headers={"accept": "application/openmetrics-text; version=1.0.0"},
    )
    assert resp.status_code == 200
    assert resp.headers["content-type"].startswith("application/openmetrics-text")
    assert resp.text.endswith("# EOF\n")


async def test_healthz_ok(served: Served) -> None:
    served.report = HealthReport(
        actors={"risk": "running", "feed.public": "running"},
        feed_ages_s={"public": 1.5},
        stale_after_s=10.0,
    )
    resp = await _get(served.base + "/healthz")
    assert resp.status_code == 200
    assert resp.headers["content-type"] == "application/json"
    body = resp.json()
    assert body["status"] == "ok"
    assert body["actors"] == {"risk": "running", "feed.public": "running"}
    assert body["breaker"] == {"state": "closed", "reason": None}
    assert body["feeds"] == {"public": {"age_s": 1.5, "stale": False}}


async def test_healthz_halted_is_503(served: Served) -> None:
    served.report = HealthReport(
        breaker_state="open", breaker_reason="drawdown", halted=True, feed_ages_s={"public": 0.1}
    )
    resp = await _get(served.base + "/healthz")
    assert resp.status_code == 503
    body = resp.json()
    assert body["status"] == "halted"
    assert body["breaker"] == {"state": "open", "reason": "drawdown"}


async def test_healthz_stale_feed_is_503(served: Served) -> None:
    served.report = HealthReport(
        feed_ages_s={"public": 31.0, "private": math.inf, "other": 2.0}, stale_after_s=30.0
    )
    resp = await _get(served.base + "/healthz")
    assert resp.status_code == 503
    body = resp.json()
    assert body["status"] == "stale"
    assert body["feeds"]["public"]["stale"] is True
    assert body["feeds"]["private"] == {"age_s": None, "stale": True}
    assert body["feeds"]["other"]["stale"] is False


async def test_healthz_callable_failure_is_503(served: Served) -> None:
    served.fail = True
    resp = await _get(served.base + "/healthz")
    assert resp.status_code == 503
    assert resp.json()["status"] == "error"


async def test_unknown_path_and_method(served: Served) -> None:
    assert (await _get(served.base + "/nope")).status_code == 404
    with trio.fail_after(5):
        async with httpx.AsyncClient() as client:
            resp = await client.post(served.base + "/metrics", content=b"x")
    assert resp.status_code == 405
    assert resp.headers["allow"] == "GET, HEAD"


async def test_keep_alive_and_head(served: Served) -> None:
    with trio.fail_after(5):
        async with httpx.AsyncClient() as client:
            first = await client.get(served.base + "/metrics")
            head = await client.head(served.base + "/metrics")
            second = await client.get(served.base + "/healthz?verbose=1")
    assert first.status_code == head.status_code == second.status_code == 200
    assert head.content == b""
    assert int(head.headers["content-length"]) > 0


async def test_malformed_request_gets_400(served: Served) -> None:
    with trio.fail_after(5):
        stream = await trio.open_tcp_stream("127.0.0.1", served.port)
        await stream.send_all(b"NOT HTTP AT ALL\r\n\r\n")
        data = b""
        while chunk := await stream.receive_some(4096):
            data += chunk
        await stream.aclose()
    assert data.startswith(b"HTTP/1.1 400")


async def test_idle_connection_is_closed(autojump_clock: trio.testing.MockClock) -> None:
    async with trio.open_nursery() as nursery:
        port = await nursery.start(partial(serve_metrics, Metrics(), HealthReport, port=0))
        with trio.fail_after(60):
            stream = await trio.open_tcp_stream("127.0.0.1", port)
            start = trio.current_time()
            assert await stream.receive_some(4096) == b""  # server hung up on the idle client
            assert trio.current_time() - start >= 10.0
            await stream.aclose()
        nursery.cancel_scope.cancel()


def test_health_payload_is_json_serialisable() -> None:
    report = HealthReport(feed_ages_s={"a": math.inf})
    assert json.loads(json.dumps(health_payload(report)))["feeds"]["a"]["age_s"] is None
    assert not report.healthy
    assert HealthReport().healthy

"""Test helper: a real Prometheus (Debian's /usr/bin/prometheus) on loopback, for live checks.

Starts ``prometheus`` on 127.0.0.1 with a free port, a temporary storage directory and a
generated config that scrapes one target every second with the repository's alert rules
loaded (evaluation every second), waits until it is ready, offers query helpers (instant
query, alerts, rules, targets) and shuts it down cleanly. Only the process it started is ever
signalled.

Two flavours of the same API:

* sync: :func:`start_prometheus` / :meth:`LivePrometheus.stop` and ``query()``, ``alerts()``,
  ... for plain pytest tests and session-scoped fixtures;
* async (trio): ``async with open_prometheus(...) as prom`` and ``aquery()``, ``aalerts()``,
  ``wait_for()``, ... for trio tests whose own task serves the scraped /metrics (a sync call
  there would block the event loop and with it the scrape).

Timing (MONITORING.md §1d): ready in ~0.1 s, but the **first scrape lands only after ~5-6 s**
(the scrape manager applies targets on a fixed 5 s tick), so wait on :meth:`wait_scraped`, not
only on readiness. Stopping takes ~1.5 s. Budget ~8-10 s per live test.

Usage::

    pytestmark = requires_prometheus

    async def test_x(tmp_path):
        with trio.fail_after(60):
            async with open_prometheus("127.0.0.1:9108", tmp_path) as prom:
                await prom.wait_scraped()
                assert await prom.aquery("trading_circuit_breaker_open") ...
"""

from __future__ import annotations

import os
import pathlib
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

import httpx
import pytest
import trio

ROOT = pathlib.Path(__file__).resolve().parent.parent
ALERT_RULES = ROOT / "monitoring" / "prometheus" / "alerts.yml"
PROMETHEUS = shutil.which("prometheus")
#: Mark for tests that need the binary; under CI=true a missing binary is a failure, not a skip,
#: so a dropped install step cannot turn live checks into silent skips.
requires_prometheus = pytest.mark.skipif(
    PROMETHEUS is None and os.environ.get("CI") != "true",
    reason="needs the prometheus binary: apt-get install --no-install-recommends prometheus",
)

_T = TypeVar("_T")


class PrometheusError(RuntimeError):
    """Prometheus failed to start or answered a query with an error."""


def free_port() -> int:
    """A currently free TCP port on 127.0.0.1 (racy by nature, fine for tests)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def write_config(
    path: pathlib.Path,
    target: str,
    *,
    job: str = "trading",
    rule_files: Sequence[pathlib.Path] = (ALERT_RULES,),
    scrape_interval: str = "1s",
    evaluation_interval: str = "1s",
) -> pathlib.Path:
    """Write a Prometheus config scraping ``target`` (``host:port``) as ``job``."""
    rules = "".join(f"\n  - {str(p.resolve())!r}" for p in rule_files)
    path.write_text(
        f"global:\n"
        f"  scrape_interval: {scrape_interval}\n"
        f"  scrape_timeout: {scrape_interval}\n"
        f"  evaluation_interval: {evaluation_interval}\n"
        f"rule_files:{rules or ' []'}\n"
        f"scrape_configs:\n"
        f"  - job_name: {job}\n"
        f"    static_configs:\n"
        f"      - targets: [{target!r}]\n"
    )
    return path


@dataclass
class LivePrometheus:
    """A running Prometheus started by :func:`start_prometheus` or :func:`open_prometheus`."""

    process: subprocess.Popen[bytes]
    port: int
    workdir: pathlib.Path
    job: str

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def log(self) -> str:
        """Prometheus' own log (stderr), for assertion messages."""
        p = self.workdir / "prometheus.log"
        return p.read_text(errors="replace") if p.exists() else ""

    # ------------------------------------------------------------------ lifecycle

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM our process and wait; SIGKILL if it does not exit in ``timeout``."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    # ------------------------------------------------------------------ sync API

    def _get(self, path: str, **params: str) -> Any:
        resp = httpx.get(self.base_url + path, params=params, timeout=5)
        return _data(resp)

    def query(self, expr: str) -> list[dict[str, Any]]:
        """Instant query; returns the result vector (raises :class:`PrometheusError` on error)."""
        data = self._get("/api/v1/query", query=expr)
        result: list[dict[str, Any]] = data["result"]
        return result

    def alerts(self) -> list[dict[str, Any]]:
        """Active (pending or firing) alerts."""
        alerts: list[dict[str, Any]] = self._get("/api/v1/alerts")["alerts"]
        return alerts

    def alert_states(self) -> dict[str, str]:
        """Alert name → state; ``firing`` wins over ``pending`` when several series exist."""
        return _states(self.alerts())

    def rules(self) -> list[dict[str, Any]]:
        """All loaded rules (each with ``health``, ``lastError``, ``state``)."""
        groups = self._get("/api/v1/rules")["groups"]
        return [rule for g in groups for rule in g["rules"]]

    def targets(self) -> list[dict[str, Any]]:
        active: list[dict[str, Any]] = self._get("/api/v1/targets")["activeTargets"]
        return active

    # ------------------------------------------------------------------ async API (trio)

    async def _aget(self, path: str, **params: str) -> Any:
        async with httpx.AsyncClient(timeout=5) as client:
            return _data(await client.get(self.base_url + path, params=params))

    async def aquery(self, expr: str) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = (await self._aget("/api/v1/query", query=expr))["result"]
        return result

    async def aalerts(self) -> list[dict[str, Any]]:
        alerts: list[dict[str, Any]] = (await self._aget("/api/v1/alerts"))["alerts"]
        return alerts

    async def aalert_states(self) -> dict[str, str]:
        return _states(await self.aalerts())

    async def arules(self) -> list[dict[str, Any]]:
        groups = (await self._aget("/api/v1/rules"))["groups"]
        return [rule for g in groups for rule in g["rules"]]

    async def wait_for(self, predicate: Callable[[], Awaitable[_T]], *, step: float = 0.25) -> _T:
        """Poll the async ``predicate`` until it returns something truthy; return that value.

        Polls forever: bound it with ``trio.fail_after`` in the caller (trio convention; on
        timeout, ``prom.log`` has Prometheus' side of the story).
        """
        while True:
            value = await predicate()
            if value:
                return value
            await trio.sleep(step)

    async def wait_scraped(self) -> None:
        """Wait until the target was scraped successfully (``up == 1``), ~5-6 s after start."""

        async def up() -> bool:
            return bool(await self.aquery(f'up{{job="{self.job}"}} == 1'))

        await self.wait_for(up)

    async def wait_alert(self, name: str, state: str = "firing") -> None:
        """Wait until alert ``name`` is in ``state`` (``pending`` or ``firing``)."""

        async def in_state() -> bool:
            return (await self.aalert_states()).get(name) == state

        await self.wait_for(in_state)


def _data(resp: httpx.Response) -> Any:
    try:
        body = resp.json()
    except ValueError as exc:
        raise PrometheusError(f"HTTP {resp.status_code}: {resp.text[:200]}") from exc
    if body.get("status") != "success":
        raise PrometheusError(f"{body.get('errorType')}: {body.get('error')}")
    return body["data"]


def _states(alerts: list[dict[str, Any]]) -> dict[str, str]:
    states: dict[str, str] = {}
    for alert in alerts:
        name = alert["labels"]["alertname"]
        if states.get(name) != "firing":
            states[name] = alert["state"]
    return states


def _launch(
    target: str, workdir: pathlib.Path, job: str, rule_files: Sequence[pathlib.Path]
) -> LivePrometheus:
    if PROMETHEUS is None:
        raise PrometheusError("prometheus binary not found (apt-get install prometheus)")
    workdir.mkdir(parents=True, exist_ok=True)
    config = write_config(workdir / "prometheus.yml", target, job=job, rule_files=rule_files)
    port = free_port()
    with (workdir / "prometheus.log").open("wb") as log:
        process = subprocess.Popen(
            [
                PROMETHEUS,
                f"--config.file={config}",
                # Always explicit: the default is 0.0.0.0:9090.
                f"--web.listen-address=127.0.0.1:{port}",
                f"--storage.tsdb.path={workdir / 'data'}",
                "--log.level=warn",
            ],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    return LivePrometheus(process=process, port=port, workdir=workdir, job=job)


def _ready(prom: LivePrometheus) -> bool:
    if prom.process.poll() is not None:
        raise PrometheusError(f"prometheus exited with {prom.process.returncode}:\n{prom.log}")
    try:
        return httpx.get(prom.base_url + "/-/ready", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def start_prometheus(
    target: str,
    workdir: pathlib.Path,
    *,
    job: str = "trading",
    rule_files: Sequence[pathlib.Path] = (ALERT_RULES,),
    ready_timeout: float = 15.0,
) -> LivePrometheus:
    """Start Prometheus scraping ``target`` and block until ``/-/ready``; call ``stop()`` after.

    Raises:
        PrometheusError: The binary is missing, or the process exited or never became ready.
    """
    prom = _launch(target, workdir, job, rule_files)
    deadline = time.monotonic() + ready_timeout
    try:
        while not _ready(prom):
            if time.monotonic() >= deadline:
                raise PrometheusError(f"not ready in {ready_timeout}s:\n{prom.log}")
            time.sleep(0.05)
    except BaseException:
        prom.stop()
        raise
    return prom


@asynccontextmanager
async def open_prometheus(
    target: str,
    workdir: pathlib.Path,
    *,
    job: str = "trading",
    rule_files: Sequence[pathlib.Path] = (ALERT_RULES,),
    ready_timeout: float = 15.0,
) -> AsyncIterator[LivePrometheus]:
    """Async (trio) flavour of :func:`start_prometheus`: ready on entry, stopped on exit."""
    prom = _launch(target, workdir, job, rule_files)
    try:
        deadline = time.monotonic() + ready_timeout
        while not await trio.to_thread.run_sync(_ready, prom):
            if time.monotonic() >= deadline:
                raise PrometheusError(f"not ready in {ready_timeout}s:\n{prom.log}")
            await trio.sleep(0.05)
        yield prom
    finally:
        await trio.to_thread.run_sync(prom.stop)

"""Prometheus assets checked with promtool: rules, rule unit tests, config, real /metrics output.

promtool comes from Debian's ``prometheus`` package. Without it these tests skip, except under
CI=true where a missing binary fails (so a dropped install step cannot hide them).
"""

from __future__ import annotations

import os
import pathlib
import re
import shutil
import subprocess
from functools import partial
from typing import Any

import httpx
import pytest
import trio
import yaml
from prometheus_client.parser import text_string_to_metric_families

from monitoring import HealthReport, Metrics, serve_metrics

from .test_monitoring_metrics import exercise_all

ROOT = pathlib.Path(__file__).resolve().parent.parent
PROM_DIR = ROOT / "monitoring" / "prometheus"
ALERTS = PROM_DIR / "alerts.yml"
RUNBOOK = ROOT / "monitoring" / "RUNBOOK.md"
PROMTOOL = shutil.which("promtool")
REQUIRED_ALERTS = {
    "CircuitBreakerTripped",
    "FeedStale",
    "ActorRestartStorm",
    "BookChecksumMismatches",
    "DrawdownNearLimit",
    "ExchangeErrors",
    "TradingSystemDown",
}


@pytest.fixture
def promtool() -> str:
    if PROMTOOL is None:
        assert os.environ.get("CI") != "true", "CI must install promtool (Debian: prometheus)"
        pytest.skip("needs promtool: apt-get install --no-install-recommends prometheus")
    return PROMTOOL


def run(*args: str, cwd: pathlib.Path = ROOT, stdin: str | None = None) -> tuple[int, str]:
    proc = subprocess.run(
        args, cwd=cwd, input=stdin, capture_output=True, text=True, timeout=60, check=False
    )
    return proc.returncode, proc.stdout + proc.stderr


def alert_rules() -> list[dict[str, Any]]:
    doc = yaml.safe_load(ALERTS.read_text())
    return [r for g in doc["groups"] for r in g["rules"] if "alert" in r]


# ---------------------------------------------------------------------------- rules


def test_check_rules(promtool: str) -> None:
    rc, out = run(promtool, "check", "rules", "--lint=all", "--lint-fatal", str(ALERTS))
    assert rc == 0, out
    assert f"SUCCESS: {len(alert_rules())} rules found" in out


def test_rule_unit_tests_pass(promtool: str) -> None:
    rc, out = run(promtool, "test", "rules", "alerts_test.yml", cwd=PROM_DIR)
    assert rc == 0, out
    assert "SUCCESS" in out


def test_rule_unit_tests_can_fail(promtool: str, tmp_path: pathlib.Path) -> None:
    """Expecting FeedStale to fire while it is still pending must fail: the tests bite."""
    shutil.copy(ALERTS, tmp_path / "alerts.yml")
    text = (PROM_DIR / "alerts_test.yml").read_text()
    firing_at = "      - eval_time: 4m                     # 120s old"
    broken = text.replace(firing_at, "      - eval_time: 3m15s #")
    assert broken != text
    (tmp_path / "alerts_test.yml").write_text(broken)
    rc, out = run(promtool, "test", "rules", "alerts_test.yml", cwd=tmp_path)
    assert rc != 0
    assert "alertname: FeedStale" in out


def test_check_config(promtool: str) -> None:
    rc, out = run(promtool, "check", "config", str(PROM_DIR / "prometheus.yml"))
    assert rc == 0, out
    assert "1 rule files found" in out  # the relative rule path resolved (not silently empty)
    config = yaml.safe_load((PROM_DIR / "prometheus.yml").read_text())
    [job] = config["scrape_configs"]
    assert job["job_name"] == "trading"
    assert job["static_configs"] == [{"targets": ["127.0.0.1:9108"]}]


def test_alert_style_and_runbook_links() -> None:
    rules = alert_rules()
    assert {r["alert"] for r in rules} == REQUIRED_ALERTS
    anchors = {
        h.strip().lower().replace(" ", "-")
        for h in re.findall(r"^## (.+)$", RUNBOOK.read_text(), re.M)
    }
    for rule in rules:
        name = rule["alert"]
        assert re.fullmatch(r"(?:[A-Z][a-z]+)+", name), name
        assert "for" in rule, name
        assert rule["labels"]["severity"] in {"critical", "warning", "info"}, name
        ann = rule["annotations"]
        assert ann["summary"].endswith(".") and "{{" not in ann["summary"], name
        assert ann["description"].strip(), name
        url, _, anchor = ann["runbook_url"].partition("#")
        assert url.endswith("/monitoring/RUNBOOK.md"), name
        assert anchor == name.lower() and anchor in anchors, name
        assert re.search(r"\btrading_|\bup\b", rule["expr"]), name


def test_every_alert_is_unit_tested_firing_and_silent() -> None:
    doc = yaml.safe_load((PROM_DIR / "alerts_test.yml").read_text())
    firing: set[str] = set()
    silent: set[str] = set()
    for case in doc["tests"]:
        for check in case.get("alert_rule_test", []):
            (firing if check["exp_alerts"] else silent).add(check["alertname"])
    assert firing == REQUIRED_ALERTS
    assert silent == REQUIRED_ALERTS


# ---------------------------------------------------------------------------- /metrics


async def test_check_metrics_on_the_served_exposition(promtool: str) -> None:
    """promtool's lint over the real /metrics body, with every family holding a sample."""
    metrics = Metrics()
    exercise_all(metrics)
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            port = await nursery.start(partial(serve_metrics, metrics, HealthReport, port=0))
            async with httpx.AsyncClient() as client:
                resp = await client.get(f"http://127.0.0.1:{port}/metrics")
            nursery.cancel_scope.cancel()
    assert resp.status_code == 200
    families = list(text_string_to_metric_families(resp.text))
    assert len(families) >= 34
    empty = [f.name for f in families if not f.samples]
    assert not empty
    result = await trio.run_process(
        [promtool, "check", "metrics"], stdin=resp.content, capture_stdout=True,
        capture_stderr=True, check=False,
    )  # fmt: skip
    assert result.returncode == 0, (result.stdout + result.stderr).decode()


async def test_check_metrics_bites(promtool: str) -> None:
    bad = b"# TYPE trading_orders counter\ntrading_orders 1\n"  # counter without _total
    result = await trio.run_process(
        [promtool, "check", "metrics"], stdin=bad, capture_stdout=True, capture_stderr=True,
        check=False,
    )  # fmt: skip
    assert result.returncode != 0

"""Grafana dashboards (grafana/dashboards/*.json) and provisioning, checked offline.

No Grafana can run here (MONITORING.md §3), so this checks what can be checked honestly:
structure (uid, title, version), the datasource template variable used by every panel and
target, every PromQL expression parsed by Prometheus' own parser (promtool, over a generated
rule file), and every metric name a panel uses exported by monitoring/metrics.py. The live
variant (a real Prometheus accepting each query) is in test_monitoring_live.py. Grafana's
rendering and provisioning are not exercised.
"""

from __future__ import annotations

import json
import os
import pathlib
import re
import shutil
import subprocess
from collections.abc import Iterator
from typing import Any

import pytest
import yaml

from monitoring.metrics import Metrics

from .test_monitoring_metrics import exercise_all

ROOT = pathlib.Path(__file__).resolve().parent.parent
DASHBOARDS = sorted((ROOT / "grafana" / "dashboards").glob("*.json"))
PROMTOOL = shutil.which("promtool")
DS_REFS = {"${datasource}", "$datasource"}
#: Grafana's built-in interval variables become a plain duration for parsing.
BUILTIN_DURATIONS = {"__rate_interval", "__interval", "__range", "__range_s"}
#: Metrics Prometheus itself provides per target.
PROMETHEUS_SYNTHETIC = {"up", "scrape_duration_seconds", "scrape_samples_scraped"}
_KEYWORDS = {
    "by", "without", "on", "ignoring", "group_left", "group_right", "bool", "and", "or",
    "unless", "offset", "inf", "nan",
}  # fmt: skip


def load(path: pathlib.Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(path.read_text())
    return data


def walk_panels(panels: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    """Every panel, including those nested in (collapsed) rows."""
    for panel in panels:
        yield panel
        yield from walk_panels(panel.get("panels", []))


def expand(expr: str, dashboard: dict[str, Any]) -> str:
    """Replace Grafana variables as Grafana would before sending the query."""
    current = {
        v["name"]: str(v.get("current", {}).get("value", ""))
        for v in dashboard["templating"]["list"]
    }

    def sub(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(2) or match.group(3)
        if name in BUILTIN_DURATIONS:
            return "5m"
        return current.get(name) or "placeholder"

    return re.sub(r"\$\{(\w+)(?::\w+)?\}|\[\[(\w+)\]\]|\$(\w+)", sub, expr)


def dashboard_queries() -> list[tuple[str, str]]:
    """(where, expanded expr) for every target of every dashboard."""
    out = []
    for path in DASHBOARDS:
        dash = load(path)
        for panel in walk_panels(dash["panels"]):
            for target in panel.get("targets", []):
                where = f"{path.name} panel {panel['id']} {panel['title']!r} {target['refId']}"
                out.append((where, expand(target["expr"], dash)))
    return out


def metric_names(expr: str) -> set[str]:
    """Metric names selected by a PromQL expression (a small tokenizer, not a full parser).

    Removes strings, label matchers, ranges and grouping clauses, then keeps identifiers that
    are not functions, aggregations or keywords. Exact enough for our own dashboards; the
    promtool check below is the parse authority.
    """
    s = re.sub(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'', '""', expr)
    s = re.sub(r"\{[^}]*\}", " ", s)
    s = re.sub(r"\[[^\]]*\]", " ", s)
    s = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", s)
    s = re.sub(r"(?<![\w:])\d[\d.eE+-]*(ms|[smhdwy])?\b", " ", s)  # numbers and durations
    names = set()
    for m in re.finditer(r"([a-zA-Z_:][a-zA-Z0-9_:]*)(\s*\()?", s):
        ident, call = m.group(1), m.group(2)
        if call or ident.lower() in _KEYWORDS:
            continue
        names.add(ident)
    return names


def exported_sample_names() -> set[str]:
    from prometheus_client.parser import text_string_to_metric_families

    m = Metrics()
    exercise_all(m)
    text = m.exposition().decode()
    return {s.name for f in text_string_to_metric_families(text) for s in f.samples}


def recording_rule_names() -> set[str]:
    rules = yaml.safe_load((ROOT / "monitoring" / "prometheus" / "alerts.yml").read_text())
    return {r["record"] for g in rules["groups"] for r in g["rules"] if "record" in r}


def _need_promtool() -> None:
    if PROMTOOL is None:
        assert os.environ.get("CI") != "true", "CI must install promtool (Debian: prometheus)"
        pytest.skip("needs promtool: apt-get install --no-install-recommends prometheus")


# ---------------------------------------------------------------------------- structure


def test_both_dashboards_exist() -> None:
    assert {p.name for p in DASHBOARDS} == {"health.json", "pnl.json"}


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.name)
def test_structure(path: pathlib.Path) -> None:
    dash = load(path)
    assert 8 <= len(dash["uid"]) <= 40 and re.fullmatch(r"[a-z0-9-]+", dash["uid"])
    assert dash["title"].strip()
    assert isinstance(dash["version"], int) and dash["version"] >= 1
    assert isinstance(dash["schemaVersion"], int)
    ids = [p["id"] for p in walk_panels(dash["panels"])]
    assert len(ids) == len(set(ids)), "duplicate panel ids"
    for panel in walk_panels(dash["panels"]):
        if panel["type"] == "row":
            continue
        assert panel["title"].strip() and panel.get("description"), panel["id"]
        assert panel["targets"], f"panel {panel['title']!r} has no query"
        assert panel["fieldConfig"]["defaults"].get("unit"), f"{panel['title']!r} has no unit"


def test_uids_and_titles_unique() -> None:
    dashes = [load(p) for p in DASHBOARDS]
    assert len({d["uid"] for d in dashes}) == len(dashes)
    assert len({d["title"] for d in dashes}) == len(dashes)


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.name)
def test_datasource_is_a_template_variable_used_everywhere(path: pathlib.Path) -> None:
    dash = load(path)
    variables = dash["templating"]["list"]
    ds_vars = [v for v in variables if v["type"] == "datasource"]
    assert [(v["name"], v["query"]) for v in ds_vars] == [("datasource", "prometheus")]
    for var in variables:
        if var["type"] == "query":
            assert var["datasource"]["uid"] in DS_REFS, var["name"]
    checked = 0
    for panel in walk_panels(dash["panels"]):
        if panel["type"] == "row":
            continue
        assert panel["datasource"]["uid"] in DS_REFS, panel["title"]
        for target in panel["targets"]:
            assert target["datasource"]["uid"] in DS_REFS, (panel["title"], target["refId"])
            checked += 1
    assert checked >= 10


def test_expand_variables() -> None:
    dash = load(DASHBOARDS[0])
    got = expand('rate(x{job=~"$job"}[$__rate_interval]) + y{a="${job}"}[[job]]', dash)
    assert got == 'rate(x{job=~"trading"}[5m]) + y{a="trading"}trading'


# ---------------------------------------------------------------------------- metric names


def test_metric_name_extractor() -> None:
    expr = (
        'histogram_quantile(0.99, sum by (le, endpoint) (rate(trading_x_bucket{job=~"a|b"}[5m])))'
        " / on (job) group_left () max without (instance) (up) > bool 0.5"
        " or time() - trading_y{a='b'} offset 5m"
    )
    assert metric_names(expr) == {"trading_x_bucket", "up", "trading_y"}


def test_every_panel_metric_is_exported() -> None:
    exported = exported_sample_names() | PROMETHEUS_SYNTHETIC | recording_rule_names()
    unknown = {
        (where, name)
        for where, expr in dashboard_queries()
        for name in metric_names(expr)
        if name not in exported
    }
    assert not unknown
    # ... and the check bites: a misspelt name is reported.
    assert "trading_order_latency_ms_bucket" not in exported


def test_dashboards_cover_the_issue() -> None:
    used: dict[str, set[str]] = {}
    for path in DASHBOARDS:
        dash = load(path)
        used[path.name] = {
            n
            for p in walk_panels(dash["panels"])
            for t in p.get("targets", [])
            for n in metric_names(expand(t["expr"], dash))
        }
    assert used["health.json"] >= {
        "trading_actor_up", "trading_actor_restarts_total", "trading_circuit_breaker_open",
        "trading_circuit_breaker_trips_total", "trading_feed_messages_total",
        "trading_feed_last_message_timestamp_seconds", "trading_feed_reconnects_total",
        "trading_book_checksum_mismatches_total", "trading_channel_depth",
        "trading_exchange_request_duration_seconds_bucket", "trading_exchange_errors_total",
        "trading_tick_to_order_seconds_bucket", "trading_db_write_duration_seconds_bucket",
        "trading_db_write_backlog",
    }  # fmt: skip
    assert used["pnl.json"] >= {
        "trading_equity_usd", "trading_pnl_realized_usd", "trading_pnl_unrealized_usd",
        "trading_drawdown_ratio", "trading_exposure_usd", "trading_open_positions",
        "trading_orders_total", "trading_fills_total", "trading_fees_usd_total",
        "trading_risk_rejections_total",
    }  # fmt: skip


# ---------------------------------------------------------------------------- PromQL parse


def _promtool_parse(exprs: list[str], tmp_path: pathlib.Path) -> subprocess.CompletedProcess[str]:
    rules = {
        "groups": [
            {
                "name": "dashboard-exprs",
                "rules": [
                    {"record": f"dashboard:expr:{i}", "expr": e} for i, e in enumerate(exprs)
                ],
            }
        ]
    }
    path = tmp_path / "dashboard_exprs.yml"
    path.write_text(yaml.safe_dump(rules))
    assert PROMTOOL is not None
    return subprocess.run(
        [PROMTOOL, "check", "rules", str(path)], capture_output=True, text=True, timeout=30
    )


def test_every_expr_parses_with_promtool(tmp_path: pathlib.Path) -> None:
    _need_promtool()
    queries = dashboard_queries()
    result = _promtool_parse([e for _, e in queries], tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(queries)} rules found" in result.stdout


def test_promtool_parse_check_bites(tmp_path: pathlib.Path) -> None:
    _need_promtool()
    result = _promtool_parse(["sum(rate(trading_orders_total[5m]) by (status)"], tmp_path)
    assert result.returncode != 0
    assert "could not parse expression" in result.stdout + result.stderr


# ---------------------------------------------------------------------------- provisioning


def test_provisioning_files() -> None:
    prov = ROOT / "grafana" / "provisioning"
    ds = yaml.safe_load((prov / "datasources" / "prometheus.yml").read_text())
    assert ds["apiVersion"] == 1
    [source] = ds["datasources"]
    assert source["type"] == "prometheus" and source["uid"] == "prometheus"
    assert source["url"] == "http://127.0.0.1:9090"
    dashboards = yaml.safe_load((prov / "dashboards" / "dashboards.yml").read_text())
    [provider] = dashboards["providers"]
    assert provider["type"] == "file"
    assert provider["options"]["path"] == "/var/lib/grafana/dashboards"
    # The datasource variable's default is the provisioned uid.
    for path in DASHBOARDS:
        ds_var = load(path)["templating"]["list"][0]
        assert ds_var["current"]["value"] == source["uid"]

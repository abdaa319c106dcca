"""deploy/: docker-compose.yml (validated offline by docker-compose), Dockerfile, Alertmanager.

No Docker daemon runs here: ``docker-compose config -q`` parses and schema-checks the file
without one. The stack itself is not started by any test.
"""

from __future__ import annotations

import os
import pathlib
import shutil
import subprocess

import pytest
import yaml

ROOT = pathlib.Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"


def tool(name: str, package: str) -> str:
    path = shutil.which(name)
    if path is None:
        assert os.environ.get("CI") != "true", f"CI must install {name} (Debian: {package})"
        pytest.skip(f"needs {name}: apt-get install --no-install-recommends {package}")
    return path


def run(*args: str) -> tuple[int, str]:
    proc = subprocess.run(args, cwd=DEPLOY, capture_output=True, text=True, timeout=60)
    return proc.returncode, proc.stdout + proc.stderr


def test_compose_config_validates() -> None:
    compose = tool("docker-compose", "docker-compose")
    rc, out = run(compose, "-f", "docker-compose.yml", "config", "-q")
    assert rc == 0, out
    rc, out = run(compose, "-f", "docker-compose.yml", "config", "--services")
    assert rc == 0, out
    assert set(out.split()) == {"app", "prometheus", "alertmanager", "grafana"}


def test_compose_wiring() -> None:
    doc = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())
    services = doc["services"]
    assert services["app"]["build"] == {"context": "..", "dockerfile": "deploy/Dockerfile"}
    for name in ("prometheus", "alertmanager", "grafana"):
        assert services[name]["network_mode"] == "service:app", name
    # Every bind-mounted host path exists (a typo would mount an empty directory).
    for svc in services.values():
        for volume in svc.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("."):
                assert (DEPLOY / source).exists(), source
    # Published only on the host's loopback.
    assert all(p.startswith("127.0.0.1:") for p in services["app"]["ports"])


def test_dockerfile() -> None:
    text = (DEPLOY / "Dockerfile").read_text()
    assert "FROM python:3.11-slim" in text.splitlines()
    assert "pip install ." in text
    assert '"--mode", "paper", "--metrics-addr", "0.0.0.0:9108"' in text


def test_alertmanager_config_and_routes() -> None:
    amtool = tool("amtool", "prometheus-alertmanager")
    rc, out = run(amtool, "check-config", "alertmanager.yml")
    assert rc == 0, out
    for labels, receiver in [
        (["severity=critical", "alertname=CircuitBreakerTripped"], "oncall"),
        (["severity=warning", "alertname=ExchangeErrors"], "default"),
    ]:
        rc, out = run(amtool, "config", "routes", "test", "--config.file=alertmanager.yml", *labels)
        assert rc == 0, out
        assert out.split()[0] == receiver, out

"""The command line: configuration precedence, one-line errors, secrets, signals."""

from __future__ import annotations

import os
import pathlib
import signal
import subprocess
import sys
import time
from decimal import Decimal

import pytest

from config import SETTINGS, ConfigError, Secret, load_settings

ROOT = pathlib.Path(__file__).resolve().parent.parent


def run_main(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "main.py", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=60, env={**os.environ, **(env or {})})


@pytest.mark.parametrize(
    ("args", "env", "named"),
    [
        (["--speed", "-1"], {}, "--speed"),
        (["--mode", "sideways"], {}, "--mode"),
        (["--max-drawdown", "1.5"], {}, "--max-drawdown"),
        (["--metrics-addr", "nowhere"], {}, "--metrics-addr"),
        ([], {"TRADING_MAX_RESTARTS": "many"}, "TRADING_MAX_RESTARTS"),
        ([], {"KRAKEN_WS_URL": "http://x"}, "KRAKEN_WS_URL"),
        (["--no-such-flag"], {}, "--no-such-flag"),
        (["--strategies", "momentm"], {}, "--strategies"),
        (["--pairs", "DOGE/XYZ"], {}, "--pairs"),
        (["--order-notional", "0"], {}, "--order-notional"),
    ],
)
def test_bad_value_exits_2_with_one_line_naming_it(args: list[str], env: dict[str, str],
                                                   named: str) -> None:
    result = run_main(*args, env=env)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert named in lines[0]
    assert "Traceback" not in result.stderr


def test_help_documents_every_option() -> None:
    result = run_main("--help")
    assert result.returncode == 0
    for option in SETTINGS:
        assert option.flag in result.stdout
        assert option.env in result.stdout


def test_precedence_flag_over_env_over_file(tmp_path: pathlib.Path) -> None:
    toml = tmp_path / "c.toml"
    toml.write_text('speed = 3.0\ncash = "2500"\nmax_restarts = 9\n')
    env = {"TRADING_SPEED": "2", "TRADING_CONFIG": str(toml)}
    settings = load_settings(["--speed", "1.5"], env)
    assert settings.speed == 1.5  # flag wins
    settings = load_settings([], env)
    assert settings.speed == 2.0  # env over file
    assert settings.cash == Decimal("2500")  # file over default
    assert settings.max_restarts == 9


def test_config_file_errors_name_the_setting(tmp_path: pathlib.Path) -> None:
    toml = tmp_path / "c.toml"
    toml.write_text("speed = -4\n")
    with pytest.raises(ConfigError, match="speed"):
        load_settings(["--config", str(toml)], {})
    toml.write_text('api_secret = "abc"\n')
    with pytest.raises(ConfigError, match="environment"):
        load_settings(["--config", str(toml)], {})
    toml.write_text("spede = 1\n")
    with pytest.raises(ConfigError, match="spede"):
        load_settings(["--config", str(toml)], {})


def test_secrets_are_masked_everywhere() -> None:
    secret = ("kQH5HW/8p1uGOVjbgWA7FunAmGO8lsSUXNsu3eow76sz84Q18fWxnyRzBHCd3pd5nE9qa99"
              "HAZtuZuj6F1huXg==")  # the documentation's example secret, not a real one
    settings = load_settings([], {"KRAKEN_API_KEY": "key-123", "KRAKEN_API_SECRET": secret})
    assert settings.api_secret.reveal() == secret
    for text in (repr(settings), str(settings), repr(settings.public_dict()),
                 str(settings.api_secret), f"{settings.api_key}"):
        assert secret not in text
        assert "key-123" not in text
    assert repr(Secret("x")) == "Secret('********')"


def test_live_mode_needs_confirmation_and_credentials() -> None:
    with pytest.raises(ConfigError, match="confirm-live"):
        load_settings(["--mode", "live"], {})
    with pytest.raises(ConfigError, match="KRAKEN_API_KEY"):
        load_settings(["--mode", "live", "--confirm-live"], {})


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_run_command_starts_and_stops_cleanly_on_signal(signum: int,
                                                        tmp_path: pathlib.Path) -> None:
    env = {**os.environ, "TRADING_DB_URL": f"sqlite:///{tmp_path / 't.db'}",
           "KRAKEN_WS_URL": "ws://127.0.0.1:9/v2", "KRAKEN_REST_URL": "http://127.0.0.1:9"}
    with subprocess.Popen([sys.executable, "main.py", "--mode", "paper", "--metrics-addr",
                           "127.0.0.1:0"], cwd=ROOT, env=env, stderr=subprocess.PIPE,
                          text=True) as proc:
        assert proc.stderr is not None
        seen = []
        deadline = time.monotonic() + 30
        for line in proc.stderr:
            seen.append(line)
            if "actor tree is up" in line or time.monotonic() > deadline:
                break
        assert any("actor tree is up" in line for line in seen), "".join(seen)
        # No exchange there: the feed keeps retrying with growing delays and nothing crashes.
        retries = []
        for line in proc.stderr:
            seen.append(line)
            if "reconnecting in" in line:
                retries.append(float(line.rsplit("reconnecting in ", 1)[1].rstrip("s\n")))
            if len(retries) >= 3 or time.monotonic() > deadline:
                break
        assert len(retries) >= 3, "".join(seen)
        assert retries[2] > retries[0]
        assert proc.poll() is None
        proc.send_signal(signum)
        try:
            code = proc.wait(timeout=5)
        finally:
            proc.kill()
        rest = proc.stderr.read()
    assert code == 0, rest
    assert "Traceback" not in rest


def test_signal_during_startup_stops_cleanly(tmp_path: pathlib.Path) -> None:
    """A SIGTERM while the pair metadata request hangs (a peer that accepts and never
    answers) still exits 0 promptly, without a traceback."""
    import socket

    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        port = silent.getsockname()[1]
        env = {**os.environ, "TRADING_DB_URL": f"sqlite:///{tmp_path / 's.db'}",
               "KRAKEN_WS_URL": "ws://127.0.0.1:9/v2", "KRAKEN_REST_URL": f"http://127.0.0.1:{port}"}
        with subprocess.Popen([sys.executable, "main.py", "--metrics-addr", "127.0.0.1:0"],
                              cwd=ROOT, env=env, stderr=subprocess.PIPE, text=True) as proc:
            # The app's connection to the silent peer proves it is inside the metadata wait,
            # with its signal handlers installed (they come first); a fixed sleep raced a slow
            # interpreter start-up on a loaded CI machine.
            silent.settimeout(60)
            peer, _ = silent.accept()
            proc.send_signal(signal.SIGTERM)
            try:
                code = proc.wait(timeout=5)
            finally:
                proc.kill()
            assert proc.stderr is not None
            err = proc.stderr.read()
            peer.close()
    assert code == 0, err
    assert "Traceback" not in err

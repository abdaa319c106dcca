"""Typed settings from a TOML file, environment variables and command-line flags.

Precedence: flag > environment variable > TOML file (``--config FILE``) > default. Every setting
is declared once in ``SETTINGS`` (flag, environment variable, TOML key, type, default, help), so
``--help``, validation messages and the README can never disagree.

An invalid value raises :class:`ConfigError` whose message names the setting and where it came
from; ``main.py`` prints that one line and exits with status 2.

Credentials are read from the environment only (``KRAKEN_API_KEY``, ``KRAKEN_API_SECRET``) and
are held in :class:`Secret`, whose ``repr``/``str`` never show the value.
"""

from __future__ import annotations

import argparse
import os
import tomllib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any


class ConfigError(Exception):
    """A setting has an invalid value. The message is one line and names the setting."""


class Secret:
    """A credential. Its value is reachable only through :meth:`reveal`."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __bool__(self) -> bool:
        return bool(self._value)

    def __repr__(self) -> str:
        return "Secret('********')" if self._value else "Secret('')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


MODES = ("paper", "live", "backtest", "check")


# ----------------------------------------------------------------------------- parsers

def _positive_int(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise ValueError("must be a positive integer")
    return value


def _non_negative_float(text: str) -> float:
    value = float(text)
    if not value >= 0:  # also rejects NaN
        raise ValueError("must be a number >= 0")
    return value


def _positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise ValueError("must be a number > 0")
    return value


def _decimal(text: str) -> Decimal:
    try:
        value = Decimal(text)
    except InvalidOperation:
        raise ValueError("must be a decimal number") from None
    if not value.is_finite() or value < 0:
        raise ValueError("must be a finite decimal number >= 0")
    return value


def _positive_decimal(text: str) -> Decimal:
    value = _decimal(text)
    if value <= 0:
        raise ValueError("must be a decimal number > 0")
    return value


def _ratio(text: str) -> Decimal:
    value = _decimal(text)
    if not 0 < value < 1:
        raise ValueError("must be a fraction between 0 and 1 (e.g. 0.1 for 10%)")
    return value


def _mode(text: str) -> str:
    if text not in MODES:
        raise ValueError(f"must be one of {', '.join(MODES)}")
    return text


def _url(*schemes: str) -> Callable[[str], str]:
    def parse(text: str) -> str:
        if not any(text.startswith(f"{scheme}://") for scheme in schemes):
            raise ValueError(f"must be a {' or '.join(schemes)} URL")
        return text.rstrip("/") if "http" in schemes else text
    return parse


def _host_port(text: str) -> str:
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError("must be HOST:PORT, e.g. 127.0.0.1:9108")
    return text


def _csv(text: str) -> tuple[str, ...]:
    items = tuple(part.strip() for part in text.split(",") if part.strip())
    if not items:
        raise ValueError("must list at least one item, comma-separated")
    return items


def _symbols(text: str) -> tuple[str, ...]:
    items = _csv(text)
    for item in items:
        base, sep, quote = item.partition("/")
        if not sep or not base.isalnum() or not quote.isalnum():
            raise ValueError(f"{item!r} is not a BASE/QUOTE pair such as BTC/USD")
    return tuple(item.upper() for item in items)


def _log_level(text: str) -> str:
    level = text.upper()
    if level not in ("DEBUG", "INFO", "WARNING", "ERROR"):
        raise ValueError("must be DEBUG, INFO, WARNING or ERROR")
    return level


def _bool(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off", ""):
        return False
    raise ValueError("must be true or false")


@dataclass(frozen=True, slots=True)
class Option:
    name: str  # attribute of Settings and TOML key
    flag: str
    env: str
    parse: Callable[[str], Any]
    default: Any
    help: str
    is_flag: bool = False  # a switch: --flag sets True


def _opt(name: str, parse: Callable[[str], Any], default: Any, help: str, *,
         env: str | None = None, flag: str | None = None, is_flag: bool = False) -> Option:
    return Option(name, flag or "--" + name.replace("_", "-"),
                  env or "TRADING_" + name.upper(), parse, default, help, is_flag)


SETTINGS: tuple[Option, ...] = (
    _opt("mode", _mode, "paper", "paper | live | backtest | check"),
    _opt("log_level", _log_level, "INFO", "DEBUG, INFO, WARNING or ERROR"),
    _opt("pairs", _symbols, ("BTC/USD", "ETH/USD", "ETH/BTC"), "pairs to trade, comma-separated"),
    _opt("strategies", _csv, ("momentum", "mean_reversion", "arbitrage"),
         "strategies to run, comma-separated"),
    _opt("ws_url", _url("ws", "wss"), "wss://ws.kraken.com/v2", "Kraken public WebSocket v2 URL",
         env="KRAKEN_WS_URL"),
    _opt("ws_auth_url", _url("ws", "wss"), "wss://ws-auth.kraken.com/v2",
         "Kraken private WebSocket v2 URL", env="KRAKEN_WS_AUTH_URL"),
    _opt("rest_url", _url("http", "https"), "https://api.kraken.com", "Kraken REST base URL",
         env="KRAKEN_REST_URL"),
    _opt("book_depth", _positive_int, 10, "book depth to subscribe (10, 25, 100, 500, 1000)"),
    _opt("stale_after", _positive_float, 10.0, "seconds without a message before a feed is dead"),
    _opt("db", _url("sqlite", "postgresql", "postgresql+psycopg"), "sqlite:///trading.db",
         "database URL (SQLite file or postgresql+psycopg://...)", env="TRADING_DB_URL"),
    _opt("spill_dir", str, "", "where events a stop could not commit to the database are kept "
         "until the next start commits them (default: beside a SQLite file, else the working "
         "directory)", env="TRADING_SPILL_DIR"),
    _opt("metrics_addr", _host_port, "127.0.0.1:9108", "where /metrics and /healthz listen"),
    _opt("replay", str, "", "replay recorded frames or candle CSVs instead of the live feed"),
    _opt("speed", _non_negative_float, 1.0, "replay speed factor (0 = as fast as possible)"),
    _opt("record", str, "", "paper mode: also write the live feed's raw frames to FILE "
         "(rotated FILE.0001.jsonl.gz ..., replayable with --replay)"),
    _opt("exit_at_end", _bool, False, "exit when the replay ends (prints the summary)",
         is_flag=True),
    _opt("cash", _positive_decimal, Decimal("10000"),
         "starting paper balance in the quote currency"),
    _opt("quote_currency", str, "USD", "the currency paper balances and P&L are counted in"),
    _opt("order_notional", _positive_decimal, Decimal("100"),
         "strategy order size in quote currency"),
    _opt("max_position_usd", _decimal, Decimal("1000"), "risk: max notional per position"),
    _opt("max_exposure_usd", _decimal, Decimal("5000"), "risk: max total exposure"),
    _opt("max_open_positions", _positive_int, 5, "risk: max simultaneously open positions"),
    _opt("stop_loss", _ratio, Decimal("0.02"), "risk: stop-loss as a fraction of entry"),
    _opt("take_profit", _ratio, Decimal("0.04"), "risk: take-profit as a fraction of entry"),
    _opt("daily_loss_limit_usd", _decimal, Decimal("500"), "risk: daily loss that halts trading"),
    _opt("max_drawdown", _ratio, Decimal("0.10"), "risk: drawdown that halts trading"),
    _opt("reset_breaker", _bool, False, "clear a latched breaker restored from the database",
         is_flag=True),
    _opt("max_restarts", _positive_int, 5, "restarts allowed per supervisor within the period"),
    _opt("restart_period", _positive_float, 60.0, "restart intensity period in seconds"),
    _opt("channel_size", _positive_int, 256, "buffer size of every bounded channel"),
    _opt("paper_latency", _non_negative_float, 0.0, "simulated broker latency in seconds"),
    _opt("confirm_live", _bool, False, "required with --mode live: trade real money",
         is_flag=True),
)


@dataclass(frozen=True, slots=True)
class Settings:
    mode: str
    log_level: str
    pairs: tuple[str, ...]
    strategies: tuple[str, ...]
    ws_url: str
    ws_auth_url: str
    rest_url: str
    book_depth: int
    stale_after: float
    db: str
    spill_dir: str
    metrics_addr: str
    replay: str
    speed: float
    record: str
    exit_at_end: bool
    cash: Decimal
    quote_currency: str
    order_notional: Decimal
    max_position_usd: Decimal
    max_exposure_usd: Decimal
    max_open_positions: int
    stop_loss: Decimal
    take_profit: Decimal
    daily_loss_limit_usd: Decimal
    max_drawdown: Decimal
    reset_breaker: bool
    max_restarts: int
    restart_period: float
    channel_size: int
    paper_latency: float
    confirm_live: bool
    api_key: Secret
    api_secret: Secret
    config_file: str = ""
    extras: Mapping[str, Any] = field(default_factory=dict)  # flags added by ``extend``

    @property
    def metrics_host(self) -> str:
        return self.metrics_addr.rpartition(":")[0]

    @property
    def metrics_port(self) -> int:
        return int(self.metrics_addr.rpartition(":")[2])

    def public_dict(self) -> dict[str, str]:
        """Every setting as text, credentials masked: safe to log or persist."""
        return {f.name: str(getattr(self, f.name)) for f in fields(self)}


def build_parser() -> argparse.ArgumentParser:
    parser = _OneLineErrorParser(
        prog="main.py",
        description="crypto-enhanced: a Kraken spot trading system of supervised trio actors.",
        epilog=(
            "Precedence: flag > environment variable > --config TOML file > default. "
            "Credentials come only from KRAKEN_API_KEY and KRAKEN_API_SECRET. "
            "Database commands: main.py db upgrade | db current."
        ),
    )
    parser.add_argument("--config", metavar="FILE", help="TOML file with settings (keys as below)")
    for option in SETTINGS:
        text = f"{option.help} [env {option.env}; default {_show(option.default)}]"
        if option.is_flag:
            parser.add_argument(option.flag, dest=option.name, action="store_const",
                                const="true", default=None, help=text)
        else:
            parser.add_argument(option.flag, dest=option.name, metavar="VALUE", default=None,
                                help=text)
    return parser


def _show(value: Any) -> str:
    if isinstance(value, tuple):
        return ",".join(value)
    return str(value) if value != "" else "none"


class _OneLineErrorParser(argparse.ArgumentParser):
    def error(self, message: str) -> Any:  # argparse's own errors: one line, status 2
        raise ConfigError(message)


def load_settings(
    argv: Sequence[str],
    environ: Mapping[str, str] | None = None,
    *,
    extend: Callable[[argparse.ArgumentParser], Sequence[str]] | None = None,
) -> Settings:
    """Parse ``argv`` (without the program name) into validated settings.

    ``extend`` lets a mode add its own flags (the backtest's ``--data``, ``--report`` ...): it
    adds them to the parser and returns their ``dest`` names, whose parsed values land in
    ``Settings.extras``. A mode validates its own extras.
    """
    environ = os.environ if environ is None else environ
    parser = build_parser()
    extra_names = list(extend(parser)) if extend is not None else []
    args = parser.parse_args(list(argv))
    file_values: dict[str, Any] = {}
    config_file = args.config or environ.get("TRADING_CONFIG", "")
    if config_file:
        file_values = _read_toml(Path(config_file))
    values: dict[str, Any] = {}
    for option in SETTINGS:
        raw: Any = getattr(args, option.name)
        source = option.flag
        if raw is None and option.env in environ:
            raw, source = environ[option.env], f"environment variable {option.env}"
        if raw is None and option.name in file_values:
            raw, source = file_values[option.name], f"{config_file}: {option.name}"
        if raw is None:
            values[option.name] = option.default
            continue
        text = ",".join(map(str, raw)) if isinstance(raw, list) else str(raw)
        if isinstance(raw, bool):
            text = "true" if raw else "false"
        try:
            values[option.name] = option.parse(text)
        except ValueError as exc:
            raise ConfigError(f"invalid value {text!r} for {source}: {exc}") from None
    unknown = set(file_values) - {o.name for o in SETTINGS}
    if unknown:
        raise ConfigError(f"unknown setting(s) in {config_file}: {', '.join(sorted(unknown))}")
    settings = Settings(
        **values,
        api_key=Secret(environ.get("KRAKEN_API_KEY", "")),
        api_secret=Secret(environ.get("KRAKEN_API_SECRET", "")),
        config_file=config_file,
        extras={name: getattr(args, name) for name in extra_names},
    )
    _cross_check(settings)
    return settings


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as handle:
            data = tomllib.load(handle)
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}") from None
    for forbidden in ("api_key", "api_secret"):
        if forbidden in data:
            raise ConfigError(f"{path}: {forbidden} must come from the environment, not a file")
    return dict(data)


def _cross_check(settings: Settings) -> None:
    if settings.mode == "live" and not settings.confirm_live:
        raise ConfigError("--mode live trades real money: add --confirm-live to proceed")
    if settings.mode == "live" and not (settings.api_key and settings.api_secret):
        raise ConfigError("--mode live needs KRAKEN_API_KEY and KRAKEN_API_SECRET in the "
                          "environment")
    if settings.book_depth not in (10, 25, 100, 500, 1000):
        raise ConfigError(
            f"invalid value {settings.book_depth} for --book-depth: "
            "must be 10, 25, 100, 500 or 1000"
        )
    if settings.take_profit <= 0 or settings.stop_loss <= 0:
        raise ConfigError("--stop-loss and --take-profit must be > 0")

"""Strategy registry and the factory the CLI, the actor tree and the backtest loop use."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from decimal import Decimal
from typing import Any

from protocol.instruments import PairInfo

from ._base import Strategy, StrategyConfigError, parse_config
from .arbitrage import Arbitrage, ArbitrageConfig
from .mean_reversion import MeanReversion, MeanReversionConfig
from .momentum import Momentum, MomentumConfig
from .sma_cross import SmaCross, SmaCrossConfig

__all__ = ["REGISTRY", "STABLECOINS", "build_strategies", "standard_params"]

# name -> (config class, constructor(config, pairs, name=...)). A plain dict passed around
# explicitly, not a process-global registry that modules mutate on import (MODELS.md: avoid
# stringly-typed global registries).
REGISTRY: Mapping[str, tuple[type[Any], Callable[..., Strategy]]] = {
    "momentum": (MomentumConfig, Momentum),
    "mean_reversion": (MeanReversionConfig, MeanReversion),
    "arbitrage": (ArbitrageConfig, Arbitrage),
    "sma_cross": (SmaCrossConfig, SmaCross),
}


def build_strategies(
    names: Sequence[str],
    params: Mapping[str, Mapping[str, str]],
    pairs: Mapping[str, PairInfo],
) -> list[Strategy]:
    """Build the named strategies with their string parameters.

    Args:
        names: registry names, in the order the strategies should run (duplicates refused:
            two instances with one name would mix their fills).
        params: per-strategy parameters as strings (``{"momentum": {"lookback": "30"}}``);
            names absent here run on their defaults.
        pairs: pair metadata by symbol (sizes, fees, currencies).

    Returns:
        Fresh strategy objects, one per name.

    Raises:
        StrategyConfigError: unknown or duplicate name, a parameter for a strategy that is not
            built, unknown parameter, unparsable value, or a symbol without pair metadata.
    """
    if len(set(names)) != len(names):
        raise StrategyConfigError(f"duplicate strategy names in {list(names)}", strategy="")
    for name in names:
        if name not in REGISTRY:
            raise StrategyConfigError(
                f"unknown strategy {name!r} (known: {', '.join(sorted(REGISTRY))})",
                strategy=name,
            )
    for name in params:
        if name not in names:
            raise StrategyConfigError(
                f"parameters given for {name!r}, which is not among {list(names)}",
                strategy=name,
            )
    out: list[Strategy] = []
    for name in names:
        config_cls, ctor = REGISTRY[name]
        config = parse_config(config_cls, name, params.get(name, {}))
        out.append(ctor(config, pairs, name=name))
    return out


STABLECOINS = ("USDT", "USDC", "DAI")
"""Quote currencies treated as pegged 1:1 to the accounting currency when asked to."""


def standard_params(
    names: Sequence[str],
    user: Mapping[str, Mapping[str, str]],
    accounting_currency: str,
    pegs: Sequence[str],
    notional: Decimal,
) -> dict[str, dict[str, str]]:
    """Parameters every run gives its strategies unless the user set them.

    Each strategy that has them gets ``notional`` (order size) in ``accounting_currency``, and
    the stablecoin ``pegs`` (arbitrage as ``USDT=<accounting>`` entries, the others as a list),
    so paper mode and backtests size orders the same way.
    """
    out: dict[str, dict[str, str]] = {}
    for name in names:
        given = dict(user.get(name, {}))
        fields = {f.name for f in dataclasses.fields(REGISTRY[name][0])}
        if "notional_currency" in fields:
            given.setdefault("notional_currency", accounting_currency)
        if "notional" in fields:
            given.setdefault("notional", str(notional))
        if "pegs" in fields and pegs:
            if name == "arbitrage":
                given.setdefault("pegs", ",".join(f"{p}={accounting_currency}" for p in pegs))
            else:
                given.setdefault("pegs", ",".join(pegs))
        out[name] = given
    return out

"""A model of Kraken's per-key REST call counter that waits instead of breaching (PROTOCOL.md §3.1).

Kraken adds a cost per private call (1, or 2 for ledger/trade-history calls) to a counter that
decays at a tier-dependent rate; above the tier's maximum the call fails with
``EAPI:Rate limit exceeded`` and the key is restricted for a while. We model the counter and make
a caller sleep until its cost fits, so the real counter never breaches as long as the model is
not more optimistic than Kraken.

Two places where it could be: Kraken decays "every couple of seconds", in steps, while the
model decays continuously, and the model starts at 0 though a previous process may have left the
real counter high. ``headroom`` (default 2 units, about one decay step at the fastest tier)
covers the first; :meth:`CallCounterLimiter.on_rate_limited` covers the second by saturating the
model when Kraken says we breached anyway.

AddOrder/CancelOrder are not counted here (they use the per-pair trading-engine counter, §3.2);
public endpoints are limited per IP, not per key, and cost 0 by default. Costs are configurable
because the docs disagree (+2 vs +4 for heavy calls).

Time comes from an injected clock (``trio.current_time`` by default), never the wall clock.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import trio

__all__ = [
    "DEFAULT_COSTS",
    "CallCounterLimiter",
    "DecayingCounter",
    "LimiterStatistics",
    "RateLimitTier",
]


class RateLimitTier(enum.Enum):
    """Kraken verification tiers: ``(max counter, decay per second)``."""

    STARTER = (15.0, 0.33)
    INTERMEDIATE = (20.0, 0.5)
    PRO = (20.0, 1.0)

    @property
    def max_counter(self) -> float:
        return self.value[0]

    @property
    def decay_per_second(self) -> float:
        return self.value[1]

    @classmethod
    def parse(cls, name: str) -> RateLimitTier:
        """``"starter"`` / ``"intermediate"`` / ``"pro"`` (case-insensitive)."""
        try:
            return cls[name.strip().upper()]
        except KeyError:
            raise ValueError(
                f"unknown Kraken tier {name!r}: starter, intermediate or pro"
            ) from None


#: Per-endpoint cost on the REST counter. Unlisted private endpoints cost 1, public ones 0.
DEFAULT_COSTS: Mapping[str, float] = {
    "TradesHistory": 2.0,
    "Ledgers": 2.0,
    "QueryLedgers": 2.0,
    "QueryTrades": 2.0,
    "AddOrder": 0.0,
    "AddOrderBatch": 0.0,
    "CancelOrder": 0.0,
    "CancelOrderBatch": 0.0,
    "EditOrder": 0.0,
    "AmendOrder": 0.0,
}

_PUBLIC = frozenset({"Time", "SystemStatus", "Assets", "AssetPairs", "Ticker", "OHLC", "Depth",
                     "Trades", "Spread"})


class DecayingCounter:
    """The pure model: a counter that decays linearly and admits costs up to ``limit``.

    No trio, no clock of its own: every method takes ``now`` (seconds, monotonic).
    """

    __slots__ = ("_level", "_stamp", "decay", "limit")

    def __init__(self, *, limit: float, decay: float) -> None:
        if limit <= 0 or decay <= 0:
            raise ValueError("limit and decay must be positive")
        self.limit = limit
        self.decay = decay
        self._level = 0.0
        self._stamp: float | None = None

    def level(self, now: float) -> float:
        """The modelled counter at ``now`` (after decay)."""
        if self._stamp is None:
            return self._level
        elapsed = max(0.0, now - self._stamp)
        return max(0.0, self._level - elapsed * self.decay)

    def _settle(self, now: float) -> None:
        self._level = self.level(now)
        # Never move the stamp backwards: a non-monotonic ``now`` must not undo decay twice.
        self._stamp = now if self._stamp is None else max(self._stamp, now)

    def try_add(self, now: float, cost: float) -> float:
        """Add ``cost`` if it fits and return 0, else return the seconds to wait (> 0).

        A cost larger than ``limit`` is clamped to ``limit`` so it can ever be admitted.
        """
        cost = min(max(cost, 0.0), self.limit)
        self._settle(now)
        excess = self._level + cost - self.limit
        if excess <= 1e-9:
            self._level = min(self.limit, self._level + cost)
            return 0.0
        # Never return a zero or sub-microsecond wait: callers would spin.
        return max(excess / self.decay, 1e-6)

    def saturate(self, now: float) -> None:
        """Set the counter to its limit (Kraken told us we breached: the model was behind)."""
        self._settle(now)
        self._level = self.limit


@dataclass(frozen=True, slots=True, kw_only=True)
class LimiterStatistics:
    """A snapshot for metrics (``rate-limit headroom``)."""

    level: float
    limit: float
    headroom: float
    waiting: int
    total_wait_seconds: float


class CallCounterLimiter:
    """Wait until a call's cost fits under the modelled Kraken counter.

    Waiters are served first-come first-served (a ``trio.Lock`` is fair), so a burst of cheap
    calls cannot starve a heavy one.

    Args:
        tier: the account's tier.
        costs: per-endpoint overrides merged over :data:`DEFAULT_COSTS`.
        headroom: units kept free below Kraken's maximum (see the module docstring).
        clock: monotonic seconds; ``trio.current_time`` by default (virtual under MockClock).
    """

    def __init__(
        self,
        tier: RateLimitTier = RateLimitTier.STARTER,
        *,
        costs: Mapping[str, float] | None = None,
        headroom: float = 2.0,
        clock: Callable[[], float] = trio.current_time,
    ) -> None:
        if not 0 <= headroom < tier.max_counter:
            raise ValueError("headroom must be in [0, tier max)")
        self.tier = tier
        self._costs = {**DEFAULT_COSTS, **(costs or {})}
        self._headroom = headroom
        self._clock = clock
        self._counter = DecayingCounter(
            limit=tier.max_counter - headroom, decay=tier.decay_per_second
        )
        self._lock = trio.Lock()
        self._waiting = 0
        self._total_wait = 0.0

    def cost(self, endpoint: str) -> float:
        """The counter cost of one call to ``endpoint``."""
        if endpoint in self._costs:
            return self._costs[endpoint]
        return 0.0 if endpoint in _PUBLIC else 1.0

    async def acquire(self, endpoint: str) -> None:
        """Wait until ``endpoint``'s cost fits, then charge it.

        Cancellation-safe: a caller cancelled while waiting has charged nothing.
        """
        cost = self.cost(endpoint)
        if cost <= 0:
            return
        self._waiting += 1
        try:
            async with self._lock:
                while True:
                    wait = self._counter.try_add(self._clock(), cost)
                    if wait == 0.0:
                        return
                    self._total_wait += wait
                    await trio.sleep(wait)
        finally:
            self._waiting -= 1

    def on_rate_limited(self) -> None:
        """Record that Kraken answered ``EAPI:Rate limit exceeded``: assume a full counter."""
        self._counter.saturate(self._clock())

    def statistics(self) -> LimiterStatistics:
        level = self._counter.level(self._clock())
        return LimiterStatistics(
            level=level,
            limit=self.tier.max_counter,
            headroom=max(0.0, self.tier.max_counter - level),
            waiting=self._waiting,
            total_wait_seconds=self._total_wait,
        )


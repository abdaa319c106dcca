"""The circuit breaker: the system's "stop trading" latch, and the transport breakers.

Why our own: the libraries either count ``trio.Cancelled`` as a failure, replace it, or read a
clock MockClock cannot drive (``shared/notes/SUPERVISION.md`` §5). Here failures are *reported*
(:meth:`CircuitBreaker.record_failure`), never inferred from exceptions, so cancellation can
never trip a breaker, and time comes from an injected clock (``trio.current_time`` by default).

States::

    CLOSED ──(threshold failures within window, or trip())──▶ OPEN
    OPEN ──(cooldown elapsed; not latched)──▶ HALF_OPEN      (evaluated lazily on read)
    HALF_OPEN ──record_success()──▶ CLOSED
    HALF_OPEN ──record_failure()──▶ OPEN
    OPEN (latched) ──reset()──▶ CLOSED                         (a person acknowledges)

A *latching* breaker (``latching=True``: risk trips such as drawdown or daily loss) never
half-opens on its own. ``trip(..., latch=True)`` latches one trip of any breaker.
"""

from __future__ import annotations

import enum
import logging
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

import trio

log = logging.getLogger(__name__)


class BreakerState(enum.Enum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


@dataclass(frozen=True, slots=True)
class BreakerStatistics:
    name: str
    state: BreakerState
    reason: str | None
    latched: bool
    failures_in_window: int
    opened_at: float | None
    trips: int


BreakerListener = Callable[[str, BreakerState, BreakerState, str], None]
"""``listener(name, old_state, new_state, reason)``: metrics and persistence plug in here."""


class CircuitBreaker:
    def __init__(
        self,
        name: str,
        *,
        threshold: int = 5,
        window: float = 60.0,
        cooldown: float | None = 30.0,
        probes: int = 1,
        latching: bool = False,
        clock: Callable[[], float] = trio.current_time,
    ) -> None:
        if threshold < 1 or window <= 0 or probes < 1:
            raise ValueError("threshold and probes must be >= 1 and window > 0")
        self.name = name
        self.threshold = threshold
        self.window = window
        self.cooldown = cooldown
        self.probes = probes
        self.latching = latching
        self._clock = clock
        self._state = BreakerState.CLOSED
        self._reason: str | None = None
        self._active: dict[str, None] = {}  # every reason it is open for, in trip order
        self._latched = False
        self._opened_at: float | None = None
        self._failures: deque[float] = deque()
        self._probes_left = 0
        self._trips = 0
        self._closed_event = trio.Event()
        self._closed_event.set()
        self._open_event = trio.Event()
        self._listeners: list[BreakerListener] = []

    # ------------------------------------------------------------------ reading

    @property
    def state(self) -> BreakerState:
        if (
            self._state is BreakerState.OPEN
            and not self._latched
            and self.cooldown is not None
            and self._opened_at is not None
            and self._clock() - self._opened_at >= self.cooldown
        ):
            self._transition(BreakerState.HALF_OPEN, "cooldown elapsed")
            self._probes_left = self.probes
        return self._state

    @property
    def is_open(self) -> bool:
        """True while new work must be refused (OPEN; HALF_OPEN lets probes through)."""
        return self.state is BreakerState.OPEN

    @property
    def reason(self) -> str | None:
        return self._reason

    def allow(self) -> bool:
        """May one more call go through? In HALF_OPEN, only ``probes`` calls may."""
        state = self.state
        if state is BreakerState.CLOSED:
            return True
        if state is BreakerState.HALF_OPEN and self._probes_left > 0:
            self._probes_left -= 1
            return True
        return False

    def statistics(self) -> BreakerStatistics:
        state = self.state
        self._prune(self._clock())
        return BreakerStatistics(
            name=self.name,
            state=state,
            reason=self._reason,
            latched=self._latched,
            failures_in_window=len(self._failures),
            opened_at=self._opened_at,
            trips=self._trips,
        )

    def add_listener(self, listener: BreakerListener) -> None:
        self._listeners.append(listener)

    async def wait_closed(self) -> None:
        """Block until the breaker is CLOSED (after a probe success or a reset)."""
        while self._state is not BreakerState.CLOSED:
            await self._closed_event.wait()

    async def wait_open(self) -> None:
        """Block until the breaker trips (returns at once if it is OPEN now)."""
        while self._state is not BreakerState.OPEN:
            await self._open_event.wait()

    # ------------------------------------------------------------------ writing

    def record_success(self) -> None:
        if self.state is BreakerState.HALF_OPEN:
            self._failures.clear()
            self._transition(BreakerState.CLOSED, "probe succeeded")

    def record_failure(self, reason: str) -> None:
        now = self._clock()
        state = self.state
        if state is BreakerState.HALF_OPEN:
            self._open(reason, latch=False)
            return
        if state is BreakerState.OPEN:
            return
        self._failures.append(now)
        self._prune(now)
        if len(self._failures) >= self.threshold:
            self._open(reason, latch=False)

    def trip(self, reason: str, *, latch: bool | None = None) -> None:
        """Open now. A latched trip stays open until :meth:`reset`.

        Tripping an open breaker for a *new* reason keeps the first reason as the headline (the
        cause, not the echo) but remembers the new one too, so resolving one cause (a database
        that came back) never silently clears another (a restart storm during the outage);
        listeners hear about it as an OPEN -> OPEN change.
        """
        latch = self.latching if latch is None else latch
        if self._state is BreakerState.OPEN:
            self._latched = self._latched or latch
            if reason not in self._active:
                self._active[reason] = None
                self._trips += 1
                self._notify(BreakerState.OPEN, BreakerState.OPEN, reason)
            return
        self._open(reason, latch=latch)

    @property
    def reasons(self) -> tuple[str, ...]:
        """Every cause the breaker is open for, first (headline) first."""
        return tuple(self._active) if self._state is BreakerState.OPEN else ()

    def resolve(self, reason: str, detail: str = "") -> None:
        """One cause has gone away: close if it was the only one, else stay open for the rest."""
        if self._state is not BreakerState.OPEN or reason not in self._active:
            return
        del self._active[reason]
        if not self._active:
            self.reset(detail or f"{reason} resolved")
        elif self._reason == reason:
            self._reason = next(iter(self._active))

    def reset(self, reason: str = "manual reset") -> None:
        self._latched = False
        self._failures.clear()
        self._active = {}
        if self._state is not BreakerState.CLOSED:
            self._transition(BreakerState.CLOSED, reason)

    def restore(self, reason: str) -> None:
        """Re-latch a trip recovered from the database on start-up."""
        self.trip(reason, latch=True)

    # ------------------------------------------------------------------ internals

    def _prune(self, now: float) -> None:
        while self._failures and now - self._failures[0] > self.window:
            self._failures.popleft()

    def _open(self, reason: str, *, latch: bool) -> None:
        self._active = {reason: None}
        self._latched = latch or self.latching
        self._opened_at = self._clock()
        self._trips += 1
        self._transition(BreakerState.OPEN, reason)

    def _transition(self, new: BreakerState, reason: str) -> None:
        old = self._state
        if old is new:
            return
        self._state = new
        if new is BreakerState.OPEN:
            self._reason = reason
        elif new is BreakerState.CLOSED:
            self._reason = None
            self._opened_at = None
        if new is BreakerState.CLOSED:
            self._closed_event.set()
        elif old is BreakerState.CLOSED:
            self._closed_event = trio.Event()
        if new is BreakerState.OPEN:
            self._open_event.set()
        elif old is BreakerState.OPEN:
            self._open_event = trio.Event()
        self._notify(old, new, reason)

    def _notify(self, old: BreakerState, new: BreakerState, reason: str) -> None:
        level = logging.WARNING if new is BreakerState.OPEN else logging.INFO
        log.log(level, "breaker %s: %s -> %s (%s)", self.name, old.value, new.value, reason)
        for listener in self._listeners:
            listener(self.name, old, new, reason)

"""An OTP-style supervisor on trio nurseries and cancel scopes.

Why our own: no library offers the three restart strategies plus intensity, backoff and correct
trio cancellation semantics (see ``shared/notes/SUPERVISION.md`` §1 and §4). Everything here
reads time from ``trio.current_time()`` so MockClock drives it and backtests stay virtual.

Rules this module keeps:

* Only ``Exception`` is a crash. ``trio.Cancelled`` and ``KeyboardInterrupt`` are
  ``BaseException`` and pass through untouched, so cancelling a tree never causes a restart.
* The supervisor owns each child's channel endpoints. Every incarnation gets fresh ``clone()``s
  and closes only those, so messages buffered for a child survive its restart.
* More than ``max_restarts`` restarts within ``period`` seconds is a restart storm: the
  supervisor stops its children, reports ``gave_up`` and raises :class:`SupervisorGaveUp` *bare*
  (not inside an exception group), so the parent sees one typed crash and escalation composes.
* Children start in order through ``task_status.started()`` and stop in reverse order on
  :meth:`Supervisor.shutdown`.
"""

from __future__ import annotations

import contextlib
import enum
import logging
import math
import random
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import trio

log = logging.getLogger(__name__)


class Restart(enum.Enum):
    PERMANENT = "permanent"  # always restarted
    TRANSIENT = "transient"  # restarted only after a crash, not after a normal return
    TEMPORARY = "temporary"  # never restarted


class RestartStrategy(enum.Enum):
    ONE_FOR_ONE = "one_for_one"  # restart only the failed child
    ONE_FOR_ALL = "one_for_all"  # stop all children, restart all
    REST_FOR_ONE = "rest_for_one"  # restart the failed child and every child started after it


@dataclass(frozen=True, slots=True)
class Backoff:
    """Exponential backoff with jitter and a cap: ``initial * factor**(n-1)``, at most ``maximum``.

    Jitter only shortens a delay (by up to ``jitter`` of it), so the cap always holds and
    restarts of siblings that crashed together spread out instead of stampeding.
    """

    initial: float = 0.5
    factor: float = 2.0
    maximum: float = 30.0
    jitter: float = 0.1

    def __post_init__(self) -> None:
        if self.initial < 0 or self.factor < 1 or self.maximum < self.initial:
            raise ValueError(f"invalid backoff {self!r}")
        if not 0 <= self.jitter < 1:
            raise ValueError("backoff jitter must be in [0, 1)")

    def delay(self, consecutive_failures: int, rng: random.Random) -> float:
        n = max(consecutive_failures, 1)
        # min() before the power would still overflow for huge n; cap the exponent instead.
        exponent = min(n - 1, 64)
        base = min(self.maximum, self.initial * self.factor**exponent)
        if self.jitter:
            base *= 1.0 - self.jitter * rng.random()
        return base


class Actor(Protocol):
    """Anything with the actor entry point (actors, nested supervisors)."""

    async def run(self, *, task_status: trio.TaskStatus[Any] = trio.TASK_STATUS_IGNORED) -> None:
        ...


class Cloneable(Protocol):
    """A channel endpoint the supervisor can hand out per incarnation."""

    def clone(self) -> Any: ...

    def close(self) -> None: ...


@dataclass(frozen=True, slots=True)
class ChildSpec:
    """How to run one child.

    ``factory`` is called once per incarnation with a fresh clone of every endpoint in
    ``channels`` as keyword arguments, and returns the actor to run. The originals stay owned by
    whoever opened them (the tree builder); the supervisor closes only the clones it made.
    """

    name: str
    factory: Callable[..., Actor]
    channels: Mapping[str, Cloneable] = field(default_factory=dict)
    restart: Restart = Restart.PERMANENT


@dataclass(frozen=True, slots=True)
class SupervisorEvent:
    """What the observer hook sees. ``kind`` is one of
    ``started``, ``crashed``, ``exited``, ``restarting``, ``stopped``, ``gave_up``."""

    kind: str
    supervisor: str
    child: str
    reason: str = ""
    restart_count: int = 0
    delay: float = 0.0
    time: float = 0.0


Observer = Callable[[SupervisorEvent], None]


class SupervisorGaveUp(Exception):
    """A restart storm: more restarts than allowed within the period. ``__cause__`` is the last
    child failure."""

    def __init__(self, supervisor: str, child: str, restarts: int, period: float) -> None:
        super().__init__(
            f"supervisor {supervisor!r} gave up: {restarts} restarts within {period:g}s "
            f"(last failure in {child!r})"
        )
        self.supervisor = supervisor
        self.child = child
        self.restarts = restarts


@dataclass(frozen=True, slots=True)
class ChildStatistics:
    name: str
    state: str
    restarts: int


@dataclass(frozen=True, slots=True)
class SupervisorStatistics:
    name: str
    children: tuple[ChildStatistics, ...]
    restarts_in_window: int


def _describe(exc: BaseException | None) -> str:
    if exc is None:
        return "normal exit"
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


class _StatusProxy:
    """Passes ``started()`` through once and remembers whether it happened."""

    def __init__(self, inner: trio.TaskStatus[Any]) -> None:
        self._inner = inner
        self.called = False

    def started(self, value: Any = None) -> None:
        if not self.called:
            self.called = True
            self._inner.started(value)


_STOPPED = object()  # a report meaning "we cancelled it", not a crash


@dataclass(eq=False)
class _Incarnation:
    spec: ChildSpec
    generation: int
    scope: trio.CancelScope
    started_at: float
    done: trio.Event = field(default_factory=trio.Event)
    actor: Actor | None = None


class Supervisor:
    """Runs children and restarts them by ``strategy``; see the module docstring."""

    def __init__(
        self,
        name: str,
        children: Sequence[ChildSpec],
        *,
        strategy: RestartStrategy = RestartStrategy.ONE_FOR_ONE,
        max_restarts: int = 3,
        period: float = 5.0,
        backoff: Backoff | None = None,
        observer: Observer | None = None,
        on_give_up: Callable[[SupervisorGaveUp], None] | None = None,
        shutdown_grace: float = 5.0,
        seed: int | None = None,
    ) -> None:
        names = [spec.name for spec in children]
        if len(set(names)) != len(names):
            raise ValueError(f"duplicate child names in supervisor {name!r}: {names}")
        if max_restarts < 0 or period <= 0:
            raise ValueError("max_restarts must be >= 0 and period > 0")
        self.name = name
        self.specs = tuple(children)
        self.strategy = strategy
        self.max_restarts = max_restarts
        self.period = period
        self.backoff = backoff or Backoff()
        self._observer = observer
        self._on_give_up = on_give_up
        self._shutdown_grace = shutdown_grace
        self._rng = random.Random(seed)
        self._order = {spec.name: i for i, spec in enumerate(self.specs)}
        self._running: dict[str, _Incarnation] = {}
        self._states: dict[str, str] = {spec.name: "not_started" for spec in self.specs}
        self._restarts: dict[str, int] = {spec.name: 0 for spec in self.specs}
        self._failures: dict[str, int] = {}
        self._restart_times: deque[float] = deque()
        self._generation = 0
        self._nursery: trio.Nursery | None = None
        self._stopping = False
        self._report_send, self._report_recv = trio.open_memory_channel[
            tuple[str, int, object]
        ](math.inf)  # unbounded on purpose: at most one report per incarnation

    # ------------------------------------------------------------------ public surface

    async def run(self, *, task_status: trio.TaskStatus[Any] = trio.TASK_STATUS_IGNORED) -> None:
        gave_up: SupervisorGaveUp | None = None
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                for spec in self.specs:
                    await self._start(spec)
                task_status.started(self)
                try:
                    await self._supervise()
                except SupervisorGaveUp as exc:
                    gave_up = exc
                    nursery.cancel_scope.cancel(reason=str(exc))
        finally:
            self._nursery = None
        if gave_up is not None:
            # Raised outside the nursery so the parent sees one bare, typed exception.
            raise gave_up

    async def shutdown(self) -> None:
        """Stop children in reverse start order (nested supervisors recursively), then return.

        Each child gets ``shutdown_grace`` seconds; cancellation is the stop signal, so actors do
        their cleanup in ``finally`` blocks (shielded, with a deadline, where it must reach the
        exchange).
        """
        self._stopping = True
        for spec in reversed(self.specs):
            run = self._running.get(spec.name)
            if run is None:
                continue
            await self._stop(run, reason=f"{self.name}: shutdown")
        if self._nursery is not None:
            self._nursery.cancel_scope.cancel(reason=f"{self.name}: shutdown")

    def statistics(self) -> SupervisorStatistics:
        return SupervisorStatistics(
            name=self.name,
            children=tuple(
                ChildStatistics(spec.name, self._states[spec.name], self._restarts[spec.name])
                for spec in self.specs
            ),
            restarts_in_window=len(self._restart_times),
        )

    # ------------------------------------------------------------------ mechanics

    def _emit(self, kind: str, child: str, **kwargs: Any) -> None:
        event = SupervisorEvent(kind, self.name, child, time=trio.current_time(), **kwargs)
        level = logging.WARNING if kind in ("crashed", "gave_up", "restarting") else logging.INFO
        log.log(level, "%s/%s %s %s", self.name, child, kind, event.reason)
        if self._observer is not None:
            self._observer(event)

    async def _start(self, spec: ChildSpec) -> None:
        assert self._nursery is not None
        self._generation += 1
        run = _Incarnation(spec, self._generation, trio.CancelScope(), trio.current_time())
        self._running[spec.name] = run
        self._states[spec.name] = "starting"
        await self._nursery.start(self._child_task, run)

    async def _child_task(
        self, run: _Incarnation, *, task_status: trio.TaskStatus[Any] = trio.TASK_STATUS_IGNORED
    ) -> None:
        status = _StatusProxy(task_status)
        result: object = None
        try:
            with run.scope, contextlib.ExitStack() as stack:
                try:
                    clones = {}
                    for key, endpoint in run.spec.channels.items():
                        clone = endpoint.clone()
                        stack.callback(clone.close)  # sync close: safe in a cancelled task
                        clones[key] = clone
                    run.actor = run.spec.factory(**clones)
                    self._states[run.spec.name] = "running"
                    self._emit(
                        "started", run.spec.name, restart_count=self._restarts[run.spec.name]
                    )
                    await run.actor.run(task_status=status)
                except Exception as exc:  # Cancelled / KeyboardInterrupt are BaseException
                    result = exc
            if run.scope.cancelled_caught:
                result = _STOPPED
        finally:
            run.done.set()
            if not status.called:
                task_status.started()  # never leave nursery.start() hanging
        self._report_send.send_nowait((run.spec.name, run.generation, result))

    async def _supervise(self) -> None:
        async for name, generation, result in self._report_recv:
            run = self._running.get(name)
            if run is None or run.generation != generation or result is _STOPPED:
                continue  # stale report, or a stop we asked for
            del self._running[name]
            exc = result if isinstance(result, BaseException) else None
            self._states[name] = "crashed" if exc else "exited"
            self._emit("crashed" if exc else "exited", name, reason=_describe(exc))
            if self._stopping or not self._should_restart(run.spec, exc):
                continue
            self._count_restart(name, exc)
            now = trio.current_time()
            if now - run.started_at >= self.period:
                self._failures[name] = 0  # it had been stable: start the backoff over
            self._failures[name] = self._failures.get(name, 0) + 1
            delay = self.backoff.delay(self._failures[name], self._rng)
            await self._restart(name, delay, _describe(exc))

    @staticmethod
    def _should_restart(spec: ChildSpec, exc: BaseException | None) -> bool:
        if spec.restart is Restart.TEMPORARY:
            return False
        return not (spec.restart is Restart.TRANSIENT and exc is None)

    def _count_restart(self, name: str, exc: BaseException | None) -> None:
        now = trio.current_time()
        window = self._restart_times
        while window and now - window[0] > self.period:
            window.popleft()
        if len(window) >= self.max_restarts:
            error = SupervisorGaveUp(self.name, name, len(window) + 1, self.period)
            error.__cause__ = exc
            self._states[name] = "gave_up"
            self._emit("gave_up", name, reason=_describe(exc), restart_count=len(window) + 1)
            if self._on_give_up is not None:
                self._on_give_up(error)
            raise error
        window.append(now)

    def _affected(self, name: str) -> list[ChildSpec]:
        if self.strategy is RestartStrategy.ONE_FOR_ONE:
            return [spec for spec in self.specs if spec.name == name]
        if self.strategy is RestartStrategy.ONE_FOR_ALL:
            return list(self.specs)
        index = self._order[name]
        return [spec for spec in self.specs if self._order[spec.name] >= index]

    async def _restart(self, name: str, delay: float, reason: str) -> None:
        assert self._nursery is not None
        affected = self._affected(name)
        for spec in reversed(affected):
            run = self._running.get(spec.name)
            if run is not None:
                await self._stop(run, reason=f"{self.strategy.value}: restarting after {name!r}")
        for spec in affected:
            self._restarts[spec.name] += 1
            self._states[spec.name] = "restarting"
            self._emit(
                "restarting", spec.name, reason=reason,
                restart_count=self._restarts[spec.name], delay=delay,
            )
        if self.strategy is RestartStrategy.ONE_FOR_ONE:
            # A sibling's backoff must never delay handling another child's crash.
            self._nursery.start_soon(self._delayed_start, affected, delay)
        else:
            await self._delayed_start(affected, delay)

    async def _delayed_start(self, specs: list[ChildSpec], delay: float) -> None:
        await trio.sleep(delay)
        for spec in specs:
            if self._stopping:
                return
            await self._start(spec)

    async def _stop(self, run: _Incarnation, *, reason: str) -> None:
        name = run.spec.name
        stopper = getattr(run.actor, "shutdown", None)
        if callable(stopper):
            with trio.move_on_after(self._shutdown_grace):
                await stopper()
        run.scope.cancel(reason=reason)
        await run.done.wait()
        if self._running.get(name) is run:
            del self._running[name]
        self._states[name] = "stopped"
        self._emit("stopped", name, reason=reason)

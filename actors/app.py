"""Builds the actor tree of DESIGN.md from settings and runs it.

::

    root  (rest_for_one)
    ├── recorder         persistence writer
    ├── metrics          /metrics and /healthz
    ├── risk             limits, exposure, drawdown, the trading gate
    ├── executor         approved orders -> PaperBroker | KrakenBroker
    ├── strategies       (one_for_one) one actor per strategy
    └── feeds            (one_for_one) one actor per Kraken WS connection
"""

from __future__ import annotations

import logging
from typing import Any

import trio

from config import Settings

from ._breaker import CircuitBreaker
from ._supervisor import (
    Backoff,
    ChildSpec,
    RestartStrategy,
    Supervisor,
    SupervisorEvent,
    SupervisorGaveUp,
)

log = logging.getLogger(__name__)


class Application:
    """The running system: the root supervisor plus what the CLI needs to stop and report."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.exit_code = 0
        self.breaker = CircuitBreaker("trading", latching=True)
        self.actor_states: dict[str, str] = {}
        self._finished = trio.Event()
        self.root = Supervisor(
            "root",
            self._children(),
            strategy=RestartStrategy.REST_FOR_ONE,
            max_restarts=settings.max_restarts,
            period=settings.restart_period,
            backoff=Backoff(initial=0.5, maximum=30.0, jitter=0.1),
            observer=self.observe,
            on_give_up=self.on_give_up,
        )

    def _children(self) -> list[ChildSpec]:
        s = self.settings

        def group(name: str, children: list[ChildSpec]) -> ChildSpec:
            return ChildSpec(name, lambda: Supervisor(
                name, children, strategy=RestartStrategy.ONE_FOR_ONE,
                max_restarts=s.max_restarts, period=s.restart_period,
                backoff=Backoff(initial=0.5, maximum=30.0, jitter=0.1),
                observer=self.observe, on_give_up=self.on_give_up,
            ))

        return [group("strategies", []), group("feeds", [])]

    def observe(self, event: SupervisorEvent) -> None:
        self.actor_states[event.child] = event.kind

    def on_give_up(self, error: SupervisorGaveUp) -> None:
        self.breaker.trip(f"restart_storm:{error.supervisor}")

    async def run(self, *, task_status: trio.TaskStatus[Any] = trio.TASK_STATUS_IGNORED) -> None:
        try:
            await self.root.run(task_status=task_status)
        except SupervisorGaveUp:
            log.critical("the root supervisor gave up: stopping")
            self.exit_code = 1
        finally:
            self._finished.set()

    async def shutdown(self) -> None:
        await self.root.shutdown()

    async def wait_finished(self) -> None:
        await self._finished.wait()


def build_application(settings: Settings) -> Application:
    return Application(settings)

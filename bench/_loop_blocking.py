"""Where a trio process's time goes: per-task step times, long steps and GC pauses.

A trio task runs without interruption from one checkpoint to the next (one "step"); while it
runs, nothing else in the process does, so the latency of a message that arrives meanwhile
includes the rest of that step. :class:`StepTimer` is a ``trio.abc.Instrument`` that times every
step and attributes it to the task's name, and times the garbage collector's pauses (which
happen inside some step). It answers "which code blocks the loop, how often, and how long".

Cost: two ``perf_counter`` calls and a dict update per step (a few microseconds), so the
latency benchmark only installs it on request (``--where``).
"""

from __future__ import annotations

import gc
import time
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

import trio


@dataclass
class _TaskStats:
    steps: int = 0
    total: float = 0.0
    max: float = 0.0
    long: int = 0  # steps longer than the threshold


class StepTimer(trio.abc.Instrument):
    """Times task steps and GC pauses between :meth:`start` and :meth:`stop`.

    Args:
        long_step: a step at least this long (seconds) is counted as "long".
    """

    def __init__(self, long_step: float = 0.0005) -> None:
        self.long_step = long_step
        self.tasks: defaultdict[str, _TaskStats] = defaultdict(_TaskStats)
        self.gc_pauses: list[tuple[int, float]] = []  # (generation, seconds)
        self.idle = 0.0  # seconds spent waiting for I/O or timers
        self.elapsed = 0.0
        self._on = False
        self._began = 0.0
        self._step_start = 0.0
        self._io_start = 0.0
        self._gc_start = 0.0

    def start(self) -> None:
        self._on = True
        self._began = time.perf_counter()
        gc.callbacks.append(self._gc)

    def stop(self) -> None:
        self._on = False
        self.elapsed += time.perf_counter() - self._began
        gc.callbacks.remove(self._gc)

    def _gc(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._gc_start = time.perf_counter()
        elif self._gc_start:
            self.gc_pauses.append((int(info["generation"]), time.perf_counter() - self._gc_start))

    def before_task_step(self, task: trio.lowlevel.Task) -> None:
        self._step_start = time.perf_counter()

    def after_task_step(self, task: trio.lowlevel.Task) -> None:
        if not self._on:
            return
        took = time.perf_counter() - self._step_start
        stats = self.tasks[task.name]
        stats.steps += 1
        stats.total += took
        if took > stats.max:
            stats.max = took
        if took >= self.long_step:
            stats.long += 1

    def before_io_wait(self, timeout: float) -> None:
        self._io_start = time.perf_counter()

    def after_io_wait(self, timeout: float) -> None:
        if self._on:
            self.idle += time.perf_counter() - self._io_start

    def report(self, top: int = 12) -> str:
        """A table of the busiest tasks, the GC pauses and the idle share."""
        secs = self.elapsed or 1.0
        lines = [f"{'task':<58} {'steps/s':>8} {'us/step':>8} {'busy':>6} {'max ms':>7} "
                 f"{'>=' + format(self.long_step * 1e3, 'g') + 'ms':>7}"]
        ranked = sorted(self.tasks.items(), key=lambda kv: kv[1].total, reverse=True)
        for name, st in ranked[:top]:
            lines.append(f"{name[-58:]:<58} {st.steps / secs:8.0f} "
                         f"{st.total / st.steps * 1e6:8.1f} {st.total / secs:6.1%} "
                         f"{st.max * 1e3:7.2f} {st.long:7d}")
        busy = sum(st.total for st in self.tasks.values())
        lines.append(f"all tasks busy {busy / secs:.1%} of the time; waiting for I/O/timers "
                     f"{self.idle / secs:.1%}")
        if self.gc_pauses:
            by_gen: defaultdict[int, list[float]] = defaultdict(list)
            for gen, took in self.gc_pauses:
                by_gen[gen].append(took)
            lines.append("GC pauses: " + "; ".join(
                f"gen{g} x{len(v)} max {max(v) * 1e3:.2f} ms total {sum(v) * 1e3:.1f} ms"
                for g, v in sorted(by_gen.items())))
        return "\n".join(lines)

"""A small terminal progress bar: fraction done, rate (events/s) and ETA, on one stderr line.

Used by parameter sweeps (``backtest._sweep``) and ``data download`` (``backtest.download``).
It draws only when asked (``enabled=True``) or, by default, when the stream is a TTY, so logs,
pipes and CI output never fill up with carriage returns. Redraws are throttled to ``min_interval``
seconds; the final line is always drawn by :meth:`Progress.close`.

The clock is injectable (``time.monotonic`` by default): the bar is user-interface code at the
edge, never trading logic, and tests pass a fake clock to check the rate and ETA exactly.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import TextIO

__all__ = ["Progress", "format_duration"]


def format_duration(seconds: float) -> str:
    """``3725.2`` -> ``"1:02:05"``; under an hour ``"2:05"``."""
    s = max(0, int(seconds + 0.5))
    h, rem = divmod(s, 3600)
    m, sec = divmod(rem, 60)
    return f"{h}:{m:02d}:{sec:02d}" if h else f"{m}:{sec:02d}"


class Progress:
    """A progress bar over ``total`` units of work.

    Args:
        total: the amount of work (points of a grid, seconds of history ...); 0 or less draws
            no bar, only the count and rate.
        label: a short prefix (``"sweep"``, ``"BTC/USD"``).
        unit: what the rate counts (``"ev"`` gives ``ev/s``).
        stream: where to draw (stderr by default).
        enabled: force drawing on (True) or off (False); None draws only on a TTY.
        clock: monotonic seconds.
        min_interval: seconds between redraws.
        width: characters of the bar itself.
    """

    def __init__(self, total: float, *, label: str = "", unit: str = "ev",
                 stream: TextIO | None = None, enabled: bool | None = None,
                 clock: Callable[[], float] = time.monotonic, min_interval: float = 0.2,
                 width: int = 28) -> None:
        self.total = float(total)
        self.label = label
        self.unit = unit
        self._stream = sys.stderr if stream is None else stream
        if enabled is None:
            isatty = getattr(self._stream, "isatty", None)
            enabled = bool(isatty()) if isatty is not None else False
        self.enabled = enabled
        self._clock = clock
        self._min_interval = min_interval
        self._width = width
        self._start = clock()
        self._last_draw = float("-inf")
        self.done = 0.0
        self.events = 0
        self._closed = False

    def update(self, done: float | None = None, *, advance: float = 0.0, events: int = 0,
               note: str = "") -> None:
        """Record progress: ``done`` (absolute) or ``advance`` (relative), plus ``events``."""
        self.done = float(done) if done is not None else self.done + advance
        self.events += events
        if self.enabled and self._clock() - self._last_draw >= self._min_interval:
            self._draw(note)

    def rate(self) -> float:
        """Events per second since the start (0 before any time has passed)."""
        elapsed = self._clock() - self._start
        return self.events / elapsed if elapsed > 0 else 0.0

    def eta(self) -> float | None:
        """Seconds left at the average pace so far; None when it cannot be told yet."""
        if self.total <= 0 or self.done <= 0:
            return None
        elapsed = self._clock() - self._start
        left = max(0.0, self.total - self.done)
        return elapsed * left / self.done

    def line(self, note: str = "") -> str:
        """The text of the bar as it would be drawn now."""
        parts = [self.label] if self.label else []
        if self.total > 0:
            frac = min(1.0, max(0.0, self.done / self.total))
            filled = int(frac * self._width)
            parts.append("[" + "#" * filled + "." * (self._width - filled) + "]")
            parts.append(f"{100 * frac:5.1f}%")
        parts.append(f"{self.events:,} {self.unit}")
        parts.append(f"{self.rate():,.0f} {self.unit}/s")
        eta = self.eta()
        parts.append("ETA " + (format_duration(eta) if eta is not None else "-"))
        if note:
            parts.append(note)
        return " ".join(parts)

    def _draw(self, note: str) -> None:
        self._last_draw = self._clock()
        self._stream.write("\r" + self.line(note) + "\x1b[K")
        self._stream.flush()

    def close(self, note: str = "") -> None:
        """Draw the final state and end the line (idempotent)."""
        if self._closed:
            return
        self._closed = True
        if self.enabled:
            self._draw(note)
            self._stream.write("\n")
            self._stream.flush()

"""Strictly increasing nonces for Kraken private REST calls (PROTOCOL.md §2).

Kraken rejects a nonce that is not greater than the last one it accepted for the key
(``EAPI:Invalid nonce``), and repeated rejections can lock the key out. So the generator must be
monotonic across concurrent callers *and* across a process restart.

The choice, as Kraken's own CLI does it [K-cli]: ``nonce = max(last + 1, time_ns())``.

* Nanoseconds since the epoch: Kraken recommends high resolution for bursts, the value fits an
  unsigned 64-bit integer until 2554, and it is larger than any millisecond nonce the key may
  have used before (Kraken only requires each nonce to exceed the previous one).
* ``last + 1`` makes concurrent callers and a clock that has not ticked (or stepped back) safe
  inside one process. ``next()`` is synchronous and does not yield, so under trio's single
  thread two tasks can never observe the same ``last`` (no lock needed).
* Across a restart the wall clock alone would normally do, because a restart takes longer than
  the nanoseconds ``last + 1`` can run ahead of the clock. It does not survive the clock stepping
  back (NTP correction, VM migration), so an optional *high-water file* persists a reservation:
  before handing out a nonce above the persisted mark we write ``nonce + reserve`` and start the
  next process at ``max(mark, time_ns())``. That costs at most one small atomic write per
  ``reserve`` nanoseconds of consumption (one per second by default), never one per call.

The wall clock is used for nonce *values* only; no timing logic reads it.

Not covered: two processes sharing one key need one shared generator (or separate keys).
"""

from __future__ import annotations

import os
import pathlib
import tempfile
import time
from collections.abc import Callable

__all__ = ["NonceGenerator"]

_U64_MAX = 2**64 - 1


class NonceGenerator:
    """Hands out strictly increasing integer nonces.

    Args:
        state_path: optional high-water file; created if missing.
        clock_ns: wall-clock source in nanoseconds (injectable for tests).
        reserve_ns: how far ahead of the issued nonce the high-water mark is written.
    """

    def __init__(
        self,
        state_path: str | os.PathLike[str] | None = None,
        *,
        clock_ns: Callable[[], int] = time.time_ns,
        reserve_ns: int = 1_000_000_000,
    ) -> None:
        if reserve_ns < 1:
            raise ValueError("reserve_ns must be positive")
        self._clock_ns = clock_ns
        self._reserve = reserve_ns
        self._path = pathlib.Path(state_path) if state_path is not None else None
        self._last = 0
        self._mark = 0
        if self._path is not None:
            self._mark = self._read_mark(self._path)
            # Everything up to the persisted mark may have been issued by a previous process.
            self._last = self._mark

    @property
    def last(self) -> int:
        """The last nonce handed out (0 before the first)."""
        return self._last

    def next(self) -> int:
        """Return a nonce greater than every nonce this generator (or its predecessor) issued.

        Synchronous and non-yielding, hence atomic with respect to other trio tasks.

        Raises:
            OSError: the high-water file could not be written (the nonce is not issued).
        """
        candidate = max(self._last + 1, self._clock_ns())
        if candidate > _U64_MAX:
            raise OverflowError("nonce exceeds unsigned 64-bit range")
        if self._path is not None and candidate > self._mark:
            mark = candidate + self._reserve
            self._write_mark(self._path, mark)
            self._mark = mark
        self._last = candidate
        return candidate

    @staticmethod
    def _read_mark(path: pathlib.Path) -> int:
        try:
            text = path.read_text(encoding="ascii").strip()
        except FileNotFoundError:
            return 0
        try:
            return int(text)
        except ValueError:
            raise ValueError(f"nonce high-water file {path} is corrupt") from None

    @staticmethod
    def _write_mark(path: pathlib.Path, mark: int) -> None:
        # Write-then-rename so a crash mid-write leaves the old (smaller, still valid) mark.
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
        try:
            with os.fdopen(fd, "w", encoding="ascii") as fh:
                fh.write(f"{mark}\n")
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, path)
        except BaseException:
            try:
                os.unlink(tmp)
            except OSError:
                pass
            raise

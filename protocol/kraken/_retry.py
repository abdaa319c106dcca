"""Retry policy for Kraken REST calls (PROTOCOL.md §4).

Retried, with delays 2, 4, 8, 16, 32 s (at most five retries):

* transport failures: timeouts, resets, HTTP 5xx (:class:`TransportError`);
* ``EService:Unavailable`` and ``EService:Busy``;
* ``EAPI:Invalid nonce``, with a fresh nonce (every attempt takes a new one) and by default only
  once: PROTOCOL.md §4 says repeated invalid nonces lead to a temporary ban, and a second one in
  a row means something other than a race is wrong.

Never retried: permission/key/signature errors, invalid arguments, insufficient funds, order
rejections, and rate limiting (waiting is the limiter's job; a blind retry would dig deeper),
``EService:Market in cancel_only mode`` (wait for a status change) and ``EService:Deadline
elapsed`` (reconcile first).

Order submission is not idempotent, so AddOrder does not use :func:`retry_call`; the client
reconciles by ``cl_ord_id`` before any resend (see ``_rest.py``). :func:`is_ambiguous` says when
an order may or may not exist.

Why not ``stamina``: it is trio-aware, but its backoff adds jitter and caps by total time, and
we want the exact documented schedule plus a per-kind cap (invalid nonce) and a hook for
AddOrder's reconciliation step; the loop below is shorter than that configuration.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

import trio

from ._errors import InvalidNonce, KrakenError, ServiceUnavailable, TransportError

__all__ = ["RetryPolicy", "is_ambiguous", "is_retryable", "retry_call"]

T = TypeVar("T")

_RETRYABLE_SERVICE = ("EService:Unavailable", "EService:Busy")
_AMBIGUOUS_STRINGS = (*_RETRYABLE_SERVICE, "EService:Deadline elapsed", "EGeneral:Internal error")


@dataclass(frozen=True, slots=True, kw_only=True)
class RetryPolicy:
    """Delays between attempts; ``len(delays)`` is the maximum number of retries.

    Args:
        delays: seconds to sleep before retry 1, 2, ...
        max_nonce_retries: cap on retries caused by ``EAPI:Invalid nonce``.
    """

    delays: tuple[float, ...] = (2.0, 4.0, 8.0, 16.0, 32.0)
    max_nonce_retries: int = 1

    @classmethod
    def exponential(
        cls, *, initial: float = 2.0, factor: float = 2.0, retries: int = 5
    ) -> RetryPolicy:
        """``initial * factor**i`` for ``i`` in ``range(retries)``."""
        return cls(delays=tuple(initial * factor**i for i in range(retries)))

    @classmethod
    def never(cls) -> RetryPolicy:
        return cls(delays=())

    @property
    def max_retries(self) -> int:
        return len(self.delays)


def _has(exc: KrakenError, needles: tuple[str, ...]) -> bool:
    return any(needle in err for err in exc.errors for needle in needles)


def is_retryable(exc: BaseException) -> bool:
    """Whether a failed (non-order) call may simply be sent again after a backoff."""
    if isinstance(exc, TransportError | InvalidNonce):
        return True
    if isinstance(exc, ServiceUnavailable):
        return _has(exc, _RETRYABLE_SERVICE)
    return False


def is_ambiguous(exc: BaseException) -> bool:
    """Whether an order submission that failed this way may nevertheless have been executed."""
    if isinstance(exc, TransportError):
        return True
    if isinstance(exc, KrakenError) and not isinstance(exc, InvalidNonce):
        return _has(exc, _AMBIGUOUS_STRINGS)
    return False


async def retry_call(
    fn: Callable[[], Awaitable[T]],
    *,
    policy: RetryPolicy,
    on_retry: Callable[[int, float, KrakenError], None] | None = None,
) -> T:
    """Call ``fn`` until it succeeds, fails for good, or the policy runs out.

    Args:
        fn: one attempt; must build a fresh request (fresh nonce) on every call.
        policy: the delays.
        on_retry: called with ``(retry_number, delay, error)`` before each sleep.

    Returns:
        ``fn``'s result.

    Raises:
        KrakenError: the last error, when it is not retryable or retries are exhausted.

    Cancellation interrupts the sleep or the attempt and propagates unchanged.
    """
    nonce_retries = 0
    retry = 0
    while True:
        try:
            return await fn()
        except KrakenError as exc:
            if not is_retryable(exc) or retry >= policy.max_retries:
                raise
            if isinstance(exc, InvalidNonce):
                if nonce_retries >= policy.max_nonce_retries:
                    raise
                nonce_retries += 1
            delay = policy.delays[retry]
            retry += 1
            if on_retry is not None:
                on_retry(retry, delay, exc)
            await trio.sleep(delay)

"""Typed errors of the Kraken protocol layer, translated at the boundary.

::

    KrakenError                      base; .endpoint and .errors (Kraken's error strings)
    ├── TransportError               the request may not have reached Kraken (timeout, reset, 5xx)
    ├── ServiceUnavailable           EService:Unavailable / Busy / Market in cancel_only mode
    ├── RateLimited                  EAPI/EOrder:Rate limit exceeded, EGeneral:Too many requests
    ├── InvalidNonce                 EAPI:Invalid nonce
    ├── PermissionDenied             EGeneral:Permission denied, EAPI:Invalid key/signature
    ├── InvalidArguments             EGeneral:Invalid arguments..., EQuery:Unknown asset pair
    ├── InsufficientFunds            EOrder:Insufficient funds
    ├── OrderRejected                any other EOrder:* on AddOrder / add_order
    └── DecodeError                  a frame or response we cannot understand

Secrets never appear in these messages: the client builds them from the endpoint name and
Kraken's error strings only.
"""

from __future__ import annotations

from collections.abc import Sequence


class KrakenError(Exception):
    """Base of every Kraken protocol error."""

    retryable: bool = False

    def __init__(self, message: str, *, endpoint: str = "", errors: Sequence[str] = ()) -> None:
        super().__init__(message)
        self.endpoint = endpoint
        self.errors: tuple[str, ...] = tuple(errors)

    def __str__(self) -> str:
        base = super().__str__()
        parts = [base]
        if self.endpoint:
            parts.append(f"endpoint={self.endpoint}")
        if self.errors:
            parts.append(f"errors={list(self.errors)}")
        return " ".join(parts)


class TransportError(KrakenError):
    retryable = True


class ServiceUnavailable(KrakenError):
    retryable = True


class RateLimited(KrakenError):
    retryable = False  # waiting is the limiter's job; a blind retry would make it worse


class InvalidNonce(KrakenError):
    retryable = True  # retried once with a fresh nonce


class PermissionDenied(KrakenError):
    pass


class InvalidArguments(KrakenError):
    pass


class InsufficientFunds(KrakenError):
    pass


class OrderRejected(KrakenError):
    pass


class DecodeError(KrakenError):
    """A frame or response that does not parse. ``kind`` groups them for counting and logging."""

    def __init__(self, message: str, *, kind: str = "malformed", endpoint: str = "") -> None:
        super().__init__(message, endpoint=endpoint)
        self.kind = kind


def error_from_strings(endpoint: str, errors: Sequence[str]) -> KrakenError:
    """Map Kraken's ``error`` array to the most specific typed error."""
    joined = " ".join(errors)
    mapping: tuple[tuple[tuple[str, ...], type[KrakenError]], ...] = (
        (("EAPI:Invalid nonce",), InvalidNonce),
        (("Rate limit exceeded", "Too many requests", "EAPI:Rate limit", "EService: Throttled",
          "EService:Throttled", "EGeneral:Temporary lockout"), RateLimited),
        (("EService:Unavailable", "EService:Busy", "EService:Market in cancel_only",
          "EService:Deadline elapsed", "EGeneral:Internal error"), ServiceUnavailable),
        (("EGeneral:Permission denied", "EAPI:Invalid key", "EAPI:Invalid signature",
          "EAPI:Bad request", "EAuth:"), PermissionDenied),
        (("EOrder:Insufficient funds", "EFunding:Insufficient funds"), InsufficientFunds),
        (("EGeneral:Invalid arguments", "EQuery:Unknown asset pair", "EQuery:Invalid"),
         InvalidArguments),
        (("EOrder:",), OrderRejected),
    )
    for needles, cls in mapping:
        if any(needle in joined for needle in needles):
            return cls(f"Kraken {endpoint} failed", endpoint=endpoint, errors=errors)
    return KrakenError(f"Kraken {endpoint} failed", endpoint=endpoint, errors=errors)

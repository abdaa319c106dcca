"""Kraken REST request signing (PROTOCOL.md §2) and the credentials holder.

``API-Sign = base64(HMAC-SHA512(base64decode(secret), uri_path + SHA256(nonce + body)))`` where the
SHA-256 is the raw 32-byte digest and ``body`` is the exact byte string that goes on the wire
(form-encoded or JSON). The documented vector ``kraken-docs-spot-rest-auth-addorder`` in
``shared/kraken/vectors.json`` reproduces (tests/test_kraken_rest_signing.py).

The secret is held only as decoded bytes inside :class:`KrakenCredentials`; ``repr``/``str``
mask both the key and the secret, and no error raised here ever quotes the secret.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from collections.abc import Mapping

__all__ = ["KrakenCredentials", "sign_request"]

_MASK = "***"


def _mask_key(api_key: str) -> str:
    # Four characters are enough for a person to tell two keys apart in a log line and far too
    # few to be useful to anyone else; the secret is never shown at all.
    return f"{api_key[:4]}{_MASK}" if len(api_key) > 8 else _MASK


def _signature(secret: bytes, uri_path: str, nonce: int | str, body: bytes) -> str:
    digest = hashlib.sha256(str(nonce).encode("ascii") + body).digest()
    mac = hmac.new(secret, uri_path.encode("ascii") + digest, hashlib.sha512)
    return base64.b64encode(mac.digest()).decode("ascii")


def _decode_secret(api_secret: str) -> bytes:
    try:
        return base64.b64decode(api_secret, validate=True)
    except (binascii.Error, ValueError):
        # ``from None``: the binascii message could quote part of the input.
        raise ValueError("Kraken API secret is not valid base64") from None


def sign_request(api_secret: str, uri_path: str, nonce: int | str, body: bytes | str) -> str:
    """Compute Kraken's ``API-Sign`` header value.

    Args:
        api_secret: the base64 private key as Kraken shows it.
        uri_path: the path starting at ``/0/private`` (e.g. ``/0/private/AddOrder``).
        nonce: the nonce, exactly as it appears in the body.
        body: the exact body bytes that will be sent (never re-serialize after signing).

    Returns:
        The standard-base64 signature.

    Raises:
        ValueError: the secret is not base64 (the message does not quote it).
    """
    raw = body.encode("utf-8") if isinstance(body, str) else body
    return _signature(_decode_secret(api_secret), uri_path, nonce, raw)


class KrakenCredentials:
    """An API key and its secret, with the secret kept out of every printable form.

    The secret is decoded once and kept as bytes in a private slot; ``repr``, ``str`` and
    ``format`` show a masked key and ``***`` for the secret. Instances are not picklable, so the
    secret cannot leak into a pickle-based log or queue by accident.

    Args:
        api_key: the public key (``API-Key`` header).
        api_secret: the base64 private key.

    Raises:
        ValueError: empty key or secret, or a secret that is not base64. Messages never quote
            either value.
    """

    __slots__ = ("_api_key", "_secret")

    def __init__(self, api_key: str, api_secret: str) -> None:
        if not api_key or not api_secret:
            raise ValueError("Kraken API key and secret must both be non-empty")
        self._api_key = api_key
        self._secret = _decode_secret(api_secret)

    @classmethod
    def from_env(
        cls,
        environ: Mapping[str, str],
        *,
        key_var: str = "KRAKEN_API_KEY",
        secret_var: str = "KRAKEN_API_SECRET",
    ) -> KrakenCredentials | None:
        """Build credentials from an environment mapping, or ``None`` when either is missing."""
        key, secret = environ.get(key_var, ""), environ.get(secret_var, "")
        if not key or not secret:
            return None
        return cls(key, secret)

    @property
    def api_key(self) -> str:
        """The public key, sent as the ``API-Key`` header."""
        return self._api_key

    @property
    def masked_key(self) -> str:
        """A printable form of the key for logs."""
        return _mask_key(self._api_key)

    def sign(self, uri_path: str, nonce: int | str, body: bytes) -> str:
        """Sign one request; see :func:`sign_request`."""
        return _signature(self._secret, uri_path, nonce, body)

    def __repr__(self) -> str:
        return f"KrakenCredentials(api_key={self.masked_key!r}, api_secret={_MASK!r})"

    __str__ = __repr__

    def __format__(self, spec: str) -> str:
        return repr(self)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, KrakenCredentials):
            return NotImplemented
        return self._api_key == other._api_key and hmac.compare_digest(self._secret, other._secret)

    def __hash__(self) -> int:
        return hash(self._api_key)

    def __reduce__(self) -> str | tuple[object, ...]:
        raise TypeError("KrakenCredentials cannot be pickled")

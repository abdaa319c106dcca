"""Kraken codec primitives: Decimal-exact JSON, typed field readers, RFC3339, exact ``dumps``.

Shared by the v2 codec (``_codec``), its private channels (``_codec_private``) and the v1
decoder (``_codec_v1``). Every reader raises ``DecodeError`` with a short ``kind`` label
(``invalid_json``, ``missing_field``, ``bad_field``, ...) rather than a bare
``KeyError``/``TypeError``; see ``_codec`` for the rules.

Speed: ``loads`` calls ``raw_decode`` rather than ``decode`` (one regex less per frame) and
Kraken's fixed timestamp shape is parsed from a per-second cache (see ``parse_rfc3339_ns``).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from decimal import Decimal
from enum import Enum
from typing import Any, NoReturn, TypeVar

from protocol.kraken._errors import DecodeError
from protocol.messages import Side

_T = TypeVar("_T")

def _fail(message: str, kind: str = "bad_field") -> NoReturn:
    raise DecodeError(message, kind=kind)


def _reject_constant(name: str) -> NoReturn:
    # json accepts NaN/Infinity by default and would hand us floats.
    raise ValueError(f"non-finite JSON constant {name}")


_JSON = json.JSONDecoder(parse_float=Decimal, parse_constant=_reject_constant)


_raw_decode = _JSON.raw_decode


def loads(raw: str | bytes | bytearray) -> Any:
    """Parse one JSON frame with Decimal floats and exact ints; ``DecodeError`` on junk."""
    try:
        if type(raw) is str:
            # ``decode`` = two whitespace regex matches around ``raw_decode``; Kraken sends no
            # padding, so try without and fall back to ``decode`` for its exact rules/errors.
            try:
                value, end = _raw_decode(raw)
                if end == len(raw):
                    return value
            except ValueError:
                pass
            return _JSON.decode(raw)
        text = raw.decode("utf-8") if isinstance(raw, bytes | bytearray) else raw
        if not isinstance(text, str):
            _fail(f"frame is {type(raw).__name__}, not text", "invalid_json")
        return _JSON.decode(text)
    except DecodeError:
        raise
    except (ValueError, RecursionError) as exc:  # JSONDecodeError/UnicodeDecodeError are ValueError
        raise DecodeError(f"invalid JSON frame: {exc}", kind="invalid_json") from exc


def to_decimal(value: object, name: str = "value") -> Decimal:
    """A finite Decimal from a JSON number (already Decimal/int) or a numeric string."""
    t = type(value)
    if t is Decimal:
        d: Decimal = value  # type: ignore[assignment]
    elif t is str or t is int:
        d = Decimal(value)  # type: ignore[arg-type]
    else:
        _fail(f"{name} is {t.__name__}, expected a decimal number")
    if not d.is_finite():
        _fail(f"{name} is not finite")
    return d


def _opt_dec(item: Mapping[str, Any], key: str) -> Decimal | None:
    value = item.get(key)
    return None if value is None else to_decimal(value, key)


def _str(item: Mapping[str, Any], key: str) -> str:
    value = item[key]
    if type(value) is not str:
        _fail(f"{key} is not a string")
    return value


def _opt_str(item: Mapping[str, Any], key: str) -> str | None:
    value = item.get(key)
    if value is not None and type(value) is not str:
        _fail(f"{key} is not a string")
    return value


def _int(value: object, name: str) -> int:
    if type(value) is not int:
        _fail(f"{name} is not an integer")
    return value


def _opt_int(item: Mapping[str, Any], key: str) -> int | None:
    value = item.get(key)
    return None if value is None else _int(value, key)


_RFC3339 = re.compile(
    r"(\d{4})-(\d\d)-(\d\d)[Tt ](\d\d):(\d\d):(\d\d)(?:\.(\d{1,9}))?(Z|z|[+-]\d\d:\d\d)\Z"
)
_HOUR_EPOCH: dict[str, int] = {}
# "YYYY-MM-DDTHH:MM:SS" (exact text, already validated by the full parser) -> epoch seconds
# (UTC, before any zone offset). Messages arrive in time order, so a second's prefix repeats
# for every message of that second and the fast path skips the regex and the datetime maths.
_SECOND_EPOCH: dict[str, int] = {}
_FRAC_SCALE = (0, 10**8, 10**7, 10**6, 10**5, 10**4, 10**3, 10**2, 10, 1)  # by digit count
_CACHE_MAX = 4096  # entries per cache; cleared when full (a pure memo, so always safe)


def parse_rfc3339_ns(text: object) -> int:
    """RFC3339 (``2023-10-04T16:26:30.524394914Z``) to integer UTC nanoseconds, exactly.

    Kraken's shape (``Z`` zone, 1-9 fractional digits) of an already seen second takes a fast
    path; anything else goes through the full parser, which also fills that cache.
    """
    if type(text) is str and len(text) > 21 and text[-1] == "Z" and text[19] == ".":
        second = _SECOND_EPOCH.get(text[:19])
        if second is not None:
            frac = text[20:-1]
            # isdigit alone accepts non-ASCII digits; those (valid for the regex too) take the
            # full parser, so the fast path accepts a subset of the same texts, same results.
            if len(frac) <= 9 and frac.isdigit() and frac.isascii():
                return second * 1_000_000_000 + int(frac) * _FRAC_SCALE[len(frac)]
    return _parse_rfc3339_full(text)


def _parse_rfc3339_full(text: object) -> int:
    if type(text) is not str or (m := _RFC3339.match(text)) is None:
        _fail(f"bad RFC3339 timestamp {text!r:.40}")
    # Messages arrive in time order, so the date-and-hour prefix repeats: cache its epoch.
    prefix = text[:13]
    hour = _HOUR_EPOCH.get(prefix)
    if hour is None:
        try:
            dt = datetime(int(m[1]), int(m[2]), int(m[3]), int(m[4]), tzinfo=UTC)
        except ValueError as exc:
            raise DecodeError(f"bad RFC3339 timestamp {text!r:.40}", kind="bad_field") from exc
        hour = int(dt.timestamp())
        if len(_HOUR_EPOCH) >= _CACHE_MAX:
            _HOUR_EPOCH.clear()
        _HOUR_EPOCH[prefix] = hour
    minute, second = int(m[5]), int(m[6])
    if minute > 59 or second > 60:
        _fail(f"bad RFC3339 timestamp {text!r:.40}")
    if len(_SECOND_EPOCH) >= _CACHE_MAX:
        _SECOND_EPOCH.clear()
    _SECOND_EPOCH[text[:19]] = hour + minute * 60 + second
    offset = 0
    zone = m[8]
    if zone not in ("Z", "z"):
        offset = (int(zone[1:3]) * 60 + int(zone[4:6])) * 60
        if zone[0] == "-":
            offset = -offset
    frac = m[7]
    frac_ns = int(frac.ljust(9, "0")) if frac else 0
    return (hour + minute * 60 + second - offset) * 1_000_000_000 + frac_ns


def _opt_ts(item: Mapping[str, Any], key: str = "timestamp") -> int:
    value = item.get(key)
    return 0 if value is None else parse_rfc3339_ns(value)


def _side(value: object) -> Side:
    if value == "buy":
        return Side.BUY
    if value == "sell":
        return Side.SELL
    _fail(f"bad side {value!r:.20}")


def _snapshot_flag(msg: Mapping[str, Any]) -> bool:
    kind = msg.get("type")
    if kind == "snapshot":
        return True
    if kind == "update":
        return False
    _fail(f"bad message type {kind!r:.20}")


def _list(value: object, name: str) -> list[Any]:
    if type(value) is not list:
        _fail(f"{name} is not an array")
    return value


def _data_items(msg: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    items = _list(msg["data"], "data")
    for item in items:
        if type(item) is not dict:
            _fail("data entry is not an object")
    return items


_STRAY = (TypeError, ValueError, ArithmeticError, AttributeError, IndexError)


def _translate(exc: Exception, what: str) -> DecodeError:
    """The ``DecodeError`` for a stray lookup/type error raised while decoding ``what``."""
    if isinstance(exc, KeyError):
        return DecodeError(f"{what}: missing field {exc}", kind="missing_field")
    return DecodeError(f"{what}: {type(exc).__name__}", kind="bad_field")


def _guarded(fn: Callable[[], _T], what: str) -> _T:
    """Run a decoder and translate stray lookup/type errors into ``DecodeError``."""
    try:
        return fn()
    except DecodeError:
        raise
    except (KeyError, *_STRAY) as exc:
        raise _translate(exc, what) from exc


# --------------------------------------------------------------------------- encoding


def dumps(value: object) -> str:
    """Compact JSON text with ``Decimal`` written as an exact JSON number.

    The stdlib cannot write a Decimal as a number without passing it through float, and Kraken
    wants numbers (PROTOCOL.md §5.5 examples). Floats raise ``TypeError`` on purpose. Test
    servers can use this to send frames whose numbers keep every digit.
    """
    if value is None:
        return "null"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, Enum):
        return dumps(value.value)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, Decimal):
        if not value.is_finite():
            raise ValueError(f"cannot encode non-finite Decimal {value}")
        return format(value, "f")
    if isinstance(value, Mapping):
        return "{" + ",".join(f"{json.dumps(str(k))}:{dumps(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list | tuple):
        return "[" + ",".join(dumps(v) for v in value) + "]"
    raise TypeError(f"cannot encode {type(value).__name__} (floats are refused on purpose)")


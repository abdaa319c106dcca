"""Pair metadata from REST ``AssetPairs`` (PROTOCOL.md §8) and a name registry.

Kraken has three names for one pair, and the REST result maps are keyed by the first:

* the pair id (``XXBTZUSD``, newer pairs ``XBTUSDT``),
* the ``altname`` (``XBTUSD``), accepted by AddOrder,
* the ``wsname`` (``XBT/USD``, WebSocket v1 naming) whose v2 form is the symbol ``BTC/USD``
  (Kraken's v2 API says ``BTC`` and ``DOGE`` where v1 said ``XBT`` and ``XDG``).

:class:`PairRegistry` maps any of them (case-insensitively) to one
:class:`protocol.instruments.PairInfo` whose ``symbol`` is the v2 name used everywhere else in
the system. Dark-pool pairs (``*.d``) have no ``wsname`` and are skipped: they cannot be traded
over WebSocket v2.

Fees come from the first tier of the ``fees`` (taker) and ``fees_maker`` schedules, converted
from percent to a fraction; the account's real rate is ``TradeVolume``'s business.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from decimal import Decimal, InvalidOperation
from typing import Any

from ..instruments import PairInfo
from ._errors import DecodeError

__all__ = ["PairRegistry", "UnknownPair", "pair_info_from_asset_pair", "v2_asset"]

# WebSocket v1 / REST asset codes that WebSocket v2 spells differently.
_V2_ASSET = {"XBT": "BTC", "XDG": "DOGE"}
_HUNDRED = Decimal(100)


class UnknownPair(KeyError):
    """No pair with that name (id, altname, wsname or v2 symbol) is known."""


def v2_asset(code: str) -> str:
    """The WebSocket v2 spelling of a v1/REST asset code (``XBT`` → ``BTC``)."""
    return _V2_ASSET.get(code, code)


def _decimal(value: Any, field: str, pair_id: str) -> Decimal:
    try:
        # ``str`` first: a float from a plain ``json.loads`` must not carry binary noise.
        return Decimal(str(value))
    except (InvalidOperation, ValueError, TypeError):
        raise DecodeError(f"AssetPairs {pair_id}: bad {field}", endpoint="AssetPairs") from None


def _first_tier_fraction(schedule: Any, field: str, pair_id: str) -> Decimal | None:
    if not schedule:
        return None
    try:
        percent = schedule[0][1]
    except (IndexError, KeyError, TypeError):
        raise DecodeError(f"AssetPairs {pair_id}: bad {field}", endpoint="AssetPairs") from None
    return _decimal(percent, field, pair_id) / _HUNDRED


def pair_info_from_asset_pair(pair_id: str, entry: Mapping[str, Any]) -> PairInfo | None:
    """Build a :class:`PairInfo` from one ``AssetPairs`` result entry.

    Args:
        pair_id: the result key (``XXBTZUSD``).
        entry: its value.

    Returns:
        The pair, or ``None`` for pairs without a ``wsname`` (dark pools).

    Raises:
        DecodeError: a field is missing or malformed.
    """
    wsname = entry.get("wsname")
    if not wsname:
        return None
    try:
        base_v1, quote_v1 = str(wsname).split("/")
        altname = str(entry["altname"])
        price_decimals = int(entry["pair_decimals"])
        lot_decimals = int(entry["lot_decimals"])
    except (KeyError, ValueError, TypeError):
        raise DecodeError(f"AssetPairs {pair_id}: malformed entry", endpoint="AssetPairs") from None
    base, quote = v2_asset(base_v1), v2_asset(quote_v1)
    defaults = PairInfo(symbol="", base="", quote="")
    taker = _first_tier_fraction(entry.get("fees"), "fees", pair_id)
    maker = _first_tier_fraction(entry.get("fees_maker"), "fees_maker", pair_id)
    return PairInfo(
        symbol=f"{base}/{quote}",
        base=base,
        quote=quote,
        rest_name=pair_id,
        altname=altname,
        price_decimals=price_decimals,
        lot_decimals=lot_decimals,
        ordermin=_decimal(entry.get("ordermin", "0"), "ordermin", pair_id),
        costmin=_decimal(entry.get("costmin", "0"), "costmin", pair_id),
        fee_taker=taker if taker is not None else defaults.fee_taker,
        # Pairs without a maker schedule charge the taker rate for both sides.
        fee_maker=maker if maker is not None else (taker if taker is not None
                                                   else defaults.fee_maker),
    )


class PairRegistry:
    """Every known pair, found by any of its names.

    Args:
        pairs: the pairs; a later pair whose name collides with an earlier one's loses that
            name (first wins), so lookups stay deterministic.
    """

    __slots__ = ("_by_name", "_pairs")

    def __init__(self, pairs: Iterable[PairInfo]) -> None:
        self._pairs: dict[str, PairInfo] = {}
        self._by_name: dict[str, PairInfo] = {}
        for info in pairs:
            if info.symbol in self._pairs:
                continue
            self._pairs[info.symbol] = info
            v1 = "/".join(_v1_asset(part) for part in info.symbol.split("/"))
            for name in (info.symbol, info.rest_name, info.altname, v1):
                if name:
                    self._by_name.setdefault(name.upper(), info)

    @classmethod
    def from_asset_pairs(cls, result: Mapping[str, Mapping[str, Any]]) -> PairRegistry:
        """Build from the ``result`` object of ``GET /0/public/AssetPairs``."""
        infos = (pair_info_from_asset_pair(pid, entry) for pid, entry in result.items())
        return cls(info for info in infos if info is not None)

    def get(self, name: str) -> PairInfo:
        """Look a pair up by v2 symbol, v1 wsname, altname or pair id (case-insensitive).

        Raises:
            UnknownPair: no such pair.
        """
        try:
            return self._by_name[name.upper()]
        except KeyError:
            raise UnknownPair(name) from None

    def find(self, name: str) -> PairInfo | None:
        return self._by_name.get(name.upper())

    def symbol(self, name: str) -> str:
        """The WS v2 symbol (``BTC/USD``) for any name."""
        return self.get(name).symbol

    def rest_name(self, name: str) -> str:
        """Kraken's pair id (``XXBTZUSD``), the key of REST result maps."""
        return self.get(name).rest_name

    def altname(self, name: str) -> str:
        """The altname (``XBTUSD``)."""
        return self.get(name).altname

    def wsname_v1(self, name: str) -> str:
        """The WebSocket v1 name (``XBT/USD``)."""
        return "/".join(_v1_asset(part) for part in self.get(name).symbol.split("/"))

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name.upper() in self._by_name

    def __iter__(self) -> Iterator[PairInfo]:
        return iter(self._pairs.values())

    def __len__(self) -> int:
        return len(self._pairs)

    def __repr__(self) -> str:
        return f"PairRegistry({len(self)} pairs)"


def _v1_asset(code: str) -> str:
    for v1, v2 in _V2_ASSET.items():
        if code == v2:
            return v1
    return code

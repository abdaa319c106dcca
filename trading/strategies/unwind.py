"""Unwinding an arbitrage group whose legs did not all fill.

What is unwound: the *net* change in every currency other than the group's starting currency,
computed from the group's fills (buys add base and spend ``qty * price`` quote, sells the
reverse, every fee is subtracted in its own currency). Each such residue is converted straight
back into the starting currency with one reduce-only market signal on a pair that links the two
currencies: first a pair among the group's legs, then any pair in ``pairs``. For a triangle
USD -> BTC -> ETH -> USD whose last leg failed, that is "sell the ETH on ETH/USD"; if the second
leg failed, "sell the BTC on BTC/USD"; if legs went out together and an early one failed while a
later one filled, the negative residue is bought back.

What is not unwound:

* the starting currency itself: its net change (fees and price differences) is the realised
  gain or loss of the attempt, which the caller books through the ledger;
* a currency with no pair to the starting currency (the other quote of a direct arbitrage over
  a configured peg, e.g. USDT against USD: by the peg it is already worth the same);
* dust: with ``pairs`` given, quantities are rounded down to the lot and anything below
  ``ordermin`` is left where it is (Kraken would reject it).

The starting currency is what the first leg spends (quote for a buy, base for a sell) unless
``start_currency`` is given.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from decimal import Decimal

from protocol.instruments import PairInfo
from protocol.messages import Fill, OrderRequest, OrderType, Side, Signal

from ._base import split_symbol

__all__ = ["plan_unwind"]

_ZERO = Decimal(0)


def _residues(legs: Sequence[OrderRequest], fills: Sequence[Fill]) -> dict[str, Decimal]:
    ids = {leg.client_order_id for leg in legs}
    net: dict[str, Decimal] = {}
    for leg in legs:  # first-appearance order keeps the output deterministic
        for ccy in split_symbol(leg.symbol):
            net.setdefault(ccy, _ZERO)
    for fill in fills:
        if fill.client_order_id not in ids:
            continue
        base, quote = split_symbol(fill.symbol)
        notional = fill.qty * fill.price
        sign = fill.side.sign
        net[base] = net.get(base, _ZERO) + sign * fill.qty
        net[quote] = net.get(quote, _ZERO) - sign * notional
        net[fill.fee_currency] = net.get(fill.fee_currency, _ZERO) - fill.fee
    return net


def plan_unwind(
    legs: Sequence[OrderRequest],
    fills: Sequence[Fill],
    *,
    pairs: Mapping[str, PairInfo] | None = None,
    prices: Mapping[str, Decimal] | None = None,
    start_currency: str | None = None,
    ts_recv: float | None = None,
) -> list[Signal]:
    """Reduce-only market signals that flatten a broken group back to its starting currency.

    Args:
        legs: the group's approved orders, in cycle order.
        fills: fills seen so far (fills of other orders are ignored).
        pairs: pair metadata, for lot rounding, ``ordermin`` and extra linking pairs.
        prices: current prices by symbol; needed only to size a residue held in the *quote* of
            a ``START/X`` pair (the last fill or limit price on that symbol is the fallback).
        start_currency: override the inferred starting currency.
        ts_recv: stamped on the signals (default: the first leg's ``ts_recv``).

    Returns:
        One signal per unwound currency (see the module docstring for what is left alone),
        with the group's strategy name and a reason naming the group and the residue.
    """
    if not legs:
        return []
    first = legs[0]
    base0, quote0 = split_symbol(first.symbol)
    start = start_currency or (quote0 if first.side is Side.BUY else base0)
    stamp = first.ts_recv if ts_recv is None else ts_recv
    group = first.group_id or first.client_order_id
    net = _residues(legs, fills)

    candidates = list(dict.fromkeys(leg.symbol for leg in legs))
    if pairs is not None:
        candidates += [s for s in pairs if s not in candidates]
    last_price: dict[str, Decimal] = {}
    for leg in legs:
        if leg.limit_price is not None:
            last_price[leg.symbol] = leg.limit_price
    for fill in fills:
        last_price[fill.symbol] = fill.price
    if prices:
        last_price.update(prices)

    out: list[Signal] = []
    for ccy, residue in net.items():
        if ccy == start or residue == 0:
            continue
        symbol = next((s for s in candidates if set(split_symbol(s)) == {ccy, start}), None)
        if symbol is None:
            continue
        base, _ = split_symbol(symbol)
        price = last_price.get(symbol)
        if base == ccy:  # CCY/START: trade the residue itself as base
            side = Side.SELL if residue > 0 else Side.BUY
            qty = abs(residue)
        else:  # START/CCY: the residue is quote; convert it into base at the price
            if price is None or price <= 0:
                continue
            side = Side.BUY if residue > 0 else Side.SELL
            qty = abs(residue) / price
        pair = pairs.get(symbol) if pairs is not None else None
        if pair is not None:
            qty = pair.round_qty(qty)
            if qty <= 0 or qty < pair.ordermin:
                continue
        out.append(
            Signal(
                strategy=first.strategy,
                symbol=symbol,
                side=side,
                qty=qty,
                order_type=OrderType.MARKET,
                reason=f"unwind {group}: {ccy} residue {residue} back to {start}",
                ts_recv=stamp,
                reduce_only=True,
                reference_price=price,
            )
        )
    return out

"""Kraken WS v2 private channels: ``executions`` and ``balances`` frames and their decoders.

Same rules as the public channels (``_codec``): Decimal money, exact integers, RFC3339 to
integer nanoseconds, and a typed ``DecodeError`` for anything malformed. Kraken sends only the
fields that changed, so most fields are optional. These frames reach the session's consumer
through ``private_send`` (``KrakenWsSession.run``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from protocol.kraken._codec_base import (
    _data_items,
    _fail,
    _list,
    _opt_dec,
    _opt_int,
    _opt_str,
    _opt_ts,
    _side,
    _snapshot_flag,
    _str,
    to_decimal,
)
from protocol.messages import Liquidity, Side


@dataclass(frozen=True, slots=True, kw_only=True)
class FeeAmount:
    asset: str
    qty: Decimal


@dataclass(frozen=True, slots=True, kw_only=True)
class ExecutionReport:
    """One entry of the private ``executions`` channel.

    Kraken sends only the fields that changed (a ``new`` report carries a handful), so all but
    ``exec_type`` and ``order_id`` are optional. ``liquidity`` is set on trade reports.
    """

    exec_type: str
    order_id: str
    ts_recv: float
    ts_event_ns: int = 0
    is_snapshot: bool = False
    sequence: int | None = None
    order_status: str | None = None
    cl_ord_id: str | None = None
    order_userref: int | None = None
    symbol: str | None = None
    side: Side | None = None
    order_type: str | None = None
    order_qty: Decimal | None = None
    limit_price: Decimal | None = None
    exec_id: str | None = None
    trade_id: int | None = None
    last_qty: Decimal | None = None
    last_price: Decimal | None = None
    liquidity: Liquidity | None = None
    cost: Decimal | None = None
    cum_qty: Decimal | None = None
    cum_cost: Decimal | None = None
    avg_price: Decimal | None = None
    fees: tuple[FeeAmount, ...] = ()
    fee_usd_equiv: Decimal | None = None
    reason: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class BalanceUpdate:
    """One entry of the private ``balances`` channel.

    Snapshot entries give an asset's total ``balance`` (and its ``wallets``); update entries are
    ledger transactions with ``amount``/``fee`` and the wallet's ``balance`` afterwards.
    """

    asset: str
    balance: Decimal
    ts_recv: float
    is_snapshot: bool = False
    sequence: int | None = None
    ts_event_ns: int = 0
    amount: Decimal | None = None
    fee: Decimal | None = None
    ledger_id: str | None = None
    ref_id: str | None = None
    ledger_type: str | None = None
    wallet_type: str | None = None
    wallet_id: str | None = None
    wallets: tuple[tuple[str, str, Decimal], ...] = ()  # (type, id, balance) on snapshots


def _fees(raw: object) -> tuple[FeeAmount, ...]:
    if raw is None:
        return ()
    return tuple(
        FeeAmount(asset=_str(fee, "asset"), qty=to_decimal(fee["qty"], "fee qty"))
        for fee in _list(raw, "fees")
    )


_LIQUIDITY = {"m": Liquidity.MAKER, "t": Liquidity.TAKER}


def decode_executions(msg: Mapping[str, Any], ts_recv: float) -> tuple[ExecutionReport, ...]:
    """The ``executions`` channel: one report per ``data`` entry (``DecodeError`` on junk)."""
    is_snapshot = _snapshot_flag(msg)
    sequence = _opt_int(msg, "sequence")
    out: list[ExecutionReport] = []
    for item in _data_items(msg):
        liq = item.get("liquidity_ind")
        if liq is not None and liq not in _LIQUIDITY:
            _fail(f"bad liquidity_ind {liq!r:.10}")
        side = item.get("side")
        out.append(
            ExecutionReport(
                exec_type=_str(item, "exec_type"),
                order_id=_str(item, "order_id"),
                ts_recv=ts_recv,
                ts_event_ns=_opt_ts(item),
                is_snapshot=is_snapshot,
                sequence=sequence,
                order_status=_opt_str(item, "order_status"),
                cl_ord_id=_opt_str(item, "cl_ord_id"),
                order_userref=_opt_int(item, "order_userref"),
                symbol=_opt_str(item, "symbol"),
                side=None if side is None else _side(side),
                order_type=_opt_str(item, "order_type"),
                order_qty=_opt_dec(item, "order_qty"),
                limit_price=_opt_dec(item, "limit_price"),
                exec_id=_opt_str(item, "exec_id"),
                trade_id=_opt_int(item, "trade_id"),
                last_qty=_opt_dec(item, "last_qty"),
                last_price=_opt_dec(item, "last_price"),
                liquidity=None if liq is None else _LIQUIDITY[liq],
                cost=_opt_dec(item, "cost"),
                cum_qty=_opt_dec(item, "cum_qty"),
                cum_cost=_opt_dec(item, "cum_cost"),
                avg_price=_opt_dec(item, "avg_price"),
                fees=_fees(item.get("fees")),
                fee_usd_equiv=_opt_dec(item, "fee_usd_equiv"),
                reason=_opt_str(item, "reason"),
            )
        )
    return tuple(out)


def decode_balances(msg: Mapping[str, Any], ts_recv: float) -> tuple[BalanceUpdate, ...]:
    """The ``balances`` channel: one update per ``data`` entry (``DecodeError`` on junk)."""
    is_snapshot = _snapshot_flag(msg)
    sequence = _opt_int(msg, "sequence")
    out: list[BalanceUpdate] = []
    for item in _data_items(msg):
        wallets = tuple(
            (_str(w, "type"), _str(w, "id"), to_decimal(w["balance"], "wallet balance"))
            for w in _list(item.get("wallets", []), "wallets")
        )
        out.append(
            BalanceUpdate(
                asset=_str(item, "asset"),
                balance=to_decimal(item["balance"], "balance"),
                ts_recv=ts_recv,
                is_snapshot=is_snapshot,
                sequence=sequence,
                ts_event_ns=_opt_ts(item),
                amount=_opt_dec(item, "amount"),
                fee=_opt_dec(item, "fee"),
                ledger_id=_opt_str(item, "ledger_id"),
                ref_id=_opt_str(item, "ref_id"),
                ledger_type=_opt_str(item, "type"),
                wallet_type=_opt_str(item, "wallet_type"),
                wallet_id=_opt_str(item, "wallet_id"),
                wallets=wallets,
            )
        )
    return tuple(out)

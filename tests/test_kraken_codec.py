"""Kraken WS codec: every documented example decodes, malformed frames are typed errors.

Issue "Kraken protocol layer", acceptance point 3 (and the Decimal/timestamp rules of
PROTOCOL.md §5.2). Vectors: tests/fixtures/kraken/vectors.json (copy of shared/kraken).
"""

from __future__ import annotations

import calendar
import json
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocol.kraken import _codec
from protocol.kraken._codec import (
    BalanceUpdate,
    BookFrame,
    ExecutionReport,
    Heartbeat,
    InstrumentFrame,
    MethodResponse,
    StatusFrame,
    _parse_rfc3339_full,
    decode_v2,
    dumps,
    encode_request,
    loads,
    parse_rfc3339_ns,
)
from protocol.kraken._codec_v1 import V1Decoder
from protocol.kraken._errors import DecodeError
from protocol.messages import (
    BookLevel,
    CandleEvent,
    Liquidity,
    Side,
    TickerEvent,
    TradeEvent,
)
from tests.conftest import FIXTURES

VECTORS: dict[str, Any] = json.loads(
    (FIXTURES / "kraken" / "vectors.json").read_text(), parse_float=Decimal
)
WS2: dict[str, Any] = VECTORS["messages"]["ws_v2"]


def ns(y: int, mo: int, d: int, h: int, mi: int, s: int, frac: int = 0) -> int:
    return calendar.timegm((y, mo, d, h, mi, s, 0, 0, 0)) * 1_000_000_000 + frac


def one(raw: str | Any) -> Any:
    text = raw if isinstance(raw, str) else dumps(raw)
    frames = decode_v2(text, ts_recv=7.5)
    assert len(frames) == 1
    return frames[0]


def server_messages() -> Iterator[tuple[str, Any]]:
    """Every server->client example in vectors.json messages.ws_v2, as (path, message)."""
    for channel, entries in WS2.items():
        for key, value in entries.items():
            if key == "source" or "request" in key or key == "error_text_published":
                continue
            for i, msg in enumerate(value if isinstance(value, list) else [value]):
                yield f"{channel}.{key}[{i}]", msg


SERVER_MESSAGES = list(server_messages())


# --------------------------------------------------------------------------- documented examples


def test_every_documented_v2_message_decodes() -> None:
    assert len(SERVER_MESSAGES) >= 30  # the section really was walked
    for path, msg in SERVER_MESSAGES:
        frames = decode_v2(msg if isinstance(msg, str) else dumps(msg), ts_recv=1.0)
        assert frames, path
        for frame in frames:
            assert frame.ts_recv == 1.0, path


def test_every_documented_v2_request_round_trips_through_encode_request() -> None:
    requests = [
        (f"{channel}.{key}", value)
        for channel, entries in WS2.items()
        for key, value in entries.items()
        if "request" in key and isinstance(value, dict)
    ]
    assert len(requests) >= 12
    for path, req in requests:
        text = encode_request(req["method"], req.get("params"), req.get("req_id"))
        assert loads(text) == req, path


def test_status_keeps_the_connection_id_beyond_int64_exact() -> None:
    frame = one(WS2["status"]["update"])
    assert frame == StatusFrame(
        system="online",
        api_version="v2",
        connection_id=13834774380200032777,
        version="2.0.0",
        ts_recv=7.5,
    )
    # Straight from the docs' text too, not only from our re-serialisation.
    raw = (
        '{"channel":"status","data":[{"api_version":"v2","connection_id":'
        '13834774380200032777,"system":"online","version":"2.0.0"}],"type":"update"}'
    )
    assert one(raw).connection_id == 13834774380200032777


def test_book_snapshot_decodes_decimals_without_float() -> None:
    frame = one(WS2["book"]["snapshot_json"])
    assert isinstance(frame, BookFrame)
    assert frame.symbol == "MATIC/USD" and frame.is_snapshot
    assert frame.checksum == 2439117997
    assert len(frame.bids) == 10 and len(frame.asks) == 10
    assert frame.bids[0] == BookLevel(Decimal("0.5666"), Decimal("4831.75496356"))
    assert frame.bids[6].price == Decimal("0.566")
    assert all(type(lvl.price) is Decimal and type(lvl.qty) is Decimal for lvl in frame.asks)
    assert frame.ts_event_ns == ns(2023, 10, 6, 17, 35, 55, 440295000)


def test_book_update_keeps_message_order_and_empty_sides() -> None:
    frame = one(WS2["book"]["update_json"])
    assert not frame.is_snapshot
    assert frame.bids == (BookLevel(Decimal("0.5657"), Decimal("1098.3947558")),)
    assert frame.asks == ()
    raw = (
        '{"channel":"book","type":"update","data":[{"symbol":"BTC/USD","bids":['
        '{"price":100.1,"qty":0},{"price":100.1,"qty":2.5}],"asks":[],"checksum":1,'
        '"timestamp":"2023-10-06T17:35:55.440295Z"}]}'
    )
    frame = one(raw)
    assert [lvl.qty for lvl in frame.bids] == [Decimal(0), Decimal("2.5")]


def test_multi_symbol_book_message_gives_one_frame_per_symbol() -> None:
    raw = (
        '{"channel":"book","type":"update","data":['
        '{"symbol":"A/USD","bids":[],"asks":[],"checksum":1,"timestamp":"2023-01-01T00:00:00Z"},'
        '{"symbol":"B/USD","bids":[],"asks":[],"checksum":2,"timestamp":"2023-01-01T00:00:01Z"}]}'
    )
    frames : tuple[Any, ...] = decode_v2(raw, ts_recv=0.0)
    assert [(f.symbol, f.checksum) for f in frames] == [("A/USD", 1), ("B/USD", 2)]


def test_ticker_trade_ohlc_decode_into_market_events() -> None:
    ticker = one(WS2["ticker"]["snapshot"])
    assert ticker == TickerEvent(
        symbol="ALGO/USD",
        bid=Decimal("0.10025"),
        bid_qty=Decimal("740.0"),
        ask=Decimal("0.10036"),
        ask_qty=Decimal("1361.44813783"),
        last=Decimal("0.10035"),
        ts_event_ns=ns(2023, 9, 25, 9, 4, 31, 742648000),
        ts_recv=7.5,
    )
    trades : tuple[Any, ...] = decode_v2(dumps(WS2["trade"]["snapshot"]), ts_recv=0.0)
    assert [type(t) for t in trades] == [TradeEvent, TradeEvent]
    assert trades[0].side is Side.BUY and trades[0].trade_id == 4665846
    update = one(WS2["trade"]["update"])
    assert (update.side, update.price, update.qty) == (Side.SELL, Decimal("0.5117"), Decimal(40))
    candle = one(WS2["ohlc"]["update"])
    assert candle == CandleEvent(
        symbol="MATIC/USD",
        interval_s=300,
        open=Decimal("0.5624"),
        high=Decimal("0.5628"),
        low=Decimal("0.5622"),
        close=Decimal("0.5627"),
        volume=Decimal("30927.68066226"),
        ts_event_ns=ns(2023, 10, 4, 16, 25, 0),
        ts_recv=7.5,
    )


def test_instrument_pairs_carry_precisions() -> None:
    frame = one(WS2["instrument"]["snapshot"])
    assert isinstance(frame, InstrumentFrame) and frame.is_snapshot
    btc, matic = frame.pairs
    assert (btc.symbol, btc.base, btc.quote) == ("BTC/USD", "BTC", "USD")
    assert (btc.price_precision, btc.qty_precision) == (1, 8)
    assert btc.qty_increment == Decimal("0.00000001")
    assert btc.price_increment == Decimal("0.1") and btc.cost_min == Decimal("0.5")
    assert matic.qty_min == Decimal("4.0") and matic.price_precision == 4
    assert one(WS2["instrument"]["update"]).pairs == ()


def test_heartbeat_pong_and_acks() -> None:
    assert one(WS2["heartbeat"]["update"]) == Heartbeat(ts_recv=7.5)
    pong = one(WS2["ping"]["response"])
    assert (pong.method, pong.req_id, pong.success, pong.error) == ("pong", 101, True, None)
    acks = [one(a) for a in WS2["ohlc"]["subscribe_ack"]]
    assert [a.symbol for a in acks] == ["ALGO/USD", "MATIC/USD"]
    assert acks[0].warnings == ("timestamp is deprecated, use interval_begin",)
    assert acks[0].result["interval"] == 5
    with pytest.raises(TypeError):
        acks[0].result["interval"] = 1


def test_error_responses_are_unsuccessful() -> None:
    rejected = one(WS2["add_order"]["response_error"])
    assert isinstance(rejected, MethodResponse)
    assert (rejected.success, rejected.error, rejected.req_id) == (
        False,
        "EOrder:Insufficient funds",
        123456789,
    )
    sub = one(WS2["subscribe_error"]["recorded_example"])
    assert (sub.success, sub.symbol) == (False, "XBT/USD")
    assert sub.error == "Currency pair not supported XBT/USD"
    after = one(WS2["cancel_after"]["response"])
    assert after.result["triggerTime"] == "2023-09-21T15:51:09Z"


def test_executions_reports() -> None:
    trade = one(WS2["executions"]["update_trade"])
    assert isinstance(trade, ExecutionReport)
    assert (trade.exec_type, trade.order_status, trade.sequence) == (
        "trade",
        "partially_filled",
        10,
    )
    assert trade.side is Side.SELL and trade.liquidity is Liquidity.TAKER
    assert (trade.last_qty, trade.last_price) == (Decimal("0.005"), Decimal("26599.9"))
    assert trade.fees[0].asset == "USD" and trade.fees[0].qty == Decimal("0.3458")
    assert trade.trade_id == 62887576
    new = one(WS2["executions"]["update_new"])
    assert (new.exec_type, new.order_id, new.symbol, new.side) == (
        "new",
        "OK4GJX-KSTLS-7DZZO5",
        None,
        None,
    )
    pending = one(WS2["executions"]["update_pending_new"])
    assert pending.limit_price == Decimal("26500.0") and pending.order_userref == 3


def test_balances_snapshot_and_ledger_updates() -> None:
    snap : tuple[Any, ...] = decode_v2(dumps(WS2["balances"]["snapshot"]), ts_recv=0.0)
    assert [b.asset for b in snap] == ["BTC", "MATIC", "USD"]
    matic = snap[1]
    assert isinstance(matic, BalanceUpdate) and matic.is_snapshot
    assert matic.balance == Decimal(500) and type(matic.balance) is Decimal
    assert matic.wallets == (("spot", "main", Decimal(300)), ("earn", "flex", Decimal(200)))
    debit = one(WS2["balances"]["update_trade_btc_debit"])
    credit = one(WS2["balances"]["update_trade_usd_credit"])
    assert debit.ref_id == credit.ref_id
    assert (debit.amount, credit.fee, credit.sequence) == (
        Decimal("-0.005"),
        Decimal("0.3458"),
        10,
    )


# --------------------------------------------------------------------------- malformed frames

BAD_FRAMES = [
    ("not json", "invalid_json"),
    (b"\xff\xfe{", "invalid_json"),
    ("[" * 100_000, "invalid_json"),
    ('{"channel":"ticker","type":"update","data":[{"bid":NaN}]}', "invalid_json"),
    ("[1, 2]", "bad_shape"),
    ('{"foo": 1}', "bad_shape"),
    ('{"channel": "level9"}', "unknown_channel"),
    ('{"channel": 5}', "unknown_channel"),
    ('{"channel":"book","type":"update","data":[{"symbol":"A","bids":[{"price":1.0}]}]}',
     "missing_field"),
    ('{"channel":"book","type":"update","data":[{"symbol":"A","bids":[{"price":"x","qty":1}]}]}',
     "bad_field"),
    ('{"channel":"book","type":"update","data":[{"symbol":"A","bids":[{"price":1,"qty":-1}]}]}',
     "bad_field"),
    ('{"channel":"book","type":"update","data":[{"symbol":"A","bids":[[1, 2]]}]}', "bad_field"),
    ('{"channel":"book","type":"update","data":[{"symbol":"A","checksum":true}]}', "bad_field"),
    ('{"channel":"book","type":"update","data":[{"symbol":"A","checksum":4294967296}]}',
     "bad_field"),
    ('{"channel":"book","type":"sideways","data":[]}', "bad_field"),
    ('{"channel":"book","type":"update","data":{}}', "bad_field"),
    ('{"channel":"book","type":"update","data":[7]}', "bad_field"),
    ('{"channel":"book","type":"update","data":[{"symbol":"A","timestamp":"yesterday"}]}',
     "bad_field"),
    ('{"channel":"trade","type":"update","data":[{"symbol":"A","side":"up","price":1,"qty":1}]}',
     "bad_field"),
    ('{"channel":"ticker","type":"update","data":[{"symbol":"A","bid":"NaN","bid_qty":1,'
     '"ask":1,"ask_qty":1,"last":1}]}', "bad_field"),
    ('{"channel":"status","data":[{"system":"online","api_version":"v2","connection_id":1.5}]}',
     "bad_field"),
    ('{"method":"pong","success":"yes"}', "bad_field"),
    ('{"method":7}', "bad_field"),
    # the inlined book decoder keeps the generic checks
    ('{"channel":"book","type":"update","data":[{"symbol":"A","bids":0}]}', "bad_field"),
    ('{"channel":"book","type":"update","data":[{"symbol":"A","asks":"x"}]}', "bad_field"),
    ('{"channel":"book","type":"update","data":[{"symbol":5}]}', "bad_field"),
    ('{"channel":"book","type":"update","data":[{"bids":[]}]}', "missing_field"),
    ('{"channel":"book","data":[]}', "bad_field"),
    ('{"channel":"book","type":"update"}', "missing_field"),
    ('{"channel":"book","type":"update","data":[]} x', "invalid_json"),
    ('{"channel":"book","type":"update","data":[]}{}', "invalid_json"),
]


@pytest.mark.parametrize(("raw", "kind"), BAD_FRAMES)
def test_malformed_v2_frames_are_typed_decode_errors(raw: str | bytes, kind: str) -> None:
    with pytest.raises(DecodeError) as info:
        decode_v2(raw, ts_recv=0.0)
    assert info.value.kind == kind


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=5)
    | st.decimals(allow_nan=False, allow_infinity=False),
    lambda inner: st.lists(inner, max_size=4)
    | st.dictionaries(
        st.sampled_from(["channel", "type", "data", "symbol", "price", "qty", "bids", "method",
                         "checksum", "timestamp", "result", "side", "event", "a", "b", "c"]),
        inner,
        max_size=5,
    ),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None)
@given(
    channel=st.sampled_from(["book", "ticker", "trade", "ohlc", "instrument", "status",
                             "executions", "balances", "heartbeat"]),
    kind=st.sampled_from(["snapshot", "update", "other"]),
    data=json_values,
)
def test_fuzzed_v2_frames_never_crash(channel: str, kind: str, data: Any) -> None:
    raw = dumps({"channel": channel, "type": kind, "data": data})
    try:
        decode_v2(raw, ts_recv=0.0)
    except DecodeError as exc:
        kind = exc.kind
    else:
        kind = "bad_field"
    assert kind in {"bad_field", "missing_field"}


@settings(max_examples=200, deadline=None)
@given(path_index=st.integers(0, 10_000), replacement=json_values)
def test_documented_messages_with_one_field_replaced_never_crash(
    path_index: int, replacement: Any
) -> None:
    _path, msg = SERVER_MESSAGES[path_index % len(SERVER_MESSAGES)]
    msg = loads(msg) if isinstance(msg, str) else json.loads(dumps(msg), parse_float=Decimal)
    # Replace the first (channel/method excluded) field found depth-first.
    target: Any = msg
    while True:
        keys = [k for k in target if k not in ("channel", "method")] if isinstance(target, dict) \
            else list(range(len(target))) if isinstance(target, list) else []
        if not keys:
            break
        key = keys[path_index % len(keys)]
        if not isinstance(target[key], dict | list) or path_index % 3 == 0:
            target[key] = replacement
            break
        target = target[key]
    try:
        decode_v2(dumps(msg), ts_recv=0.0)
    except DecodeError:
        pass


@settings(max_examples=200, deadline=None)
@given(value=json_values)
def test_fuzzed_v1_frames_never_crash(value: Any) -> None:
    decoder = V1Decoder()
    for frame in (value, [320, value, "book-10", "XBT/USD"], [1, value, "trade", "A/B"],
                  [1, value, "ticker", "A/B"]):
        try:
            decoder.decode(frame, ts_recv=0.0)
        except DecodeError:
            pass


# --------------------------------------------------------------------------- timestamps


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2023-10-04T16:26:30.524394914Z", ns(2023, 10, 4, 16, 26, 30, 524394914)),
        ("2023-10-04T16:26:30.5Z", ns(2023, 10, 4, 16, 26, 30, 500000000)),
        ("2023-09-21T15:49:29Z", ns(2023, 9, 21, 15, 49, 29)),
        ("2023-09-21T16:49:29.000001+01:00", ns(2023, 9, 21, 15, 49, 29, 1000)),
        ("2023-09-21T14:19:29-01:30", ns(2023, 9, 21, 15, 49, 29)),
        ("1970-01-01T00:00:00Z", 0),
    ],
)
def test_rfc3339_to_ns(text: str, expected: int) -> None:
    assert parse_rfc3339_ns(text) == expected


@pytest.mark.parametrize(
    "text",
    ["2023-10-04", "2023-10-04T16:26:30.1234567890Z", "2023-10-04T16:26:30", "2023-10-04T16:61:00Z",
     "2023-13-04T16:26:30Z", 1696436790, "2023-10-04T16:26:30.Z"],
)
def test_bad_rfc3339_is_a_decode_error(text: object) -> None:
    with pytest.raises(DecodeError):
        parse_rfc3339_ns(text)


@settings(max_examples=200, deadline=None)
@given(seconds=st.integers(0, 4_102_444_799), frac=st.integers(0, 999_999_999))
def test_rfc3339_round_trip(seconds: int, frac: int) -> None:
    import time

    text = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{frac:09d}Z"
    assert parse_rfc3339_ns(text) == seconds * 1_000_000_000 + frac


@settings(max_examples=300, deadline=None)
@given(seconds=st.integers(0, 4_102_444_799),
       frac=st.text(alphabet="0123456789", min_size=1, max_size=9),
       zone=st.sampled_from(["Z", "z", "+00:00", "-01:30"]))
def test_rfc3339_fast_path_agrees_with_the_full_parser(seconds: int, frac: str, zone: str) -> None:
    import time

    text = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{frac}{zone}"
    offset = {"Z": 0, "z": 0, "+00:00": 0, "-01:30": -5400}[zone]
    expected = (seconds - offset) * 1_000_000_000 + int(frac.ljust(9, "0"))
    assert _parse_rfc3339_full(text) == expected  # primes the per-second cache
    assert parse_rfc3339_ns(text) == expected  # and now takes the fast path (for "Z")


@pytest.mark.parametrize(
    "tail", [".1234567890Z", ".Z", ".12a4Z", ".+123Z", ".1_2Z", ". 12Z", ".12Zz", ".-1Z"]
)
def test_a_cached_second_still_rejects_bad_fractions(tail: str) -> None:
    assert parse_rfc3339_ns("2023-10-04T16:26:30.5Z") == ns(2023, 10, 4, 16, 26, 30, 500000000)
    with pytest.raises(DecodeError):
        parse_rfc3339_ns("2023-10-04T16:26:30" + tail)


def test_non_ascii_digits_take_the_full_parser_on_both_paths() -> None:
    text = "2023-10-04T16:26:30.\u0663Z"  # ARABIC-INDIC DIGIT THREE: the regex's \d takes it
    parse_rfc3339_ns("2023-10-04T16:26:30.5Z")
    assert parse_rfc3339_ns(text) == _parse_rfc3339_full(text)


def test_timestamp_caches_stay_bounded() -> None:
    for second in range(_codec._CACHE_MAX + 10):
        parse_rfc3339_ns(f"2001-01-01T{second // 3600:02d}:{second // 60 % 60:02d}:"
                         f"{second % 60:02d}.1Z")
    assert len(_codec._SECOND_EPOCH) <= _codec._CACHE_MAX
    assert len(_codec._HOUR_EPOCH) <= _codec._CACHE_MAX


def test_loads_accepts_surrounding_whitespace_and_refuses_trailing_data() -> None:
    assert loads(' {"a": 1.5} \n') == {"a": Decimal("1.5")}
    assert loads(b'{"a":1}') == {"a": 1}
    for raw in ('{"a":1} x', '{"a":1}{"b":2}', "", " ", "[1,"):
        with pytest.raises(DecodeError) as info:
            loads(raw)
        assert info.value.kind == "invalid_json"


# --------------------------------------------------------------------------- encoding


def test_encode_request_writes_decimals_as_exact_numbers() -> None:
    assert encode_request("ping", req_id=101) == '{"method":"ping","req_id":101}'
    text = encode_request(
        "add_order",
        {"order_type": "limit", "side": Side.BUY, "limit_price": Decimal("26500.40"),
         "order_qty": Decimal("1E-8"), "post_only": True, "symbol": ["BTC/USD"]},
        req_id=1,
    )
    assert text == (
        '{"method":"add_order","params":{"order_type":"limit","side":"buy",'
        '"limit_price":26500.40,"order_qty":0.00000001,"post_only":true,'
        '"symbol":["BTC/USD"]},"req_id":1}'
    )
    with pytest.raises(TypeError):
        encode_request("add_order", {"limit_price": 26500.4})
    with pytest.raises(ValueError):
        encode_request("add_order", {"limit_price": Decimal("NaN")})


# --------------------------------------------------------------------------- msgspec fast path

HOT_FRAMES = [
    '{"channel":"book","type":"update","data":[{"symbol":"BTC/USD","bids":[],"asks":'
    '[{"price":0.5660,"qty":1E-7}],"checksum":4294967295,'
    '"timestamp":"2023-10-06T17:35:55.440295Z"}]}',
    '{"channel":"book","type":"snapshot","data":[{"symbol":"A","bids":[{"price":"1.50",'
    '"qty":2}],"asks":[{"price":123456789.123456789123456789,"qty":0}],"checksum":0}]}',
    '{"channel":"ticker","type":"update","data":[{"symbol":"BTC/USD","bid":27000.10,'
    '"bid_qty":0.5660,"ask":27000.2,"ask_qty":1,"last":27000.10,"volume":12.3}]}',
    '{"channel":"trade","type":"snapshot","data":[{"symbol":"BTC/USD","side":"sell",'
    '"price":27000.10,"qty":0.00010,"ord_type":"limit","trade_id":13834774380200032777,'
    '"timestamp":"2023-10-06T17:35:55.440295123Z"}]}',
]


@pytest.mark.parametrize("raw", HOT_FRAMES)
def test_fast_path_takes_hot_frames_and_matches_the_generic_decoder(raw: str) -> None:
    fast = _codec._decode_fast(raw, 1.0)
    assert fast is not None
    generic = _codec.decode_v2_generic(raw, ts_recv=1.0)
    assert fast == generic
    # Equal Decimals can differ in exponent (0.566 vs 0.5660); the text must survive exactly.
    assert [repr(f) for f in fast] == [repr(f) for f in generic]


def test_fast_path_keeps_decimal_text_and_big_ints_exactly() -> None:
    book, = decode_v2(HOT_FRAMES[0], ts_recv=0.0)
    assert isinstance(book, BookFrame)
    assert str(book.asks[0].price) == "0.5660" and str(book.asks[0].qty) == "1E-7"
    assert book.checksum == 2**32 - 1
    snap, = decode_v2(HOT_FRAMES[1], ts_recv=0.0)
    assert isinstance(snap, BookFrame)
    assert str(snap.bids[0].price) == "1.50"
    assert snap.asks[0].price == Decimal("123456789.123456789123456789")
    trade, = decode_v2(HOT_FRAMES[3], ts_recv=0.0)
    assert isinstance(trade, TradeEvent)
    assert trade.trade_id == 13834774380200032777 and str(trade.qty) == "0.00010"
    assert trade.ts_event_ns % 1_000_000_000 == 440295123


@pytest.mark.parametrize("raw", [
    '{"channel":"heartbeat"}',
    '{"method":"pong","req_id":1}',
    '{"channel":"status","data":[{"system":"online","api_version":"v2",'
    '"connection_id":13834774380200032777,"version":"2.0.0"}]}',
    # refused by the fast path; the generic decoder decides (and refuses, below)
    '{"channel":"book","type":"update","data":[{"symbol":"A","bids":[{"price":"NaN","qty":1}]}]}',
    '{"channel":"book","type":"update","data":[{"symbol":"A","checksum":4294967296}]}',
    '{"channel":"book","type":"update","data":[{"symbol":"A","timestamp":"yesterday"}]}',
    '{"channel":"trade","type":"update","data":[{"symbol":"A","side":"buy","price":"Infinity",'
    '"qty":1}]}',
])
def test_fast_path_leaves_other_frames_to_the_generic_decoder(raw: str) -> None:
    assert _codec._decode_fast(raw, 0.0) is None


@pytest.mark.parametrize(("raw", "kind"), BAD_FRAMES)
def test_fast_path_never_accepts_a_malformed_frame(raw: str | bytes, kind: str) -> None:
    assert _codec._decode_fast(raw, 0.0) is None


hot_values = st.one_of(
    st.decimals(allow_nan=False, allow_infinity=False),
    st.decimals(allow_nan=False, allow_infinity=False).map(str),
    st.sampled_from(["NaN", "Infinity", "-1", "0", "x", None, True, 2**32, -1,
                     "2024-01-02T00:00:00Z"]),
    st.integers(),
)


@settings(max_examples=300, deadline=None)
@given(
    channel=st.sampled_from(["book", "ticker", "trade"]),
    kind=st.sampled_from(["snapshot", "update", "other"]),
    fields=st.dictionaries(
        st.sampled_from(["symbol", "bids", "asks", "checksum", "timestamp", "bid", "bid_qty",
                         "ask", "ask_qty", "last", "side", "price", "qty", "trade_id"]),
        hot_values | st.lists(st.fixed_dictionaries({"price": hot_values, "qty": hot_values}),
                              max_size=3),
        max_size=14,
    ),
)
def test_fast_path_agrees_with_the_generic_decoder_on_fuzzed_hot_frames(
    channel: str, kind: str, fields: dict[str, Any]
) -> None:
    raw = dumps({"channel": channel, "type": kind, "data": [fields]})
    fast = _codec._decode_fast(raw, 0.0)
    try:
        generic = _codec.decode_v2_generic(raw, ts_recv=0.0)
    except DecodeError:
        assert fast is None  # the fast path accepts only what the generic decoder accepts
        return
    if fast is not None:
        assert fast == generic
        assert [repr(f) for f in fast] == [repr(f) for f in generic]

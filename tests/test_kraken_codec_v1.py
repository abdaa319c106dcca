"""Kraken WS v1 codec (recorded v1 frames for replay): events, books, trades, ticker, and
malformed frames as typed errors. Split from ``test_kraken_codec.py`` (the v2 codec)."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from protocol.kraken import _codec
from protocol.kraken._codec import BookFrame, Heartbeat, StatusFrame
from protocol.kraken._codec_v1 import V1Decoder, normalize_v1_symbol, parse_epoch_ns
from protocol.kraken._errors import DecodeError
from protocol.messages import BookLevel, Side, TickerEvent


def v1(decoder: V1Decoder, raw: object, ts_recv: float = 0.0) -> tuple[Any, ...]:
    return decoder.decode(raw, ts_recv=ts_recv)


def test_v1_symbols_are_normalised() -> None:
    assert normalize_v1_symbol("XBT/USD") == "BTC/USD"
    assert normalize_v1_symbol("XDG/XBT") == "DOGE/BTC"
    assert normalize_v1_symbol("ALGO/XBT") == "ALGO/BTC"
    with pytest.raises(DecodeError):
        normalize_v1_symbol("XBTUSD")


def test_v1_events_and_subscription_state() -> None:
    dec = V1Decoder()
    (status,) = v1(dec,
        '{"connectionID":17413893361151983591,"event":"systemStatus","status":"online",'
        '"version":"1.8.3"}',
        ts_recv=1.0,
    )
    assert status == StatusFrame(system="online", api_version="v1",
                                 connection_id=17413893361151983591, version="1.8.3", ts_recv=1.0)
    (ack,) = v1(dec,
        {"channelID": 320, "channelName": "book-1000", "event": "subscriptionStatus",
         "pair": "XBT/USD", "status": "subscribed",
         "subscription": {"depth": 1000, "name": "book"}},
        ts_recv=1.0,
    )
    assert (ack.method, ack.success, ack.symbol) == ("subscribe", True, "BTC/USD")
    assert dec.depth("BTC/USD") == 1000 and dec.depth("ETH/USD") is None
    assert dec.decode({"event": "heartbeat"}, ts_recv=2.0) == (Heartbeat(ts_recv=2.0),)
    (pong,) = v1(dec, {"event": "pong", "reqid": 42}, ts_recv=2.0)
    assert (pong.method, pong.req_id, pong.success) == ("pong", 42, True)
    (err,) = v1(dec, {"event": "subscriptionStatus", "status": "error",
                         "errorMessage": "Currency pair not in ISO 4217-A3 format XBTUSD",
                         "pair": "XBT/USD", "subscription": {"name": "book"}}, ts_recv=2.0)
    assert not err.success and err.error is not None
    dec.decode({"channelID": 320, "event": "subscriptionStatus", "status": "unsubscribed",
                "pair": "XBT/USD", "subscription": {"name": "book"}}, ts_recv=3.0)
    assert dec.depth("BTC/USD") is None


def test_v1_book_update_in_two_dicts_with_republish_flag() -> None:
    raw = (
        '[320,{"a":[["61308.50000","0.00000000","1617666539.868687"],'
        '["61800.00000","1.48600534","1617648977.752138","r"]]},'
        '{"b":[["56123.40000","0.06137256","1617666539.870272"]],"c":"1768150633"},'
        '"book-1000","XBT/USD"]'
    )
    (frame,) = v1(V1Decoder(), raw, ts_recv=4.0)
    assert isinstance(frame, BookFrame) and not frame.is_snapshot
    assert frame.symbol == "BTC/USD" and frame.checksum == 1768150633
    assert [str(lvl.price) for lvl in frame.asks] == ["61308.50000", "61800.00000"]
    assert frame.bids == (BookLevel(Decimal("56123.40000"), Decimal("0.06137256")),)
    # The text's exponent is kept, which the v1 checksum formats from.
    assert format(frame.asks[0].qty, "f") == "0.00000000"
    assert frame.ts_event_ns == 1617666539_870272000


def test_v1_book_snapshot_has_no_checksum() -> None:
    raw = [320, {"as": [["5.0", "1.0", "1.5"]], "bs": [["4.0", "2.0", "1.25"]]}, "book-10",
           "XBT/USD"]
    (frame,) = v1(V1Decoder(), raw, ts_recv=0.0)
    assert frame.is_snapshot and frame.checksum is None
    assert frame.ts_event_ns == 1_500_000_000


def test_v1_trades_and_ticker() -> None:
    dec = V1Decoder()
    trades = v1(dec,
        '[321,[["58721.20000","0.02798644","1617666461.465618","s","m",""],'
        '["58721.30000","0.12749400","1617666461.466773","b","l",""]],"trade","XBT/USD"]',
        ts_recv=0.0,
    )
    assert [(t.symbol, t.side, t.price) for t in trades] == [
        ("BTC/USD", Side.SELL, Decimal("58721.20000")),
        ("BTC/USD", Side.BUY, Decimal("58721.30000")),
    ]
    assert trades[0].ts_event_ns == 1617666461_465618000
    (ticker,) = v1(dec,
        '[180,{"a":["0.76605",24,"24.51076513"],"b":["0.76501",40,"40.85127521"],'
        '"c":["0.76565","95.61777000"],"v":["365331.18831948","365510.14100031"]},'
        '"ticker","AUD/USD"]',
        ts_recv=0.0,
    )
    assert ticker == TickerEvent(symbol="AUD/USD", bid=Decimal("0.76501"),
                                 bid_qty=Decimal("40.85127521"), ask=Decimal("0.76605"),
                                 ask_qty=Decimal("24.51076513"), last=Decimal("0.76565"))


@pytest.mark.parametrize(
    ("raw", "kind"),
    [
        ('{"event":"mystery"}', "unknown_event"),
        ('[1,{"x":1},"spread","XBT/USD"]', "unknown_channel"),
        ("[1,2]", "bad_shape"),
        ("7", "bad_shape"),
        ("{", "invalid_json"),
        ('[1,{"a":[["1.0","2.0"]]},"book-10","XBT/USD"]', "bad_field"),
        ('[1,{"a":[["1.0","2.0","3"]],"c":"-5"},"book-10","XBT/USD"]', "bad_field"),
        ('[1,{"a":[["1.0","2.0","3"]]},"book-10","XBTUSD"]', "bad_field"),
        ('[1,[["1.0","2.0","3","x","m",""]],"trade","XBT/USD"]', "bad_field"),
        ('[1,{"a":["1.0"],"b":["1","1","1"],"c":["1"]},"ticker","XBT/USD"]', "bad_field"),
        ('[1,{"a":["1.0"]},"ticker","XBT/USD"]', "missing_field"),
        ('{"event":"systemStatus","status":"online"}', "missing_field"),
    ],
)
def test_malformed_v1_frames_are_typed_decode_errors(raw: str, kind: str) -> None:
    with pytest.raises(DecodeError) as info:
        V1Decoder().decode(raw, ts_recv=0.0)
    assert info.value.kind == kind


def test_v1_refuses_floats_from_a_careless_parser() -> None:
    with pytest.raises(DecodeError) as info:
        V1Decoder().decode([1, {"a": [[1.5, "2.0", "3"]]}, "book-10", "XBT/USD"], ts_recv=0.0)
    assert info.value.kind == "bad_field"


def test_v1_decoder_lives_in_its_own_module_and_is_still_exported() -> None:
    import protocol.kraken as kraken
    from protocol.kraken import _codec_v1

    assert kraken.V1Decoder is _codec_v1.V1Decoder is V1Decoder
    assert not hasattr(_codec, "V1Decoder")


def test_epoch_text_to_ns_is_exact() -> None:
    assert parse_epoch_ns("1617666423.606671") == 1617666423_606671000
    assert parse_epoch_ns("1617666423") == 1617666423_000000000
    with pytest.raises(DecodeError):
        parse_epoch_ns("1617666423.6e3")

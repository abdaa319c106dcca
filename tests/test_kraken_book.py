"""Kraken L2 book and checksums: documented vectors and the recorded v1 book-1000 replay.

Issue "Kraken protocol layer", acceptance points 1 and 2 (PROTOCOL.md §6-§7).
"""

from __future__ import annotations

import json
import pathlib
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocol.kraken._book import (
    BookOutOfSync,
    ChecksumMismatch,
    OrderBook,
    checksum_text_v1,
    checksum_text_v2,
    checksum_v1,
    checksum_v2,
)
from protocol.kraken._codec import BookFrame, decode_v2, loads
from protocol.kraken._codec_v1 import V1Decoder
from protocol.kraken._errors import KrakenError
from protocol.messages import BookLevel
from tests.conftest import FIXTURES, SHARED

VECTORS: dict[str, Any] = json.loads(
    (FIXTURES / "kraken" / "vectors.json").read_text(), parse_float=Decimal
)
SLICE = FIXTURES / "kraken" / "kraken_ws_v1_book1000_head300.jsonl"
FULL = SHARED / "data" / "kraken-ws-v1" / "kraken_ws_v1_book1000_20210405T2347Z.jsonl"


def levels(rows: list[Any]) -> list[BookLevel]:
    if rows and isinstance(rows[0], dict):
        return [BookLevel(Decimal(r["price"]), Decimal(r["qty"])) for r in rows]
    return [BookLevel(Decimal(p), Decimal(q)) for p, q in rows]


def frame(symbol: str = "BTC/USD", *, snapshot: bool = False, bids: Any = (), asks: Any = (),
          checksum: int | None = None, ts: int = 0) -> BookFrame:
    def conv(rows: Any) -> tuple[BookLevel, ...]:
        return tuple(BookLevel(Decimal(p), Decimal(q)) for p, q in rows)

    return BookFrame(symbol=symbol, is_snapshot=snapshot, bids=conv(bids), asks=conv(asks),
                     checksum=checksum, ts_event_ns=ts, ts_recv=float(ts))


def book_frame(raw: str, ts_recv: float) -> BookFrame:
    (fr,) = decode_v2(raw, ts_recv=ts_recv)
    assert isinstance(fr, BookFrame)
    return fr


# --------------------------------------------------------------------------- documented vectors


def test_v2_guide_btcusd_checksum() -> None:
    vec = VECTORS["ws_v2_book_checksum"][0]
    assert vec["id"] == "kraken-docs-ws-v2-book-checksum-guide-btcusd"
    asks, bids = levels(vec["book"]["asks"]), levels(vec["book"]["bids"])
    inst = vec["instrument"]
    kw = {"price_precision": inst["price_precision"], "qty_precision": inst["qty_precision"]}
    assert checksum_text_v2(asks, bids, **kw) == vec["expected"]["checksum_input"]
    assert checksum_v2(asks, bids, **kw) == vec["expected"]["checksum"] == 3310070434


def test_v2_maticusd_snapshot_then_update_through_decoder_and_book() -> None:
    vec = VECTORS["ws_v2_book_checksum"][1]
    book = OrderBook("MATIC/USD", depth=10, price_precision=4, qty_precision=8)
    snap = book_frame(vec["snapshot_message_json"], 1.0)
    book.apply(snap)
    assert book.checksum_text() == vec["expected"]["after_snapshot"]["checksum_input"]
    assert book.checksum() == 2439117997
    # The documented pitfall: formatting from the JSON text instead of the precision.
    assert checksum_v1(book.asks(), book.bids()) == 3830085102
    update = book_frame(vec["update_message_json"], 2.0)
    book.apply(update)
    assert book.checksum_text() == vec["expected"]["after_update"]["checksum_input"]
    assert book.checksum() == 2114181697
    assert book.checksums_verified == 2


def test_v1_worked_example() -> None:
    vec = VECTORS["ws_v1_book_checksum"][0]
    asks, bids = levels(vec["book"]["as"]), levels(vec["book"]["bs"])
    assert checksum_text_v1(asks, bids) == vec["expected"]["checksum_input"]
    assert checksum_v1(asks, bids) == vec["expected"]["checksum"] == 974947235


def test_documented_token_examples() -> None:
    for ex in VECTORS["checksum_token_examples"]:
        if "wire_level" in ex:
            price, qty = (Decimal(v) for v in ex["wire_level"])
            assert checksum_text_v1([BookLevel(price, qty)], []) == ex["token"]
            continue
        level = BookLevel(Decimal(ex["wire"]), Decimal(1))
        text = checksum_text_v2([level], [], price_precision=ex["precision"], qty_precision=0)
        assert text == ex["token"] + "1", ex


def test_only_the_top_ten_levels_count() -> None:
    vec = VECTORS["ws_v2_book_checksum"][0]
    asks, bids = levels(vec["book"]["asks"]), levels(vec["book"]["bids"])
    deeper_asks = [*asks, BookLevel(Decimal("99999.9"), Decimal(5))]
    kw = {"price_precision": 1, "qty_precision": 8}
    assert checksum_v2(deeper_asks, bids, **kw) == checksum_v2(asks, bids, **kw)


# --------------------------------------------------------------------------- book maintenance


def test_snapshot_orders_sides_best_first_and_update_applies_in_message_order() -> None:
    book = OrderBook("BTC/USD", depth=10, price_precision=1, qty_precision=1)
    book.apply(frame(snapshot=True, bids=[("99.0", "1"), ("100.0", "2"), ("98.0", "3")],
                     asks=[("102.0", "1"), ("101.0", "2")], ts=5))
    assert [lvl.price for lvl in book.bids()] == [Decimal("100.0"), Decimal("99.0"),
                                                   Decimal("98.0")]
    assert [lvl.price for lvl in book.asks()] == [Decimal("101.0"), Decimal("102.0")]
    # Same price twice in one message: delete then re-add, and add then delete.
    book.apply(frame(bids=[("100.0", "0"), ("100.0", "4")], asks=[("101.5", "1"),
                                                                  ("101.5", "0")]))
    assert book.bids(1) == (BookLevel(Decimal("100.0"), Decimal(4)),)
    assert Decimal("101.5") not in [lvl.price for lvl in book.asks()]
    # Deleting a level that is not there is a no-op; changing a qty keeps the level's place.
    book.apply(frame(bids=[("50.0", "0"), ("99.0", "7")]))
    assert book.bids() == (BookLevel(Decimal("100.0"), Decimal(4)),
                           BookLevel(Decimal("99.0"), Decimal(7)),
                           BookLevel(Decimal("98.0"), Decimal(3)))
    event = book.to_event(levels=2)
    assert event.best_bid == BookLevel(Decimal("100.0"), Decimal(4))
    assert event.mid == Decimal("100.5") and len(event.bids) == 2
    assert event.ts_event_ns == 0 and book.to_event(ts_event_ns=9).ts_event_ns == 9
    assert book.bids(0) == () and book.asks(0) == ()


def test_each_side_is_truncated_to_depth_after_every_message() -> None:
    book = OrderBook("BTC/USD", depth=2)
    book.apply(frame(snapshot=True, bids=[("10", "1"), ("9", "1"), ("8", "1")],
                     asks=[("11", "1"), ("12", "1"), ("13", "1")]))
    assert len(book) == 4
    # Kraken sends no delete for the level pushed out of scope by a better one.
    book.apply(frame(bids=[("10.5", "1")], asks=[("10.8", "1")]))
    assert [lvl.price for lvl in book.bids()] == [Decimal("10.5"), Decimal("10")]
    assert [lvl.price for lvl in book.asks()] == [Decimal("10.8"), Decimal("11")]
    # A deletion re-exposes nothing: the dropped level is gone for good.
    book.apply(frame(bids=[("10.5", "0")]))
    assert [lvl.price for lvl in book.bids()] == [Decimal("10")]


def test_mismatch_raises_on_that_message_then_book_needs_a_snapshot() -> None:
    vec = VECTORS["ws_v2_book_checksum"][1]
    book = OrderBook("MATIC/USD", depth=10, price_precision=4, qty_precision=8)
    snap = book_frame(vec["snapshot_message_json"], 1.0)
    book.apply(snap)
    bad = vec["update_message_json"].replace("1098.3947558", "1098.3947559")
    update = book_frame(bad, 2.0)
    with pytest.raises(ChecksumMismatch) as info:
        book.apply(update)
    err = info.value
    assert isinstance(err, KrakenError) and isinstance(err, BookOutOfSync)
    assert (err.symbol, err.expected) == ("MATIC/USD", 2114181697)
    assert err.actual == book.checksum() != 2114181697
    assert not book.is_synced
    good = book_frame(vec["update_message_json"], 3.0)
    with pytest.raises(BookOutOfSync):
        book.apply(good)
    book.apply(snap)
    book.apply(good)
    assert book.is_synced and book.checksum() == 2114181697


def test_update_before_snapshot_and_foreign_symbol_are_refused() -> None:
    book = OrderBook("BTC/USD", depth=10, v1=True)
    with pytest.raises(BookOutOfSync):
        book.apply(frame(bids=[("1", "1")]))
    with pytest.raises(ValueError):
        book.apply(frame("ETH/USD", snapshot=True))
    with pytest.raises(ValueError):
        OrderBook("BTC/USD", depth=0)


def test_v2_book_without_precision_applies_but_does_not_verify_until_told() -> None:
    vec = VECTORS["ws_v2_book_checksum"][1]
    book = OrderBook("MATIC/USD", depth=10)
    snap = book_frame(vec["snapshot_message_json"], 1.0)
    book.apply(snap)
    assert not book.verifies and book.checksums_verified == 0
    with pytest.raises(ValueError):
        book.checksum()
    book.set_precision(4, 8)
    update = book_frame(vec["update_message_json"], 2.0)
    book.apply(update)
    assert book.checksums_verified == 1


prices = st.integers(1, 60).map(lambda i: Decimal(i).scaleb(-1))
qtys = st.sampled_from(["0", "0", "1.5", "2", "0.25"]).map(Decimal)
updates = st.lists(st.tuples(st.booleans(), prices, qtys), max_size=8)


@settings(max_examples=200, deadline=None)
@given(snapshot=st.lists(st.tuples(st.booleans(), prices, qtys), max_size=30),
       messages=st.lists(updates, max_size=25), depth=st.integers(1, 12))
def test_book_matches_a_naive_model(snapshot: list[Any], messages: list[Any], depth: int) -> None:
    model: dict[bool, dict[Decimal, Decimal]] = {True: {}, False: {}}

    def model_apply(rows: list[Any]) -> None:
        for is_bid, price, qty in rows:
            if qty:
                model[is_bid][price] = qty
            else:
                model[is_bid].pop(price, None)
        for is_bid in (True, False):
            keep = sorted(model[is_bid], reverse=is_bid)[:depth]
            model[is_bid] = {p: model[is_bid][p] for p in keep}

    def to_frame(rows: list[Any], snap: bool) -> BookFrame:
        return BookFrame(
            symbol="X/Y", is_snapshot=snap, checksum=None, ts_event_ns=0, ts_recv=0.0,
            bids=tuple(BookLevel(p, q) for b, p, q in rows if b),
            asks=tuple(BookLevel(p, q) for b, p, q in rows if not b))

    book = OrderBook("X/Y", depth=depth, price_precision=1, qty_precision=2)
    book.apply(to_frame(snapshot, True))
    model_apply(snapshot)
    for rows in messages:
        book.apply(to_frame(rows, False))
        model_apply(rows)
        expected_bids = [BookLevel(p, model[True][p]) for p in sorted(model[True], reverse=True)]
        expected_asks = [BookLevel(p, model[False][p]) for p in sorted(model[False])]
        assert list(book.bids()) == expected_bids
        assert list(book.asks()) == expected_asks
        assert book.checksum() == checksum_v2(expected_asks, expected_bids,
                                              price_precision=1, qty_precision=2)


# --------------------------------------------------------------------------- recorded v1 replay


def recv_frames(lines: list[str]) -> Iterator[tuple[int, str, Any]]:
    """(line index, raw frame text, parsed record) of every received frame."""
    for i, line in enumerate(lines):
        rec = loads(line)
        if rec["dir"] == "recv":
            yield i, line, rec


def replay(lines: list[str], *, probe: bool = False) -> tuple[int, list[int]]:
    """Replay recorded v1 book frames; return (checksums verified, mutation candidates).

    A candidate is a single-level update whose level is in the top 10 that the checksum covers
    (after applying it for an insert/change, before applying it for a delete), so a change to
    its price must change the checksum of that very message.
    """
    decoder = V1Decoder()
    books: dict[str, OrderBook] = {}
    candidates: list[int] = []
    for i, _, rec in recv_frames(lines):
        for fr in decoder.decode(rec["msg"], ts_recv=rec["ts"]):
            if not isinstance(fr, BookFrame):
                continue
            book = books.get(fr.symbol)
            if book is None:
                depth = decoder.depth(fr.symbol)
                assert depth == 1000
                book = books[fr.symbol] = OrderBook(fr.symbol, depth=depth, v1=True)
            single = (not fr.is_snapshot and fr.checksum is not None
                      and len(fr.bids) + len(fr.asks) == 1)
            if probe and single:
                (lvl,) = fr.bids or fr.asks
                side = book.bids if fr.bids else book.asks
                was_top = lvl.price in {x.price for x in side(10)}
                book.apply(fr)
                now_top = lvl.price in {x.price for x in side(10)}
                if (now_top if lvl.qty else was_top):
                    candidates.append(i)
            else:
                book.apply(fr)
    return sum(b.checksums_verified for b in books.values()), candidates


def mutate_first_price(line: str) -> str:
    """Change one byte of the first level's price: its first fractional digit."""
    start = line.index('[["') + 3
    dot = line.index(".", start)
    digit = line[dot + 1]
    return line[: dot + 1] + str((int(digit) + 1) % 10) + line[dot + 2 :]


def assert_mutation_detected(lines: list[str], target: int) -> None:
    mutated = [*lines[:target], mutate_first_price(lines[target]), *lines[target + 1 :]]
    assert sum(a != b for a, b in zip("".join(lines), "".join(mutated), strict=True)) == 1
    with pytest.raises(ChecksumMismatch) as info:
        replay(mutated[: target + 1])
    msg = loads(lines[target])["msg"]
    assert info.value.expected == int(next(p["c"] for p in msg[1:-2] if "c" in p))
    # And the replay up to just before the target is still clean.
    replay(mutated[:target])


def test_recorded_slice_verifies_every_checksum_and_catches_a_one_byte_change() -> None:
    lines = SLICE.read_text().splitlines()
    verified, candidates = replay(lines, probe=True)
    assert verified == 275
    assert candidates
    assert_mutation_detected(lines, candidates[-1])


@pytest.mark.slow
@pytest.mark.skipif(not FULL.exists(), reason=f"shared recording absent: {FULL}")
def test_full_recording_verifies_all_14496_checksums_and_catches_a_one_byte_change() -> None:
    lines = pathlib.Path(FULL).read_text().splitlines()
    verified, candidates = replay(lines, probe=True)
    assert verified == 14_496
    assert len(candidates) > 1000
    assert_mutation_detected(lines, candidates[len(candidates) // 2])


# --------------------------------------------------------------------------- cached views
# The book caches each side's best levels and checksum bytes and rebuilds only from the best
# rank a message touched (_book._Side). These tests hold the caches to a fresh computation
# after every message, with reads interleaved at random points, so a stale cache shows up on
# the message that made it stale.

cache_prices = st.integers(1, 40).map(lambda i: Decimal(i).scaleb(-1))
# "1.5" and "1.50" are equal Decimals with different v1 tokens: a requote must not keep the
# old token.
cache_qtys = st.sampled_from(["0", "0", "1.5", "1.50", "2", "0.25", "7"]).map(Decimal)
cache_rows = st.lists(st.tuples(st.booleans(), cache_prices, cache_qtys), max_size=6)
reads = st.lists(st.integers(0, 14), max_size=3)


@settings(max_examples=300, deadline=None)
@given(snapshot=st.lists(st.tuples(st.booleans(), cache_prices, cache_qtys), max_size=30),
       messages=st.lists(st.tuples(cache_rows, reads, st.booleans()), max_size=30),
       depth=st.integers(1, 14), v1=st.booleans())
def test_cached_views_and_checksums_match_a_fresh_computation(
    snapshot: list[Any], messages: list[Any], depth: int, v1: bool
) -> None:
    model: dict[bool, dict[Decimal, BookLevel]] = {True: {}, False: {}}

    def model_apply(rows: list[Any]) -> tuple[list[BookLevel], list[BookLevel]]:
        for is_bid, price, qty in rows:
            if qty:
                model[is_bid][price] = BookLevel(price, qty)
            else:
                model[is_bid].pop(price, None)
        for is_bid in (True, False):
            keep = sorted(model[is_bid], reverse=is_bid)[:depth]
            model[is_bid] = {p: model[is_bid][p] for p in keep}
        bids = [model[True][p] for p in sorted(model[True], reverse=True)]
        asks = [model[False][p] for p in sorted(model[False])]
        return bids, asks

    def expected_checksum(bids: list[BookLevel], asks: list[BookLevel]) -> int:
        if v1:
            return checksum_v1(asks, bids)
        return checksum_v2(asks, bids, price_precision=1, qty_precision=2)

    def to_frame(rows: list[Any], snap: bool, checksum: int | None) -> BookFrame:
        return BookFrame(
            symbol="X/Y", is_snapshot=snap, checksum=checksum, ts_event_ns=0, ts_recv=0.0,
            bids=tuple(BookLevel(p, q) for b, p, q in rows if b),
            asks=tuple(BookLevel(p, q) for b, p, q in rows if not b))

    book = (OrderBook("X/Y", depth=depth, v1=True) if v1
            else OrderBook("X/Y", depth=depth, price_precision=1, qty_precision=2))
    bids, asks = model_apply(snapshot)
    book.apply(to_frame(snapshot, True, expected_checksum(bids, asks)))
    for rows, wanted, send_checksum in messages:
        bids, asks = model_apply(rows)
        # With a checksum the book verifies on apply (from its caches); without one the
        # caches are left stale across messages and must catch up on the next read.
        checksum = expected_checksum(bids, asks) if send_checksum else None
        book.apply(to_frame(rows, False, checksum))
        for n in wanted:
            assert book.bids(n) == tuple(bids[:n])
            assert book.asks(n) == tuple(asks[:n])
            event = book.to_event(levels=n)
            assert event.bids == tuple(bids[:n]) and event.asks == tuple(asks[:n])
    assert book.bids() == tuple(bids) and book.asks() == tuple(asks)
    assert book.checksum() == expected_checksum(bids, asks)
    assert book.checksums_verified == 1 + sum(1 for _, _, c in messages if c)


def deep_book(depth: int = 25) -> OrderBook:
    """A verified BTC/USD book with ``depth`` levels per side around 1000."""
    book = OrderBook("BTC/USD", depth=depth, price_precision=1, qty_precision=8)
    bids = [(f"{999 - i}.0", "1") for i in range(depth)]
    asks = [(f"{1001 + i}.0", "1") for i in range(depth)]
    book.apply(frame(snapshot=True, bids=bids, asks=asks))
    return book


def test_mismatch_is_detected_when_the_cached_top_is_reused() -> None:
    book = deep_book()
    book.to_event(levels=10)
    good = book.checksum()
    # A change below the top 10 leaves the cached checksum bytes as they are; the checksum is
    # still compared on this very message.
    book.apply(frame(bids=[("985.0", "3")], checksum=good))
    with pytest.raises(ChecksumMismatch) as info:
        book.apply(frame(asks=[("1015.0", "2")], checksum=good ^ 1))
    assert info.value.expected == good ^ 1 and info.value.actual == good
    assert not book.is_synced


def test_in_place_change_inside_the_top_ten_changes_the_checksum_at_once() -> None:
    book = deep_book()
    before = book.checksum()
    with pytest.raises(ChecksumMismatch) as info:
        book.apply(frame(asks=[("1004.0", "2.5")], checksum=before))  # rank 3, same price
    assert info.value.actual != before
    assert book.asks(5)[3] == BookLevel(Decimal("1004.0"), Decimal("2.5"))


def test_an_untouched_side_hands_out_the_same_levels_again() -> None:
    book = deep_book()
    first = book.to_event(levels=10)
    book.apply(frame(bids=[("998.0", "4")]))
    second = book.to_event(levels=10)
    assert second.asks is first.asks  # the ask side was not touched: no rebuild at all
    assert second.bids[0] is first.bids[0]  # ranks above the change are reused
    assert second.bids[1] == BookLevel(Decimal("998.0"), Decimal(4))
    assert second.bids[2:] == first.bids[2:]


def test_wide_reads_and_new_precisions_are_not_served_from_stale_caches() -> None:
    book = deep_book(depth=500)
    wide = book.asks(300)  # wider than the cache keeps: built directly
    assert len(wide) == 300 and wide == book.asks()[:300]
    assert wide[-1].price == Decimal("1300.0")
    assert book.bids(300) == book.bids()[:300] and book.bids(300)[-1].price == Decimal("700.0")
    assert book.to_event(levels=40).bids == book.bids()[:40]  # the cache widens to 40
    book.apply(frame(bids=[("999.0", "0")]))
    assert book.to_event(levels=40).bids == book.bids()[:40]
    assert book.bids(40)[0].price == Decimal("998.0")
    text = book.checksum_text()
    book.set_precision(2, 8)
    assert book.checksum_text() != text
    assert book.checksum_text() == checksum_text_v2(
        book.asks(10), book.bids(10), price_precision=2, qty_precision=8)


def test_to_event_builds_the_same_object_as_the_bookevent_constructor() -> None:
    """``to_event`` fills BookEvent's slots directly (hot path); it must equal the real thing."""
    from protocol.messages import BookEvent

    book = OrderBook("A", depth=10)
    lvl = BookLevel(Decimal("1.5"), Decimal("2"))
    book.apply(BookFrame(symbol="A", is_snapshot=True, bids=(lvl,), asks=(), checksum=None,
                         ts_event_ns=5, ts_recv=1.25))
    event = book.to_event(levels=10)
    expected = BookEvent(symbol="A", bids=(lvl,), asks=(), ts_event_ns=5, ts_recv=1.25)
    assert type(event) is BookEvent
    assert event == expected and hash(event) == hash(expected) and repr(event) == repr(expected)
    assert event.synthetic is False and event.mid is None

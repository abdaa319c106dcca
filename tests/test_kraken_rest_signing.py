"""REST signing (PROTOCOL.md §2) and the credentials holder's secrecy."""

from __future__ import annotations

import base64
import json
import pickle

import pytest

from protocol.kraken._signing import KrakenCredentials, sign_request
from tests.conftest import FIXTURES, SHARED

VECTORS = json.loads((FIXTURES / "kraken_rest" / "docs_examples.json").read_text())[
    "rest_signature"
]
SECRET = VECTORS[0]["inputs"]["private_key_b64"]


@pytest.mark.parametrize("vector", VECTORS, ids=[v["id"] for v in VECTORS])
def test_signature_vectors_reproduce(vector: dict[str, object]) -> None:
    inputs = vector["inputs"]
    assert isinstance(inputs, dict)
    expected = vector["expected"]
    assert isinstance(expected, dict)
    sig = sign_request(inputs["private_key_b64"], inputs["uri_path"], inputs["nonce"],
                       inputs["post_body"].encode())
    assert sig == expected["API-Sign"]
    creds = KrakenCredentials("public-key-123456", inputs["private_key_b64"])
    assert creds.sign(inputs["uri_path"], int(inputs["nonce"]),
                      inputs["post_body"].encode()) == expected["API-Sign"]


def test_published_vector_literal() -> None:
    # Written out literally as well, so a corrupted fixture cannot make the test vacuous.
    assert sign_request(
        "kQH5HW/8p1uGOVjbgWA7FunAmGO8lsSUXNsu3eow76sz84Q18fWxnyRzBHCd3pd5nE9qa99HAZtuZuj6F1huXg==",
        "/0/private/AddOrder",
        1616492376594,
        b"nonce=1616492376594&ordertype=limit&pair=XBTUSD&price=37500&type=buy&volume=1.25",
    ) == "4/dpxb3iT4tp/ZCVEwSnEsLxx0bqyhLpdfOpc6fn7OR8+UClSV5n9E6aSS8MPtnRfp32bAb0nmbRn6H8ndwLUQ=="


def test_fixture_matches_shared_vectors() -> None:
    path = SHARED / "kraken" / "vectors.json"
    if not path.exists():
        pytest.skip(f"shared reference material not present at {path}")
    assert json.loads(path.read_text())["rest_signature"] == VECTORS


def test_signature_changes_with_body() -> None:
    body = b"nonce=1&pair=XBTUSD"
    assert sign_request(SECRET, "/0/private/X", 1, body) != sign_request(
        SECRET, "/0/private/X", 1, body + b"&a=b")


def test_credentials_mask_both_values() -> None:
    creds = KrakenCredentials("ABCDEFGHIJKLMNOP", SECRET)
    for text in (repr(creds), str(creds), f"{creds}", f"{creds!r}", f"{[creds]}"):
        assert SECRET not in text
        assert "ABCDEFGHIJKLMNOP" not in text
        assert "***" in text
    assert creds.api_key == "ABCDEFGHIJKLMNOP"
    assert not hasattr(creds, "__dict__")  # no accidental vars() dump of the secret


def test_credentials_refuse_pickling() -> None:
    with pytest.raises(TypeError):
        pickle.dumps(KrakenCredentials("key", SECRET))


def test_bad_secret_error_does_not_quote_it() -> None:
    bad = "not//base64" + "!" * 7
    with pytest.raises(ValueError) as info:
        KrakenCredentials("key", bad)
    assert bad not in str(info.value)
    assert info.value.__cause__ is None and info.value.__suppress_context__


def test_from_env() -> None:
    assert KrakenCredentials.from_env({}) is None
    assert KrakenCredentials.from_env({"KRAKEN_API_KEY": "k"}) is None
    creds = KrakenCredentials.from_env({"KRAKEN_API_KEY": "k", "KRAKEN_API_SECRET": SECRET})
    assert creds is not None and creds.api_key == "k"
    assert creds == KrakenCredentials("k", SECRET)
    assert creds != KrakenCredentials("k", base64.b64encode(b"other").decode())

"""The request API's JSON in and out (edged/api/codec.py), without a broker: what ``load`` and
``check`` refuse, naming the field, and a reply encoder that cannot fail."""

from __future__ import annotations

import json
import logging

import pytest

from edged.api import codec
from edged.errors import BadArgument


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        (b'{"transaction": "\\ud800"}', "transaction: a lone UTF-16 surrogate"),
        (b'{"name": "\xed\xa0\x80"}', "name: a lone UTF-16 surrogate"),
        (b'{"auth": {"\\udfff": 1}}', "auth.\\udfff: a lone UTF-16 surrogate (\\ud800-\\udfff) in a key"),
        (b'{"faceIds": ["a", "\\udc00"]}', "faceIds.1: a lone UTF-16 surrogate"),
        (b'{"top": ' + b"9" * 5000 + b"}", "top: an integer of 5,000 digits is out of range"),
        (b'{"a": [{"b": -' + b"9" * 400 + b"}]}", "a.0.b: an integer of 400 digits is out of range"),
        (b'{"auth": {"ts": 1e400}}', "auth.ts: inf is not a finite number"),
        (b'{"far": NaN}', "far: nan is not a finite number"),
        (b'{"far": -Infinity}', "far: -inf is not a finite number"),
        (b"[1]", "the request must be a JSON object, not list"),
        (b"{", "the request is not valid JSON"),
    ],
)
def test_what_no_field_can_hold_is_a_bad_argument_naming_the_field(payload: bytes, message: str) -> None:
    with pytest.raises(BadArgument) as refused:
        codec.check(codec.load(payload))
    assert refused.value.message.startswith(message), refused.value.message
    refused.value.message.encode("utf-8")  # the message itself is valid text


@pytest.mark.parametrize(
    "payload",
    [
        b'{"name": "\\ud83d\\ude00 \xf0\x9f\x98\x80", "far": 0.5, "top": 1000, "x": null, "y": true}',
        b'{"ts": ' + str(2**1023).encode() + b", " + b'"big": 1.7976931348623157e308}',
    ],
)
def test_plain_json_passes(payload: bytes) -> None:
    body = codec.load(payload)
    codec.check(body)
    assert body == json.loads(payload)


def test_a_transaction_that_is_not_text_is_never_echoed() -> None:
    assert codec.transaction_of({"transaction": "t-1"}) == "t-1"
    for bad in ("\ud800", "", "x" * 129, 7, None):
        assert codec.transaction_of({"transaction": bad}) is None
    assert codec.peek_transaction(b'{"transaction": "\xed\xa0\x80"}') is None
    big = b'{"image": "' + b"A" * codec.PEEK_BYTES + b'", "transaction": "'
    assert codec.peek_transaction(big + b't-2"}') == "t-2"
    assert codec.peek_transaction(big + b'\xed\xa0\x80"}') is None


def test_the_reply_encoder_cannot_fail(caplog: pytest.LogCaptureFixture) -> None:
    refused = json.loads(codec.error_reply("detect", "t-1", "BadArgument", "key \ud800 here"))
    assert refused["error"] == {"code": "BadArgument", "message": "key \\ud800 here"}
    with caplog.at_level(logging.ERROR, logger="edged.api.codec"):
        for result in ({"x": float("nan")}, {"x": "\udfff"}, {"x": object()}):
            reply = json.loads(codec.reply("detect", "t-1", result))
            assert reply == {
                "schema": 1,
                "op": "detect",
                "transaction": "t-1",
                "ok": False,
                "error": {
                    "code": "InternalError",
                    "message": "internal error (the reply could not be encoded)",
                },
            }
    assert len(caplog.records) == 3 and "detect reply cannot be encoded" in caplog.records[0].getMessage()

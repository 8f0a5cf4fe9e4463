"""Claim payloads (edged/mqtt/claims.py): what is accepted, every way a claim is refused with its
reason code, and that a card number never appears in a message or a repr."""

from __future__ import annotations

import json

import pytest

from edged.mqtt.claims import BAD_JSON, INVALID, RETAINED, Claim, ClaimRejected, parse_claim

CARD = "04A1B2C3D4E5F6"


def raw(value: object) -> bytes:
    return json.dumps(value).encode()


def test_a_claim_by_person_or_by_card() -> None:
    assert parse_claim(raw({"schema": 1, "person_id": "p-1"})) == Claim("p-1")
    assert parse_claim(raw({"schema": 1, "card_id": CARD, "event_id": "e1"})) == Claim(None, CARD, "e1")


@pytest.mark.parametrize(
    ("payload", "reason", "says"),
    [
        (b"{not json", BAD_JSON, "not UTF-8 JSON"),
        (b"\xff\xfe", BAD_JSON, "not UTF-8 JSON"),
        pytest.param(b"[" * 2000 + b"]" * 2000, BAD_JSON, "RecursionError", id="nested"),
        (raw(["person_id", "p-1"]), BAD_JSON, "a claim is a JSON object, not list"),
        (raw({"schema": 1, "person_id": "p-1", "door": "front"}), INVALID, "door: unknown field"),
        (raw({"schema": 2, "person_id": "p-1"}), INVALID, "schema: Input should be 1"),
        (raw({"person_id": "p-1"}), INVALID, "schema: Field required"),
        (raw({"schema": 1}), INVALID, "exactly one of person_id and card_id"),
        (
            raw({"schema": 1, "person_id": "p", "card_id": CARD}),
            INVALID,
            "exactly one of person_id and card_id",
        ),
        (raw({"schema": 1, "person_id": ""}), INVALID, "person_id: String should have at least 1"),
        (raw({"schema": 1, "person_id": 7}), INVALID, "person_id: Input should be a valid string"),
        (raw({"schema": 1, "person_id": "p", "pad": "x" * 5000}), INVALID, "at most 4096"),
    ],
)
def test_malformed_claims_are_refused_with_a_reason(payload: bytes, reason: str, says: str) -> None:
    with pytest.raises(ClaimRejected) as excinfo:
        parse_claim(payload)
    assert excinfo.value.reason == reason
    assert says in excinfo.value.message


def test_a_retained_claim_is_refused() -> None:
    with pytest.raises(ClaimRejected) as excinfo:
        parse_claim(raw({"schema": 1, "person_id": "p-1"}), retained=True)
    assert excinfo.value.reason == RETAINED


def test_a_card_number_never_appears_in_a_message_or_repr() -> None:
    long_card = CARD * 10  # over the 128-character limit
    with pytest.raises(ClaimRejected) as excinfo:
        parse_claim(raw({"schema": 1, "card_id": long_card}))
    assert excinfo.value.reason == INVALID
    assert CARD not in str(excinfo.value) and CARD not in excinfo.value.message
    with pytest.raises(ClaimRejected) as both:
        parse_claim(raw({"schema": 1, "card_id": CARD, "person_id": "p"}))
    assert CARD not in str(both.value)
    assert CARD not in repr(Claim(None, CARD))

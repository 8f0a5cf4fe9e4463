"""Verify-mode claims on ``edged/<device>/door/<door>/claim`` (inbound, from a card reader or a door
controller): ``{"schema": 1, "person_id": "…"}`` or ``{"schema": 1, "card_id": "…"}``, with an
optional ``event_id`` the sender chooses (echoed in the log, for correlation).

``parse_claim`` turns the payload bytes into a ``Claim`` or raises ``ClaimRejected`` with a stable
reason code and a message that never repeats a card number (card numbers are personal data):

    bad_json        not UTF-8 JSON, or not a JSON object
    invalid         schema, unknown or missing fields, both or neither of person_id / card_id
    retained        a retained message: a claim is a live event, never replayed to a new subscriber

The door adds the reasons it finds later (``edged.door.claims``): ``queue_full`` (the worker's
inbox is full), and on the worker thread ``unknown_card`` and ``unknown_person`` (not in the door's
group). ``claim_handler`` is the subscription's handler: parse, then queue for the worker.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Literal, Protocol

from pydantic import Field, ValidationError, model_validator

from edged.door.claims import QUEUE_FULL, Claim, ClaimInbox
from edged.door.events import UNKNOWN_CARD, UNKNOWN_PERSON
from edged.strict import Strict

__all__ = [
    "BAD_JSON",
    "INVALID",
    "MAX_CARD_ID",
    "QUEUE_FULL",
    "RETAINED",
    "UNKNOWN_CARD",
    "UNKNOWN_PERSON",
    "Claim",
    "ClaimPayload",
    "ClaimRejected",
    "claim_handler",
    "parse_claim",
]

BAD_JSON = "bad_json"
INVALID = "invalid"
RETAINED = "retained"

MAX_CARD_ID = 128
MAX_PAYLOAD = 4096


class ClaimPayload(Strict):
    """The claim message (unknown keys are refused)."""

    schema_: Literal[1] = Field(alias="schema", description="payload version")
    person_id: str | None = Field(None, min_length=1, max_length=64, description="the claimed person")
    card_id: str | None = Field(
        None, min_length=1, max_length=MAX_CARD_ID, description="a card number mapped to a person"
    )
    event_id: str | None = Field(None, min_length=1, max_length=128, description="the sender's event ID")

    @model_validator(mode="after")
    def _one(self) -> ClaimPayload:
        if (self.person_id is None) == (self.card_id is None):
            raise ValueError("give exactly one of person_id and card_id")
        return self


class ClaimRejected(Exception):
    """A claim that is not acted on: ``reason`` is a stable code, ``message`` says why."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(f"{reason}: {message}")
        self.reason = reason
        self.message = message


def parse_claim(payload: bytes, retained: bool = False) -> Claim:
    """The claim in ``payload``, or ``ClaimRejected``."""
    if retained:
        raise ClaimRejected(RETAINED, "a retained claim is ignored (a claim is a live event)")
    if len(payload) > MAX_PAYLOAD:
        raise ClaimRejected(INVALID, f"the payload is {len(payload)} bytes; a claim is at most {MAX_PAYLOAD}")
    try:
        data = json.loads(payload.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise ClaimRejected(BAD_JSON, f"not UTF-8 JSON ({type(exc).__name__})") from None
    if not isinstance(data, dict):
        raise ClaimRejected(BAD_JSON, f"a claim is a JSON object, not {type(data).__name__}")
    try:
        claim = ClaimPayload.model_validate(data)
    except ValidationError as exc:
        # field names and error kinds only: the input values (a card number) are left out
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or '(payload)'}: "
            f"{'unknown field' if err['type'] == 'extra_forbidden' else err['msg']}"
            for err in exc.errors(include_input=False, include_url=False)
        )
        raise ClaimRejected(INVALID, problems) from None
    return Claim(claim.person_id, claim.card_id, claim.event_id)


class Inbound(Protocol):
    """What the handler reads of a received message (``edged.mqtt.client.InboundMessage``)."""

    @property
    def payload(self) -> bytes: ...

    @property
    def retain(self) -> bool: ...


def claim_handler(inbox: ClaimInbox, door: str) -> Callable[[Inbound], None]:
    """The handler of ``door``'s claim topic, on paho's thread: parse, then queue for the worker (never
    blocks; a malformed claim or a full queue is rejected: counted and logged, never fatal)."""

    def handle(message: Inbound) -> None:
        try:
            claim = parse_claim(message.payload, retained=message.retain)
        except ClaimRejected as exc:
            inbox.reject(door, exc.reason, exc.message)
            return
        inbox.submit(door, claim)

    return handle

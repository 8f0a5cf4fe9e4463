"""Cards for verify-mode claims. A card number is never stored: a card is the HMAC-SHA256 of its
number under a random card key that the KEK wraps, mapped to a person and deleted with it."""

from __future__ import annotations

import hashlib
import hmac

from edged.clock import Clock
from edged.directory.db import Db
from edged.directory.keys import Keys
from edged.directory.persons import Persons
from edged.errors import BadArgument, CardNotFound

MAX_CARD_ID = 128


def normalize_card(card_id: str) -> str:
    """A card number as it is hashed: surrounding whitespace removed, letters in lower case (readers
    print hexadecimal UIDs in either case). Raises ``BadArgument`` without repeating the number."""
    if not isinstance(card_id, str):
        raise BadArgument(f"a card ID is a string, not {type(card_id).__name__}")
    text = card_id.strip().lower()
    if not 1 <= len(text) <= MAX_CARD_ID or not text.isprintable():
        raise BadArgument(f"a card ID is 1-{MAX_CARD_ID} printable characters")
    return text


def card_ref(card_hash: bytes) -> str:
    """A short public reference to a card for the audit log: a prefix of its keyed hash."""
    return card_hash[:8].hex()


class Cards:
    """The ``cards`` table: keyed hash of a card number → person."""

    def __init__(self, db: Db, keys: Keys, clock: Clock, persons: Persons) -> None:
        self.db = db
        self.keys = keys
        self.clock = clock
        self.persons = persons

    def _hash(self, card_id: str) -> bytes:
        return hmac.new(self.keys.card_key(), normalize_card(card_id).encode(), hashlib.sha256).digest()

    def set(self, card_id: str, group_id: str | None, person_id: str) -> str:
        """Map a card to a person (in ``group_id``, or the directory), replacing the card's previous
        person. Returns the card's reference (``card_ref``)."""
        person = self.persons.row(group_id, person_id)
        digest = self._hash(card_id)
        with self.db.tx() as db:
            db.execute(
                "INSERT INTO cards VALUES (?, ?, ?) ON CONFLICT (card_hash) DO UPDATE"
                " SET person_id = excluded.person_id, created = excluded.created",
                (digest, person.person_id, self.clock.now()),
            )
        return card_ref(digest)

    def delete(self, card_id: str) -> str:
        """Remove a card (``CardNotFound`` when no person has it); returns its reference."""
        digest = self._hash(card_id)
        with self.db.tx() as db:
            deleted = db.execute("DELETE FROM cards WHERE card_hash = ?", (digest,)).rowcount
        if not deleted:
            raise CardNotFound("no person has this card")
        self.db.checkpoint()
        return card_ref(digest)

    def person_for(self, card_id: str) -> str | None:
        """The person a card is mapped to, or None."""
        person_id = self.db.scalar("SELECT person_id FROM cards WHERE card_hash = ?", (self._hash(card_id),))
        return None if person_id is None else str(person_id)

    def count(self, person_id: str) -> int:
        return int(self.db.scalar("SELECT COUNT(*) FROM cards WHERE person_id = ?", (person_id,)))

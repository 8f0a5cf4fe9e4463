"""Verify-mode claims on their way to a door: the ``Claim`` value, and the ``ClaimInbox`` that carries
them from the network thread (paho's, which parses them: ``edged.mqtt.claims``) to the door worker,
which looks the card up, checks the person against the door's group and opens the decider's window.

The inbox is bounded: when ``capacity`` claims are already waiting, another is rejected at once
(``queue_full``). Every rejection, wherever it is found, is counted by reason and logged as one
warning line; card numbers never appear in either.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field

__all__ = ["CLAIM_QUEUE", "QUEUE_FULL", "Claim", "ClaimCounts", "ClaimInbox", "PendingClaim"]

logger = logging.getLogger(__name__)

QUEUE_FULL = "queue_full"
CLAIM_QUEUE = 32
"""Claims waiting for the worker; more are rejected (``queue_full``), logged and counted."""


@dataclass(frozen=True, slots=True)
class Claim:
    """A well-formed claim: exactly one of ``person_id`` and ``card_id``."""

    person_id: str | None
    card_id: str | None = None
    event_id: str | None = None

    def __repr__(self) -> str:  # never print a card number
        card = None if self.card_id is None else "***"
        return f"Claim(person_id={self.person_id!r}, card_id={card!r}, event_id={self.event_id!r})"


@dataclass(frozen=True, slots=True)
class PendingClaim:
    """A claim for the door ``door``, waiting for the worker."""

    door: str
    claim: Claim


@dataclass(frozen=True, slots=True)
class ClaimCounts:
    """For the stats topic: claims accepted, rejected by reason (cumulative), and waiting now."""

    accepted: int = 0
    rejected: Mapping[str, int] = field(default_factory=dict)
    waiting: int = 0

    def to_payload(self) -> dict[str, int | dict[str, int]]:
        return {"accepted": self.accepted, "rejected": dict(self.rejected), "waiting": self.waiting}


class ClaimInbox:
    """The bounded queue of claims between the network thread and the worker. Thread-safe."""

    def __init__(self, capacity: int = CLAIM_QUEUE) -> None:
        if capacity < 1:
            raise ValueError(f"the claim queue needs room for at least one claim, not {capacity}")
        self.capacity = capacity
        self._queue: queue.Queue[PendingClaim] = queue.Queue(capacity)
        self._lock = threading.Lock()
        self._accepted = 0
        self._rejected: Counter[str] = Counter()

    def submit(self, door: str, claim: Claim) -> bool:
        """Queue ``claim`` for the worker (never blocks); False when the queue is full (rejected)."""
        try:
            self._queue.put_nowait(PendingClaim(door, claim))
        except queue.Full:
            self.reject(door, QUEUE_FULL, f"{self.capacity} claims are already waiting", claim.event_id)
            return False
        return True

    def take(self) -> PendingClaim | None:
        """The oldest waiting claim, or None (the worker's side)."""
        try:
            return self._queue.get_nowait()
        except queue.Empty:
            return None

    def reject(self, door: str, reason: str, message: str, event_id: str | None = None) -> None:
        """A claim not acted on: counted by ``reason``, one warning line."""
        with self._lock:
            self._rejected[reason] += 1
        logger.warning(
            "door %s: claim rejected (%s): %s%s",
            door,
            reason,
            message,
            f" [event {event_id}]" if event_id else "",
        )

    def accepted(self, door: str, person_id: str, how: str, event_id: str | None = None) -> None:
        """A claim that opened the door's window: counted, one info line."""
        with self._lock:
            self._accepted += 1
        logger.info(
            "door %s: claim for person %s (by %s)%s",
            door,
            person_id,
            how,
            f" [event {event_id}]" if event_id else "",
        )

    def counts(self) -> ClaimCounts:
        with self._lock:
            return ClaimCounts(self._accepted, dict(self._rejected), self._queue.qsize())

"""Receipts: proof of a deletion, signed with the device key (``Keys.receipt`` signs them)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from edged.directory.crypto import canonical

NOTHING_SHREDDED = hashlib.sha256(b"").hexdigest()
"""``shredded_keys_sha256`` of a deletion that destroyed no data key (one face of an owner)."""


@dataclass(frozen=True, slots=True)
class Receipt:
    """What was deleted, signed with the device key (verify with ``crypto.verify_signature`` over
    ``payload()``). Its fields are the wire form of a receipt too (``edged.api.wire``)."""

    operation: str
    targets: dict[str, str]
    deleted: dict[str, int]
    shredded_keys_sha256: str
    time: float
    device_public_key: str
    signature: str

    def payload(self) -> bytes:
        """The signed bytes: every field but the signature, canonical JSON."""
        return canonical(
            {
                "operation": self.operation,
                "targets": self.targets,
                "deleted": self.deleted,
                "shredded_keys_sha256": self.shredded_keys_sha256,
                "time": self.time,
                "device_public_key": self.device_public_key,
            }
        )

"""The quota of face IDs: detect stores a template for every face ID it returns (≈ 1.2 KB on disk,
for up to 24 h), so the face IDs that have not expired ("live") are capped per client
(``directory.face_ids_per_client``) and in all (``directory.face_ids_max``), and none is created
while the state directory's filesystem has less free space than ``directory.face_ids_min_free_mb``
(the door's outbox and the directory must still be able to commit). Beyond any of them detect
answers ``QuotaExceeded`` naming the limit and what to do; ``returnFaceId=false`` stores nothing
and needs no quota. A client is the requester's identity (``Caller.actor``: ``mqtt:<client>`` for a
signed client, ``mqtt:(unsigned)`` for all unsigned requests together, ``cli``).

The free space is read through a callable (``FreeBytes``; ``free_bytes`` by default: ``statvfs``
of the state directory), the seam a test uses to put the floor where it wants it.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from edged.clock import Clock
from edged.directory.transient import LiveFaces, TransientFaces
from edged.errors import QuotaExceeded
from edged.service.settings import DirectorySettings

__all__ = ["FaceIdQuota", "FaceIdUsage", "FreeBytes", "free_bytes"]

logger = logging.getLogger(__name__)

MB = 1024 * 1024

FreeBytes = Callable[[], int]
"""The free bytes of the filesystem that holds the directory."""


def free_bytes(path: Path) -> int:
    """The bytes an unprivileged process may still write on the filesystem of ``path``."""
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


@dataclass(frozen=True, slots=True)
class FaceIdUsage:
    """The live face IDs and the free space, for the stats topic; ``refusing`` says why detect
    gives no new face IDs now (``disk_floor``, ``face_ids_max``) or is None."""

    live: int
    limit: int
    disk_free_bytes: int
    disk_floor_bytes: int

    @property
    def refusing(self) -> str | None:
        if self.disk_free_bytes < self.disk_floor_bytes:
            return "disk_floor"
        return "face_ids_max" if self.live >= self.limit else None


class FaceIdQuota:
    """The checks before detect stores face IDs (under the service lock, so a check and the
    insertions after it are not interleaved with another request's)."""

    def __init__(
        self, transient: TransientFaces, settings: DirectorySettings, free: FreeBytes, clock: Clock
    ) -> None:
        self.transient = transient
        self.settings = settings
        self.free = free
        self.clock = clock
        self._low_disk = False

    @property
    def floor_bytes(self) -> int:
        return self.settings.face_ids_min_free_mb * MB

    def check(self, client: str, adding: int) -> None:
        """``QuotaExceeded`` unless ``client`` may have ``adding`` more face IDs now."""
        self._check_disk()
        per_client = self.settings.face_ids_per_client
        mine = self.transient.live(client)
        if mine.count + adding > per_client:
            raise self._exceeded(f"client {client!r}", mine, adding, per_client, "face_ids_per_client")
        everyone = self.transient.live()
        if everyone.count + adding > self.settings.face_ids_max:
            raise self._exceeded("this device", everyone, adding, self.settings.face_ids_max, "face_ids_max")

    def usage(self) -> FaceIdUsage:
        return FaceIdUsage(
            self.transient.live().count, self.settings.face_ids_max, self.free(), self.floor_bytes
        )

    def _check_disk(self) -> None:
        free, floor = self.free(), self.floor_bytes
        low = free < floor
        if low != self._low_disk:
            self._low_disk = low
            if low:  # INFO: the CLI's one line is the error itself; the daemon logs INFO
                logger.info(
                    "face IDs: %d MB free, under the floor of %d MB: refusing new ones",
                    free // MB,
                    floor // MB,
                )
            else:
                logger.info("face IDs: %d MB free again: new ones are given", free // MB)
        if low:
            raise QuotaExceeded(
                f"no new face IDs: the state directory's filesystem has {free // MB} MB free, under"
                f" directory.face_ids_min_free_mb ({floor // MB} MB); free disk space, or call detect"
                " with returnFaceId=false (it stores nothing)"
            )

    def _exceeded(self, who: str, live: LiveFaces, adding: int, limit: int, setting: str) -> QuotaExceeded:
        if live.next_expiry is None:
            when = "none is live: the image has more faces than the limit"
        else:
            at = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(live.next_expiry))
            when = f"the next of them expires in {max(live.next_expiry - self.clock.now(), 0):.0f} s ({at})"
        return QuotaExceeded(
            f"{who} holds {live.count:,} live face IDs; {adding} more would pass {limit:,}, the limit"
            f" (directory.{setting}); {when}. Ask for shorter-lived face IDs (faceIdTimeToLive), or"
            " call detect with returnFaceId=false (it stores nothing)"
        )

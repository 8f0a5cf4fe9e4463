"""The face operations' access to the directory: one lock (the service lock) over the store, which
shares one SQLite connection, the index cache, the directory version as last seen, and the recipe of
every directory change — the policy allows the caller (a refusal is audited), the change runs under
the lock, and its audit record is written when it succeeded."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from edged.directory.receipts import Receipt
from edged.directory.store import Store
from edged.inference.manifest import Calibration
from edged.service import policy
from edged.service.finder import FaceFinder
from edged.service.indexes import Indexes
from edged.service.policy import Caller
from edged.service.settings import DirectorySettings


@dataclass(slots=True)
class Change:
    """What a directory change records in the audit log: the IDs it touched and its result (filled
    in by the change as it goes)."""

    targets: dict[str, str] = field(default_factory=dict)
    result: str = "ok"

    def receipt(self, receipt: Receipt) -> None:
        """The result of a deletion: ``ok`` and the start of its receipt's signature."""
        self.result = f"ok; receipt {receipt.signature[:32]}"


class DirectoryAccess:
    """The service lock, the store it guards, the index cache and the directory version."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.lock = threading.RLock()
        self.indexes = Indexes(store, self.lock)
        self._data_version = store.data_version()  # changes when another connection commits
        self._version = store.version()

    # -- who may, and what they did -----------------------------------------------------------------

    def audit(self, operation: str, actor: str, role: str, targets: dict[str, str], result: str) -> None:
        """An audit record: IDs and outcomes only."""
        with self.lock:
            self.store.audit.append(operation, actor, role, targets, result)

    def allow(self, caller: Caller, operation: str) -> None:
        """``Forbidden`` (audited) unless the policy lets the caller's role run ``operation``."""
        if not policy.allows(caller.role, operation):
            self.audit(operation, caller.actor, caller.role, {}, "refused: role")
            raise policy.refusal(caller.role, operation)

    @contextmanager
    def change(self, caller: Caller, operation: str) -> Iterator[Change]:
        """A directory change: the caller is allowed (or refused: audited, ``Forbidden``), the block
        runs under the service lock, and when it completes its audit record is written and the
        directory version noted. A block that raises writes no record (a refusal it decides is
        recorded with ``audit``)."""
        self.allow(caller, operation)
        with self.lock:
            change = Change()
            yield change
            self.store.audit.append(operation, caller.actor, caller.role, change.targets, change.result)
            self.noticed()

    # -- the directory version ----------------------------------------------------------------------

    def version(self) -> int:
        """The directory version as last noticed (no lock, no SQL)."""
        return self._version

    def noticed(self) -> None:
        """Re-read the directory version (after a change of this process's own)."""
        with self.lock:
            self._version = self.store.version()

    def refresh(self) -> int:
        """Pick up what other processes committed to the directory: SQLite's ``data_version`` of
        the shared connection changes only when another connection commits, so an unchanged
        directory costs one PRAGMA. After a change, the directory version is re-read and every
        cached index re-synced (``Indexes.resync_all``). Returns the number of indexes checked; on
        an error the next call tries again."""
        with self.lock:
            data_version = self.store.data_version()
            if data_version == self._data_version:
                return 0
            self._version = self.store.version()
            synced = self.indexes.resync_all()
            self._data_version = data_version
            return synced


class Operations:
    """What a group of face operations works with: the directory (``access``), the pipeline
    (``finder``), the directory settings, the embedder's calibration and model ID."""

    def __init__(
        self,
        access: DirectoryAccess,
        finder: FaceFinder,
        settings: DirectorySettings,
        calibration: Calibration,
        model_id: str,
    ) -> None:
        self.access = access
        self.store = access.store
        self.indexes = access.indexes
        self.finder = finder
        self.settings = settings
        self.calibration = calibration
        self.model_id = model_id

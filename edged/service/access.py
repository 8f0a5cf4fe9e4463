"""The face operations' access to the directory: one lock (the service lock) over the store, which
shares one SQLite connection, the index cache, the directory version as last seen, and the recipe of
every directory change — the policy allows the caller (a refusal is audited), the change and its
audit record commit in one transaction under the lock (both or neither: a process killed at any
point leaves no change without its record), and the cached indexes follow once it committed.

A refusal decided inside a change (a duplicate identity) is rolled back with the change, but its
record is not: ``audit`` writes it once the transaction has ended. ``transaction`` puts several
changes in one (an enrolment: the person and all its faces)."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
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

logger = logging.getLogger(__name__)


@dataclass(slots=True)
class Change:
    """What a directory change records in the audit log: the IDs it touched and its result (filled
    in by the change as it goes)."""

    targets: dict[str, str] = field(default_factory=dict)
    result: str = "ok"
    effects: list[Callable[[], None]] = field(default_factory=list)

    def receipt(self, receipt: Receipt) -> None:
        """The result of a deletion: ``ok`` and the start of its receipt's signature."""
        self.result = f"ok; receipt {receipt.signature[:32]}"

    def then(self, effect: Callable[[], None]) -> None:
        """Do ``effect`` (a cached index following the change) once the change has committed: never
        for a change rolled back, and never before (the door does not see a change that may not be)."""
        self.effects.append(effect)


class DirectoryAccess:
    """The service lock, the store it guards, the index cache and the directory version."""

    def __init__(self, store: Store, model_id: str | None = None, dim: int = 128) -> None:
        """``model_id``/``dim``: the recognition model of the indexes' templates (``Indexes``)."""
        self.store = store
        self.lock = threading.RLock()
        self.indexes = Indexes(store, self.lock, model_id, dim)
        self._data_version = store.data_version()  # changes when another connection commits
        self._version = store.version()
        self._refusals: list[tuple[str, str, str, dict[str, str], str]] = []  # waiting for a commit

    # -- who may, and what they did -----------------------------------------------------------------

    def audit(self, operation: str, actor: str, role: str, targets: dict[str, str], result: str) -> None:
        """An audit record that stands on its own (a refusal): IDs and outcomes only. Written now,
        or, inside a transaction (a change refused halfway), as soon as that has ended, committed
        or rolled back: the refusal is recorded even though its change is not."""
        with self.lock:
            if self.store.db.in_transaction:
                self._refusals.append((operation, actor, role, dict(targets), result))
            else:
                self.store.audit.append(operation, actor, role, targets, result)

    def allow(self, caller: Caller, operation: str) -> None:
        """``Forbidden`` (audited) unless the policy lets the caller's role run ``operation``."""
        if not policy.allows(caller.role, operation):
            self.audit(operation, caller.actor, caller.role, {}, "refused: role")
            raise policy.refusal(caller.role, operation)

    @contextmanager
    def change(self, caller: Caller, operation: str) -> Iterator[Change]:
        """A directory change: the caller is allowed (or refused: audited, ``Forbidden``), the block
        runs under the service lock in a transaction (a savepoint inside ``transaction``), and when
        it completes its audit record is written in that same transaction, which then commits: the
        change and its record, or neither. The change's effects (``Change.then``) follow the commit.
        A block that raises writes nothing (a refusal it decides is recorded with ``audit``)."""
        self.allow(caller, operation)
        with self.transaction():
            change = Change()
            with self.store.db.tx() as db:
                yield change
                self.store.audit.append(operation, caller.actor, caller.role, change.targets, change.result)
                for effect in change.effects:
                    db.on_commit(effect)

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """Several changes in one transaction, under the service lock: all commit, or none (each
        change inside is a savepoint: one that raises undoes only itself). Once the outermost one
        has ended, the refusals recorded inside it are written and the directory version re-read;
        one rolled back after it wrote re-syncs the cached indexes (one loaded inside it may hold
        what was rolled back)."""
        with self.lock:
            db = self.store.db
            if db.in_transaction:
                with db.tx():
                    yield
                return
            written = db.changes()
            try:
                with db.tx():
                    yield
            except BaseException:
                if db.changes() != written:  # what it wrote is gone: so must be any index that read it
                    self._resync()
                raise
            finally:
                self._write_refusals()
                self.noticed()

    def _write_refusals(self) -> None:
        refusals, self._refusals = self._refusals, []
        for refusal in refusals:
            try:
                self.store.audit.append(*refusal)
            except Exception:  # keep the error of the change that was refused
                logger.exception("could not record a refusal (%s) in the audit log", refusal[0])

    def _resync(self) -> None:
        try:
            self.indexes.resync_all()
        except Exception:  # keep the error of the change; the next change or refresh tries again
            logger.exception("re-syncing the cached indexes after a rolled-back change failed")

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

"""The face operations with the semantics of the cloud face APIs, over the pipeline, the encrypted
directory and the in-memory matching indexes.

``FaceService`` composes them: ``recognition`` (detect, verify, identify, find similar, group),
``changes`` (groups, persons, faces, face lists, cards, train: each with its ``Caller``),
``liveness`` (liveness checks and liveness sessions, ``edged.service.liveness``), the
directory reads of the request API, and what the door daemon calls (its per-frame search, the
trained index of a door's group, cards, the directory version, maintenance).

Limits and error codes follow the reference service (see docs/directory.md). Decrypted templates
exist only in the matching indexes (``edged.service.indexes``); images only as arguments, never
stored. Who may do what is ``edged.service.policy``.
"""

from __future__ import annotations

import logging
from collections.abc import Collection

from edged.directory.audit import AuditRecord, ChainCheck
from edged.directory.cards import normalize_card
from edged.directory.groups import PersonGroup
from edged.directory.lists import FaceList
from edged.directory.persons import Person
from edged.directory.scope import GroupScope
from edged.directory.store import Store
from edged.errors import BadArgument, ConfigError
from edged.inference.manifest import Calibration
from edged.matcher import Match, TemplateIndex
from edged.pipeline.liveness import LivenessAssessor
from edged.pipeline.pipeline import FacePipeline
from edged.service.access import DirectoryAccess
from edged.service.changes import DirectoryChanges
from edged.service.finder import FaceFinder
from edged.service.liveness import Liveness
from edged.service.policy import Caller
from edged.service.quota import FaceIdQuota, FaceIdUsage, FreeBytes, free_bytes
from edged.service.recognition import Recognition
from edged.service.settings import DirectorySettings
from edged.types import FloatArray

logger = logging.getLogger(__name__)

SECONDS_PER_DAY = 86_400
AUDIT_PRUNE_BATCH = 2_000
"""Audit records deleted per transaction (and hold of the service lock): each is verified first
(≈ 10 µs here) and its page zeroed (``secure_delete``): ≈ 20 ms a batch here, a few times that on a
Pi."""


class FaceService:
    """Face API operations. Thread-safe: one lock (the service lock) serialises the store (one
    shared SQLite connection) and changes to the index cache; each ``TemplateIndex`` has its own
    lock, so the door's search (``search_door``) needs only that one and never waits for a long
    directory operation (a train, an identify, a re-sync after another process wrote)."""

    def __init__(
        self,
        pipeline: FacePipeline,
        store: Store,
        settings: DirectorySettings,
        model_id: str,
        *,
        free: FreeBytes | None = None,
        liveness: LivenessAssessor | None = None,
    ) -> None:
        """``free``: the free bytes of the directory's filesystem (default: ``statvfs`` of the
        directory's folder), for the face IDs' disk floor (``edged.service.quota``). ``liveness``:
        the liveness checker on this service's pipeline (None: liveness checks are ``ModelError``)."""
        if pipeline.calibration is None:
            embedder = pipeline.embedder
            flip = embedder.flip_average
            raise ConfigError(
                f"pipeline: {embedder.model_id}{' with flip_average' if flip else ''} has no calibration in "
                "models/manifest.yaml (each model and precision is calibrated on its own): change "
                "pipeline.recognition_model / embedder / flip_average, or run tools/calibrate.py "
                f"--family {embedder.family.name} --embedder {embedder.precision}"
                f"{' --flip-average' if flip else ''} --write"
            )
        self.pipeline = pipeline
        self.store = store
        self.settings = settings
        self.model_id = model_id
        self.calibration: Calibration = pipeline.calibration
        self.access = DirectoryAccess(store, model_id, pipeline.embedder.dim)
        finder = FaceFinder(pipeline, settings.enroll_requires_quality)
        folder = store.path.parent
        self.quota = FaceIdQuota(store.transient, settings, free or (lambda: free_bytes(folder)), store.clock)
        self.recognition = Recognition(self.access, finder, settings, self.calibration, model_id, self.quota)
        self.changes = DirectoryChanges(self.access, finder, settings, self.calibration, model_id)
        self.liveness = Liveness(self.access, finder, settings, self.calibration, model_id, liveness)

    # -- the door daemon's --------------------------------------------------------------------------

    def trained_index(self, group_id: str) -> TemplateIndex:
        """The matching index of a trained person group (the door daemon's). Raises
        ``PersonGroupNotFound`` / ``PersonGroupNotTrained``."""
        with self.access.lock:
            return self.access.indexes.trained(group_id)

    def search_door(
        self,
        group_id: str,
        template: FloatArray,
        k: int,
        max_distance: float | None,
        owners: Collection[str] | None = None,
    ) -> list[Match]:
        """The door worker's per-frame search of a trained group. It does not take the service lock
        (a train of a large group, an identify or a re-sync may hold it for seconds): it reads the
        group's cached index (a dictionary lookup) and searches it under the index's own lock, so it
        never sees half of an enrolment or a deletion, and a retrained group's new index from the
        moment it is swapped in. Only when the group has no cached index does it take the locked
        load path: ``PersonGroupNotFound`` / ``PersonGroupNotTrained`` once the group is gone."""
        index = self.access.indexes.cached(GroupScope(group_id))
        if index is None:
            index = self.trained_index(group_id)
        return index.search(template, k, max_distance, owners=owners)

    def door_sizes(self, group_ids: Collection[str]) -> dict[str, dict[str, int | None]]:
        """Persons (with a face) and faces in each door group's index, for the stats topic; None for a
        group that is gone or untrained. O(1) per group (no SQL, nothing decrypted)."""
        return self.access.indexes.sizes(group_ids)

    def face_id_usage(self) -> FaceIdUsage:
        """The live face IDs and the disk's free space against its floor, for the stats topic."""
        with self.access.lock:
            return self.quota.usage()

    def directory_version(self) -> int:
        """The directory version as this service last saw it: after its own changes, and after
        ``refresh`` noticed another process's. No lock, no SQL: for every decision."""
        return self.access.version()

    def refresh(self) -> int:
        """Pick up what other processes committed to the directory (``edged persons delete`` or an
        enrolment by the CLI while the daemon runs): one PRAGMA when nothing changed; else the
        directory version is re-read and every cached index re-synced with the store (the face IDs
        are compared, nothing is decrypted but new faces); one whose group or list is gone is
        dropped. The daemon calls this every second (``edged.app``). Returns the number of cached
        indexes checked (re-synced or dropped); on an error the next call tries again."""
        return self.access.refresh()

    def person_for_card(self, card_id: str) -> str | None:
        """The person a card is mapped to, or None (also for a malformed card number)."""
        try:
            normalize_card(card_id)
        except BadArgument:
            return None
        with self.access.lock:
            return self.store.cards.person_for(card_id)

    def has_person(self, group_id: str | None, person_id: str) -> bool:
        """Whether the person is in ``group_id`` (None: the person directory)."""
        with self.access.lock:
            return self.store.persons.has(group_id, person_id)

    def recover_interrupted_training(self) -> list[PersonGroup]:
        """At the daemon's start: a group left ``running`` by a process stopped mid-train goes back to
        ``succeeded`` when it had been trained before (a door on it starts: its index is built from
        the store at every start anyway), else to ``failed`` (``interrupted``). Logged, and audited
        in the same transaction."""
        with self.access.transaction():
            groups = self.store.groups.recover_interrupted_training()
            for group in groups:
                self.store.audit.append(
                    "train",
                    "edged",
                    "system",  # the daemon itself: no role anyone signs with
                    {"personGroupId": group.group_id},
                    f"interrupted; recovered to {group.train_status}",
                )
        for group in groups:
            logger.warning(
                "person group %r: a training was interrupted (the process stopped); status now %s",
                group.group_id,
                group.train_status,
            )
        return groups

    def reap(self) -> int:
        """Delete expired transient faces (called at start-up and on a schedule)."""
        with self.access.lock:
            count = self.store.transient.reap()
        if count:
            logger.info("retention: deleted %d expired face IDs", count)
        return count

    def prune_audit(self) -> int:
        """Delete the audit records beyond ``directory.audit_max_records`` and those older than
        ``directory.audit_retention_days`` (0: none for their age), never the newest
        ``directory.audit_min_records``, and record it; the chain stays verifiable from its signed
        anchor (``AuditLog.prune``). In batches of ``AUDIT_PRUNE_BATCH`` records, each its own
        transaction under the service lock, which is let go between them (a large log pruned does
        not stop requests, the door's decisions or the refusals' records). The daemon's
        maintenance thread calls this at start and once a day. Returns how many went."""
        settings = self.settings
        days = settings.audit_retention_days
        before = None if days == 0 else self.store.clock.now() - days * SECONDS_PER_DAY
        count = 0
        while True:
            with self.access.lock:
                deleted = self.store.audit.prune(
                    before,
                    keep=settings.audit_min_records,
                    max_records=settings.audit_max_records,
                    limit=AUDIT_PRUNE_BATCH,
                )
            count += deleted
            if deleted < AUDIT_PRUNE_BATCH:
                break
        if count:
            logger.info(
                "retention: deleted %d audit records (audit_retention_days %d, audit_max_records %d)",
                count,
                days,
                settings.audit_max_records,
            )
        return count

    def audit_after(self, seq: int | None, limit: int) -> tuple[int, list[AuditRecord]]:
        """Audit records after ``seq`` (None: start at the newest, forwarding nothing older) and the
        position after them."""
        with self.access.lock:
            if seq is None:
                return self.store.audit.last_seq(), []
            records = self.store.audit.after(seq, limit)
        return (records[-1].seq if records else seq), records

    # -- the audit log ------------------------------------------------------------------------------

    def verify_audit(self, caller: Caller) -> ChainCheck:
        """The audit chain's state (admin only): intact, how many records, and why not."""
        self.access.allow(caller, "verify_audit")
        with self.access.lock:
            return self.store.audit.verify()

    def record(self, operation: str, actor: str, role: str, targets: dict[str, str], result: str) -> None:
        """An audit record for something decided outside the service (a refused request)."""
        self.access.audit(operation, actor, role, targets, result)

    # -- directory reads (the request API's get and list operations) --------------------------------

    def get_group(self, group_id: str) -> PersonGroup:
        with self.access.lock:
            return self.store.groups.get(group_id)

    def list_groups(self, start: str | None = None, top: int = 1000) -> list[PersonGroup]:
        with self.access.lock:
            return self.store.groups.page(start, top)

    def get_person(self, group_id: str | None, person_id: str) -> Person:
        with self.access.lock:
            return self.store.persons.get(group_id, person_id)

    def list_persons(self, group_id: str | None, start: str | None = None, top: int = 1000) -> list[Person]:
        with self.access.lock:
            return self.store.persons.page(group_id, start, top)

    def get_face_list(self, list_id: str) -> tuple[FaceList, list[str]]:
        with self.access.lock:
            return self.store.face_lists.get(list_id), self.store.face_lists.face_ids(list_id)

    def list_face_lists(self) -> list[FaceList]:
        with self.access.lock:
            return self.store.face_lists.all()

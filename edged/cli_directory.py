"""The directory commands of the ``edged`` CLI, part one: where the directory is (``Site``), what
every directory command shares (opening the store or the service, output, person lookup), and the
commands for keys, person groups, face lists (with find-similar) and the audit log. Persons,
enrolment, training, identify and group are in ``cli_faces``. Parsing and output only; the work is
in ``edged.service`` and ``edged.directory``, imported when a command runs."""

from __future__ import annotations

import argparse
import json
import sys
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, TypeVar

from edged import environment
from edged.cli_options import GlobalOptions, Output, add_command, effective_config
from edged.errors import BadArgument, NoFaceDetected, PersonNotFound

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

    from edged.config import Config
    from edged.directory.persons import Person
    from edged.directory.receipts import Receipt
    from edged.directory.store import Store
    from edged.service.faces import FaceService
    from edged.service.policy import Caller
    from edged.types import ImageRGB

S = TypeVar("S", bound="DataclassInstance")


def manager() -> Caller:
    """The operator at the CLI (who holds the key file): the directory changes as a manager."""
    from edged.service.policy import Caller

    return Caller("cli", "manager")


def state_dir(options: GlobalOptions, config: Config) -> Path:
    """``--state-dir``, ``$EDGED_STATE_DIR``, the config's ``directory.state_dir``, systemd's
    ``$STATE_DIRECTORY``, else ``./state``."""
    for candidate in (
        options.state_dir,
        environment.state_dir(),
        config.directory.state_dir,
        environment.systemd_state_dir(),
    ):
        if candidate:
            return Path(candidate)
    return Path("state")


@dataclass(frozen=True, slots=True)
class Site:
    """The directory a command works on: the effective configuration, the state directory and the
    key file option (``None``: ``$EDGED_KEY_FILE`` or the systemd credential)."""

    config: Config
    state_dir: Path
    key_file: Path | None

    @classmethod
    def of(cls, options: GlobalOptions) -> Site:
        config = effective_config(options)
        return cls(config, state_dir(options, config), options.key_file)

    def store(self) -> Store:
        from edged.directory.crypto import locate_key_file, read_kek
        from edged.directory.store import Store

        return Store.open(self.state_dir, read_kek(locate_key_file(self.key_file)))

    def service(self) -> FaceService:
        from edged.inference.manifest import Manifest
        from edged.pipeline.pipeline import FacePipeline
        from edged.service.faces import FaceService

        config = self.config
        pipeline = FacePipeline.load(Manifest.load(config.model_dir), config.pipeline)
        service = FaceService(pipeline, self.store(), config.directory, pipeline.embedder.model.path.name)
        service.reap()
        return service

    def read_image(self, path: Path) -> ImageRGB:
        from edged.pipeline.image import read_image

        return read_image(path, self.config.images)


def add_directory_command(
    parser: argparse.ArgumentParser, settings: type[S], handler: Callable[[S, Site], int]
) -> None:
    """Make ``handler`` the command of ``parser``; it runs on the ``Site`` of the global options."""
    add_command(parser, settings, lambda chosen, options: handler(chosen, Site.of(options)))


def add_global_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--state-dir", type=Path, help=f"directory state (default: ${environment.STATE_DIR}, config, ./state)"
    )
    parser.add_argument(
        "--key-file", type=Path, help="key-encryption key (default: $EDGED_KEY_FILE, credential)"
    )


def emit(as_json: bool, data: Any, text: str) -> None:
    print(json.dumps(data) if as_json else text)


def receipt_text(receipt: Receipt) -> str:
    return (
        f"deleted {receipt.deleted} ({receipt.operation} {receipt.targets}); receipt signed by device key "
        f"{receipt.device_public_key[:16]}…: {receipt.signature[:32]}…"
    )


def person_json(person: Person) -> dict[str, Any]:
    return {
        "personId": person.person_id,
        "name": person.name,
        "userData": person.user_data,
        "persistedFaceIds": list(person.face_ids),
        "created": person.created,
    }


def resolve_person(store: Store, group: str, ref: str) -> Person:
    try:
        uuid.UUID(ref)
        return store.persons.get(group, ref)
    except ValueError:
        pass
    matches = [p for p in store.persons.page(group, top=1_000_000) if p.name == ref]
    if not matches:
        raise PersonNotFound(f"no person named {ref!r} in person group {group!r}")
    if len(matches) > 1:
        raise BadArgument(f"{len(matches)} persons are named {ref!r} in {group!r}: use the person ID")
    return matches[0]


# -- settings ----------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class GroupRef:
    group: str
    json: bool


@dataclass(frozen=True, slots=True)
class GroupCreate:
    group: str
    name: str | None
    user_data: str | None
    large: bool
    json: bool


@dataclass(frozen=True, slots=True)
class GroupUpdate:
    group: str
    name: str | None
    user_data: str | None
    json: bool


@dataclass(frozen=True, slots=True)
class KeyRotate:
    new_key_file: Path
    json: bool


@dataclass(frozen=True, slots=True)
class FaceListRef:
    list_id: str
    json: bool


@dataclass(frozen=True, slots=True)
class FaceListCreate:
    list_id: str
    name: str | None
    large: bool
    json: bool


@dataclass(frozen=True, slots=True)
class FaceListAdd:
    list_id: str
    images: tuple[Path, ...]
    json: bool


@dataclass(frozen=True, slots=True)
class FindSimilar:
    image: Path
    face_list: str
    mode: Literal["matchPerson", "matchFace"]
    max_candidates: int
    json: bool


def add_commands(sub: Any) -> None:
    """keys, groups (``add_list_commands``: face lists, find-similar, audit)."""
    keys = sub.add_parser("keys", help="the key-encryption key").add_subparsers(dest="keys", required=True)
    p = keys.add_parser("init", help="create a new key file (--key-file); never overwrites")
    p.add_argument("--json", action="store_true")
    add_directory_command(p, Output, keys_init)
    p = keys.add_parser("rotate", help="re-wrap every data key under a new key file, atomically")
    p.add_argument("--new-key-file", type=Path, required=True, help="created when missing")
    p.add_argument("--json", action="store_true")
    add_directory_command(p, KeyRotate, keys_rotate)

    groups = sub.add_parser("groups", help="person groups").add_subparsers(dest="groups", required=True)
    p = groups.add_parser("create")
    p.add_argument("group")
    p.add_argument("--name")
    p.add_argument("--user-data")
    p.add_argument("--large", action="store_true", help="a large person group (up to 1,000,000 persons)")
    p.add_argument("--json", action="store_true")
    add_directory_command(p, GroupCreate, groups_create)
    p = groups.add_parser("update")
    p.add_argument("group")
    p.add_argument("--name")
    p.add_argument("--user-data")
    p.add_argument("--json", action="store_true")
    add_directory_command(p, GroupUpdate, groups_update)
    for name, group_command in (("get", groups_get), ("delete", groups_delete)):
        p = groups.add_parser(name)
        p.add_argument("group")
        p.add_argument("--json", action="store_true")
        add_directory_command(p, GroupRef, group_command)
    p = groups.add_parser("list")
    p.add_argument("--json", action="store_true")
    add_directory_command(p, Output, groups_list)


def add_list_commands(sub: Any) -> None:
    """facelists, find-similar, audit."""
    lists = sub.add_parser("facelists", help="face lists").add_subparsers(dest="facelists", required=True)
    p = lists.add_parser("create")
    p.add_argument("list_id", metavar="list")
    p.add_argument("--name")
    p.add_argument("--large", action="store_true")
    p.add_argument("--json", action="store_true")
    add_directory_command(p, FaceListCreate, facelists_create)
    p = lists.add_parser("add")
    p.add_argument("list_id", metavar="list")
    p.add_argument("images", nargs="+", type=Path)
    p.add_argument("--json", action="store_true")
    add_directory_command(p, FaceListAdd, facelists_add)
    for name, list_command in (("get", facelists_get), ("delete", facelists_delete)):
        p = lists.add_parser(name)
        p.add_argument("list_id", metavar="list")
        p.add_argument("--json", action="store_true")
        add_directory_command(p, FaceListRef, list_command)
    p = lists.add_parser("list")
    p.add_argument("--json", action="store_true")
    add_directory_command(p, Output, facelists_list)

    p = sub.add_parser("find-similar", help="faces of a face list similar to the face in IMAGE")
    p.add_argument("image", type=Path)
    p.add_argument("--face-list", required=True)
    p.add_argument("--mode", choices=("matchPerson", "matchFace"), default="matchPerson")
    p.add_argument("--max-candidates", type=int, default=20)
    p.add_argument("--json", action="store_true")
    add_directory_command(p, FindSimilar, find_similar)

    audit = sub.add_parser("audit", help="the audit log").add_subparsers(dest="audit", required=True)
    for name, text, audit_command in (
        ("verify", "check the hash chain", audit_verify),
        ("show", "print the records", audit_show),
    ):
        p = audit.add_parser(name, help=text)
        p.add_argument("--json", action="store_true")
        add_directory_command(p, Output, audit_command)


# -- keys --------------------------------------------------------------------------------------------


def keys_init(output: Output, site: Site) -> int:
    from edged.directory.crypto import create_key_file

    path = site.key_file or environment.key_file()
    if path is None:
        raise BadArgument(
            "edged keys init needs --key-file FILE or $EDGED_KEY_FILE (written there, mode 0600)"
        )
    kek = create_key_file(path)
    emit(
        output.json,
        {"keyFile": str(path), "keyId": kek.key_id},
        f"created key {kek.key_id} in {path} (keep a copy offline: without it the directory is noise)",
    )
    return 0


def keys_rotate(rotate: KeyRotate, site: Site) -> int:
    from edged.directory.crypto import create_key_file, read_kek

    store = site.store()
    new = (
        read_kek(rotate.new_key_file)
        if rotate.new_key_file.exists()
        else create_key_file(rotate.new_key_file)
    )
    with store.db.tx():  # the rotation and its audit record: both, or neither
        count = store.keys.rotate(new)
        store.audit.append("rotate_key", "cli", "admin", {"keyId": new.key_id}, "ok")
    emit(
        rotate.json,
        {"rewrapped": count, "keyId": new.key_id, "keyFile": str(rotate.new_key_file)},
        f"re-wrapped {count} data keys under {new.key_id}; from now on use --key-file {rotate.new_key_file}",
    )
    return 0


# -- person groups -----------------------------------------------------------------------------------


def groups_list(output: Output, site: Site) -> int:
    groups = site.store().groups.page()
    emit(
        output.json,
        [
            {"personGroupId": g.group_id, "name": g.name, "kind": g.kind, "trainStatus": g.train_status}
            for g in groups
        ],
        "\n".join(f"{g.group_id}\t{g.kind}\t{g.train_status}\t{g.name}" for g in groups),
    )
    return 0


def groups_update(update: GroupUpdate, site: Site) -> int:
    store = site.store()
    with store.db.tx():  # the change and its audit record: both, or neither
        g = store.groups.update(update.group, update.name, update.user_data)
        store.audit.append("update_person_group", "cli", "manager", {"personGroupId": g.group_id}, "ok")
    emit(
        update.json,
        {"personGroupId": g.group_id, "name": g.name, "userData": g.user_data},
        f"updated {g.group_id}",
    )
    return 0


def groups_get(ref: GroupRef, site: Site) -> int:
    store = site.store()
    g = store.groups.get(ref.group)
    data = {
        "personGroupId": g.group_id,
        "name": g.name,
        "userData": g.user_data,
        "kind": g.kind,
        "recognitionModel": g.recognition_model,
        "trainStatus": g.train_status,
        "persons": store.persons.count(g.group_id),
    }
    emit(ref.json, data, "\n".join(f"{k}: {v}" for k, v in data.items()))
    return 0


def groups_create(create: GroupCreate, site: Site) -> int:
    service = site.service()
    g = service.changes.create_group(
        manager(), create.group, create.name or create.group, create.user_data, create.large
    )
    emit(
        create.json,
        {"personGroupId": g.group_id, "kind": g.kind},
        f"created {g.kind} person group {g.group_id}",
    )
    return 0


def groups_delete(ref: GroupRef, site: Site) -> int:
    from edged.api import wire

    service = site.service()
    receipt = service.changes.delete_group(manager(), ref.group)
    emit(ref.json, wire.receipt_json(receipt), receipt_text(receipt))
    return 0


# -- face lists and find-similar --------------------------------------------------------------------


def _face_lists(store: Store, list_id: str | None) -> list[dict[str, Any]]:
    lists = store.face_lists.all() if list_id is None else [store.face_lists.get(list_id)]
    return [
        {
            "faceListId": fl.list_id,
            "name": fl.name,
            "kind": fl.kind,
            "persistedFaceIds": store.face_lists.face_ids(fl.list_id),
        }
        for fl in lists
    ]


def _face_lists_text(data: list[dict[str, Any]]) -> str:
    return "\n".join(f"{d['faceListId']}\t{len(d['persistedFaceIds'])} face(s)\t{d['name']}" for d in data)


def facelists_list(output: Output, site: Site) -> int:
    data = _face_lists(site.store(), None)
    emit(output.json, data, _face_lists_text(data))
    return 0


def facelists_get(ref: FaceListRef, site: Site) -> int:
    data = _face_lists(site.store(), ref.list_id)
    emit(ref.json, data[0], _face_lists_text(data))
    return 0


def facelists_create(create: FaceListCreate, site: Site) -> int:
    service = site.service()
    service.changes.create_face_list(
        manager(), create.list_id, create.name or create.list_id, None, create.large
    )
    emit(create.json, {"faceListId": create.list_id}, f"created face list {create.list_id}")
    return 0


def facelists_add(add: FaceListAdd, site: Site) -> int:
    service = site.service()
    added = [
        service.changes.add_list_face(manager(), add.list_id, site.read_image(path)) for path in add.images
    ]
    emit(add.json, {"persistedFaceIds": added}, "\n".join(added))
    return 0


def facelists_delete(ref: FaceListRef, site: Site) -> int:
    from edged.api import wire

    service = site.service()
    receipt = service.changes.delete_face_list(manager(), ref.list_id)
    emit(ref.json, wire.receipt_json(receipt), receipt_text(receipt))
    return 0


def find_similar(request: FindSimilar, site: Site) -> int:
    from edged.api import wire

    service = site.service()
    detected = service.recognition.detect(manager(), site.read_image(request.image), ttl_s=60)
    if not detected or detected[0].face_id is None:
        raise NoFaceDetected(f"no face found in {request.image}")
    similar = service.recognition.find_similar(
        detected[0].face_id,
        face_list_id=request.face_list,
        max_candidates=request.max_candidates,
        mode=request.mode,
    )
    emit(
        request.json,
        [wire.similar(s).model_dump(exclude_none=True) for s in similar],
        "\n".join(f"{s.face_id}\tconfidence {s.confidence:.3f}" for s in similar) or "no similar face",
    )
    return 0


# -- the audit log -----------------------------------------------------------------------------------


def audit_show(output: Output, site: Site) -> int:
    records = [r.as_json() for r in site.store().audit.records()]
    emit(output.json, records, "\n".join(json.dumps(r) for r in records))
    return 0


def audit_verify(output: Output, site: Site) -> int:
    chain = site.store().audit.verify()
    ok, count, reason = chain.intact, chain.records, chain.reason
    emit(
        output.json,
        {"ok": ok, "records": count, "reason": reason},
        f"audit chain {'verifies' if ok else 'is BROKEN'}: {count} record(s); {reason}",
    )
    if not ok:
        print(f"edged: AuditBroken: {reason}", file=sys.stderr)
    return 0 if ok else 9

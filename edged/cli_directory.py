"""The directory commands of the ``edged`` CLI: keys, groups, persons, enrolment, training,
identification, face lists, find-similar, group and the audit log. Parsing and output only."""

from __future__ import annotations

import argparse
import json
import os
import sys
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from edged.api import wire
from edged.config import Config
from edged.directory.crypto import KEY_FILE_ENV, create_key_file, locate_key_file, read_kek
from edged.directory.persons import Person
from edged.directory.receipts import Receipt
from edged.directory.store import Store
from edged.errors import BadArgument, EdgedError, NoFaceDetected, PersonNotFound
from edged.inference.manifest import Manifest
from edged.pipeline.image import read_image
from edged.pipeline.pipeline import FacePipeline
from edged.service.faces import FaceService
from edged.service.policy import Caller

STATE_ENV = "EDGED_STATE_DIR"
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp"}
MANAGER = Caller("cli", "manager")
"""The operator at the CLI (who holds the key file) changes the directory as a manager."""

Handler = Callable[[argparse.Namespace, Config], int]


def add_global_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--state-dir", type=Path, help=f"directory state (default: ${STATE_ENV}, config, ./state)"
    )
    parser.add_argument(
        "--key-file", type=Path, help="key-encryption key (default: $EDGED_KEY_FILE, credential)"
    )


def add_commands(sub: Any) -> None:
    keys = sub.add_parser("keys", help="the key-encryption key").add_subparsers(dest="keys", required=True)
    keys.add_parser("init", help="create a new key file (--key-file); never overwrites").add_argument(
        "--json", action="store_true"
    )
    p = keys.add_parser("rotate", help="re-wrap every data key under a new key file, atomically")
    p.add_argument("--new-key-file", type=Path, required=True, help="created when missing")
    p.add_argument("--json", action="store_true")

    groups = sub.add_parser("groups", help="person groups").add_subparsers(dest="groups", required=True)
    p = groups.add_parser("create")
    p.add_argument("group")
    p.add_argument("--name")
    p.add_argument("--user-data")
    p.add_argument("--large", action="store_true", help="a large person group (up to 1,000,000 persons)")
    p.add_argument("--json", action="store_true")
    p = groups.add_parser("update")
    p.add_argument("group")
    p.add_argument("--name")
    p.add_argument("--user-data")
    p.add_argument("--json", action="store_true")
    for name in ("get", "delete"):
        p = groups.add_parser(name)
        p.add_argument("group")
        p.add_argument("--json", action="store_true")
    groups.add_parser("list").add_argument("--json", action="store_true")

    persons = sub.add_parser("persons", help="persons of a group").add_subparsers(
        dest="persons", required=True
    )
    p = persons.add_parser("list")
    p.add_argument("group")
    p.add_argument("--json", action="store_true")
    p = persons.add_parser("update")
    p.add_argument("group")
    p.add_argument("person", help="person ID, or the person's name when unique")
    p.add_argument("--name")
    p.add_argument("--user-data")
    p.add_argument("--json", action="store_true")
    for name in ("get", "delete", "export"):
        p = persons.add_parser(name)
        p.add_argument("group")
        p.add_argument("person", help="person ID, or the person's name when unique")
        p.add_argument("--json", action="store_true")
    p = persons.add_parser(
        "card-set", help="map a card number to the person (verify-mode claims; only a keyed hash is stored)"
    )
    p.add_argument("group")
    p.add_argument("person", help="person ID, or the person's name when unique")
    p.add_argument("card", help="the card number; '-' reads it from standard input (not in the process list)")
    p.add_argument("--json", action="store_true")
    p = persons.add_parser("card-delete", help="remove a card number from whoever has it")
    p.add_argument("card", help="the card number; '-' reads it from standard input")
    p.add_argument("--json", action="store_true")

    p = sub.add_parser("enroll", help="add faces to a person (created when new); or --from-dir DIR")
    p.add_argument("group")
    p.add_argument("person", nargs="?", help="person ID or name (a new name creates the person)")
    p.add_argument("images", nargs="*", type=Path)
    p.add_argument("--from-dir", type=Path, help="a folder per person: DIR/<name>/*.jpg")
    p.add_argument("--user-data")
    p.add_argument("--json", action="store_true")

    p = sub.add_parser("train", help="build the group's matching index")
    p.add_argument("group")
    p.add_argument("--json", action="store_true")

    p = sub.add_parser("identify", help="who are the faces in IMAGE? (1:N against a trained group)")
    p.add_argument("group")
    p.add_argument("image", type=Path)
    p.add_argument("--max-candidates", type=int, default=10)
    p.add_argument("--confidence-threshold", type=float)
    p.add_argument("--far", type=float, help="target FAR (default: config directory.identify_far, 1e-4)")
    p.add_argument("--json", action="store_true")

    lists = sub.add_parser("facelists", help="face lists").add_subparsers(dest="facelists", required=True)
    p = lists.add_parser("create")
    p.add_argument("list")
    p.add_argument("--name")
    p.add_argument("--large", action="store_true")
    p.add_argument("--json", action="store_true")
    p = lists.add_parser("add")
    p.add_argument("list")
    p.add_argument("images", nargs="+", type=Path)
    p.add_argument("--json", action="store_true")
    for name in ("get", "delete"):
        p = lists.add_parser(name)
        p.add_argument("list")
        p.add_argument("--json", action="store_true")
    lists.add_parser("list").add_argument("--json", action="store_true")

    p = sub.add_parser("find-similar", help="faces of a face list similar to the face in IMAGE")
    p.add_argument("image", type=Path)
    p.add_argument("--face-list", required=True)
    p.add_argument("--mode", choices=("matchPerson", "matchFace"), default="matchPerson")
    p.add_argument("--max-candidates", type=int, default=20)
    p.add_argument("--json", action="store_true")

    p = sub.add_parser("group", help="group the faces of several images by person")
    p.add_argument("images", nargs="+", type=Path)
    p.add_argument("--json", action="store_true")

    audit = sub.add_parser("audit", help="the audit log").add_subparsers(dest="audit", required=True)
    audit.add_parser("verify", help="check the hash chain").add_argument("--json", action="store_true")
    audit.add_parser("show", help="print the records").add_argument("--json", action="store_true")


def state_dir(args: argparse.Namespace, config: Config) -> Path:
    for candidate in (
        args.state_dir,
        os.environ.get(STATE_ENV),
        config.directory.state_dir,
        os.environ.get("STATE_DIRECTORY"),
    ):
        if candidate:
            return Path(candidate)
    return Path("state")


def open_store(args: argparse.Namespace, config: Config) -> Store:
    return Store.open(state_dir(args, config), read_kek(locate_key_file(args.key_file)))


def open_service(args: argparse.Namespace, config: Config) -> FaceService:
    pipeline = FacePipeline.load(Manifest.load(config.model_dir), config.pipeline)
    service = FaceService(
        pipeline, open_store(args, config), config.directory, pipeline.embedder.model.path.name
    )
    service.reap()
    return service


def emit(args: argparse.Namespace, data: Any, text: str) -> None:
    print(json.dumps(data) if args.json else text)


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


# -- handlers ---------------------------------------------------------------------------------------


def cmd_keys(args: argparse.Namespace, config: Config) -> int:
    if args.keys == "init":
        path = args.key_file or (Path(os.environ[KEY_FILE_ENV]) if os.environ.get(KEY_FILE_ENV) else None)
        if path is None:
            raise BadArgument(
                "edged keys init needs --key-file FILE or $EDGED_KEY_FILE (written there, mode 0600)"
            )
        kek = create_key_file(path)
        emit(
            args,
            {"keyFile": str(path), "keyId": kek.key_id},
            f"created key {kek.key_id} in {path} (keep a copy offline: without it the directory is noise)",
        )
        return 0
    store = open_store(args, config)
    new = read_kek(args.new_key_file) if args.new_key_file.exists() else create_key_file(args.new_key_file)
    count = store.keys.rotate(new)
    store.audit.append("rotate_key", "cli", "admin", {"keyId": new.key_id}, "ok")
    emit(
        args,
        {"rewrapped": count, "keyId": new.key_id, "keyFile": str(args.new_key_file)},
        f"re-wrapped {count} data keys under {new.key_id}; from now on use --key-file {args.new_key_file}",
    )
    return 0


def cmd_groups(args: argparse.Namespace, config: Config) -> int:
    if args.groups == "list":
        groups = open_store(args, config).groups.page()
        emit(
            args,
            [
                {"personGroupId": g.group_id, "name": g.name, "kind": g.kind, "trainStatus": g.train_status}
                for g in groups
            ],
            "\n".join(f"{g.group_id}\t{g.kind}\t{g.train_status}\t{g.name}" for g in groups),
        )
        return 0
    if args.groups == "update":
        store = open_store(args, config)
        g = store.groups.update(args.group, args.name, args.user_data)
        store.audit.append("update_person_group", "cli", "manager", {"personGroupId": g.group_id}, "ok")
        emit(
            args,
            {"personGroupId": g.group_id, "name": g.name, "userData": g.user_data},
            f"updated {g.group_id}",
        )
        return 0
    if args.groups == "get":
        store = open_store(args, config)
        g = store.groups.get(args.group)
        data = {
            "personGroupId": g.group_id,
            "name": g.name,
            "userData": g.user_data,
            "kind": g.kind,
            "recognitionModel": g.recognition_model,
            "trainStatus": g.train_status,
            "persons": store.persons.count(g.group_id),
        }
        emit(args, data, "\n".join(f"{k}: {v}" for k, v in data.items()))
        return 0
    service = open_service(args, config)
    if args.groups == "create":
        g = service.changes.create_group(
            MANAGER, args.group, args.name or args.group, args.user_data, args.large
        )
        emit(
            args, {"personGroupId": g.group_id, "kind": g.kind}, f"created {g.kind} person group {g.group_id}"
        )
        return 0
    receipt = service.changes.delete_group(MANAGER, args.group)
    emit(args, wire.receipt_json(receipt), receipt_text(receipt))
    return 0


def cmd_persons(args: argparse.Namespace, config: Config) -> int:
    if args.persons == "list":
        persons = open_store(args, config).persons.page(args.group, top=1_000_000)
        emit(
            args,
            [person_json(p) for p in persons],
            "\n".join(f"{p.person_id}\t{len(p.face_ids)} face(s)\t{p.name}" for p in persons),
        )
        return 0
    if args.persons == "update":
        store = open_store(args, config)
        person = resolve_person(store, args.group, args.person)
        updated = store.persons.update(args.group, person.person_id, args.name, args.user_data)
        store.audit.append("update_person", "cli", "manager", {"personId": person.person_id}, "ok")
        emit(args, person_json(updated), f"updated {updated.person_id}")
        return 0
    if args.persons in ("get", "export"):
        store = open_store(args, config)
        person = resolve_person(store, args.group, args.person)
        data = person_json(person)
        if args.persons == "export":  # everything non-biometric the directory holds about the person
            data["personGroupId"] = args.group
            data["faces"] = [
                {
                    "persistedFaceId": f.face_id,
                    "userData": f.user_data,
                    "created": f.created,
                    "quality": f.quality,
                }
                for f in (store.persons.faces.get(fid, person.person_id) for fid in person.face_ids)
            ]
            data["cards"] = store.cards.count(person.person_id)  # numbers are kept only as keyed hashes
            store.audit.append("export_person", "cli", "manager", {"personId": person.person_id}, "ok")
        emit(args, data, json.dumps(data, indent=1))
        return 0
    if args.persons in ("card-set", "card-delete"):
        card = sys.stdin.readline().strip() if args.card == "-" else args.card
        service = open_service(args, config)
        if args.persons == "card-delete":
            ref = service.changes.delete_card(MANAGER, card)
            emit(args, {"card": ref, "deleted": True}, f"deleted card {ref}")
            return 0
        person = resolve_person(service.store, args.group, args.person)
        ref = service.changes.set_card(MANAGER, card, person.person_id, args.group)
        emit(args, {"card": ref, "personId": person.person_id}, f"card {ref} → person {person.person_id}")
        return 0
    service = open_service(args, config)
    person = resolve_person(service.store, args.group, args.person)
    receipt = service.changes.delete_person(MANAGER, args.group, person.person_id)
    emit(args, wire.receipt_json(receipt), receipt_text(receipt))
    return 0


def _images_in(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())


def cmd_enroll(args: argparse.Namespace, config: Config) -> int:
    if args.from_dir is not None:
        if args.person or args.images:
            raise BadArgument("give either PERSON IMAGE… or --from-dir DIR, not both")
        if not args.from_dir.is_dir():
            raise BadArgument(f"--from-dir {args.from_dir} is not a directory")
        plan = [(d.name, _images_in(d)) for d in sorted(args.from_dir.iterdir()) if d.is_dir()]
    else:
        if not args.person or not args.images:
            raise BadArgument("edged enroll GROUP PERSON IMAGE… (or GROUP --from-dir DIR)")
        plan = [(args.person, list(args.images))]
    service = open_service(args, config)
    service.store.groups.get(args.group)
    results: list[dict[str, Any]] = []
    total = sum(len(images) for _, images in plan)
    done = 0
    for person_ref, images in plan:
        try:
            person_id = resolve_person(service.store, args.group, person_ref).person_id
            created = False
        except PersonNotFound:
            person_id = service.changes.create_person(MANAGER, args.group, person_ref, args.user_data)
            created = True
        for image_path in images:
            done += 1
            entry: dict[str, Any] = {
                "image": str(image_path),
                "person": person_ref,
                "personId": person_id,
                "personCreated": created,
            }
            created = False
            try:
                enrolment = service.changes.add_person_face(
                    MANAGER, args.group, person_id, read_image(image_path, config.images)
                )
                entry.update(ok=True, persistedFaceId=enrolment.face_id, warnings=list(enrolment.warnings))
            except EdgedError as exc:
                entry.update(ok=False, error={"code": exc.code, "message": exc.message})
            results.append(entry)
            if not args.json:
                verdict = "ok" if entry["ok"] else f"{entry['error']['code']}: {entry['error']['message']}"
                print(f"[{done}/{total}] {image_path} → {person_ref}: {verdict}", flush=True)
    ok = sum(1 for r in results if r["ok"])
    if args.json:
        print(json.dumps({"enrolled": ok, "failed": len(results) - ok, "results": results}))
    else:
        print(f"enrolled {ok} of {len(results)} images; run: edged train {args.group}")
    return 0 if ok == len(results) else 1


def cmd_train(args: argparse.Namespace, config: Config) -> int:
    group = open_service(args, config).changes.train(MANAGER, args.group)
    emit(
        args,
        {"personGroupId": group.group_id, "status": group.train_status, "trainedAt": group.trained_at},
        f"trained {group.group_id}: {group.train_status}",
    )
    return 0


def cmd_identify(args: argparse.Namespace, config: Config) -> int:
    service = open_service(args, config)
    service.store.groups.get(args.group)
    image = read_image(args.image, config.images)
    detected = service.recognition.detect(image, return_face_id=True, ttl_s=60)
    if not detected:
        raise NoFaceDetected(f"no face found in {args.image}")
    face_ids = [d.face_id for d in detected if d.face_id is not None][:10]
    results = service.recognition.identify(
        face_ids,
        group_id=args.group,
        max_candidates=args.max_candidates,
        confidence_threshold=args.confidence_threshold,
        far=args.far,
    )
    out: list[dict[str, Any]] = []
    for detection, (face_id, candidates) in zip(detected, results, strict=False):
        named = []
        for c in candidates:
            named.append(
                {
                    **wire.candidate(c).model_dump(),
                    "name": service.store.persons.get(args.group, c.person_id).name,
                }
            )
        out.append(
            {"faceId": face_id, "faceRectangle": detection.face.detection.box.as_list(), "candidates": named}
        )
    service.store.audit.append(
        "identify", "cli", "recognizer", {"personGroupId": args.group}, f"{len(out)} face(s)"
    )
    if args.json:
        print(json.dumps(out))
    else:
        for entry in out:
            best = entry["candidates"][0] if entry["candidates"] else None
            who = (
                f"{best['name']} ({best['personId']}, confidence {best['confidence']:.3f})"
                if best
                else "unknown"
            )
            print(f"face {entry['faceRectangle']}: {who}")
    return 0


def cmd_facelists(args: argparse.Namespace, config: Config) -> int:
    if args.facelists in ("list", "get"):
        store = open_store(args, config)
        lists = store.face_lists.all() if args.facelists == "list" else [store.face_lists.get(args.list)]
        data = [
            {
                "faceListId": fl.list_id,
                "name": fl.name,
                "kind": fl.kind,
                "persistedFaceIds": store.face_lists.face_ids(fl.list_id),
            }
            for fl in lists
        ]
        emit(
            args,
            data if args.facelists == "list" else data[0],
            "\n".join(f"{d['faceListId']}\t{len(d['persistedFaceIds'])} face(s)\t{d['name']}" for d in data),
        )
        return 0
    service = open_service(args, config)
    if args.facelists == "create":
        service.changes.create_face_list(MANAGER, args.list, args.name or args.list, None, args.large)
        emit(args, {"faceListId": args.list}, f"created face list {args.list}")
        return 0
    if args.facelists == "add":
        added = [
            service.changes.add_list_face(MANAGER, args.list, read_image(path, config.images))
            for path in args.images
        ]
        emit(args, {"persistedFaceIds": added}, "\n".join(added))
        return 0
    receipt = service.changes.delete_face_list(MANAGER, args.list)
    emit(args, wire.receipt_json(receipt), receipt_text(receipt))
    return 0


def cmd_find_similar(args: argparse.Namespace, config: Config) -> int:
    service = open_service(args, config)
    detected = service.recognition.detect(read_image(args.image, config.images), ttl_s=60)
    if not detected or detected[0].face_id is None:
        raise NoFaceDetected(f"no face found in {args.image}")
    similar = service.recognition.find_similar(
        detected[0].face_id, face_list_id=args.face_list, max_candidates=args.max_candidates, mode=args.mode
    )
    emit(
        args,
        [wire.similar(s).model_dump(exclude_none=True) for s in similar],
        "\n".join(f"{s.face_id}\tconfidence {s.confidence:.3f}" for s in similar) or "no similar face",
    )
    return 0


def cmd_group(args: argparse.Namespace, config: Config) -> int:
    service = open_service(args, config)
    origin: dict[str, str] = {}
    for path in args.images:
        for detected in service.recognition.detect(read_image(path, config.images), ttl_s=60):
            assert detected.face_id is not None
            origin[detected.face_id] = f"{path}#{detected.face.detection.box.as_list()}"
    if len(origin) < 2:
        raise BadArgument(f"grouping needs at least 2 faces; found {len(origin)}")
    groups, messy = service.recognition.group(list(origin))
    named = [[origin[f] for f in g] for g in groups]
    leftovers = [origin[f] for f in messy]
    text = "\n".join(f"group {i + 1}: " + ", ".join(g) for i, g in enumerate(named))
    emit(
        args,
        {"groups": named, "messyGroup": leftovers},
        (text + "\n" if text else "") + "messy: " + ", ".join(leftovers),
    )
    return 0


def cmd_audit(args: argparse.Namespace, config: Config) -> int:
    store = open_store(args, config)
    if args.audit == "show":
        records = [r.as_json() for r in store.audit.records()]
        emit(args, records, "\n".join(json.dumps(r) for r in records))
        return 0
    chain = store.audit.verify()
    ok, count, reason = chain.intact, chain.records, chain.reason
    emit(
        args,
        {"ok": ok, "records": count, "reason": reason},
        f"audit chain {'verifies' if ok else 'is BROKEN'}: {count} record(s); {reason}",
    )
    if not ok:
        print(f"edged: AuditBroken: {reason}", file=sys.stderr)
    return 0 if ok else 9


COMMANDS: dict[str, Handler] = {
    "keys": cmd_keys,
    "groups": cmd_groups,
    "persons": cmd_persons,
    "enroll": cmd_enroll,
    "train": cmd_train,
    "identify": cmd_identify,
    "facelists": cmd_facelists,
    "find-similar": cmd_find_similar,
    "group": cmd_group,
    "audit": cmd_audit,
}

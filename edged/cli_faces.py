"""The directory commands of the ``edged`` CLI, part two: persons and their faces (persons,
enroll, train) and the face operations on a group or on images (identify, group). What they
share (``Site``, output, person lookup) is in ``cli_directory``. Parsing and output only."""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edged.cli_directory import (
    GroupRef,
    Site,
    add_directory_command,
    emit,
    manager,
    person_json,
    receipt_text,
    resolve_person,
)
from edged.errors import BadArgument, EdgedError, NoFaceDetected, PersonNotFound

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp"}


@dataclass(frozen=True, slots=True)
class PersonRef:
    group: str
    person: str
    json: bool


@dataclass(frozen=True, slots=True)
class PersonUpdate:
    group: str
    person: str
    name: str | None
    user_data: str | None
    json: bool


@dataclass(frozen=True, slots=True)
class CardSet:
    group: str
    person: str
    card: str
    json: bool


@dataclass(frozen=True, slots=True)
class CardDelete:
    card: str
    json: bool


@dataclass(frozen=True, slots=True)
class Enroll:
    group: str
    person: str | None
    images: tuple[Path, ...]
    from_dir: Path | None
    user_data: str | None
    json: bool


@dataclass(frozen=True, slots=True)
class Identify:
    group: str
    image: Path
    max_candidates: int
    confidence_threshold: float | None
    far: float | None
    json: bool


@dataclass(frozen=True, slots=True)
class GroupFaces:
    images: tuple[Path, ...]
    json: bool


def add_commands(sub: Any) -> None:
    persons = sub.add_parser("persons", help="persons of a group").add_subparsers(
        dest="persons", required=True
    )
    p = persons.add_parser("list")
    p.add_argument("group")
    p.add_argument("--json", action="store_true")
    add_directory_command(p, GroupRef, persons_list)
    p = persons.add_parser("update")
    p.add_argument("group")
    p.add_argument("person", help="person ID, or the person's name when unique")
    p.add_argument("--name")
    p.add_argument("--user-data")
    p.add_argument("--json", action="store_true")
    add_directory_command(p, PersonUpdate, persons_update)
    for name, person_command in (
        ("get", persons_get),
        ("delete", persons_delete),
        ("export", persons_export),
    ):
        p = persons.add_parser(name)
        p.add_argument("group")
        p.add_argument("person", help="person ID, or the person's name when unique")
        p.add_argument("--json", action="store_true")
        add_directory_command(p, PersonRef, person_command)
    p = persons.add_parser(
        "card-set", help="map a card number to the person (verify-mode claims; only a keyed hash is stored)"
    )
    p.add_argument("group")
    p.add_argument("person", help="person ID, or the person's name when unique")
    p.add_argument("card", help="the card number; '-' reads it from standard input (not in the process list)")
    p.add_argument("--json", action="store_true")
    add_directory_command(p, CardSet, card_set)
    p = persons.add_parser("card-delete", help="remove a card number from whoever has it")
    p.add_argument("card", help="the card number; '-' reads it from standard input")
    p.add_argument("--json", action="store_true")
    add_directory_command(p, CardDelete, card_delete)

    p = sub.add_parser("enroll", help="add faces to a person (created when new); or --from-dir DIR")
    p.add_argument("group")
    p.add_argument("person", nargs="?", help="person ID or name (a new name creates the person)")
    p.add_argument("images", nargs="*", type=Path)
    p.add_argument("--from-dir", type=Path, help="a folder per person: DIR/<name>/*.jpg")
    p.add_argument("--user-data")
    p.add_argument("--json", action="store_true")
    add_directory_command(p, Enroll, enroll)

    p = sub.add_parser("train", help="build the group's matching index")
    p.add_argument("group")
    p.add_argument("--json", action="store_true")
    add_directory_command(p, GroupRef, train)

    p = sub.add_parser("identify", help="who are the faces in IMAGE? (1:N against a trained group)")
    p.add_argument("group")
    p.add_argument("image", type=Path)
    p.add_argument("--max-candidates", type=int, default=10)
    p.add_argument("--confidence-threshold", type=float)
    p.add_argument("--far", type=float, help="target FAR (default: config directory.identify_far, 1e-4)")
    p.add_argument("--json", action="store_true")
    add_directory_command(p, Identify, identify)

    p = sub.add_parser("group", help="group the faces of several images by person")
    p.add_argument("images", nargs="+", type=Path)
    p.add_argument("--json", action="store_true")
    add_directory_command(p, GroupFaces, group)


# -- persons -----------------------------------------------------------------------------------------


def persons_list(ref: GroupRef, site: Site) -> int:
    persons = site.store().persons.page(ref.group, top=1_000_000)
    emit(
        ref.json,
        [person_json(p) for p in persons],
        "\n".join(f"{p.person_id}\t{len(p.face_ids)} face(s)\t{p.name}" for p in persons),
    )
    return 0


def persons_update(update: PersonUpdate, site: Site) -> int:
    store = site.store()
    person = resolve_person(store, update.group, update.person)
    with store.db.tx():  # the change and its audit record: both, or neither
        updated = store.persons.update(update.group, person.person_id, update.name, update.user_data)
        store.audit.append("update_person", "cli", "manager", {"personId": person.person_id}, "ok")
    emit(update.json, person_json(updated), f"updated {updated.person_id}")
    return 0


def persons_get(ref: PersonRef, site: Site) -> int:
    data = person_json(resolve_person(site.store(), ref.group, ref.person))
    emit(ref.json, data, json.dumps(data, indent=1))
    return 0


def persons_export(ref: PersonRef, site: Site) -> int:
    """Everything non-biometric the directory holds about the person."""
    store = site.store()
    person = resolve_person(store, ref.group, ref.person)
    data = person_json(person)
    data["personGroupId"] = ref.group
    data["faces"] = [
        {"persistedFaceId": f.face_id, "userData": f.user_data, "created": f.created, "quality": f.quality}
        for f in (store.persons.faces.get(fid, person.person_id) for fid in person.face_ids)
    ]
    data["cards"] = store.cards.count(person.person_id)  # numbers are kept only as keyed hashes
    # recorded before anything is printed: no export without its record
    store.audit.append("export_person", "cli", "manager", {"personId": person.person_id}, "ok")
    emit(ref.json, data, json.dumps(data, indent=1))
    return 0


def persons_delete(ref: PersonRef, site: Site) -> int:
    from edged.api import wire

    service = site.service()
    person = resolve_person(service.store, ref.group, ref.person)
    receipt = service.changes.delete_person(manager(), ref.group, person.person_id)
    emit(ref.json, wire.receipt_json(receipt), receipt_text(receipt))
    return 0


def _card_number(card: str) -> str:
    """The card number argument; ``-`` reads it from standard input (not in the process list)."""
    return sys.stdin.readline().strip() if card == "-" else card


def card_set(request: CardSet, site: Site) -> int:
    card = _card_number(request.card)
    service = site.service()
    person = resolve_person(service.store, request.group, request.person)
    ref = service.changes.set_card(manager(), card, person.person_id, request.group)
    emit(request.json, {"card": ref, "personId": person.person_id}, f"card {ref} → person {person.person_id}")
    return 0


def card_delete(request: CardDelete, site: Site) -> int:
    card = _card_number(request.card)
    service = site.service()
    ref = service.changes.delete_card(manager(), card)
    emit(request.json, {"card": ref, "deleted": True}, f"deleted card {ref}")
    return 0


# -- enrolment and training --------------------------------------------------------------------------


def _images_in(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())


def _enrolment_plan(request: Enroll) -> list[tuple[str, list[Path]]]:
    """(person reference, images) for each person to enrol."""
    if request.from_dir is not None:
        if request.person or request.images:
            raise BadArgument("give either PERSON IMAGE… or --from-dir DIR, not both")
        if not request.from_dir.is_dir():
            raise BadArgument(f"--from-dir {request.from_dir} is not a directory")
        return [(d.name, _images_in(d)) for d in sorted(request.from_dir.iterdir()) if d.is_dir()]
    if not request.person or not request.images:
        raise BadArgument("edged enroll GROUP PERSON IMAGE… (or GROUP --from-dir DIR)")
    return [(request.person, list(request.images))]


def enroll(request: Enroll, site: Site) -> int:
    """Each person's enrolment is all or nothing: its images' faces are embedded first, then the
    person (when new) and all its faces are stored in one transaction; a run killed halfway leaves
    every person enrolled completely or not at all. Run again, it redoes the person cut off, and
    gives the persons already enrolled (found by name) their images again: a second face each, as
    nothing tells an image already enrolled (docs/directory.md)."""
    from edged.service.changes import Embedded

    plan = _enrolment_plan(request)
    service = site.service()
    service.store.groups.get(request.group)
    results: list[dict[str, Any]] = []
    total = sum(len(images) for _, images in plan)
    for person_ref, images in plan:
        try:
            person_id: str | None = resolve_person(service.store, request.group, person_ref).person_id
        except PersonNotFound:
            person_id = None
        embedded: list[Embedded | EdgedError] = []
        for image_path in images:
            try:
                embedded.append(service.changes.embed(manager(), site.read_image(image_path)))
            except EdgedError as exc:
                embedded.append(exc)
        enrolment = service.changes.enrol_person(
            manager(),
            request.group,
            person_id,
            person_ref,
            [e for e in embedded if not isinstance(e, EdgedError)],
            request.user_data,
        )
        stored = iter(enrolment.faces)
        for index, (image_path, prepared) in enumerate(zip(images, embedded, strict=True)):
            outcome = prepared if isinstance(prepared, EdgedError) else next(stored)
            entry: dict[str, Any] = {
                "image": str(image_path),
                "person": person_ref,
                "personId": enrolment.person_id,
                "personCreated": enrolment.created and index == 0,
            }
            if isinstance(outcome, EdgedError):
                entry.update(ok=False, error={"code": outcome.code, "message": outcome.message})
            else:
                entry.update(ok=True, persistedFaceId=outcome.face_id, warnings=list(outcome.warnings))
            results.append(entry)
            if not request.json:
                verdict = "ok" if entry["ok"] else f"{entry['error']['code']}: {entry['error']['message']}"
                print(f"[{len(results)}/{total}] {image_path} → {person_ref}: {verdict}", flush=True)
    ok = sum(1 for r in results if r["ok"])
    if request.json:
        print(json.dumps({"enrolled": ok, "failed": len(results) - ok, "results": results}))
    else:
        print(f"enrolled {ok} of {len(results)} images; run: edged train {request.group}")
    return 0 if ok == len(results) else 1


def train(ref: GroupRef, site: Site) -> int:
    group = site.service().changes.train(manager(), ref.group)
    emit(
        ref.json,
        {"personGroupId": group.group_id, "status": group.train_status, "trainedAt": group.trained_at},
        f"trained {group.group_id}: {group.train_status}",
    )
    return 0


# -- face operations ---------------------------------------------------------------------------------


def identify(request: Identify, site: Site) -> int:
    from edged.api import wire

    service = site.service()
    service.store.groups.get(request.group)
    image = site.read_image(request.image)
    detected = service.recognition.detect(manager(), image, return_face_id=True, ttl_s=60)
    if not detected:
        raise NoFaceDetected(f"no face found in {request.image}")
    face_ids = [d.face_id for d in detected if d.face_id is not None][:10]
    results = service.recognition.identify(
        face_ids,
        group_id=request.group,
        max_candidates=request.max_candidates,
        confidence_threshold=request.confidence_threshold,
        far=request.far,
    )
    out: list[dict[str, Any]] = []
    for detection, (face_id, candidates) in zip(detected, results, strict=False):
        named = []
        for c in candidates:
            named.append(
                {
                    **wire.candidate(c).model_dump(),
                    "name": service.store.persons.get(request.group, c.person_id).name,
                }
            )
        out.append(
            {"faceId": face_id, "faceRectangle": detection.face.detection.box.as_list(), "candidates": named}
        )
    service.store.audit.append(
        "identify", "cli", "recognizer", {"personGroupId": request.group}, f"{len(out)} face(s)"
    )
    if request.json:
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


def group(request: GroupFaces, site: Site) -> int:
    service = site.service()
    origin: dict[str, str] = {}
    for path in request.images:
        for detected in service.recognition.detect(manager(), site.read_image(path), ttl_s=60):
            assert detected.face_id is not None
            origin[detected.face_id] = f"{path}#{detected.face.detection.box.as_list()}"
    if len(origin) < 2:
        raise BadArgument(f"grouping needs at least 2 faces; found {len(origin)}")
    groups, messy = service.recognition.group(list(origin))
    named = [[origin[f] for f in g] for g in groups]
    leftovers = [origin[f] for f in messy]
    text = "\n".join(f"group {i + 1}: " + ", ".join(g) for i, g in enumerate(named))
    emit(
        request.json,
        {"groups": named, "messyGroup": leftovers},
        (text + "\n" if text else "") + "messy: " + ", ".join(leftovers),
    )
    return 0

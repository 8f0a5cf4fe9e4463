"""The operations of the request API (docs/mqtt-api.md): each handler over the face service,
registered with its request and result schemas and whether it changes the directory
(``@operation``). The role each needs is the service's policy (``edged.service.policy``). The JSON
Schema files of ``edged/api/jsonschema/`` are generated from ``OPERATIONS`` (``edged.api.catalog``).
A new operation: a request and a result model in ``schemas``, a role in the policy, a handler here
(the liveness operations: ``liveness_schemas`` and ``liveness_ops``, imported at the end)."""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from pydantic import BaseModel

from edged.api import schemas as s
from edged.api import wire
from edged.api.auth import Principal
from edged.errors import BadArgument, ImageSizeError
from edged.pipeline.image import ImageLimits, decode_image
from edged.pipeline.imagehead import read_head
from edged.service import policy
from edged.service.faces import FaceService
from edged.service.policy import Caller, Role
from edged.types import Box, ImageRGB

__all__ = ["OPERATIONS", "Context", "Operation"]


@dataclass(frozen=True, slots=True)
class Context:
    service: FaceService
    principal: Principal
    limits: ImageLimits

    @property
    def caller(self) -> Caller:
        """The request's client as the service's caller (``mqtt:<client>`` in the audit log)."""
        return Caller(f"mqtt:{self.principal.client or '(unsigned)'}", self.principal.role)

    def image(self, text: str) -> ImageRGB:
        """base64 → bytes → RGB, in memory only; errors name the field."""
        return decode_image(_base64(text, "image"), self.limits, name="image")

    def images(self, named: Sequence[tuple[str, str]], budget: int) -> list[ImageRGB]:
        """Several images of one request (``(field name, base64)``, e.g. ``("images[3]", …)``),
        decoded only once their headers' sizes (``edged.pipeline.imagehead``) together fit
        ``budget`` pixels: ``ImageSizeError`` naming the first image beyond it, before any is
        decoded (each one is capped by ``limits`` too)."""
        encoded = [(name, _base64(text, name)) for name, text in named]
        total = 0
        for name, data in encoded:
            if not data:
                continue  # decode_image names it
            head = read_head(data, name)
            total += head.width * head.height
            if total > budget:
                raise ImageSizeError(
                    f"{name} is {head.width}×{head.height}: the request's images up to it are "
                    f"{total:,} pixels; the budget of a request is {budget:,} pixels in all"
                )
        return [decode_image(data, self.limits, name=name) for name, data in encoded]


def _base64(text: str, name: str) -> bytes:
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise BadArgument(f"{name} is not valid base64") from None


Handler = Callable[[Context, Any], BaseModel]


@dataclass(frozen=True, slots=True)
class Operation:
    name: str
    request: type[s.Request]
    result: type[BaseModel]
    handler: Handler
    changes: bool
    """Changes the directory (audited; refused without a manager/admin signature)."""
    summary: str

    @property
    def role(self) -> Role:
        """The role the operation needs (``edged.service.policy``)."""
        return policy.required(self.name)


OPERATIONS: dict[str, Operation] = {}
"""Every operation by name, as the handlers below register themselves (``operation``)."""

H = TypeVar("H", bound=Handler)


def operation(
    name: str, request: type[s.Request], result: type[BaseModel], summary: str, *, changes: bool = False
) -> Callable[[H], H]:
    """Register the decorated handler as the operation ``name``."""

    def register(handler: H) -> H:
        if name not in policy.OPERATION_ROLES:
            raise ValueError(f"operation {name!r} has no role in edged.service.policy")
        OPERATIONS[name] = Operation(name, request, result, handler, changes, summary)
        return handler

    return register


def change(name: str, request: type[s.Request], result: type[BaseModel], summary: str) -> Callable[[H], H]:
    """Register the decorated handler as the operation ``name``, one that changes the directory."""
    return operation(name, request, result, summary, changes=True)


# -- handlers -------------------------------------------------------------------------------------


def _box(values: list[float] | None) -> Box | None:
    if values is None:
        return None
    x1, y1, x2, y2 = values
    if not (x2 > x1 and y2 > y1):
        raise BadArgument(f"targetFace {values} is not [x1, y1, x2, y2] with x2 > x1 and y2 > y1")
    return Box(x1, y1, x2, y2)


@operation("detect", s.DetectRequest, s.DetectResult, "faces in an image, with face IDs")
def _detect(c: Context, r: s.DetectRequest) -> s.DetectResult:
    faces = c.service.recognition.detect(c.caller, c.image(r.image), r.returnFaceId, r.faceIdTimeToLive)
    return s.DetectResult(faces=[wire.detected_face(f) for f in faces])


@operation("verify", s.VerifyRequest, s.VerifyResult, "face ↔ face or face ↔ person (1:1)")
def _verify(c: Context, r: s.VerifyRequest) -> s.VerifyResult:
    if r.faceId1 is not None and r.faceId2 is not None:
        result = c.service.recognition.verify_faces(r.faceId1, r.faceId2, r.far)
    else:
        assert r.faceId is not None and r.personId is not None
        result = c.service.recognition.verify_person(r.faceId, r.personId, r.personGroupId, r.far)
    return wire.verification(result)


@operation("identify", s.IdentifyRequest, s.IdentifyResult, "face IDs against persons (1:N)")
def _identify(c: Context, r: s.IdentifyRequest) -> s.IdentifyResult:
    results = c.service.recognition.identify(
        r.faceIds,
        group_id=r.personGroupId,
        dynamic_group_id=r.dynamicPersonGroupId,
        person_ids=r.personIds,
        max_candidates=r.maxNumOfCandidatesReturned,
        confidence_threshold=r.confidenceThreshold,
        far=r.far,
    )
    return s.IdentifyResult(
        results=[
            s.IdentifyItem(faceId=face_id, candidates=[wire.candidate(c) for c in candidates])
            for face_id, candidates in results
        ]
    )


@operation("find_similar", s.FindSimilarRequest, s.FindSimilarResult, "similar faces")
def _find_similar(c: Context, r: s.FindSimilarRequest) -> s.FindSimilarResult:
    similar = c.service.recognition.find_similar(
        r.faceId,
        face_ids=r.faceIds,
        face_list_id=r.faceListId,
        max_candidates=r.maxNumOfCandidatesReturned,
        mode=r.mode,
    )
    return s.FindSimilarResult(faces=[wire.similar(f) for f in similar])


@operation("group", s.GroupRequest, s.GroupResult, "face IDs grouped by person")
def _group_faces(c: Context, r: s.GroupRequest) -> s.GroupResult:
    groups, messy = c.service.recognition.group(r.faceIds)
    return s.GroupResult(groups=groups, messyGroup=messy)


@change("create_person_group", s.CreatePersonGroupRequest, s.PersonGroupInfo, "a new (large) person group")
def _create_person_group(c: Context, r: s.CreatePersonGroupRequest) -> s.PersonGroupInfo:
    group = c.service.changes.create_group(c.caller, r.personGroupId, r.name, r.userData, r.large)
    return wire.group(group)


@operation("get_person_group", s.PersonGroupRef, s.PersonGroupInfo, "one group")
def _get_person_group(c: Context, r: s.PersonGroupRef) -> s.PersonGroupInfo:
    return wire.group(c.service.get_group(r.personGroupId))


@operation("list_person_groups", s.ListRequest, s.PersonGroupList, "all groups")
def _list_person_groups(c: Context, r: s.ListRequest) -> s.PersonGroupList:
    return s.PersonGroupList(personGroups=[wire.group(g) for g in c.service.list_groups(r.start, r.top)])


@change("update_person_group", s.UpdatePersonGroupRequest, s.PersonGroupInfo, "rename / new userData")
def _update_person_group(c: Context, r: s.UpdatePersonGroupRequest) -> s.PersonGroupInfo:
    if r.name is None and r.userData is None:
        raise BadArgument("give name and/or userData to update")
    return wire.group(c.service.changes.update_group(c.caller, r.personGroupId, r.name, r.userData))


@change(
    "delete_person_group", s.PersonGroupRef, s.ReceiptResult, "the group, its persons and their templates"
)
def _delete_person_group(c: Context, r: s.PersonGroupRef) -> BaseModel:
    return wire.receipt(c.service.changes.delete_group(c.caller, r.personGroupId))


@change("train", s.PersonGroupRef, s.PersonGroupInfo, "(re)build a group's index")
def _train(c: Context, r: s.PersonGroupRef) -> s.PersonGroupInfo:
    return wire.group(c.service.changes.train(c.caller, r.personGroupId))


@change("create_person", s.CreatePersonRequest, s.Created, "a new person")
def _create_person(c: Context, r: s.CreatePersonRequest) -> s.Created:
    person_id = c.service.changes.create_person(c.caller, r.personGroupId, r.name, r.userData)
    return s.Created(personId=person_id)


@operation("get_person", s.PersonRef, s.PersonInfo, "one person")
def _get_person(c: Context, r: s.PersonRef) -> s.PersonInfo:
    return wire.person(c.service.get_person(r.personGroupId, r.personId))


@operation("list_persons", s.ListPersonsRequest, s.PersonList, "persons of a group")
def _list_persons(c: Context, r: s.ListPersonsRequest) -> s.PersonList:
    return s.PersonList(
        persons=[wire.person(p) for p in c.service.list_persons(r.personGroupId, r.start, r.top)]
    )


@change("delete_person", s.PersonRef, s.ReceiptResult, "the person and its templates, for real")
def _delete_person(c: Context, r: s.PersonRef) -> BaseModel:
    return wire.receipt(c.service.changes.delete_person(c.caller, r.personGroupId, r.personId))


@change("add_person_face", s.AddPersonFaceRequest, s.Created, "enrol a face (quality gate, duplicate check)")
def _add_person_face(c: Context, r: s.AddPersonFaceRequest) -> s.Created:
    enrolment = c.service.changes.add_person_face(
        c.caller,
        r.personGroupId,
        r.personId,
        c.image(r.image),
        target=_box(r.targetFace),
        user_data=r.userData,
    )
    return s.Created(
        personId=enrolment.person_id,
        persistedFaceId=enrolment.face_id,
        quality=list(enrolment.quality),
        warnings=list(enrolment.warnings),
    )


@change("delete_person_face", s.PersonFaceRef, s.ReceiptResult, "one persisted face")
def _delete_person_face(c: Context, r: s.PersonFaceRef) -> BaseModel:
    return wire.receipt(
        c.service.changes.delete_person_face(c.caller, r.personGroupId, r.personId, r.persistedFaceId)
    )


@change("create_face_list", s.CreateFaceListRequest, s.Created, "a new (large) face list")
def _create_face_list(c: Context, r: s.CreateFaceListRequest) -> s.Created:
    c.service.changes.create_face_list(c.caller, r.faceListId, r.name, r.userData, r.large)
    return s.Created(faceListId=r.faceListId)


@operation("get_face_list", s.FaceListRef, s.FaceListInfo, "one face list")
def _get_face_list(c: Context, r: s.FaceListRef) -> s.FaceListInfo:
    face_list, face_ids = c.service.get_face_list(r.faceListId)
    return wire.face_list(face_list, face_ids)


@operation("list_face_lists", s.EmptyRequest, s.FaceListList, "all face lists")
def _list_face_lists(c: Context, r: s.EmptyRequest) -> s.FaceListList:
    return s.FaceListList(faceLists=[wire.face_list(f) for f in c.service.list_face_lists()])


@change("add_face_list_face", s.AddFaceListFaceRequest, s.Created, "a face into a list")
def _add_face_list_face(c: Context, r: s.AddFaceListFaceRequest) -> s.Created:
    face_id = c.service.changes.add_list_face(
        c.caller,
        r.faceListId,
        c.image(r.image),
        target=_box(r.targetFace),
        user_data=r.userData,
    )
    return s.Created(faceListId=r.faceListId, persistedFaceId=face_id)


@change("delete_face_list", s.FaceListRef, s.ReceiptResult, "the list and its templates")
def _delete_face_list(c: Context, r: s.FaceListRef) -> BaseModel:
    return wire.receipt(c.service.changes.delete_face_list(c.caller, r.faceListId))


@change("delete_face_list_face", s.FaceListFaceRef, s.ReceiptResult, "one face of a list")
def _delete_face_list_face(c: Context, r: s.FaceListFaceRef) -> BaseModel:
    return wire.receipt(c.service.changes.delete_list_face(c.caller, r.faceListId, r.persistedFaceId))


@change(
    "set_person_card",
    s.SetPersonCardRequest,
    s.CardResult,
    "map a card/badge number to a person (verify doors)",
)
def _set_person_card(c: Context, r: s.SetPersonCardRequest) -> s.CardResult:
    ref = c.service.changes.set_card(c.caller, r.cardId, r.personId, r.personGroupId)
    return s.CardResult(card=ref, personId=r.personId)


@change("delete_person_card", s.CardRef, s.CardResult, "remove a card mapping")
def _delete_person_card(c: Context, r: s.CardRef) -> s.CardResult:
    return s.CardResult(card=c.service.changes.delete_card(c.caller, r.cardId))


@operation("verify_audit", s.EmptyRequest, s.AuditStatus, "check the audit chain")
def _verify_audit(c: Context, r: s.EmptyRequest) -> s.AuditStatus:
    chain = c.service.verify_audit(c.caller)
    return s.AuditStatus(
        intact=chain.intact, records=chain.records, reason="" if chain.intact else chain.reason
    )


# the liveness operations register themselves in OPERATIONS as this module's own do
from edged.api import liveness_ops as _liveness_ops  # noqa: E402, F401

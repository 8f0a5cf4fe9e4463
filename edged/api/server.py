"""The request server: the face operations over MQTT (docs/mqtt-api.md).

    paho network thread                         API worker threads (api.workers)
    ───────────────────                         ────────────────────────────────
    submit(message) ── size cap ──► bounded queue ──► parse JSON → authenticate (Ed25519, nonce,
      │  full → reply Busy at once                    window) → role → schema (strict, closed)
      └─ too big → reply error at once                → decode image in memory → FaceService → reply

Replies: an MQTT v5 request with a Response Topic is answered there with its Correlation Data — but
only Response Topics under ``edged/<device>/reply/`` are honoured, so a request cannot make edged
publish on its own decision, status or sync topics; every other request is answered on
``edged/<device>/res/<operation>`` with its ``transaction`` echoed (MQTT 3.1.1).

Every failure is a reply with an error code (the directory's codes, plus ``Unauthorized`` and
``Busy``); a refused directory-changing request is also an audit record. Nothing is written to disk
but what the operation itself stores (templates, never images).
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import math
import queue
import re
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from pydantic import BaseModel, ValidationError

from edged.api import schemas as s
from edged.api import wire
from edged.api.auth import CLIENT_RE, ROLE_RANK, Authenticator, Principal
from edged.api.settings import ApiSettings, Role
from edged.config import ImageLimits
from edged.directory.groups import PersonGroup
from edged.directory.lists import FaceList
from edged.directory.persons import Person
from edged.errors import BadArgument, Busy, EdgedError, Forbidden, Unauthorized
from edged.mqtt.client import Delivery, InboundMessage, encode
from edged.mqtt.topics import Topics
from edged.pipeline.image import decode_image
from edged.service.faces import FaceService
from edged.types import Box, ImageRGB

__all__ = ["OPERATIONS", "ApiServer", "Operation", "Publisher", "max_request_bytes"]

logger = logging.getLogger(__name__)

SCHEMA = 1
REQUEST_OVERHEAD = 64 * 1024
"""JSON fields around the base64 image: the request cap is the image cap + this."""
REPLY_QOS = 1
REFUSALS_AUDITED_PER_MIN = 60


def max_request_bytes(limits: ImageLimits) -> int:
    """The largest request payload: a base64 image at the cap plus the other fields."""
    return 4 * -(-limits.max_bytes // 3) + REQUEST_OVERHEAD


class Publisher(Protocol):
    def publish_bytes(
        self,
        topic: str,
        payload: bytes,
        qos: int = 0,
        retain: bool = False,
        expiry_s: float | None = None,
        correlation_data: bytes | None = None,
    ) -> Delivery: ...


@dataclass(frozen=True, slots=True)
class Context:
    service: FaceService
    principal: Principal
    limits: ImageLimits

    @property
    def actor(self) -> str:
        return f"mqtt:{self.principal.client or '(unsigned)'}"

    @property
    def role(self) -> str:
        return self.principal.role

    def image(self, text: str) -> ImageRGB:
        """base64 → bytes → RGB, in memory only; errors name the field."""
        try:
            data = base64.b64decode(text, validate=True)
        except (binascii.Error, ValueError):
            raise BadArgument("image is not valid base64") from None
        return decode_image(data, self.limits, name="image")


Handler = Callable[[Context, Any], BaseModel]


@dataclass(frozen=True, slots=True)
class Operation:
    name: str
    role: Role
    request: type[s.Request]
    result: type[BaseModel]
    handler: Handler
    changes: bool
    """Changes the directory (audited; refused without a manager/admin signature)."""
    summary: str


# -- handlers -------------------------------------------------------------------------------------


def _box(values: list[float] | None) -> Box | None:
    if values is None:
        return None
    x1, y1, x2, y2 = values
    if not (x2 > x1 and y2 > y1):
        raise BadArgument(f"targetFace {values} is not [x1, y1, x2, y2] with x2 > x1 and y2 > y1")
    return Box(x1, y1, x2, y2)


def _group(g: PersonGroup) -> s.PersonGroupInfo:
    return s.PersonGroupInfo(
        personGroupId=g.group_id,
        name=g.name,
        userData=g.user_data,
        kind=g.kind,  # type: ignore[arg-type]
        recognitionModel=g.recognition_model,
        trainStatus=g.train_status,
        trainMessage=g.train_message,
        trainedAt=g.trained_at,
    )


def _person(p: Person) -> s.PersonInfo:
    return s.PersonInfo(
        personId=p.person_id,
        personGroupId=p.group_id,
        name=p.name,
        userData=p.user_data,
        persistedFaceIds=list(p.face_ids),
    )


def _face_list(f: FaceList, face_ids: list[str] | None = None) -> s.FaceListInfo:
    return s.FaceListInfo(
        faceListId=f.list_id,
        name=f.name,
        userData=f.user_data,
        kind=f.kind,  # type: ignore[arg-type]
        recognitionModel=f.recognition_model,
        persistedFaceIds=face_ids,
    )


def _detect(c: Context, r: s.DetectRequest) -> s.DetectResult:
    faces = c.service.detect(c.image(r.image), r.returnFaceId, r.faceIdTimeToLive)
    return s.DetectResult(faces=[s.DetectedFace.model_validate(f.as_json()) for f in faces])


def _verify(c: Context, r: s.VerifyRequest) -> s.VerifyResult:
    if r.faceId1 is not None and r.faceId2 is not None:
        result = c.service.verify_faces(r.faceId1, r.faceId2, r.far)
    else:
        assert r.faceId is not None and r.personId is not None
        result = c.service.verify_person(r.faceId, r.personId, r.personGroupId, r.far)
    return s.VerifyResult.model_validate(result.as_json())


def _identify(c: Context, r: s.IdentifyRequest) -> s.IdentifyResult:
    results = c.service.identify(
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
            s.IdentifyItem(faceId=face_id, candidates=[s.Candidate(**c.as_json()) for c in candidates])
            for face_id, candidates in results
        ]
    )


def _find_similar(c: Context, r: s.FindSimilarRequest) -> s.FindSimilarResult:
    similar = c.service.find_similar(
        r.faceId,
        face_ids=r.faceIds,
        face_list_id=r.faceListId,
        max_candidates=r.maxNumOfCandidatesReturned,
        mode=r.mode,
    )
    return s.FindSimilarResult(faces=[s.SimilarFace(**f.as_json()) for f in similar])


def _group_faces(c: Context, r: s.GroupRequest) -> s.GroupResult:
    groups, messy = c.service.group(r.faceIds)
    return s.GroupResult(groups=groups, messyGroup=messy)


def _create_person_group(c: Context, r: s.CreatePersonGroupRequest) -> s.PersonGroupInfo:
    group = c.service.create_group(r.personGroupId, r.name, r.userData, r.large, c.actor, c.role)
    return _group(group)


def _get_person_group(c: Context, r: s.PersonGroupRef) -> s.PersonGroupInfo:
    return _group(c.service.get_group(r.personGroupId))


def _list_person_groups(c: Context, r: s.ListRequest) -> s.PersonGroupList:
    return s.PersonGroupList(personGroups=[_group(g) for g in c.service.list_groups(r.start, r.top)])


def _update_person_group(c: Context, r: s.UpdatePersonGroupRequest) -> s.PersonGroupInfo:
    if r.name is None and r.userData is None:
        raise BadArgument("give name and/or userData to update")
    return _group(c.service.update_group(r.personGroupId, r.name, r.userData, c.actor, c.role))


def _delete_person_group(c: Context, r: s.PersonGroupRef) -> BaseModel:
    return wire.receipt(c.service.delete_group(r.personGroupId, c.actor, c.role))


def _train(c: Context, r: s.PersonGroupRef) -> s.PersonGroupInfo:
    return _group(c.service.train(r.personGroupId, c.actor, c.role))


def _create_person(c: Context, r: s.CreatePersonRequest) -> s.Created:
    person_id = c.service.create_person(r.personGroupId, r.name, r.userData, c.actor, c.role)
    return s.Created(personId=person_id)


def _get_person(c: Context, r: s.PersonRef) -> s.PersonInfo:
    return _person(c.service.get_person(r.personGroupId, r.personId))


def _list_persons(c: Context, r: s.ListPersonsRequest) -> s.PersonList:
    return s.PersonList(persons=[_person(p) for p in c.service.list_persons(r.personGroupId, r.start, r.top)])


def _delete_person(c: Context, r: s.PersonRef) -> BaseModel:
    return wire.receipt(c.service.delete_person(r.personGroupId, r.personId, c.actor, c.role))


def _add_person_face(c: Context, r: s.AddPersonFaceRequest) -> s.Created:
    enrolment = c.service.add_person_face(
        r.personGroupId,
        r.personId,
        c.image(r.image),
        target=_box(r.targetFace),
        user_data=r.userData,
        actor=c.actor,
        role=c.role,
    )
    return s.Created(
        personId=enrolment.person_id,
        persistedFaceId=enrolment.face_id,
        quality=list(enrolment.quality),
        warnings=list(enrolment.warnings),
    )


def _delete_person_face(c: Context, r: s.PersonFaceRef) -> BaseModel:
    return wire.receipt(
        c.service.delete_person_face(r.personGroupId, r.personId, r.persistedFaceId, c.actor, c.role)
    )


def _create_face_list(c: Context, r: s.CreateFaceListRequest) -> s.Created:
    c.service.create_face_list(r.faceListId, r.name, r.userData, r.large, c.actor, c.role)
    return s.Created(faceListId=r.faceListId)


def _get_face_list(c: Context, r: s.FaceListRef) -> s.FaceListInfo:
    face_list, face_ids = c.service.get_face_list(r.faceListId)
    return _face_list(face_list, face_ids)


def _list_face_lists(c: Context, r: s.EmptyRequest) -> s.FaceListList:
    return s.FaceListList(faceLists=[_face_list(f) for f in c.service.list_face_lists()])


def _add_face_list_face(c: Context, r: s.AddFaceListFaceRequest) -> s.Created:
    face_id = c.service.add_list_face(
        r.faceListId,
        c.image(r.image),
        target=_box(r.targetFace),
        user_data=r.userData,
        actor=c.actor,
        role=c.role,
    )
    return s.Created(faceListId=r.faceListId, persistedFaceId=face_id)


def _delete_face_list(c: Context, r: s.FaceListRef) -> BaseModel:
    return wire.receipt(c.service.delete_face_list(r.faceListId, c.actor, c.role))


def _delete_face_list_face(c: Context, r: s.FaceListFaceRef) -> BaseModel:
    return wire.receipt(c.service.delete_list_face(r.faceListId, r.persistedFaceId, c.actor, c.role))


def _set_person_card(c: Context, r: s.SetPersonCardRequest) -> s.CardResult:
    ref = c.service.set_card(r.cardId, r.personId, r.personGroupId, actor=c.actor, role=c.role)
    return s.CardResult(card=ref, personId=r.personId)


def _delete_person_card(c: Context, r: s.CardRef) -> s.CardResult:
    return s.CardResult(card=c.service.delete_card(r.cardId, actor=c.actor, role=c.role))


def _verify_audit(c: Context, r: s.EmptyRequest) -> s.AuditStatus:
    chain = c.service.verify_audit(c.actor, c.role)
    return s.AuditStatus(
        intact=chain.intact, records=chain.records, reason="" if chain.intact else chain.reason
    )


def _op(
    name: str,
    role: Role,
    request: type[s.Request],
    result: type[BaseModel],
    handler: Callable[[Context, Any], BaseModel],
    summary: str,
    changes: bool = False,
) -> Operation:
    return Operation(name, role, request, result, handler, changes, summary)


R: Role = "recognizer"
M: Role = "manager"
A: Role = "admin"
OPERATIONS: dict[str, Operation] = {
    op.name: op
    for op in [
        _op("detect", R, s.DetectRequest, s.DetectResult, _detect, "faces in an image, with face IDs"),
        _op("verify", R, s.VerifyRequest, s.VerifyResult, _verify, "face ↔ face or face ↔ person (1:1)"),
        _op("identify", R, s.IdentifyRequest, s.IdentifyResult, _identify, "face IDs against persons (1:N)"),
        _op("find_similar", R, s.FindSimilarRequest, s.FindSimilarResult, _find_similar, "similar faces"),
        _op("group", R, s.GroupRequest, s.GroupResult, _group_faces, "face IDs grouped by person"),
        _op(
            "create_person_group",
            M,
            s.CreatePersonGroupRequest,
            s.PersonGroupInfo,
            _create_person_group,
            "a new (large) person group",
            True,
        ),
        _op("get_person_group", M, s.PersonGroupRef, s.PersonGroupInfo, _get_person_group, "one group"),
        _op("list_person_groups", M, s.ListRequest, s.PersonGroupList, _list_person_groups, "all groups"),
        _op(
            "update_person_group",
            M,
            s.UpdatePersonGroupRequest,
            s.PersonGroupInfo,
            _update_person_group,
            "rename / new userData",
            True,
        ),
        _op(
            "delete_person_group",
            M,
            s.PersonGroupRef,
            s.ReceiptResult,
            _delete_person_group,
            "the group, its persons and their templates",
            True,
        ),
        _op("train", M, s.PersonGroupRef, s.PersonGroupInfo, _train, "(re)build a group's index", True),
        _op("create_person", M, s.CreatePersonRequest, s.Created, _create_person, "a new person", True),
        _op("get_person", M, s.PersonRef, s.PersonInfo, _get_person, "one person"),
        _op("list_persons", M, s.ListPersonsRequest, s.PersonList, _list_persons, "persons of a group"),
        _op(
            "delete_person",
            M,
            s.PersonRef,
            s.ReceiptResult,
            _delete_person,
            "the person and its templates, for real",
            True,
        ),
        _op(
            "add_person_face",
            M,
            s.AddPersonFaceRequest,
            s.Created,
            _add_person_face,
            "enrol a face (quality gate, duplicate check)",
            True,
        ),
        _op(
            "delete_person_face",
            M,
            s.PersonFaceRef,
            s.ReceiptResult,
            _delete_person_face,
            "one persisted face",
            True,
        ),
        _op(
            "set_person_card",
            M,
            s.SetPersonCardRequest,
            s.CardResult,
            _set_person_card,
            "map a card/badge number to a person (verify doors)",
            True,
        ),
        _op(
            "delete_person_card",
            M,
            s.CardRef,
            s.CardResult,
            _delete_person_card,
            "remove a card mapping",
            True,
        ),
        _op(
            "create_face_list",
            M,
            s.CreateFaceListRequest,
            s.Created,
            _create_face_list,
            "a new (large) face list",
            True,
        ),
        _op("get_face_list", M, s.FaceListRef, s.FaceListInfo, _get_face_list, "one face list"),
        _op("list_face_lists", M, s.EmptyRequest, s.FaceListList, _list_face_lists, "all face lists"),
        _op(
            "add_face_list_face",
            M,
            s.AddFaceListFaceRequest,
            s.Created,
            _add_face_list_face,
            "a face into a list",
            True,
        ),
        _op(
            "delete_face_list",
            M,
            s.FaceListRef,
            s.ReceiptResult,
            _delete_face_list,
            "the list and its templates",
            True,
        ),
        _op(
            "delete_face_list_face",
            M,
            s.FaceListFaceRef,
            s.ReceiptResult,
            _delete_face_list_face,
            "one face of a list",
            True,
        ),
        _op("verify_audit", A, s.EmptyRequest, s.AuditStatus, _verify_audit, "check the audit chain"),
    ]
}


# -- the server -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Route:
    op: str
    topic: str
    correlation: bytes | None


def validation_message(exc: ValidationError) -> str:
    """One line naming every offending field: ``faceIds.0: …; extra: unknown field``."""
    parts = []
    for err in exc.errors():
        where = ".".join(str(p) for p in err["loc"]) or "(request)"
        message = "unknown field" if err["type"] == "extra_forbidden" else err["msg"]
        parts.append(f"{where}: {message}")
    return "; ".join(parts)


class ApiServer:
    """Serves ``edged/<device>/req/+``. ``start()`` starts the workers, ``submit`` is paho's handler,
    ``stop()`` answers what is still queued with ``Busy`` and joins the workers."""

    def __init__(
        self,
        service: FaceService,
        settings: ApiSettings,
        topics: Topics,
        publisher: Publisher,
        authenticator: Authenticator,
        limits: ImageLimits | None = None,
        operations: Mapping[str, Operation] | None = None,
    ) -> None:
        self.service = service
        self.settings = settings
        self.topics = topics
        self.publisher = publisher
        self.auth = authenticator
        self.limits = limits or ImageLimits()
        self.operations = dict(operations or OPERATIONS)
        self.max_bytes = max_request_bytes(self.limits)
        self._queue: queue.Queue[tuple[_Route, bytes] | None] = queue.Queue(settings.queue_depth)
        self._workers: list[threading.Thread] = []
        self._lock = threading.Lock()
        self.served = 0
        self.failed = 0
        self.busy = 0
        self.running = 0
        self.refusals_unaudited = 0
        self.refusals_suppressed_minute = 0
        self._refusal_minute = -math.inf
        self._refusals_this_minute = 0
        self._stopping = False

    def start(self) -> None:
        for i in range(self.settings.workers):
            worker = threading.Thread(target=self._work, name=f"api-{i}", daemon=True)
            worker.start()
            self._workers.append(worker)

    def stop(self, timeout: float = 10.0) -> None:
        """Refuse what is still queued (Busy: the client may retry elsewhere or later) and join."""
        self._stopping = True
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                break
            if item is not None:
                self._reply_error(item[0], None, Busy("edged is stopping; the request was not run"))
        for _ in self._workers:
            self._queue.put(None)
        for worker in self._workers:
            worker.join(timeout)
        self._workers.clear()

    def depth(self) -> int:
        return self._queue.qsize()

    def counters(self) -> dict[str, int]:
        """For the stats topic: requests served, failed (error replies), refused Busy, queued, running."""
        with self._lock:
            return {
                "served": self.served,
                "failed": self.failed,
                "busy": self.busy,
                "queued": self._queue.qsize(),
                "running": self.running,
                "refusals_unaudited": self.refusals_unaudited,
            }

    # paho's network thread: cheap checks only

    def submit(self, message: InboundMessage) -> None:
        op = self.topics.operation_of(message.topic)
        if op is None:
            logger.warning("API: ignored a request on %r (not an operation topic)", message.topic)
            return
        route, problem = self._route(op, message)
        if problem is not None:
            self._reply_error(route, _transaction(message.payload), problem)
            return
        if len(message.payload) > self.max_bytes:
            self._reply_error(
                route,
                None,
                BadArgument(
                    f"the request is {len(message.payload):,} bytes; the limit is {self.max_bytes:,}"
                ),
            )
            return
        try:
            if self._stopping:
                raise queue.Full
            self._queue.put_nowait((route, message.payload))
        except queue.Full:
            self._count("busy")
            self._reply_error(
                route,
                _transaction(message.payload),
                Busy(
                    "edged is stopping; retry later"
                    if self._stopping
                    else f"{self.settings.queue_depth} requests are already waiting; retry later"
                ),
            )

    def _route(self, op: str, message: InboundMessage) -> tuple[_Route, EdgedError | None]:
        default = _Route(op, self.topics.response(op), None)
        if message.response_topic is None:
            return default, None
        if not self.topics.is_reply(message.response_topic):
            return default, BadArgument(
                f"response topic {message.response_topic!r} is not allowed: use "
                f"{self.topics.reply('x')[:-1]}<client>[/…]"
            )
        return _Route(op, message.response_topic, message.correlation_data), None

    # workers

    def _work(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            route, payload = item
            self._count("running")
            try:
                self.handle(route, payload)
            except Exception:  # the reply path itself failed; keep serving
                logger.exception("API: %s failed", route.op)
            finally:
                self._count("running", -1)

    def handle(self, route: _Route, payload: bytes) -> None:
        transaction = None
        principal: Principal | None = None
        try:
            try:
                body = json.loads(payload)
            except (UnicodeDecodeError, json.JSONDecodeError) as exc:
                raise BadArgument(f"the request is not valid JSON: {exc}") from None
            except RecursionError:
                raise BadArgument("the request is not valid JSON: nested too deeply") from None
            if not isinstance(body, dict):
                raise BadArgument(f"the request must be a JSON object, not {type(body).__name__}")
            raw_tx = body.get("transaction")
            transaction = raw_tx if isinstance(raw_tx, str) and 0 < len(raw_tx) <= 128 else None
            operation = self.operations.get(route.op)
            if operation is None:
                raise BadArgument(f"unknown operation {route.op!r}; see docs/mqtt-api.md")
            principal = self._authorise(operation, body)
            try:
                request = operation.request.model_validate(body)
            except ValidationError as exc:
                raise BadArgument(validation_message(exc)) from None
            result = operation.handler(Context(self.service, principal, self.limits), request)
        except EdgedError as exc:
            self._count("failed")
            self._reply_error(route, transaction, exc)
            return
        except Exception as exc:
            self._count("failed")
            logger.exception("API: %s failed", route.op)
            self._reply_error(route, transaction, EdgedError(f"internal error ({type(exc).__name__})"))
            return
        self._count("served")
        self._reply(route, transaction, result.model_dump(mode="json", exclude_none=False))

    def _authorise(self, operation: Operation, body: Mapping[str, Any]) -> Principal:
        """Who sent it (signature) and whether that role may run it; refusals of directory-changing
        or directory-reading operations are audited."""
        try:
            principal = self.auth.check(operation.name, body)
        except (Unauthorized, BadArgument) as exc:
            if ROLE_RANK[operation.role] > ROLE_RANK["recognizer"]:
                auth = body.get("auth")
                client = auth.get("client") if isinstance(auth, dict) else None
                actor = f"mqtt:{client}" if isinstance(client, str) and CLIENT_RE.fullmatch(client) else None
                self._audit_refusal(operation.name, actor or "mqtt:(unsigned or malformed)", "?", exc)
            if isinstance(exc, BadArgument):
                raise Unauthorized(exc.message) from None
            raise
        if not principal.may(operation.role):
            detail = (
                "sign the request with a manager or admin key (docs/mqtt-api.md)"
                if not principal.signed
                else f"client {principal.client!r} has role {principal.role}"
            )
            if ROLE_RANK[operation.role] > ROLE_RANK["recognizer"] or principal.signed:
                actor = f"mqtt:{principal.client or '(unsigned)'}"
                self._audit_refusal(operation.name, actor, principal.role, None)
            error_type = Forbidden if principal.signed else Unauthorized
            raise error_type(f"{operation.name} needs role {operation.role}; {detail}")
        return principal

    def _audit_refusal(self, operation: str, actor: str, role: str, error: EdgedError | None) -> None:
        """An audit record for a refused request, at most ``REFUSALS_AUDITED_PER_MIN`` a minute (the
        chain cannot be pruned: a flood of refused requests must not fill the disk); beyond that
        they are counted (``refusals_unaudited``) and logged once per minute."""
        now = time.monotonic()
        with self._lock:
            if now - self._refusal_minute >= 60.0:
                if self.refusals_suppressed_minute:
                    logger.warning(
                        "API: %d refused requests in the last minute were not audited (rate limit)",
                        self.refusals_suppressed_minute,
                    )
                self._refusal_minute, self._refusals_this_minute = now, 0
                self.refusals_suppressed_minute = 0
            if self._refusals_this_minute >= REFUSALS_AUDITED_PER_MIN:
                self.refusals_unaudited += 1
                self.refusals_suppressed_minute += 1
                return
            self._refusals_this_minute += 1
        result = "refused: role" if error is None else f"refused: {error.code}: {error.message[:160]}"
        self.service.record(operation, actor, role, {}, result)

    def _count(self, name: str, delta: int = 1) -> None:
        with self._lock:
            setattr(self, name, getattr(self, name) + delta)

    def _reply(self, route: _Route, transaction: str | None, result: dict[str, Any]) -> None:
        payload = {"schema": SCHEMA, "op": route.op, "transaction": transaction, "ok": True, "result": result}
        self._send(route, payload)

    def _reply_error(self, route: _Route, transaction: str | None, error: EdgedError) -> None:
        payload = {
            "schema": SCHEMA,
            "op": route.op,
            "transaction": transaction,
            "ok": False,
            "error": {"code": error.code, "message": error.message},
        }
        self._send(route, payload)

    def _send(self, route: _Route, payload: dict[str, Any]) -> None:
        self.publisher.publish_bytes(
            route.topic, encode(payload), qos=REPLY_QOS, correlation_data=route.correlation
        )


_TRANSACTION = re.compile(rb'"transaction"\s*:\s*"([^"\\]{1,128})"')


def _transaction(payload: bytes) -> str | None:
    """The request's ``transaction`` for an early error reply (Busy, bad response topic), without
    parsing a large request on paho's thread: base64 holds no quotes, so a scan finds the key."""
    if len(payload) > REQUEST_OVERHEAD:
        match = _TRANSACTION.search(payload)
        return match.group(1).decode("utf-8", "replace") if match else None
    try:
        body = json.loads(payload)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
        return None
    tx = body.get("transaction") if isinstance(body, dict) else None
    return tx if isinstance(tx, str) and 0 < len(tx) <= 128 else None

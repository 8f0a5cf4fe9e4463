"""The wire form of the face operations' results: the camelCase JSON of the cloud face APIs (and the
snake_case of a signed receipt), as the response models of ``edged.api.schemas``. The request
server's operations build their replies with these; the CLI prints them (``.model_dump``). The
service itself returns plain typed values."""

from __future__ import annotations

import json
import math
from typing import Any

from pydantic import BaseModel

from edged.api import liveness_schemas as ls
from edged.api import schemas as s
from edged.directory.groups import PersonGroup
from edged.directory.lists import FaceList
from edged.directory.liveness import AttemptOutcome
from edged.directory.persons import Person
from edged.directory.receipts import Receipt
from edged.pipeline.liveness import LivenessResult
from edged.pipeline.verify import Verification
from edged.service.recognition import Candidate, DetectedFace, Similar


def detected_face(detected: DetectedFace) -> s.DetectedFace:
    det = detected.face.detection
    quality = detected.face.quality
    out: dict[str, Any] = {
        "faceRectangle": det.box.as_list(),
        "score": round(det.score, 4),
        "quality": {"ok": quality.ok, "reasons": list(quality.reasons), **quality.measures},
    }
    if detected.face_id is not None:
        out = {"faceId": detected.face_id, "expires": detected.expires, **out}
    return s.DetectedFace.model_validate(out)


def verification(result: Verification) -> s.VerifyResult:
    return s.VerifyResult(
        isIdentical=result.is_identical,
        confidence=round(result.confidence, 4),
        distance=round(result.distance, 4),
        threshold=round(result.threshold, 4),
        far=result.far,
    )


def candidate(value: Candidate) -> s.Candidate:
    return s.Candidate(personId=value.person_id, confidence=round(value.confidence, 4))


def similar(value: Similar) -> s.SimilarFace:
    confidence = round(value.confidence, 4)
    if value.persisted:
        return s.SimilarFace(persistedFaceId=value.face_id, confidence=confidence)
    return s.SimilarFace(faceId=value.face_id, confidence=confidence)


def _described(record: PersonGroup | FaceList) -> dict[str, Any]:
    """What a person group and a face list both tell about themselves."""
    return {
        "name": record.name,
        "userData": record.user_data,
        "kind": record.kind,
        "recognitionModel": record.recognition_model,
    }


def group(g: PersonGroup) -> s.PersonGroupInfo:
    return s.PersonGroupInfo.model_validate(
        {
            "personGroupId": g.group_id,
            **_described(g),
            "trainStatus": g.train_status,
            "trainMessage": g.train_message,
            "trainedAt": g.trained_at,
        }
    )


def person(p: Person) -> s.PersonInfo:
    return s.PersonInfo(
        personId=p.person_id,
        personGroupId=p.group_id,
        name=p.name,
        userData=p.user_data,
        persistedFaceIds=list(p.face_ids),
    )


def face_list(f: FaceList, face_ids: list[str] | None = None) -> s.FaceListInfo:
    return s.FaceListInfo.model_validate(
        {"faceListId": f.list_id, **_described(f), "persistedFaceIds": face_ids}
    )


def receipt_json(value: Receipt) -> dict[str, Any]:
    """A receipt as JSON: its signed payload and the signature."""
    return {**json.loads(value.payload()), "signature": value.signature}


def receipt(value: Receipt) -> BaseModel:
    """A receipt as the reply of a deletion (``ReceiptResult``)."""
    return s.ReceiptResult.model_validate(receipt_json(value))


def liveness(result: LivenessResult | AttemptOutcome) -> ls.LivenessOutcome:
    """A liveness result (of a check, or as an attempt stored it): ``livenessDecision``, ``score``,
    ``cues``, ``decidedBy``, ``frames`` and the challenge checked (also what ``edged liveness``
    prints)."""
    return ls.LivenessOutcome.model_validate(
        {
            "livenessDecision": result.decision,
            "score": round(result.score, 4),
            "cues": [
                {
                    "name": c.name,
                    "value": round(c.value, 4) if math.isfinite(c.value) else None,
                    "score": round(c.score, 4),
                    "verdict": c.verdict,
                }
                for c in result.cues
            ],
            "decidedBy": list(result.decided_by),
            "frames": result.frames,
            "challenge": result.challenge,
        }
    )

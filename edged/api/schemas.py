# ruff: noqa: N815  (the field names are the wire names of the cloud face APIs: camelCase)
"""Request and response schemas of the face operations over MQTT (docs/mqtt-api.md).

One pydantic model per request, strict (no type coercion: ``"1"`` is not a number) and closed
(unknown fields are errors), and one per response. The JSON Schema files shipped in
``edged/api/schemas/`` are generated from these models (``python3 tools/export_schemas.py``); a
test keeps them equal.

Field names follow the cloud face APIs (camelCase). Boxes are ``[x1, y1, x2, y2]`` in image pixels.
Images travel base64-encoded in ``image`` and are decoded in memory only.
"""

from __future__ import annotations

import dataclasses
from typing import Annotated, Any, Literal, get_type_hints

from pydantic import BaseModel, ConfigDict, Field, create_model, model_validator

from edged.directory.receipts import Receipt
from edged.pipeline.image import ImageLimits

MAX_IMAGE_BYTES = ImageLimits().max_bytes
MAX_IMAGE_BASE64 = 4 * -(-MAX_IMAGE_BYTES // 3)
"""Characters of base64 that encode the largest image (6 MB → 8 MiB of text)."""

Id = Annotated[str, Field(pattern=r"^[a-z0-9_-]{1,64}$", description="lower-case letters, digits, _ and -")]
Uuid = Annotated[str, Field(min_length=1, max_length=64, description="an ID returned by edged")]
Name = Annotated[str, Field(min_length=1, max_length=128)]
UserData = Annotated[str, Field(max_length=16 * 1024)]
Far = Annotated[float, Field(gt=0, lt=1, description="target false-accept rate")]
Image = Annotated[
    str,
    Field(
        min_length=1,
        description="the image (JPEG, PNG, BMP or WebP) in base64; at most 6 MB decoded "
        "(a larger one is refused with InvalidImageSize)",
        json_schema_extra={"maxLength": MAX_IMAGE_BASE64},
    ),
]
BoxList = Annotated[
    list[float], Field(min_length=4, max_length=4, description="[x1, y1, x2, y2] in image pixels")
]


class Closed(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class Auth(Closed):
    """The signature block of a signed request (docs/mqtt-api.md, "Signed requests")."""

    client: str = Field(min_length=1, max_length=64, description="client ID from api.clients")
    ts: float = Field(description="the request's time, Unix seconds")
    nonce: str = Field(min_length=16, max_length=64, description="random, never reused")
    sig: str = Field(min_length=1, max_length=128, description="base64 Ed25519 signature")


class Request(Closed):
    transaction: str | None = Field(
        None, min_length=1, max_length=128, description="echoed in the response (MQTT 3.1.1 matching)"
    )
    auth: Auth | None = Field(None, description="signature; required for operations beyond recognizer")


# -- recognizer operations --------------------------------------------------------------------------


class DetectRequest(Request):
    image: Image
    returnFaceId: bool = Field(True, description="store a transient template and return its faceId")
    faceIdTimeToLive: int | None = Field(
        None, ge=60, le=86_400, description="seconds the faceId lives (default: the configured TTL)"
    )


class VerifyRequest(Request):
    """Two face IDs, or a face ID and a person (of a group, or of the directory)."""

    faceId1: Uuid | None = None
    faceId2: Uuid | None = None
    faceId: Uuid | None = None
    personId: Uuid | None = None
    personGroupId: Id | None = None
    far: Far | None = None

    @model_validator(mode="after")
    def _one_form(self) -> VerifyRequest:
        pair = self.faceId1 is not None and self.faceId2 is not None
        person = self.faceId is not None and self.personId is not None
        if pair == person or (pair and (self.faceId or self.personId or self.personGroupId)):
            raise ValueError(
                "give faceId1 and faceId2, or faceId and personId (and optionally personGroupId)"
            )
        if (self.faceId1 is None) != (self.faceId2 is None):
            raise ValueError("faceId1 and faceId2 go together")
        return self


class IdentifyRequest(Request):
    faceIds: list[Uuid] = Field(min_length=1, max_length=10)
    personGroupId: Id | None = None
    dynamicPersonGroupId: Id | None = None
    personIds: list[Uuid] | None = Field(None, min_length=1, description='directory persons, or ["*"]')
    maxNumOfCandidatesReturned: int = Field(1, ge=1, le=100)
    confidenceThreshold: float | None = Field(None, ge=0, le=1)
    far: Far | None = Field(None, description="default: the configured directory.identify_far")

    @model_validator(mode="after")
    def _one_scope(self) -> IdentifyRequest:
        scopes = [self.personGroupId, self.dynamicPersonGroupId, self.personIds]
        if sum(s is not None for s in scopes) != 1:
            raise ValueError("give exactly one of personGroupId, dynamicPersonGroupId and personIds")
        return self


class FindSimilarRequest(Request):
    faceId: Uuid
    faceIds: list[Uuid] | None = Field(None, min_length=1, max_length=1000)
    faceListId: Id | None = None
    maxNumOfCandidatesReturned: int = Field(20, ge=1, le=1000)
    mode: Literal["matchPerson", "matchFace"] = "matchPerson"

    @model_validator(mode="after")
    def _one_target(self) -> FindSimilarRequest:
        if (self.faceIds is None) == (self.faceListId is None):
            raise ValueError("give exactly one of faceIds and faceListId")
        return self


class GroupRequest(Request):
    faceIds: list[Uuid] = Field(min_length=2, max_length=1000)


# -- manager operations -----------------------------------------------------------------------------


class CreatePersonGroupRequest(Request):
    personGroupId: Id
    name: Name
    userData: UserData | None = None
    large: bool = Field(False, description="a large person group (up to 1,000,000 persons, int8 index)")


class PersonGroupRef(Request):
    personGroupId: Id


class UpdatePersonGroupRequest(Request):
    personGroupId: Id
    name: Name | None = None
    userData: UserData | None = None


class ListRequest(Request):
    start: str | None = Field(None, max_length=64, description="list IDs after this one")
    top: int = Field(1000, ge=1, le=1000)


class ListPersonsRequest(ListRequest):
    personGroupId: Id | None = Field(None, description="absent: the person directory")


class CreatePersonRequest(Request):
    personGroupId: Id | None = Field(None, description="absent: the person directory")
    name: Name
    userData: UserData | None = None


class PersonRef(Request):
    personGroupId: Id | None = Field(None, description="absent: the person directory")
    personId: Uuid


class AddPersonFaceRequest(PersonRef):
    image: Image
    targetFace: BoxList | None = None
    userData: UserData | None = None


class PersonFaceRef(PersonRef):
    persistedFaceId: Uuid


class CreateFaceListRequest(Request):
    faceListId: Id
    name: Name
    userData: UserData | None = None
    large: bool = False


class FaceListRef(Request):
    faceListId: Id


class AddFaceListFaceRequest(FaceListRef):
    image: Image
    targetFace: BoxList | None = None
    userData: UserData | None = None


class FaceListFaceRef(FaceListRef):
    persistedFaceId: Uuid


class SetPersonCardRequest(PersonRef):
    cardId: str = Field(min_length=1, max_length=128, description="the badge/card number (stored hashed)")


class CardRef(Request):
    cardId: str = Field(min_length=1, max_length=128)


class EmptyRequest(Request):
    pass


# -- responses --------------------------------------------------------------------------------------


class Error(Closed):
    code: str = Field(description="stable error code (docs/mqtt-api.md, docs/directory.md)")
    message: str


class Response(Closed):
    """Every reply: ``ok`` with ``result``, or not ``ok`` with ``error``."""

    schema_: Literal[1] = Field(alias="schema")
    op: str
    transaction: str | None
    ok: bool
    result: dict[str, Any] | None = None
    error: Error | None = None

    @model_validator(mode="after")
    def _one(self) -> Response:
        if self.ok != (self.result is not None) or self.ok == (self.error is not None):
            raise ValueError("ok responses carry result, failed ones error")
        return self


class Quality(BaseModel):
    model_config = ConfigDict(extra="allow", strict=True)
    ok: bool
    reasons: list[str]


class DetectedFace(Closed):
    faceId: str | None = None
    expires: float | None = None
    faceRectangle: list[float] = Field(min_length=4, max_length=4)
    score: float
    quality: Quality


class DetectResult(Closed):
    faces: list[DetectedFace]


class VerifyResult(Closed):
    isIdentical: bool
    confidence: float
    distance: float
    threshold: float
    far: float


class Candidate(Closed):
    personId: str
    confidence: float


class IdentifyItem(Closed):
    faceId: str
    candidates: list[Candidate]


class IdentifyResult(Closed):
    results: list[IdentifyItem]


class SimilarFace(Closed):
    faceId: str | None = None
    persistedFaceId: str | None = None
    confidence: float


class FindSimilarResult(Closed):
    faces: list[SimilarFace]


class GroupResult(Closed):
    groups: list[list[str]]
    messyGroup: list[str]


class PersonGroupInfo(Closed):
    personGroupId: str
    name: str
    userData: str | None
    kind: Literal["group", "large"]
    recognitionModel: str
    trainStatus: str
    trainMessage: str | None
    trainedAt: float | None


class PersonGroupList(Closed):
    personGroups: list[PersonGroupInfo]


class PersonInfo(Closed):
    personId: str
    personGroupId: str | None
    name: str
    userData: str | None
    persistedFaceIds: list[str]


class PersonList(Closed):
    persons: list[PersonInfo]


class Created(Closed):
    personId: str | None = None
    persistedFaceId: str | None = None
    personGroupId: str | None = None
    faceListId: str | None = None
    quality: list[str] | None = None
    warnings: list[str] | None = None


class FaceListInfo(Closed):
    faceListId: str
    name: str
    userData: str | None
    kind: Literal["list", "large"]
    recognitionModel: str
    persistedFaceIds: list[str] | None = None


class FaceListList(Closed):
    faceLists: list[FaceListInfo]


def _receipt_model() -> type[Closed]:
    """The wire form of a receipt is the directory's signed ``Receipt``, field for field (a client
    verifies the signature over those fields), so it is made from it: one definition of a receipt."""
    hints = get_type_hints(Receipt)
    fields: dict[str, Any] = {f.name: (hints[f.name], ...) for f in dataclasses.fields(Receipt)}
    return create_model(
        "ReceiptResult",
        __base__=Closed,
        __doc__="A deletion: what was deleted, signed with the device key (docs/directory.md).",
        __module__=__name__,
        **fields,
    )


ReceiptResult = _receipt_model()


class AuditStatus(Closed):
    intact: bool = Field(description="the hash chain holds and ends at the head the device key signed")
    records: int
    reason: str = Field(description="why not intact (empty when intact)")


class CardResult(Closed):
    card: str = Field(description="the card's reference: a prefix of its keyed hash (never the number)")
    personId: str | None = None

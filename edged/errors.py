"""The error tree of edged.

Every error carries a stable ``code`` (the cloud face API's error codes where one exists) and a
message that names the offending value. The CLI prints ``code: message`` on one line and exits
non-zero; the MQTT API will answer ``{"error": {"code", "message"}}``.

    EdgedError
    ├── ConfigError                 bad configuration (startup: exit 2)
    ├── ModelError                  missing/corrupt model, sha256 mismatch, runtime failure (startup)
    │   └── ModelIntegrityError     file bytes differ from models/manifest.yaml
    ├── ImageError                  code InvalidImage: unreadable, corrupt, empty, wrong type
    │   └── ImageSizeError          code InvalidImageSize: bytes or pixels over the cap, too small
    ├── FaceError
    │   ├── NoFaceDetected          no face passed detection
    │   ├── BadArgument             a request argument out of range or of the wrong type
    │   ├── NotFound                (exit 6) a referenced object does not exist (or has expired)
    │   │   ├── PersonGroupNotFound, PersonNotFound, FaceListNotFound, DynamicPersonGroupNotFound
    │   │   ├── CardNotFound        no person has this card (verify-mode claims)
    │   │   ├── FaceNotFound        face ID unknown or expired, persisted face unknown
    │   │   └── LivenessSessionNotFound  unknown (or deleted, or reaped) liveness session
    │   │       └── LivenessSessionExpired  past its 48 h, not yet reaped (it is, on the spot)
    │   ├── Conflict                (exit 7) PersonGroupExists, FaceListExists, PersonGroupNotTrained,
    │   │                           DuplicateIdentity (enrolment matches another person)
    │   │   └── LivenessAttemptsExhausted  a liveness session has used its maxAttempts
    │   ├── QuotaExceeded           a limit of the data model (persons, faces, sizes)
    │   ├── QualityTooLow           enrolment refused by the quality gate (reasons in the message)
    │   ├── Forbidden               (exit 10) the caller's role may not do this (recognizer enrolling)
    │   ├── Unauthorized            (exit 10) a request's signature is missing, wrong, stale or replayed
    │   │   ├── LivenessTokenInvalid   not the liveness session's auth token
    │   │   └── LivenessTokenExpired   the session's auth token outlived its time-to-live
    │   └── Busy                    the request queue is full: try again later
    ├── CryptoError                 (exit 8) the key-encryption key: WrongKey, DecryptionFailed
    └── CameraError                 (exit 11) a frame source that cannot be opened or read
"""

from __future__ import annotations


class EdgedError(Exception):
    """Base class. ``code`` is a stable machine-readable identifier."""

    code = "InternalError"
    exit_code = 1

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return f"{self.code}: {self.message}"


class ConfigError(EdgedError):
    code = "BadConfig"
    exit_code = 2


class ModelError(EdgedError):
    code = "ModelError"
    exit_code = 3


class ModelIntegrityError(ModelError):
    code = "ModelIntegrity"


class ImageError(EdgedError):
    code = "InvalidImage"
    exit_code = 4


class ImageSizeError(ImageError):
    code = "InvalidImageSize"


class FaceError(EdgedError):
    code = "FaceError"
    exit_code = 5


class NoFaceDetected(FaceError):
    code = "NoFaceDetected"


class BadArgument(FaceError):
    code = "BadArgument"
    exit_code = 2


class NotFound(FaceError):
    code = "NotFound"
    exit_code = 6


class PersonGroupNotFound(NotFound):
    code = "PersonGroupNotFound"


class PersonNotFound(NotFound):
    code = "PersonNotFound"


class FaceNotFound(NotFound):
    code = "FaceNotFound"


class FaceListNotFound(NotFound):
    code = "FaceListNotFound"


class DynamicPersonGroupNotFound(NotFound):
    code = "DynamicPersonGroupNotFound"


class CardNotFound(NotFound):
    code = "CardNotFound"


class LivenessSessionNotFound(NotFound):
    code = "LivenessSessionNotFound"


class LivenessSessionExpired(LivenessSessionNotFound):
    code = "LivenessSessionExpired"


class Conflict(FaceError):
    code = "Conflict"
    exit_code = 7


class PersonGroupExists(Conflict):
    code = "PersonGroupExists"


class FaceListExists(Conflict):
    code = "FaceListExists"


class PersonGroupNotTrained(Conflict):
    code = "PersonGroupNotTrained"


class DuplicateIdentity(Conflict):
    code = "DuplicateIdentity"


class LivenessAttemptsExhausted(Conflict):
    code = "LivenessAttemptsExhausted"


class QuotaExceeded(FaceError):
    code = "QuotaExceeded"
    exit_code = 7


class CryptoError(EdgedError):
    code = "CryptoError"
    exit_code = 8


class WrongKey(CryptoError):
    """The key-encryption key does not open this directory; nothing was modified."""

    code = "WrongKey"


class DecryptionFailed(CryptoError):
    """A ciphertext failed authentication: tampered, swapped between rows, or a wrong key."""

    code = "DecryptionFailed"


class QualityTooLow(FaceError):
    code = "QualityTooLow"
    exit_code = 5


class Forbidden(FaceError):
    code = "Forbidden"
    exit_code = 10


class CameraError(EdgedError):
    """A frame source that cannot be opened or read: a missing camera or file, an empty replay
    folder, an unreadable video, picamera2 not installed. The message names the source (with any
    password removed) and what went wrong."""

    code = "CameraError"
    exit_code = 11


class Unauthorized(FaceError):
    """A directory-changing request without a valid signature: unsigned, unknown client, wrong
    signature, timestamp outside the window, or a nonce already used."""

    code = "Unauthorized"
    exit_code = 10


class Busy(FaceError):
    """The request queue is full; nothing was done. Retry later."""

    code = "Busy"
    exit_code = 12


class LivenessTokenInvalid(Unauthorized):
    """An attempt with a token that is not its liveness session's (nothing else is told)."""

    code = "LivenessTokenInvalid"


class LivenessTokenExpired(Unauthorized):
    """A liveness session's auth token past its ``authTokenTimeToLiveInSeconds``."""

    code = "LivenessTokenExpired"

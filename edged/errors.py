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
    └── FaceError
        ├── NoFaceDetected          no face passed detection
        └── BadArgument             a request argument out of range or of the wrong type
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

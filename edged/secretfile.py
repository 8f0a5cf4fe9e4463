"""Secret files written once: keys the operator keeps (the directory's key-encryption key, a client's
signing key).

``write_secret`` creates the file exclusively (``O_EXCL``: an existing file, or a link in its place, is
never overwritten or followed), sets mode 0600 whatever the process umask, writes and fsyncs it. A
write that fails half-way removes what it created, so trying again is not refused as "exists".
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from edged.errors import ConfigError

__all__ = ["MODE", "write_secret"]

MODE = 0o600


def write_secret(path: Path, data: bytes, what: str = "key file") -> None:
    """Create ``path`` holding ``data``, readable and writable by its owner only. ConfigError naming
    ``what`` when it already exists or cannot be created or written."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, MODE)
    except FileExistsError:
        raise ConfigError(f"{what} {path} already exists; it is never overwritten") from None
    except OSError as exc:
        raise ConfigError(f"cannot create {what} {path}: {exc.strerror or exc}") from exc
    try:
        with os.fdopen(fd, "wb") as handle:
            os.fchmod(handle.fileno(), MODE)  # the umask may have taken bits off the mode given to open
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
    except OSError as exc:
        with contextlib.suppress(OSError):
            path.unlink()
        raise ConfigError(f"cannot write {what} {path}: {exc.strerror or exc}") from exc

"""The process environment: every environment variable edged reads, read here and nowhere else.

    EDGED_CONFIG            the configuration file (``--config`` wins)
    EDGED_STATE_DIR         the directory's state directory (``--state-dir`` wins)
    EDGED_KEY_FILE          the key-encryption key file (``--key-file`` wins)
    EDGED_MODEL_DIR         the models and their manifest (``model_dir`` in the config wins)
    STATE_DIRECTORY         systemd's ``StateDirectory=`` (the last resort before ``./state``)
    CREDENTIALS_DIRECTORY   systemd's ``LoadCredential[Encrypted]=`` directory (the key file)
    NOTIFY_SOCKET           systemd's sd_notify socket (``Type=notify``)
    WATCHDOG_USEC           systemd's ``WatchdogSec=``, in microseconds
    WATCHDOG_PID            the process the watchdog is meant for
    JOURNAL_STREAM          set by systemd when stderr goes to the journal (``log.setup``)
    OPENBLAS_NUM_THREADS, OMP_NUM_THREADS, OPENBLAS_CORETYPE   reported by the benchmarks

Each accessor reads the variable when it is called (tests and the CLI may set them), treats an
empty value as unset, and returns a typed value. A base module: standard library only.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = [
    "CONFIG",
    "CREDENTIALS_DIRECTORY",
    "JOURNAL_STREAM",
    "KEY_FILE",
    "MODEL_DIR",
    "NOTIFY_SOCKET",
    "STATE_DIR",
    "SYSTEMD_STATE_DIRECTORY",
    "blas_threads",
    "config_file",
    "credentials_dir",
    "journal_stream",
    "key_file",
    "model_dir",
    "notify_socket",
    "openblas_coretype",
    "state_dir",
    "systemd_state_dir",
    "watchdog_interval_s",
]

CONFIG = "EDGED_CONFIG"
STATE_DIR = "EDGED_STATE_DIR"
KEY_FILE = "EDGED_KEY_FILE"
MODEL_DIR = "EDGED_MODEL_DIR"
SYSTEMD_STATE_DIRECTORY = "STATE_DIRECTORY"
CREDENTIALS_DIRECTORY = "CREDENTIALS_DIRECTORY"
NOTIFY_SOCKET = "NOTIFY_SOCKET"
WATCHDOG_USEC = "WATCHDOG_USEC"
WATCHDOG_PID = "WATCHDOG_PID"
JOURNAL_STREAM = "JOURNAL_STREAM"


def _text(name: str) -> str | None:
    value = os.environ.get(name)
    return value or None


def _path(name: str) -> Path | None:
    value = _text(name)
    return Path(value) if value else None


def config_file() -> Path | None:
    """``$EDGED_CONFIG``."""
    return _path(CONFIG)


def state_dir() -> Path | None:
    """``$EDGED_STATE_DIR``."""
    return _path(STATE_DIR)


def systemd_state_dir() -> Path | None:
    """``$STATE_DIRECTORY`` (systemd; the first of a colon-separated list)."""
    value = _text(SYSTEMD_STATE_DIRECTORY)
    return Path(value.split(":")[0]) if value else None


def key_file() -> Path | None:
    """``$EDGED_KEY_FILE``."""
    return _path(KEY_FILE)


def credentials_dir() -> Path | None:
    """``$CREDENTIALS_DIRECTORY`` (systemd credentials)."""
    return _path(CREDENTIALS_DIRECTORY)


def model_dir() -> Path | None:
    """``$EDGED_MODEL_DIR``."""
    return _path(MODEL_DIR)


def notify_socket() -> str | None:
    """``$NOTIFY_SOCKET``: a path, or ``@name`` for an abstract socket."""
    return _text(NOTIFY_SOCKET)


def watchdog_interval_s() -> float | None:
    """Half of systemd's ``WatchdogSec`` (``$WATCHDOG_USEC``), the interval to ping at; None when the
    watchdog is off or meant for another process (``$WATCHDOG_PID``)."""
    usec = _text(WATCHDOG_USEC)
    if not usec or not usec.isdigit() or int(usec) == 0:
        return None
    pid = _text(WATCHDOG_PID)
    if pid and pid.isdigit() and int(pid) != os.getpid():
        return None
    return int(usec) / 2_000_000


def journal_stream() -> tuple[int, int] | None:
    """``$JOURNAL_STREAM`` as (device, inode) of the journal's stream, None when unset or malformed."""
    value = _text(JOURNAL_STREAM)
    if not value:
        return None
    device, _, inode = value.partition(":")
    if not (device.isdigit() and inode.isdigit()):
        return None
    return int(device), int(inode)


def blas_threads() -> str | None:
    """``$OPENBLAS_NUM_THREADS``, else ``$OMP_NUM_THREADS`` (for benchmark reports)."""
    return _text("OPENBLAS_NUM_THREADS") or _text("OMP_NUM_THREADS")


def openblas_coretype() -> str | None:
    """``$OPENBLAS_CORETYPE`` (for benchmark reports)."""
    return _text("OPENBLAS_CORETYPE")

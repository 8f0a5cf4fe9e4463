"""Logging: one setup for the whole process, fit for the terminal and for journald.

``setup(level)`` installs one handler on stderr. Under systemd, when stderr is the journal's stream
(``$JOURNAL_STREAM`` names its device and inode), each line starts with the syslog priority
``<N>`` that journald turns into the entry's priority (so ``journalctl -p warning`` works) and
carries no timestamp (journald adds its own); elsewhere lines carry a timestamp and the level name.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Literal, TextIO

from edged import environment

__all__ = ["LEVELS", "LogLevel", "native_stderr_captured", "native_stderr_silenced", "setup", "to_journal"]

LogLevel = Literal["DEBUG", "INFO", "WARNING", "ERROR"]
LEVELS: tuple[LogLevel, ...] = ("DEBUG", "INFO", "WARNING", "ERROR")

_PRIORITY = ((logging.ERROR, 3), (logging.WARNING, 4), (logging.INFO, 6))
"""syslog priorities: err 3, warning 4, info 6, debug 7 (CRITICAL is logged as 2)."""
PLAIN_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class JournalFormatter(logging.Formatter):
    """``<priority>logger: message``, each continuation line (a traceback) with the same prefix."""

    def format(self, record: logging.LogRecord) -> str:
        if record.levelno >= logging.CRITICAL:
            priority = 2
        else:
            priority = next((p for level, p in _PRIORITY if record.levelno >= level), 7)
        text = f"{record.name}: {super().format(record)}"
        return "\n".join(f"<{priority}>{line}" for line in text.splitlines() or [""])


def to_journal(stream: TextIO) -> bool:
    """Whether ``stream`` is the journal's stream that systemd named in ``$JOURNAL_STREAM``."""
    named = environment.journal_stream()
    if named is None:
        return False
    try:
        info = os.fstat(stream.fileno())
    except (OSError, ValueError):  # no file descriptor (a test's StringIO), or closed
        return False
    return (info.st_dev, info.st_ino) == named


def setup(level: LogLevel | int, stream: TextIO | None = None) -> logging.Handler:
    """Log ``level`` and above to ``stream`` (stderr) for the whole process, replacing a previous
    setup; returns the handler."""
    stream = stream if stream is not None else sys.stderr
    handler = logging.StreamHandler(stream)
    if to_journal(stream):
        handler.setFormatter(JournalFormatter("%(message)s"))
    else:
        handler.setFormatter(logging.Formatter(PLAIN_FORMAT))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    return handler


@contextmanager
def native_stderr_silenced() -> Iterator[None]:
    """Silence what native libraries print straight to file descriptor 2 (LiteRT's "INFO: Created
    TensorFlow Lite XNNPACK delegate", libpng's and libjpeg's complaints) for the duration: edged
    reports every problem itself, as one line. The descriptor is process-wide, so use this only
    where no other thread is logging: at start-up and in the one-shot CLI."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "wb") as null:
            os.dup2(null.fileno(), 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


NATIVE_LOGGER = "edged.native"
NATIVE_LINE_MAX = 4096
"""Bytes of one line a native library writes that reach the log (the rest is cut)."""


@contextmanager
def native_stderr_captured() -> Iterator[None]:
    """For the daemon's lifetime: what native libraries write straight to file descriptor 2
    (libjpeg's "Corrupt JPEG data: …", libpng's warnings, OpenCV's own error lines, decoded on the API's
    worker threads) becomes log records of ``edged.native`` at WARNING, line by line, so the journal
    gets them with a priority instead of raw text in the middle of the daemon's lines.

    Descriptor 2 becomes a pipe read by a thread; Python's own stderr (the logging handler,
    tracebacks) moves to a copy of the original descriptor, so nothing written by the handler comes
    back through the pipe. On exit everything is put back and the thread drains what is left."""
    sys.stderr.flush()
    original = os.dup(2)
    read_end, write_end = os.pipe()
    os.dup2(write_end, 2)
    os.close(write_end)
    python_stderr = sys.stderr
    redirected = open(  # noqa: SIM115 (closed in the finally below)
        original, "w", buffering=1, encoding="utf-8", errors="backslashreplace", closefd=False
    )
    handlers = [
        h
        for h in logging.getLogger().handlers
        if isinstance(h, logging.StreamHandler) and h.stream is python_stderr
    ]
    for handler in handlers:
        handler.setStream(redirected)
    sys.stderr = redirected
    pump = threading.Thread(target=_pump, args=(read_end,), name="native-stderr", daemon=True)
    pump.start()
    try:
        yield
    finally:
        os.dup2(original, 2)  # the pipe's last write end closes: the pump reads to its end and stops
        pump.join(5.0)
        for handler in handlers:
            handler.setStream(python_stderr)
        sys.stderr = python_stderr
        redirected.close()
        os.close(original)


def _pump(read_end: int) -> None:
    logger = logging.getLogger(NATIVE_LOGGER)
    with os.fdopen(read_end, "rb") as pipe:
        for raw in pipe:
            line = raw[:NATIVE_LINE_MAX].decode("utf-8", "backslashreplace").rstrip()
            if line:
                logger.warning("%s", line)

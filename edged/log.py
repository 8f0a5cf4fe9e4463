"""Logging: one setup for the whole process, fit for the terminal and for journald.

``setup(level)`` installs one handler on stderr. Under systemd, when stderr is the journal's stream
(``$JOURNAL_STREAM`` names its device and inode), each line starts with the syslog priority
``<N>`` that journald turns into the entry's priority (so ``journalctl -p warning`` works) and
carries no timestamp (journald adds its own); elsewhere lines carry a timestamp and the level name.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
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

_PUMP = r"""
import os, sys, time
journal, name, limit = sys.argv[1] == "1", sys.argv[2].encode(), int(sys.argv[3])
out = os.fdopen(1, "wb", buffering=0)
for raw in sys.stdin.buffer:
    line = raw[:limit].rstrip(b"\r\n")
    if not line:
        continue
    if journal:
        out.write(b"<4>" + name + b": " + line + b"\n")
    else:
        now = time.time()
        stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(now)) + ",%03d" % (now % 1 * 1000)
        out.write(stamp.encode() + b" WARNING " + name + b": " + line + b"\n")
"""
"""The pump: a child process (not a thread: it needs no lock of ours, so native code that fills the
pipe while holding the GIL cannot deadlock the daemon, and it still drains what a crashing daemon
wrote last — an ``abort()`` message, a faulthandler dump)."""


@contextmanager
def native_stderr_captured() -> Iterator[None]:
    """For the daemon's lifetime: what native libraries write straight to file descriptor 2
    (libjpeg's "Corrupt JPEG data: …", libpng's warnings, OpenCV's own error lines, decoded on the API's
    worker threads) becomes lines of ``edged.native`` at WARNING, in the format of the log (with the
    journal's priority under systemd), instead of raw text in the middle of the daemon's lines.

    Descriptor 2 becomes a pipe to a small child process (``_PUMP``) that formats each line and
    writes it to the original stderr. Python's own stderr (the logging handler, tracebacks) moves to
    a copy of the original descriptor, so it is not reformatted. On exit everything is put back; the
    child sees the end of the pipe, writes what is left and exits."""
    sys.stderr.flush()
    original = os.dup(2)
    python_stderr = sys.stderr
    redirected = open(  # noqa: SIM115 (closed in the finally below)
        original, "w", buffering=1, encoding="utf-8", errors="backslashreplace", closefd=False
    )
    pump = subprocess.Popen(
        [
            sys.executable,
            "-c",
            _PUMP,
            "1" if to_journal(redirected) else "0",
            NATIVE_LOGGER,
            str(NATIVE_LINE_MAX),
        ],
        stdin=subprocess.PIPE,
        stdout=original,
        stderr=subprocess.DEVNULL,
    )
    assert pump.stdin is not None
    os.dup2(pump.stdin.fileno(), 2)
    pump.stdin.close()  # fd 2 is now the pipe's only write end in this process
    root = logging.getLogger()
    handlers = [
        h for h in root.handlers if isinstance(h, logging.StreamHandler) and h.stream is python_stderr
    ]
    for handler in handlers:
        handler.setStream(redirected)
    sys.stderr = redirected
    try:
        yield
    finally:
        os.dup2(original, 2)  # the pipe's write end closes: the pump drains it and exits
        try:
            pump.wait(5.0)
        except subprocess.TimeoutExpired:
            pump.kill()
            pump.wait()
        for handler in handlers:
            handler.setStream(python_stderr)
        sys.stderr = python_stderr
        redirected.close()
        os.close(original)

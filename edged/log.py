"""Logging helpers."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager


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

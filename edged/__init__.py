"""edged: on-device face verification and identification for door terminals."""

from __future__ import annotations

__version__ = "0.1.0"

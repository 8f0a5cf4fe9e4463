"""The reference service's limits, and the checks of arguments against them (``BadArgument``)."""

from __future__ import annotations

import re

from edged.errors import BadArgument

MAX_PERSONS = {"group": 10_000, "large": 1_000_000}
MAX_LIST_FACES = {"list": 1_000, "large": 1_000_000}
MAX_FACES_PER_PERSON = 248
MAX_NAME = 128
MAX_USER_DATA = 16 * 1024
ID_PATTERN = re.compile(r"^[a-z0-9_-]{1,64}$")


def check_id(kind: str, value: str) -> str:
    if not ID_PATTERN.match(value):
        raise BadArgument(f"{kind} {value!r} must be 1-64 characters of a-z, 0-9, '-' and '_'")
    return value


def check_text(kind: str, value: str | None, limit: int) -> str | None:
    if value is not None and len(value.encode()) > limit:
        raise BadArgument(f"{kind} is {len(value.encode())} bytes; the limit is {limit}")
    return value


def check_range(name: str, value: float, low: float, high: float) -> None:
    if not low <= value <= high:
        raise BadArgument(f"{name} must be between {low:g} and {high:g}, not {value:g}")


def check_names(name: str | None, user_data: str | None) -> None:
    """A name and a userData within their limits (either may be None: unchanged)."""
    check_text("name", name, MAX_NAME)
    check_text("userData", user_data, MAX_USER_DATA)

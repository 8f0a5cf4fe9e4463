"""The bytes of the request API: a request payload in (``load``, ``check``), a reply out (``reply``,
``error_reply``).

A request is JSON text holding one object. Python's ``json`` is laxer than JSON (RFC 8259), so
``load`` and ``check`` refuse, with a ``BadArgument`` naming the field, what no field of any
operation can hold and what would break the reply, the audit record or a number comparison later:

- a lone UTF-16 surrogate in a string or a key: the escape ``"\\ud800"``, or the raw bytes
  ``ED A0 80`` that ``json`` decodes with ``surrogatepass``. Such text is not Unicode: it cannot be
  encoded into a reply or stored, so it is refused and never echoed;
- an integer a double cannot hold (more than 4300 digits fails ``int()`` itself; ``10**400``
  overflows ``float()``), and the non-finite numbers ``1e400`` (→ inf), ``NaN`` and ``Infinity``.

``reply`` cannot fail: whatever it is given that JSON cannot carry (a bug) becomes a last-resort
``InternalError`` reply, so every request gets its one reply.
"""

from __future__ import annotations

import json
import logging
import math
import re
import sys
from collections.abc import Iterable, Mapping
from typing import Any

from edged.errors import BadArgument

__all__ = [
    "SCHEMA",
    "TRANSACTION_MAX",
    "check",
    "error_reply",
    "load",
    "peek",
    "peek_transaction",
    "printable",
    "reply",
    "transaction_of",
]

logger = logging.getLogger(__name__)

SCHEMA = 1
TRANSACTION_MAX = 128
PEEK_BYTES = 64 * 1024
"""Larger payloads are not parsed on paho's network thread (``peek_transaction`` scans them)."""
LARGEST_INT = int(sys.float_info.max)
"""The largest integer a double holds: every number of a request is compared as one somewhere."""

_SURROGATE = re.compile("[\ud800-\udfff]")
_TRANSACTION = re.compile(rb'"transaction"\s*:\s*"([^"\\]{1,128})"')


class _TooLong:
    """An integer with more digits than ``int()`` converts, kept as a marker so ``check`` can name
    its field (json raises a ValueError that says nothing of where)."""

    def __init__(self, text: str) -> None:
        self.digits = len(text.lstrip("-"))


def _marking_int(text: str) -> int | _TooLong:
    try:
        return int(text)
    except ValueError:
        return _TooLong(text)


def _loads(payload: bytes, **hooks: Any) -> Any:
    try:
        return json.loads(payload, **hooks)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BadArgument(f"the request is not valid JSON: {exc}") from None
    except RecursionError:
        raise BadArgument("the request is not valid JSON: nested too deeply") from None


def load(payload: bytes) -> dict[str, Any]:
    """The request object, or BadArgument (not JSON, not an object). An integer past ``int()``'s
    digit limit is kept as a marker for ``check`` to name."""
    try:
        body = _loads(payload)
    except ValueError:  # an integer past int()'s digit limit: again, marking where it is
        body = _loads(payload, parse_int=_marking_int)
    if not isinstance(body, dict):
        raise BadArgument(f"the request must be a JSON object, not {type(body).__name__}")
    return body


def check(body: dict[str, Any]) -> None:
    """BadArgument naming the first field (``auth.ts: …``, ``faceIds.2: …``) that holds a lone
    surrogate or a number no double holds."""
    problem = _problem(body)
    if problem is not None:
        raise BadArgument(problem)


_Node = tuple[Any, ...]
"""A container on the walk's stack: ``(container, parent node, key in the parent)``; the root is
``(body,)``. The path of a field is rebuilt from these only when it is reported."""


def _problem(body: dict[str, Any]) -> str | None:
    """The first value of ``body`` that is not plain JSON, as ``"<field>: what is wrong"``. One pass
    without recursion, the scalars checked in line (an 8 MB request of small numbers or objects
    takes 0.5-1 s, about as long as a large image)."""
    stack: list[_Node] = [(body,)]
    while stack:
        node = stack.pop()
        container = node[0]
        if isinstance(container, dict):
            for key in container:
                if not key.isascii() and _SURROGATE.search(key):
                    return f"{_where(node, key)}: a lone UTF-16 surrogate (\\ud800-\\udfff) in a key"
            items: Iterable[tuple[str | int, Any]] = container.items()
        else:
            items = enumerate(container)
        for key, item in items:
            kind = type(item)
            if kind is str:
                if not item.isascii() and _SURROGATE.search(item):
                    return f"{_where(node, key)}: a lone UTF-16 surrogate (\\ud800-\\udfff) is not text"
            elif kind is int:
                if not -LARGEST_INT <= item <= LARGEST_INT:
                    return f"{_where(node, key)}: an integer of {len(str(abs(item)))} digits is out of range"
            elif kind is float:
                if not math.isfinite(item):
                    return f"{_where(node, key)}: {item} is not a finite number"
            elif kind is dict or kind is list:
                stack.append((item, node, key))
            elif kind is _TooLong:
                return f"{_where(node, key)}: an integer of {item.digits:,} digits is out of range"
    return None


def _where(node: _Node, key: str | int) -> str:
    """``auth.ts``, ``faceIds.2``: the field's path as validation messages write it, printable."""
    path = [key]
    while len(node) == 3:
        path.append(node[2])
        node = node[1]
    return printable(".".join(str(p)[:64] for p in reversed(path)))


def printable(text: str) -> str:
    """``text`` with every lone surrogate written as its escape (``\\ud800``): valid UTF-8 always."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8") if _SURROGATE.search(text) else text


def transaction_of(body: object) -> str | None:
    """The request's ``transaction`` to echo: a string of 1-128 characters that is valid text (a lone
    surrogate is never echoed), else None."""
    tx = body.get("transaction") if isinstance(body, dict) else None
    if isinstance(tx, str) and 0 < len(tx) <= TRANSACTION_MAX and not _SURROGATE.search(tx):
        return tx
    return None


def peek(payload: bytes) -> dict[str, Any] | None:
    """The request object of a small payload (at most ``PEEK_BYTES``), parsed leniently for an early
    reply on paho's thread; None for a larger or unparsable one."""
    if len(payload) > PEEK_BYTES:
        return None
    try:
        body = json.loads(payload)
    except (ValueError, RecursionError):  # not JSON, not UTF-8, an integer past the digit limit
        return None
    return body if isinstance(body, dict) else None


def peek_transaction(payload: bytes) -> str | None:
    """The request's ``transaction`` for an early reply (Busy, refused), without parsing a large
    request on paho's thread: base64 holds no quotes, so a scan finds the key."""
    if len(payload) <= PEEK_BYTES:
        return transaction_of(peek(payload))
    match = _TRANSACTION.search(payload)
    try:
        return transaction_of({"transaction": match.group(1).decode("utf-8")}) if match else None
    except UnicodeDecodeError:  # not text (a raw surrogate, say): never echoed
        return None


def reply(op: str, transaction: str | None, result: Mapping[str, Any]) -> bytes:
    """A successful reply (``ok`` with ``result``); never raises (see ``_encode``)."""
    return _encode({"schema": SCHEMA, "op": op, "transaction": transaction, "ok": True, "result": result})


def error_reply(op: str, transaction: str | None, code: str, message: str) -> bytes:
    """A failed reply (``error`` with ``code`` and ``message``); never raises (see ``_encode``)."""
    error = {"code": code, "message": printable(message)}
    return _encode({"schema": SCHEMA, "op": op, "transaction": transaction, "ok": False, "error": error})


def _encode(payload: dict[str, Any]) -> bytes:
    """Compact UTF-8 JSON. A reply JSON cannot carry (a bug: NaN in a result, a surrogate that got
    through) is logged and replaced by a last-resort InternalError reply that holds only the
    operation and the transaction, encoded as ASCII: it cannot fail, so every request gets a reply."""
    try:
        return json.dumps(payload, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()
    except (TypeError, ValueError) as exc:  # ValueError: NaN or inf; UnicodeEncodeError: a surrogate
        logger.error(
            "API: the %s reply cannot be encoded (%s); sent InternalError instead",
            payload["op"],
            type(exc).__name__,
        )
    tx = payload["transaction"]
    last_resort = {
        "schema": SCHEMA,
        "op": payload["op"],
        "transaction": tx if isinstance(tx, str) else None,
        "ok": False,
        "error": {"code": "InternalError", "message": "internal error (the reply could not be encoded)"},
    }
    return json.dumps(last_resort, separators=(",", ":"), ensure_ascii=True).encode("ascii")

"""Who may do what: the one authorisation policy of the face operations.

Roles are ranked; each includes the roles below it:

- recognizer: detect, verify, identify, find similar, group (they change nothing); liveness: a
  one-shot ``detect_liveness`` and a liveness session's attempt (which also needs the session's
  auth token: the terminal's scoped permission);
- manager: also read and change the directory (groups, persons, faces, face lists, cards, train);
  create, get, list and delete liveness sessions (a session's results are the relying party's to
  read: the terminal gets its attempt's result in the attempt's reply, and nothing else);
- admin: also keys, configuration and the audit chain.

``OPERATION_ROLES`` names the role each operation needs. The service enforces it for every caller
(``Caller``: the request's client, the CLI, the demo) and audits a refusal; the request server
consults it for its operations before it parses a request (``edged.api``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

from edged.errors import Forbidden

Role = Literal["recognizer", "manager", "admin"]

ROLE_RANK: Mapping[str, int] = {"recognizer": 0, "manager": 1, "admin": 2}
"""Each role may do everything the roles below it may."""

LOWEST: Role = "recognizer"

_R: Role = "recognizer"
_M: Role = "manager"
_A: Role = "admin"
OPERATION_ROLES: Mapping[str, Role] = {
    # recognition: changes nothing
    "detect": _R,
    "verify": _R,
    "identify": _R,
    "find_similar": _R,
    "group": _R,
    # liveness: a one-shot check, and a session's attempt (with the session's auth token; audited)
    "detect_liveness": _R,
    "liveness_session_attempt": _R,
    # liveness sessions (audited changes; get and list show results and device correlation IDs)
    "create_liveness_session": _M,
    "get_liveness_session": _M,
    "list_liveness_sessions": _M,
    "delete_liveness_session": _M,
    # directory reads
    "get_person_group": _M,
    "list_person_groups": _M,
    "get_person": _M,
    "list_persons": _M,
    "get_face_list": _M,
    "list_face_lists": _M,
    # directory changes (audited)
    "create_person_group": _M,
    "update_person_group": _M,
    "delete_person_group": _M,
    "train": _M,
    "create_person": _M,
    "delete_person": _M,
    "add_person_face": _M,
    "delete_person_face": _M,
    "create_face_list": _M,
    "add_face_list_face": _M,
    "delete_face_list": _M,
    "delete_face_list_face": _M,
    "set_card": _M,  # the request operation set_person_card
    "delete_card": _M,  # the request operation delete_person_card
    "set_person_card": _M,
    "delete_person_card": _M,
    # the audit chain
    "verify_audit": _A,
}

_ACTIONS: Mapping[str, str] = {"verify_audit": "read the audit chain"}
"""How a refusal names an operation, where its name does not say it."""


@dataclass(frozen=True, slots=True)
class Caller:
    """Who asks the service: an actor for the audit log (``mqtt:<client>``, ``cli``, ``demo``) and
    the role it acts in."""

    actor: str
    role: Role


def required(operation: str) -> Role:
    """The role ``operation`` needs (``KeyError`` for an operation the policy does not know)."""
    return OPERATION_ROLES[operation]


def includes(role: str, needed: Role) -> bool:
    """True when ``role`` includes ``needed`` (an unknown role includes none)."""
    return ROLE_RANK.get(role, -1) >= ROLE_RANK[needed]


def allows(role: str, operation: str) -> bool:
    return includes(role, required(operation))


def refusal(role: str, operation: str) -> Forbidden:
    """The error for a role that may not run ``operation``."""
    needed = required(operation)
    enough = " or ".join(r for r, rank in ROLE_RANK.items() if rank >= ROLE_RANK[needed])
    action = _ACTIONS.get(operation, operation.replace("_", " "))
    return Forbidden(f"role {role!r} may not {action}; it needs {enough}")

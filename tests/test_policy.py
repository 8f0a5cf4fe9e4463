"""The one authorisation policy (``edged.service.policy``): role ranks, the role of every operation,
the refusal's words, and that the request server's operations and the signed principal use it."""

from __future__ import annotations

import pytest

from edged.api.auth import Principal
from edged.api.operations import OPERATIONS
from edged.errors import Forbidden
from edged.service import policy


@pytest.mark.parametrize(
    ("role", "needed", "included"),
    [
        ("recognizer", "recognizer", True),
        ("recognizer", "manager", False),
        ("recognizer", "admin", False),
        ("manager", "recognizer", True),
        ("manager", "manager", True),
        ("manager", "admin", False),
        ("admin", "recognizer", True),
        ("admin", "manager", True),
        ("admin", "admin", True),
        ("system", "recognizer", False),  # an unknown role includes none
        ("?", "recognizer", False),
    ],
)
def test_each_role_includes_the_roles_below(role: str, needed: policy.Role, included: bool) -> None:
    assert policy.includes(role, needed) is included


@pytest.mark.parametrize(
    ("operation", "role"),
    [
        ("detect", "recognizer"),
        ("identify", "recognizer"),
        ("group", "recognizer"),
        ("get_person_group", "manager"),
        ("list_face_lists", "manager"),
        ("create_person_group", "manager"),
        ("add_person_face", "manager"),
        ("train", "manager"),
        ("set_card", "manager"),
        ("set_person_card", "manager"),
        ("delete_card", "manager"),
        ("verify_audit", "admin"),
        ("detect_liveness", "recognizer"),
        ("liveness_session_attempt", "recognizer"),
        ("create_liveness_session", "manager"),
        ("get_liveness_session", "manager"),
        ("list_liveness_sessions", "manager"),
        ("delete_liveness_session", "manager"),
    ],
)
def test_the_role_each_operation_needs(operation: str, role: str) -> None:
    assert policy.required(operation) == role


def test_every_request_operation_is_in_the_policy() -> None:
    for name, operation in OPERATIONS.items():
        assert operation.role == policy.required(name)
    changing = {name for name, operation in OPERATIONS.items() if operation.changes}
    assert all(policy.required(name) != policy.LOWEST for name in changing), "changes need a signature"
    with pytest.raises(KeyError):
        policy.required("no_such_operation")


@pytest.mark.parametrize(
    ("role", "operation", "message"),
    [
        ("recognizer", "create_person", "role 'recognizer' may not create person; it needs manager or admin"),
        ("recognizer", "delete_face_list_face", "may not delete face list face; it needs manager or admin"),
        ("manager", "verify_audit", "role 'manager' may not read the audit chain; it needs admin"),
    ],
)
def test_a_refusal_names_the_role_and_what_it_needs(role: str, operation: str, message: str) -> None:
    assert not policy.allows(role, operation)
    error = policy.refusal(role, operation)
    assert isinstance(error, Forbidden)
    assert message in error.message


def test_a_signed_principal_follows_the_policy() -> None:
    for role in ("recognizer", "manager", "admin"):
        principal = Principal("client", role, True)  # type: ignore[arg-type]
        for needed in ("recognizer", "manager", "admin"):
            assert principal.may(needed) is policy.includes(role, needed)  # type: ignore[arg-type]

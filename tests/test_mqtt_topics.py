"""Topic strings: every topic of the contract, and identifier validation (table-driven, no broker)."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from edged.errors import ConfigError
from edged.mqtt.topics import Topics, check_id

T = Topics("pi-01")


@pytest.mark.parametrize(
    ("build", "expected"),
    [
        (lambda t: t.status(), "edged/pi-01/status"),
        (lambda t: t.decision("front"), "edged/pi-01/door/front/decision"),
        (lambda t: t.session("front"), "edged/pi-01/door/front/session"),
        (lambda t: t.claim("back_2"), "edged/pi-01/door/back_2/claim"),
        (lambda t: t.challenge("front"), "edged/pi-01/door/front/challenge"),
        (lambda t: t.stats(), "edged/pi-01/stats"),
        (lambda t: t.audit(), "edged/pi-01/audit"),
        (lambda t: t.request("identify"), "edged/pi-01/req/identify"),
        (lambda t: t.response("identify"), "edged/pi-01/res/identify"),
        (lambda t: t.request_wildcard(), "edged/pi-01/req/+"),
        (lambda t: t.sync("hq"), "edged/sync/hq"),
        (lambda t: t.sync("hq", "snapshot", "v42"), "edged/sync/hq/snapshot/v42"),
        (lambda t: t.ha_discovery(), "homeassistant/device/edged_pi-01/config"),
        (lambda t: t.ha_discovery("ha"), "ha/device/edged_pi-01/config"),
        (lambda t: t.ha_status(), "homeassistant/status"),
        (lambda t: Topics("pi-01", prefix="site7").status(), "site7/pi-01/status"),
        (lambda t: Topics(prefix="site7", device_id="x").decision("d"), "site7/x/door/d/decision"),
    ],
)
def test_topic_strings(build: Callable[[Topics], str], expected: str) -> None:
    assert build(T) == expected


BAD_IDS = ["", "a/b", "+", "#", "door+", "door#", "a b", "ä", "x" * 65, "../x", "a\nb"]


@pytest.mark.parametrize("bad", BAD_IDS)
@pytest.mark.parametrize(
    "use",
    [
        Topics,
        lambda bad: Topics("pi", prefix=bad),
        T.decision,
        T.session,
        T.claim,
        T.challenge,
        T.request,
        T.response,
        T.sync,
        lambda bad: T.sync("hq", bad),
        T.ha_discovery,
    ],
)
def test_bad_identifiers_are_config_errors_naming_the_value(bad: str, use: Callable[[str], str]) -> None:
    with pytest.raises(ConfigError) as info:
        use(bad)
    assert repr(bad) in str(info.value)


@pytest.mark.parametrize("good", ["a", "A-z_09", "x" * 64, "front-door", "_"])
def test_good_identifiers(good: str) -> None:
    assert check_id("door id", good) == good
    assert T.decision(good) == f"edged/pi-01/door/{good}/decision"


@pytest.mark.parametrize(
    ("topic", "op"),
    [
        ("edged/pi-01/req/identify", "identify"),
        ("edged/pi-01/req/", None),
        ("edged/pi-01/req/a/b", None),
        ("edged/pi-02/req/identify", None),
        ("edged/pi-01/res/identify", None),
    ],
)
def test_operation_of(topic: str, op: str | None) -> None:
    assert T.operation_of(topic) == op


@pytest.mark.parametrize(
    ("topic", "signer", "unsigned"),
    [
        ("edged/pi-01/reply/ops/edged-request-1", "ops", False),
        ("edged/pi-01/reply/enrolment.station", "enrolment.station", False),
        ("edged/pi-01/unsigned/reception-1", None, True),
        ("edged/pi-01/unsigned/a/b", None, True),
        ("edged/pi-01/reply/", None, False),
        ("edged/pi-01/reply/ops/+", None, False),
        ("edged/pi-01/unsigned/#", None, False),
        ("edged/pi-02/reply/ops/x", None, False),
        ("edged/pi-01/res/detect", None, False),
        ("edged/pi-01/door/front/decision", None, False),
    ],
)
def test_reply_topics_name_their_signer_or_are_unsigned(
    topic: str, signer: str | None, unsigned: bool
) -> None:
    topics = Topics("pi-01")
    assert topics.reply_signer(topic) == signer
    assert topics.is_unsigned_reply(topic) is unsigned


def test_reply_topics_are_built_from_valid_levels_only() -> None:
    topics = Topics("pi-01")
    assert topics.reply("ops", "c-1") == "edged/pi-01/reply/ops/c-1"
    assert topics.unsigned_reply("c-1") == "edged/pi-01/unsigned/c-1"
    for bad in ("", "a/b", "+", "#", "x" * 65):
        with pytest.raises(ConfigError, match="reply topic level"):
            topics.reply(bad)

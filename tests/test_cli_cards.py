"""``edged persons card-set / card-delete``: map a card number to a person from the command line
(also from standard input, so the number stays out of the process list), see it resolve in the
directory, remove it, and find the number nowhere in the audit log. Real subprocesses, real models."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import cv2

from edged.directory.crypto import read_kek
from edged.directory.store import Store
from edged.types import ImageRGB

CARD = "04A1B2C3D4E5F6"
SECOND = "1234567890"


def edged(
    env: dict[str, str], *args: str | Path, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "edged", *(str(a) for a in args)],
        env=env,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )


def test_card_set_and_delete(tmp_path: Path, astronaut: ImageRGB) -> None:
    photo = tmp_path / "eileen.png"
    assert cv2.imwrite(str(photo), cv2.cvtColor(astronaut, cv2.COLOR_RGB2BGR))
    key, state = tmp_path / "edged.key", tmp_path / "state"
    env = {**os.environ, "EDGED_STATE_DIR": str(state), "EDGED_KEY_FILE": str(key)}
    for args in (
        ("keys", "init"),
        ("groups", "create", "staff"),
        ("enroll", "staff", "Eileen Collins", photo),
    ):
        result = edged(env, *args)
        assert result.returncode == 0, result.stderr

    set_one = edged(env, "persons", "card-set", "staff", "Eileen Collins", CARD, "--json")
    assert set_one.returncode == 0, set_one.stderr
    answer = json.loads(set_one.stdout)
    set_two = edged(env, "persons", "card-set", "staff", "Eileen Collins", "-", "--json", stdin=f"{SECOND}\n")
    assert set_two.returncode == 0, set_two.stderr
    exported = json.loads(edged(env, "persons", "export", "staff", "Eileen Collins", "--json").stdout)
    assert exported["cards"] == 2 and CARD not in json.dumps(exported)

    store = Store.open(state, read_kek(key))
    try:
        assert store.cards.person_for(CARD) == answer["personId"] == exported["personId"]
        assert store.cards.person_for(SECOND) == answer["personId"]
    finally:
        store.close()

    deleted = edged(env, "persons", "card-delete", CARD.lower(), "--json")
    assert deleted.returncode == 0, deleted.stderr
    assert json.loads(deleted.stdout) == {"card": answer["card"], "deleted": True}
    again = edged(env, "persons", "card-delete", CARD)
    assert again.returncode == 6
    assert again.stderr.strip() == "edged: CardNotFound: no person has this card"

    audit = edged(env, "audit", "show", "--json")
    records = json.loads(audit.stdout)
    assert [r["operation"] for r in records if "card" in r["operation"]] == [
        "set_card",
        "set_card",
        "delete_card",
    ]
    assert CARD not in audit.stdout and CARD.lower() not in audit.stdout and SECOND not in audit.stdout

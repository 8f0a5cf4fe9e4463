"""A new user, with the CLI alone: create a key and a group, enrol people from a folder, train,
identify a photo, delete a person and prove it is gone (receipt + audit verify)."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import pytest
from skimage import data

from edged.directory.crypto import verify_signature
from edged.types import ImageRGB

RunEdged = Callable[..., "subprocess.CompletedProcess[str]"]


def write(path: Path, image: ImageRGB) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    ok, encoded = cv2.imencode(path.suffix, cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    assert ok
    path.write_bytes(encoded.tobytes())
    return path


def shifted(image: ImageRGB, dx: int, dy: int) -> ImageRGB:
    matrix = np.array([[1.0, 0.0, dx], [0.0, 1.0, dy]])
    size = (image.shape[1], image.shape[0])
    return np.ascontiguousarray(cv2.warpAffine(image, matrix, size, borderMode=cv2.BORDER_REPLICATE))


@pytest.fixture
def site(tmp_path: Path, astronaut: ImageRGB) -> dict[str, Path]:
    """A folder-per-person tree, a probe photo, and an environment pointing at a fresh state dir."""
    people = tmp_path / "people"
    write(people / "Eileen Collins" / "1.jpg", astronaut)
    write(people / "Eileen Collins" / "2.png", shifted(astronaut, 20, 10))
    write(people / "Unusable" / "grey.png", np.full((120, 120, 3), 90, np.uint8))
    return {
        "people": people,
        "probe": write(tmp_path / "probe.jpg", shifted(astronaut, -25, 15)),
        "stranger": write(tmp_path / "stranger.png", np.stack([data.camera()] * 3, axis=-1)),
        "state": tmp_path / "state",
        "key": tmp_path / "keys" / "edged.key",
    }


def cli(run_edged: RunEdged, site: dict[str, Path], *args: str | Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "EDGED_STATE_DIR": str(site["state"]), "EDGED_KEY_FILE": str(site["key"])}
    return run_edged([*args], env=env)


def ok_json(result: subprocess.CompletedProcess[str]) -> object:
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_the_new_user_flow(run_edged: RunEdged, site: dict[str, Path]) -> None:
    site["key"].parent.mkdir()
    key = ok_json(cli(run_edged, site, "--key-file", site["key"], "keys", "init", "--json"))
    assert isinstance(key, dict)
    assert site["key"].stat().st_mode & 0o777 == 0o600

    assert ok_json(cli(run_edged, site, "groups", "create", "staff", "--name", "Staff", "--json")) == {
        "personGroupId": "staff",
        "kind": "group",
    }
    enrolled = cli(run_edged, site, "enroll", "staff", "--from-dir", site["people"], "--json")
    assert enrolled.returncode == 1, "one image has no face: the command reports it and fails"
    report = json.loads(enrolled.stdout)
    assert (report["enrolled"], report["failed"]) == (2, 1)
    failure = next(r for r in report["results"] if not r["ok"])
    assert failure["error"]["code"] == "NoFaceDetected"
    assert failure["image"].endswith("grey.png")

    not_trained = cli(run_edged, site, "identify", "staff", site["probe"])
    assert not_trained.returncode == 7
    assert not_trained.stderr.startswith("edged: PersonGroupNotTrained:")

    trained = ok_json(cli(run_edged, site, "train", "staff", "--json"))
    assert isinstance(trained, dict)
    assert trained["status"] == "succeeded"

    answer = ok_json(cli(run_edged, site, "identify", "staff", site["probe"], "--json"))
    assert isinstance(answer, list)
    assert answer[0]["candidates"][0]["name"] == "Eileen Collins"
    person_id = answer[0]["candidates"][0]["personId"]
    stranger = ok_json(cli(run_edged, site, "identify", "staff", site["stranger"], "--json"))
    assert isinstance(stranger, list)
    assert stranger[0]["candidates"] == []

    persons = ok_json(cli(run_edged, site, "persons", "list", "staff", "--json"))
    assert isinstance(persons, list)
    assert {p["name"] for p in persons} == {"Eileen Collins", "Unusable"}
    exported = ok_json(cli(run_edged, site, "persons", "export", "staff", "Eileen Collins", "--json"))
    assert isinstance(exported, dict)
    assert len(exported["faces"]) == 2
    assert "template" not in json.dumps(exported)

    receipt = ok_json(cli(run_edged, site, "persons", "delete", "staff", person_id, "--json"))
    assert isinstance(receipt, dict)
    payload = {k: v for k, v in receipt.items() if k != "signature"}
    canonical = json.dumps(payload, sort_keys=True, separators=(",", ":")).encode()
    assert verify_signature(receipt["device_public_key"], canonical, receipt["signature"])
    assert receipt["deleted"] == {"persons": 1, "faces": 2}

    gone = ok_json(cli(run_edged, site, "identify", "staff", site["probe"], "--json"))
    assert isinstance(gone, list)
    assert gone[0]["candidates"] == []
    audit = ok_json(cli(run_edged, site, "audit", "verify", "--json"))
    assert isinstance(audit, dict)
    assert audit["ok"] is True
    assert audit["records"] >= 6

    # editing one audit record breaks the chain, and the CLI says so
    db = sqlite3.connect(site["state"] / "directory.sqlite3")
    db.execute("UPDATE audit SET result = 'nothing happened' WHERE seq = 2")
    db.commit()
    db.close()
    broken = cli(run_edged, site, "audit", "verify")
    assert broken.returncode != 0
    assert "record 2" in broken.stdout + broken.stderr


def test_a_wrong_key_is_one_clear_line(run_edged: RunEdged, site: dict[str, Path], tmp_path: Path) -> None:
    site["key"].parent.mkdir()
    assert cli(run_edged, site, "--key-file", site["key"], "keys", "init").returncode == 0
    assert cli(run_edged, site, "groups", "create", "staff").returncode == 0
    before = (site["state"] / "directory.sqlite3").read_bytes()
    other = tmp_path / "other.key"
    assert run_edged(["--key-file", other, "keys", "init"]).returncode == 0
    result = cli(run_edged, site, "--key-file", other, "groups", "list")
    assert result.returncode == 8
    assert result.stderr.count("\n") == 1
    assert result.stderr.startswith("edged: WrongKey: ")
    assert (site["state"] / "directory.sqlite3").read_bytes() == before


def test_keys_rotate(run_edged: RunEdged, site: dict[str, Path], tmp_path: Path) -> None:
    site["key"].parent.mkdir()
    assert cli(run_edged, site, "--key-file", site["key"], "keys", "init").returncode == 0
    assert cli(run_edged, site, "groups", "create", "staff").returncode == 0
    assert cli(run_edged, site, "enroll", "staff", "Eileen", site["probe"]).returncode == 0
    new_key = tmp_path / "keys" / "new.key"
    rotated = ok_json(cli(run_edged, site, "keys", "rotate", "--new-key-file", new_key, "--json"))
    assert isinstance(rotated, dict)
    assert rotated["rewrapped"] == 1
    assert cli(run_edged, site, "persons", "list", "staff").returncode == 8  # the old key no longer opens it
    names = cli(run_edged, site, "--key-file", new_key, "persons", "list", "staff", "--json")
    assert [p["name"] for p in ok_json(names)] == ["Eileen"]  # type: ignore[union-attr]


def test_missing_key_and_bad_arguments(run_edged: RunEdged, site: dict[str, Path]) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("EDGED_KEY_FILE", "CREDENTIALS_DIRECTORY")}
    result = run_edged(["--state-dir", site["state"], "groups", "list"], env=env)
    assert result.returncode == 2
    assert "no key-encryption key" in result.stderr
    both = cli(run_edged, site, "enroll", "staff", "Eileen", site["probe"], "--from-dir", site["people"])
    assert both.returncode == 2
    assert "not both" in both.stderr


def test_update_group_and_person(run_edged: RunEdged, site: dict[str, Path]) -> None:
    site["key"].parent.mkdir()
    assert cli(run_edged, site, "--key-file", site["key"], "keys", "init").returncode == 0
    assert cli(run_edged, site, "groups", "create", "staff").returncode == 0
    assert cli(run_edged, site, "enroll", "staff", "Eileen", site["probe"]).returncode == 0
    group = ok_json(cli(run_edged, site, "groups", "update", "staff", "--name", "Day staff", "--json"))
    assert group == {"personGroupId": "staff", "name": "Day staff", "userData": None}
    person = ok_json(
        cli(
            run_edged,
            site,
            "persons",
            "update",
            "staff",
            "Eileen",
            "--name",
            "E. Collins",
            "--user-data",
            "badge 7",
            "--json",
        )
    )
    assert isinstance(person, dict)
    assert (person["name"], person["userData"]) == ("E. Collins", "badge 7")
    shown = ok_json(cli(run_edged, site, "persons", "get", "staff", "E. Collins", "--json"))
    assert isinstance(shown, dict)
    assert shown["personId"] == person["personId"]
    missing = cli(run_edged, site, "persons", "get", "staff", "Eileen")
    assert missing.returncode == 6
    assert missing.stderr.startswith("edged: PersonNotFound: no person named 'Eileen'")

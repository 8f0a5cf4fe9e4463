"""The one secret-file writer (edged/secretfile.py) and its two users: the directory's key-encryption
key (``crypto.create_key_file``) and a client's signing key (``auth.write_private_key``). Real files in
``tmp_path``; the process umask is set per test and restored."""

from __future__ import annotations

import os
import stat
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from edged.api.auth import generate_private_key, load_private_key, write_private_key
from edged.directory import crypto
from edged.errors import ConfigError
from edged.secretfile import write_secret

UMASKS = [0o000, 0o022, 0o077, 0o277, 0o777]


@pytest.fixture
def umask() -> Iterator[Callable[[int], None]]:
    old = os.umask(0o022)

    def set_umask(value: int) -> None:
        os.umask(value)

    yield set_umask
    os.umask(old)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


@pytest.mark.parametrize("mask", UMASKS, ids=oct)
def test_the_file_is_0600_whatever_the_umask(tmp_path: Path, umask: Callable[[int], None], mask: int) -> None:
    umask(mask)
    path = tmp_path / "secret"
    write_secret(path, b"s3cret\n")
    assert mode(path) == 0o600
    assert path.read_bytes() == b"s3cret\n"


@pytest.mark.parametrize("mask", UMASKS, ids=oct)
def test_both_key_writers_make_0600_files(tmp_path: Path, umask: Callable[[int], None], mask: int) -> None:
    umask(mask)
    kek = crypto.create_key_file(tmp_path / "kek")
    write_private_key(tmp_path / "ops.pem", generate_private_key())
    assert mode(tmp_path / "kek") == 0o600
    assert mode(tmp_path / "ops.pem") == 0o600
    os.umask(0o022)
    assert crypto.read_kek(tmp_path / "kek").key == kek.key
    load_private_key(tmp_path / "ops.pem")  # refuses a key file others can read


def test_an_existing_file_is_never_overwritten(tmp_path: Path) -> None:
    path = tmp_path / "secret"
    path.write_bytes(b"old")
    path.chmod(0o644)
    with pytest.raises(ConfigError, match=f"key file {path} already exists; it is never overwritten"):
        write_secret(path, b"new")
    assert path.read_bytes() == b"old" and mode(path) == 0o644
    with pytest.raises(ConfigError, match="already exists"):
        crypto.create_key_file(path)
    with pytest.raises(ConfigError, match="already exists"):
        write_private_key(path, generate_private_key())
    assert path.read_bytes() == b"old"


def test_a_link_in_its_place_is_not_followed(tmp_path: Path) -> None:
    target = tmp_path / "elsewhere"
    link = tmp_path / "secret"
    link.symlink_to(target)  # dangling: O_CREAT alone would create the target
    with pytest.raises(ConfigError, match="already exists"):
        write_secret(link, b"s3cret")
    assert not target.exists()


def test_a_file_that_cannot_be_created_names_what_and_why(tmp_path: Path) -> None:
    path = tmp_path / "missing" / "kek"
    with pytest.raises(ConfigError, match=r"cannot create signing key .*missing/kek: No such file"):
        write_secret(path, b"s3cret", what="signing key")
    assert not path.parent.exists()

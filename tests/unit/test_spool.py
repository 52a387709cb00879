"""The spool's rules: only verified bodies get their final name, leftovers are cleaned, a kept
body is restaged without a download, and every failure names the directory."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from archiver.errors import StagingError
from archiver.spool import Spool

RID = "935f1dc8-b56a-535c-b678-95edf74c593c"
BODY = b"ID3\x04" + bytes(range(256)) * 10


def test_a_committed_body_is_hashed_once_and_renamed(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    with spool.receive(RID) as receiver:
        receiver.write(BODY[:5])
        receiver.write(BODY[5:])
        assert (tmp_path / f"{RID}.part").exists()
        staged = receiver.commit()
    assert staged.path == tmp_path / f"{RID}.mp3"
    assert (staged.size, staged.sha256) == (len(BODY), hashlib.sha256(BODY).hexdigest())
    assert receiver.head == BODY[:4]
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"{RID}.mp3"]
    assert (staged.path.stat().st_mode & 0o777) == 0o600


def test_an_uncommitted_body_leaves_nothing(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    with pytest.raises(RuntimeError), spool.receive(RID) as receiver:
        receiver.write(BODY)
        raise RuntimeError("the download failed verification")
    assert list(tmp_path.iterdir()) == []


def test_a_kept_body_is_restaged_and_a_missing_one_is_none(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    (tmp_path / f"{RID}.mp3").write_bytes(BODY)
    staged = spool.kept(RID)
    assert staged is not None and staged.sha256 == hashlib.sha256(BODY).hexdigest()
    assert spool.kept("0" * 8 + RID[8:]) is None
    spool.discard(staged)
    assert list(tmp_path.iterdir()) == []


def test_prepare_removes_parts_and_bodies_no_longer_wanted(tmp_path: Path) -> None:
    directory = tmp_path / "spool"
    spool = Spool(directory)
    spool.prepare(keep=lambda rid: True)
    assert (directory.stat().st_mode & 0o777) == 0o700
    (directory / "a.part").write_bytes(b"ID3")
    (directory / "keep.mp3").write_bytes(BODY)
    (directory / "done.mp3").write_bytes(BODY)
    spool.prepare(keep=lambda rid: rid == "keep")
    assert sorted(p.name for p in directory.iterdir()) == ["keep.mp3"]


def test_a_link_planted_as_the_part_is_not_followed(tmp_path: Path) -> None:
    target = tmp_path / "precious"
    target.write_bytes(b"keep me")
    spool_dir = tmp_path / "spool"
    spool_dir.mkdir()
    os.symlink(target, spool_dir / f"{RID}.part")
    with pytest.raises(StagingError, match=str(spool_dir)), Spool(spool_dir).receive(RID):
        pass
    assert target.read_bytes() == b"keep me"


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes through any mode")
def test_an_unwritable_directory_is_a_staging_error_naming_it(tmp_path: Path) -> None:
    tmp_path.chmod(0o500)
    try:
        with pytest.raises(StagingError, match=str(tmp_path)), Spool(tmp_path).receive(RID):
            pass
    finally:
        tmp_path.chmod(0o700)


def test_a_directory_that_cannot_be_made_is_a_staging_error_naming_it(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_bytes(b"")
    with pytest.raises(StagingError, match="spool"):
        Spool(blocker / "spool").prepare(keep=lambda rid: True)

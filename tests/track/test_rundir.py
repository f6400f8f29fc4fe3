"""Run directories are claimed atomically and never reused; files are written whole, never clobbered."""

import datetime as dt
import os

import pytest

from runner.common.io import atomic_write
from runner.track.rundir import RunDir


def test_same_second_same_hash_still_gets_a_new_directory(tmp_path):
    now = dt.datetime(2026, 11, 26, 9, 30, 0, tzinfo=dt.timezone.utc)
    made = [RunDir.create(tmp_path, "exp", "abcdef0123456789", now=now).path for _ in range(3)]
    assert [p.name for p in made] == ["20261126-093000-abcdef01", "20261126-093000-abcdef01-2", "20261126-093000-abcdef01-3"]
    assert all(p.is_dir() and p.parent == tmp_path / "exp" for p in made)


def test_atomic_write_never_clobbers(tmp_path):
    target = tmp_path / "f.txt"
    atomic_write(target, "first")
    with pytest.raises(FileExistsError):
        atomic_write(target, "second")
    assert target.read_text() == "first"
    atomic_write(target, "third", overwrite=True)
    assert target.read_text() == "third"
    assert [p.name for p in tmp_path.iterdir()] == ["f.txt"], "no temporary files left behind"
    assert oct(os.stat(target).st_mode & 0o777) != oct(0o600), "normal permissions, not mkstemp's 0600"

import errno
import os
import stat
import subprocess
import sys

import pytest

from splat_portrait.atomic import atomic_open, atomic_path, remove_stale_temporaries, writable_dir
from splat_portrait.errors import SplatPortraitError


def test_success_replaces_the_target_with_the_umask_mode(tmp_path):
    target = tmp_path / "sub" / "out.bin"
    old = os.umask(0o027)
    try:
        with atomic_open(target, "wb") as f:
            f.write(b"new")
    finally:
        os.umask(old)
    assert target.read_bytes() == b"new"
    assert stat.S_IMODE(target.stat().st_mode) == 0o640
    assert os.listdir(target.parent) == ["out.bin"]


def test_failure_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    target = tmp_path / "out.mp4"
    target.write_bytes(b"old")
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            assert tmp.suffix == ".mp4" and tmp.parent == tmp_path
            tmp.write_bytes(b"half")
            raise RuntimeError("crash mid-write")
    assert target.read_bytes() == b"old"
    assert os.listdir(tmp_path) == ["out.mp4"]


def test_atomic_open_refuses_read_modes(tmp_path):
    with pytest.raises(ValueError, match="atomic_open only writes, got mode 'rb'"):
        with atomic_open(tmp_path / "x", "rb"):
            pass


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_only_the_temporaries_of_dead_processes_are_removed(tmp_path):
    dead, alive = _dead_pid(), os.getppid()
    names = {
        f".out.{dead}-0123456789ab.tmp.mp4": False,
        f"..out.{dead}-0123456789ab.tmp.{dead}-ba9876543210.tmp.mp4": False,
        f".out.{alive}-0123456789ab.tmp.mp4": True,  # another run still writing
        f".frames.{dead}-0123456789ab.tmp": False,  # a staged --ply-frames folder
        "out.mp4": True,
        ".hidden.mp4": True,  # not one of ours
    }
    for name in names:
        (tmp_path / name).mkdir() if name.startswith(".frames") else (tmp_path / name).write_bytes(b"x")
    removed = remove_stale_temporaries(tmp_path)
    assert sorted(p.name for p in removed) == sorted(n for n, keep in names.items() if not keep)
    assert sorted(os.listdir(tmp_path)) == sorted(n for n, keep in names.items() if keep)


def test_temporaries_carry_the_writers_pid(tmp_path):
    with atomic_path(tmp_path / "a.ply") as tmp:
        assert tmp.name.startswith(f".a.{os.getpid()}-") and tmp.name.endswith(".tmp.ply")
        assert remove_stale_temporaries(tmp_path) == []  # ours, and we are alive


def test_write_errors_name_the_final_file(tmp_path):
    target = tmp_path / "out.bin"
    with pytest.raises(SplatPortraitError) as caught:
        with atomic_open(target) as f:
            raise OSError(errno.ENOSPC, "No space left on device")
    assert str(caught.value) == f"cannot write {target}: No space left on device"
    assert os.listdir(tmp_path) == []
    with pytest.raises(SplatPortraitError, match=r"cannot write \S+out.bin: it is a folder; name a file"):
        target.mkdir()
        with atomic_open(target):
            pass


def test_writable_dir_creates_nothing_and_names_the_file(tmp_path):
    assert writable_dir(tmp_path / "new" / "deeper") == tmp_path / "new" / "deeper"
    assert not (tmp_path / "new").exists() and os.listdir(tmp_path) == []
    (tmp_path / "file").write_text("x")
    with pytest.raises(SplatPortraitError) as caught:
        writable_dir(tmp_path / "file" / "sub", for_file=tmp_path / "file" / "sub" / "o.mp4")
    assert str(caught.value) == f"cannot write {tmp_path / 'file' / 'sub' / 'o.mp4'}: {tmp_path / 'file'} is a file, not a folder"

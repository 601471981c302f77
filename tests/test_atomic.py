import os
import stat

import pytest

from splat_portrait.atomic import atomic_open, atomic_path


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

"""Atomic file output: a crash never leaves a half-written file under the final name.

Temporary names carry the writing process's id (``.<stem>.<pid>-<random>.tmp<suffix>``), so a
later run can tell the leftovers of a killed process (SIGKILL runs no cleanup) from the files of a
run still in progress, and removes only the former (:func:`remove_stale_temporaries`).

Operating-system errors while writing (read-only file system, disk full, permission denied) become
a :class:`SplatPortraitError` that names the final path, never the temporary one.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import secrets
import shutil
from pathlib import Path
from typing import IO, Iterator

from splat_portrait.errors import SplatPortraitError

# Errors that mean "this place cannot take the file", as opposed to a bug or a bad input.
WRITE_ERRNOS = frozenset(
    {errno.EROFS, errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EACCES, errno.EPERM, errno.EIO, errno.ENOTDIR, errno.EISDIR}
)
_TEMPORARY = re.compile(r"^\..*\.(\d+)-[0-9a-f]{12}\.tmp(\.[^.]*)?$")


def write_error(path: str | os.PathLike, err: OSError) -> SplatPortraitError:
    """The one-line error for an operating-system failure to write ``path``."""
    return SplatPortraitError(f"cannot write {path}: {err.strerror or err}")


def under_final_name(err: SplatPortraitError, staging: Path, final: Path) -> SplatPortraitError:
    """``err`` with the staging name (and names under it) replaced by the final one the user gave."""
    message = str(err)
    return SplatPortraitError(message.replace(str(staging), str(final))) if str(staging) in message else err


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it is fsynced and renamed onto ``path``.

    For writers that want a file name (ffmpeg, torch.save). The temporary name keeps the suffix
    so tools that pick a format from it still work. On error the temporary file is removed.
    """
    path = refuse_folder(path)
    tmp_path = _create_temporary(path)
    try:
        try:
            yield tmp_path
            with open(tmp_path, "rb+") as f:
                os.fsync(f.fileno())
            os.replace(tmp_path, path)
        except OSError as err:
            if err.errno in WRITE_ERRNOS and err.filename in (None, str(tmp_path), str(path)):
                raise write_error(path, err) from None
            raise
        except SplatPortraitError as err:
            raise under_final_name(err, tmp_path, path) from None
        _fsync_dir(path.parent)
    finally:
        tmp_path.unlink(missing_ok=True)


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "wb") -> Iterator[IO]:
    """Open a temporary file beside ``path`` for writing; it replaces ``path`` only on success."""
    if not mode.startswith("w"):
        raise ValueError(f"atomic_open only writes, got mode {mode!r}")
    with atomic_path(path) as tmp:
        with open(tmp, mode) as f:
            yield f


def refuse_folder(path: str | os.PathLike) -> Path:
    """``path`` as a Path, or the one-line error when it names an existing folder rather than a file."""
    path = Path(path)
    if path.is_dir():
        raise SplatPortraitError(f"cannot write {path}: it is a folder; name a file")
    return path


def temporary_name(path: Path) -> Path:
    """A fresh temporary name beside ``path`` that :func:`remove_stale_temporaries` recognises."""
    return path.parent / f".{path.stem}.{os.getpid()}-{secrets.token_hex(6)}.tmp{path.suffix}"


def writable_dir(directory: str | os.PathLike, for_file: str | os.PathLike | None = None) -> Path:
    """Prove that files can be made in ``directory``, before any long work starts; returns it as a Path.

    A folder that does not exist yet is not created (a run that fails later leaves nothing behind):
    its nearest existing ancestor is probed instead. Errors name ``for_file`` (a file to be written
    there) or else the folder. Leftover temporaries of killed runs in the folder are removed.
    """
    directory = Path(directory)
    what = f"cannot write {for_file}" if for_file is not None else f"cannot write into {directory}"
    existing = directory
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise SplatPortraitError(f"{what}: {existing} is a file, not a folder")
    try:
        if existing == directory:
            remove_stale_temporaries(directory)
        probe = temporary_name(existing / "probe")
        os.close(os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
        probe.unlink()
    except OSError as err:
        raise SplatPortraitError(f"{what}: {err.strerror or err}") from None
    return directory


def remove_stale_temporaries(directory: Path) -> list[Path]:
    """Remove the temporary files and folders of ours in ``directory`` whose process has died."""
    removed = []
    with contextlib.suppress(OSError):
        for entry in directory.iterdir():
            match = _TEMPORARY.match(entry.name)
            if match is None or _alive(int(match.group(1))):
                continue
            with contextlib.suppress(OSError):
                shutil.rmtree(entry) if entry.is_dir() and not entry.is_symlink() else entry.unlink()
                removed.append(entry)
    return removed


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # EPERM: it exists, under another user
        return True
    return True


def _create_temporary(path: Path) -> Path:
    # Not tempfile.mkstemp: its files are private (0600), and the result should get the mode
    # (umask applied) that a plain open() would give it.
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise write_error(path, err) from None
    while True:
        tmp = temporary_name(path)
        try:
            os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
            return tmp
        except FileExistsError:
            continue
        except OSError as err:
            raise write_error(path, err) from None


def _fsync_dir(directory: Path) -> None:
    # The rename itself is only durable once the directory entry is flushed.
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

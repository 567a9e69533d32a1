"""Render stage: writing its files (the digest, the HTML page) whole or not at all, and one line
for the operator when a configured path cannot be written."""

from __future__ import annotations

import contextlib
import errno
import os
import tempfile
from pathlib import Path

_CAUSES = {
    errno.ENOENT: "its folder {parent} does not exist: create it",
    errno.ENOTDIR: "{parent} is not a folder",
    errno.EISDIR: "it is a folder, not a file",
    errno.EACCES: "permission denied: let this user write to {parent}",
    errno.EPERM: "permission denied: let this user write to {parent}",
    errno.EROFS: "the file system is read-only",
    errno.ENOSPC: "the disk is full: make room",
    errno.EDQUOT: "the disk quota is used up: make room",
}


def unwritable(path: Path, exc: OSError, *, what: str = "the digest", key: str = "path") -> str:
    """One line for a path the operator must fix: which path, why, what to do."""
    cause = _CAUSES.get(exc.errno or 0, exc.strerror or str(exc)).format(parent=path.parent)
    return f"{path}: {what} cannot be written: {cause}; or change [digest] {key}"


def write_problem(path: Path, *, what: str = "the digest", key: str = "path") -> str | None:
    """Why the file could not be written at `path`, asked before anything else is done (so
    a command that would fail leaves no database behind); None when it looks writable."""
    code = _refusal(Path(path).resolve())
    if code is None:
        return None
    return unwritable(Path(path), OSError(code, os.strerror(code)), what=what, key=key)


def _refusal(target: Path) -> int | None:
    """The errno writing `target` would meet, foreseen from the file system."""
    parent = target.parent
    if target.is_dir():
        return errno.EISDIR
    if not parent.exists():
        return errno.ENOTDIR if any(p.is_file() for p in parent.parents) else errno.ENOENT
    if not parent.is_dir():
        return errno.ENOTDIR
    if not os.access(parent, os.W_OK) or (target.exists() and not os.access(target, os.W_OK)):
        return errno.EROFS if _read_only(parent) else errno.EACCES
    return None


def _read_only(folder: Path) -> bool:
    try:
        return bool(os.statvfs(folder).f_flag & os.ST_RDONLY)
    except OSError:
        return False


def replace_file(target: Path, data: bytes) -> None:
    """Write through a temporary file in the same directory: readers see old or new, never half."""
    mode = target.stat().st_mode & 0o7777 if target.exists() else 0o644
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fchmod(f.fileno(), mode)
            os.fsync(f.fileno())
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    _fsync_dir(target.parent)


def _fsync_dir(directory: Path) -> None:
    """Make the rename itself durable; some filesystems cannot fsync a directory."""
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

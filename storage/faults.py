"""What a fault of the database file means for the operator: one line that names the file,
the cause and what to do (a full disk, a lock, a corrupt or unreachable file)."""

from __future__ import annotations

import errno
import sqlite3
from pathlib import Path


class StoreUnusable(Exception):
    """The database cannot be opened or written; the message is the operator's one line."""

    def __init__(self, path: Path, exc: sqlite3.Error | OSError) -> None:
        super().__init__(describe(path, exc))
        self.locked = is_locked(exc)  # worth waiting for: another process holds the lock


def is_locked(exc: BaseException) -> bool:
    """Another connection held the lock past the busy timeout."""
    return isinstance(exc, sqlite3.Error) and _name(exc).startswith(("SQLITE_BUSY",
                                                                     "SQLITE_LOCKED"))


def describe(path: Path, exc: sqlite3.Error | OSError) -> str:
    """The one line for `exc`, raised while opening or writing the database at `path`."""
    if isinstance(exc, OSError):
        return f"{path}: cannot open the database: {_os_cause(path, exc)}"
    name = _name(exc)
    if is_locked(exc):
        return (f"{path} stayed locked by another process (the daemon writing, a backup, "
                "`daily-papers migrate`?); nothing was changed, try again later")
    if name == "SQLITE_FULL" or name.startswith("SQLITE_IOERR"):
        cause = "the disk is full" if name == "SQLITE_FULL" else "a disk I/O error"
        return (f"{path}: the database cannot be written: {cause}; make room on the disk of "
                f"{path.parent} (or check the disk), then try again")  # a full disk shows as either
    if name in ("SQLITE_NOTADB", "SQLITE_CORRUPT"):
        return f"{path} is not a usable SQLite database ({exc}); {_recovery(path)}"
    if name.startswith("SQLITE_READONLY"):
        return (f"{path}: the database is read-only (file permissions or a read-only file "
                f"system); let this user write to the file and to {path.parent}")
    if name.startswith("SQLITE_CANTOPEN"):
        return f"{path}: cannot open the database: {_cantopen_cause(path)}"
    return f"{path}: the database refused: {exc}"


def _name(exc: sqlite3.Error) -> str:
    return getattr(exc, "sqlite_errorname", "") or ""


def _recovery(path: Path) -> str:
    """Backups `migrate` left beside the file, newest schema first, if any."""
    backups = sorted(path.parent.glob(f"{path.name}.bak-*"), reverse=True)
    if backups:
        names = ", ".join(b.name for b in backups)
        return (f"stop the daemon and copy a backup over it ({names} in {path.parent}), or move "
                "it away to start afresh")
    return ("no backup (<db>.bak-N) is beside it: move it away to start afresh (keywords are "
            "polled again; subscriptions made in chat are lost)")


def _cantopen_cause(path: Path) -> str:
    parent = path.parent
    if path.is_dir():
        return "it is a folder, not a file; change [storage] path"
    if not parent.exists():
        return f"its folder {parent} does not exist; create it or change [storage] path"
    if not parent.is_dir():
        return f"{parent} is not a folder; change [storage] path"
    return (f"this user may not create or write files in {parent} (or its file system is "
            "read-only); change [storage] path or the folder's permissions")


_OS_CAUSES = {
    errno.EACCES: "permission denied; change [storage] path or the folder's permissions",
    errno.EPERM: "permission denied; change [storage] path or the folder's permissions",
    errno.EROFS: "the file system is read-only; change [storage] path",
    errno.ENOSPC: "the disk is full; make room, then try again",
}


def _os_cause(path: Path, exc: OSError) -> str:
    if exc.errno in (errno.EEXIST, errno.ENOTDIR, errno.ENOENT, errno.EISDIR):
        return _cantopen_cause(path)
    return _OS_CAUSES.get(exc.errno or 0, exc.strerror or str(exc))

"""Files: crash-safe replacement (the path holds the old file or the whole new one), fsync, locks."""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
from collections.abc import Iterator
from typing import BinaryIO


def _umask() -> int:
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except OSError:
        pass
    return 0o022


def fsync_dir(directory: str) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return  # e.g. Windows: directories cannot be opened
    try:
        os.fsync(fd)
    except OSError as exc:  # some filesystems refuse fsync on directories
        if exc.errno not in (errno.EINVAL, errno.EBADF):
            raise
    finally:
        os.close(fd)


def flock(fd: int, exclusive: bool) -> None:
    """Block until ``fd`` holds an exclusive (or shared) advisory lock (POSIX; a no-op elsewhere)."""
    if os.name == "posix":
        import fcntl

        fcntl.flock(fd, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)


def funlock(fd: int) -> None:
    if os.name == "posix":
        import fcntl

        fcntl.flock(fd, fcntl.LOCK_UN)


_LINKABLE: dict[int, bool] = {}


def tmpfile_supported(directory: str) -> bool:
    """Whether O_TMPFILE files in ``directory`` can be linked into place (probed once per device)."""
    flag = getattr(os, "O_TMPFILE", 0)
    if not flag:
        return False
    try:
        dev = os.stat(directory).st_dev
    except OSError:
        return False
    if dev not in _LINKABLE:
        ok = False
        try:
            fd = os.open(directory, flag | os.O_WRONLY | os.O_CLOEXEC, 0o600)
        except OSError:
            fd = -1
        if fd >= 0:
            probe = os.path.join(directory, f".sealedckpt-probe.{secrets.token_hex(6)}")
            try:
                try:
                    os.link(f"/proc/self/fd/{fd}", probe, follow_symlinks=True)
                    ok = True
                finally:  # also on Ctrl-C right after the link: never leave the probe behind
                    with contextlib.suppress(OSError):
                        os.unlink(probe)
            except OSError:
                ok = False
            finally:
                os.close(fd)
        _LINKABLE[dev] = ok
    return _LINKABLE[dev]


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike[str], mode: int = 0o666) -> Iterator[BinaryIO]:
    """Write to an unnamed (O_TMPFILE) or hidden temp file in the same directory, fsync, rename.

    On any exception, or if the process dies, ``path`` keeps its previous content, and an
    exception leaves no temp file. With a linkable O_TMPFILE (Linux, most local filesystems) a
    killed process leaves nothing either; elsewhere it can leave a hidden ``.NAME.*.tmp`` file.
    """
    target = os.path.abspath(os.fspath(path))
    directory = os.path.dirname(target)
    fd = -1
    named: str | None = None
    link_name: str | None = None
    try:  # every name is set before its file exists, so Ctrl-C at any point leaves nothing
        if tmpfile_supported(directory):
            with contextlib.suppress(OSError):
                fd = os.open(directory, os.O_TMPFILE | os.O_WRONLY | os.O_CLOEXEC, mode)
        if fd < 0:
            named = os.path.join(directory, f".{os.path.basename(target)}.{secrets.token_hex(6)}.tmp")
            try:
                fd = os.open(named, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), 0o600)
            except OSError as exc:  # name the file the caller asked for, not the temp file
                named = None
                raise type(exc)(exc.errno, exc.strerror, os.fspath(path)) from None
        with os.fdopen(fd, "wb", closefd=False) as f:
            yield f
        os.fsync(fd)
        if named is None:
            link_name = os.path.join(directory, f".{os.path.basename(target)}.{secrets.token_hex(6)}.tmp")
            os.link(f"/proc/self/fd/{fd}", link_name, follow_symlinks=True)
            os.replace(link_name, target)
            link_name = None
        else:
            os.chmod(named, mode & ~_umask())
            os.replace(named, target)
            named = None
        fsync_dir(directory)
    finally:
        if fd >= 0:
            os.close(fd)
        for leftover in (named, link_name):
            if leftover is not None:
                with contextlib.suppress(OSError):
                    os.unlink(leftover)

"""Reading files of a release directory: regular files only, never through a link, bounded."""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import BinaryIO

from ..errors import FormatError

_FLAGS = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)


def open_regular(path: Path, max_size: int | None = None) -> BinaryIO:
    """``path`` opened for reading if it is a regular file (not a link, FIFO or device) of at
    most ``max_size`` bytes; checked with ``lstat`` before and ``fstat`` after opening."""
    try:
        before = os.lstat(path)
    except FileNotFoundError:
        raise FormatError(f"{path}: missing") from None
    if not stat.S_ISREG(before.st_mode):
        raise FormatError(f"{path}: not a regular file (links, FIFOs and devices are refused)")
    try:
        fd = os.open(path, _FLAGS)
    except OSError as exc:
        raise FormatError(f"{path}: cannot be opened safely ({exc.strerror})") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or (st.st_dev, st.st_ino) != (before.st_dev, before.st_ino):
            raise FormatError(f"{path}: changed while it was opened (not a regular file)")
        if max_size is not None and st.st_size > max_size:
            raise FormatError(f"{path}: too large ({st.st_size} bytes, at most {max_size})")
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def read_regular(path: Path, max_size: int) -> bytes:
    """The whole content of the regular file ``path``, refused beyond ``max_size`` bytes."""
    with open_regular(path, max_size) as f:
        raw = f.read(max_size + 1)
    if len(raw) > max_size:
        raise FormatError(f"{path}: too large (more than {max_size} bytes)")
    return raw

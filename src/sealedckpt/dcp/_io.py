"""The checkpoint directory's file access, in one place: read, replace atomically, list, remove.

Local paths only for now; an ``s3://`` (fsspec) location is refused here with a clear error, so
that object storage can later be wired into these few functions and nothing else. Reads never
follow a link and accept only regular files of a bounded size (torch is not imported).
"""

from __future__ import annotations

import contextlib
import os
import re
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from .._fs import atomic_write
from ..errors import FormatError, InvalidArgumentError
from ..release._safeio import open_regular

METADATA_NAME = ".metadata"
DATA_SUFFIX = ".sealed"
#: the data files this package writes: ``__<rank>_<n>.sealed``
DATA_NAME = re.compile(r"__(0|[1-9][0-9]{0,8})_(0|[1-9][0-9]{0,8})\.sealed")
MAX_METADATA_FILE = 1 << 30  # a sealed metadata file beyond this is refused before reading


def local_dir(path: str | os.PathLike[str]) -> Path:
    """``path`` as a local directory path; a URL (``s3://``...) is not supported yet."""
    text = os.fspath(path)
    if "://" in text:
        raise InvalidArgumentError(
            f"{text}: remote DCP checkpoints are not supported yet",
            hint="save to a local directory (object storage is planned through the same file layer)",
        )
    return Path(text)


def is_data_name(name: str) -> bool:
    return DATA_NAME.fullmatch(name) is not None


def open_read(directory: Path, name: str, max_size: int | None = None) -> BinaryIO:
    """``directory/name`` opened for reading: a regular file, never a link (FormatError if not)."""
    return open_regular(directory / name, max_size)


@contextlib.contextmanager
def write_atomic(directory: Path, name: str) -> Iterator[BinaryIO]:
    """A file that replaces ``directory/name`` durably only once the block ends without error."""
    with atomic_write(directory / name, mode=0o600) as out:
        yield out


def make_dir(directory: Path) -> None:
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InvalidArgumentError(f"{directory}: cannot create the checkpoint directory ({exc.strerror})") from None


def list_names(directory: Path) -> list[str]:
    """The names in ``directory`` (sorted); a missing directory is a FormatError."""
    try:
        return sorted(os.listdir(directory))
    except FileNotFoundError:
        raise FormatError(f"{directory}: no such checkpoint directory") from None
    except NotADirectoryError:
        raise FormatError(f"{directory}: not a directory") from None


def remove(directory: Path, name: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(directory / name)


def opened_size(f: BinaryIO) -> int:
    """The size of a file :func:`open_read` returned (of the open descriptor, not the name)."""
    return os.fstat(f.fileno()).st_size


def size_of(directory: Path, name: str) -> int | None:
    """The size of the regular file ``directory/name``; None when it is missing or not regular."""
    try:
        st = os.lstat(directory / name)
    except FileNotFoundError:
        return None
    return st.st_size if stat.S_ISREG(st.st_mode) else None

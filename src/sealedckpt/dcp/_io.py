"""The checkpoint directory's file access, in one place: read, replace atomically, list, remove.

A checkpoint directory is a local path or a ``scheme://`` URL (``s3://bucket/prefix``,
``memory://...``; fsspec, through :mod:`sealedckpt._remote`, imported only for a URL). Locally,
reads never follow a link and accept only regular files; a file is replaced by temp file, fsync
and rename. At a URL every file is one object, written whole or not at all (``_remote``'s atomic
write: one PUT or a completed multipart upload), read lazily by ranged reads; a "directory" is a
key prefix, so creating one does nothing. Storage failures are :class:`~sealedckpt.StorageError`
(a missing object :class:`~sealedckpt.StorageNotFoundError`). torch is not imported.
"""

from __future__ import annotations

import contextlib
import os
import re
import stat
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from .. import _remote
from .._fs import atomic_write
from ..errors import ArgumentTypeError, FormatError, InvalidArgumentError, StorageNotFoundError
from ..release._safeio import open_regular

METADATA_NAME = ".metadata"
DATA_SUFFIX = ".sealed"
#: the data files this package writes: ``__<rank>_<n>.sealed``
DATA_NAME = re.compile(r"__(0|[1-9][0-9]{0,8})_(0|[1-9][0-9]{0,8})\.sealed")
MAX_METADATA_FILE = 1 << 30  # a sealed metadata file beyond this is refused before reading


@dataclass(frozen=True)
class CheckpointDir:
    """A checkpoint directory: a local path, or a URL with its fsspec ``storage_options``
    (credentials, endpoint: never shown; ``str`` gives the URL without user info)."""

    where: str
    storage_options: dict[str, Any] | None = field(default=None, repr=False, compare=False)

    @property
    def remote(self) -> bool:
        return _remote.is_url(self.where)

    def __str__(self) -> str:
        return _remote.redact(self.where) if self.remote else self.where

    def show(self, name: str) -> str:
        """``name`` inside this directory, for messages."""
        return _remote.join(str(self), name) if self.remote else os.path.join(self.where, name)

    def _url(self, name: str) -> str:
        return _remote.join(self.where, name)

    def _path(self, name: str) -> Path:
        return Path(self.where) / name


def checkpoint_dir(path: str | os.PathLike[str], storage_options: dict[str, Any] | None = None) -> CheckpointDir:
    """``path`` (a local path or a ``scheme://`` URL) as a checkpoint directory."""
    text = os.fspath(path) if isinstance(path, (str, os.PathLike)) else None
    if not isinstance(text, str) or not text:
        raise ArgumentTypeError(f"a checkpoint directory is a non-empty path or URL, not {path!r}")
    if _remote.is_url(text):
        return CheckpointDir(text, storage_options)
    return CheckpointDir(text)


def is_data_name(name: str) -> bool:
    return DATA_NAME.fullmatch(name) is not None


def open_read(directory: CheckpointDir, name: str, max_size: int | None = None, *, whole: bool = False) -> BinaryIO:
    """``name`` opened for reading (FormatError beyond ``max_size`` bytes). Locally a regular
    file, never a link; at a URL a reader whose reads are ranged GETs (``whole``: large ones)."""
    if not directory.remote:
        return open_regular(directory._path(name), max_size)
    f = _remote.open_read(directory._url(name), directory.storage_options, whole=whole)
    if max_size is not None and f.size > max_size:
        f.close()
        raise FormatError(f"{directory.show(name)}: too large ({f.size} bytes, at most {max_size})")
    return f  # type: ignore[return-value]


@contextlib.contextmanager
def write_atomic(directory: CheckpointDir, name: str) -> Iterator[BinaryIO]:
    """A file that replaces ``name`` durably (locally) or as one whole object (at a URL) only
    once the block ends without error."""
    if directory.remote:
        with _remote.atomic_write(directory._url(name), directory.storage_options) as out:
            yield out
        return
    with atomic_write(directory._path(name), mode=0o600) as out:
        yield out


def make_dir(directory: CheckpointDir) -> None:
    """Create the directory (locally; an object store has no directories to create)."""
    if directory.remote:
        return
    try:
        Path(directory.where).mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InvalidArgumentError(f"{directory}: cannot create the checkpoint directory ({exc.strerror})") from None


def list_sizes(directory: CheckpointDir) -> dict[str, int | None]:
    """The names directly in the directory with their sizes (None: not a regular file). A missing
    local directory is a FormatError; at a URL one with no objects is empty."""
    if directory.remote:
        found = _remote.find(directory.where, directory.storage_options)
        return {name: n for name, n in found.items() if "/" not in name}
    out: dict[str, int | None] = {}
    try:
        with os.scandir(directory.where) as it:
            for entry in it:
                try:
                    st = entry.stat(follow_symlinks=False)
                except OSError:  # gone since it was listed, or not statable: not a usable file
                    out[entry.name] = None
                    continue
                out[entry.name] = st.st_size if stat.S_ISREG(st.st_mode) else None
    except FileNotFoundError:
        raise FormatError(f"{directory}: no such checkpoint directory") from None
    except NotADirectoryError:
        raise FormatError(f"{directory}: not a directory") from None
    return dict(sorted(out.items()))


def remove(directory: CheckpointDir, name: str) -> None:
    """Remove ``name`` if it is there."""
    if directory.remote:
        with contextlib.suppress(StorageNotFoundError):
            _remote.delete(directory._url(name), directory.storage_options)
        return
    with contextlib.suppress(FileNotFoundError):
        os.unlink(directory._path(name))


def opened_size(f: BinaryIO) -> int:
    """The size of a file :func:`open_read` returned (of the open object, not of the name)."""
    size = getattr(f, "size", None)
    if isinstance(size, int):  # a remote reader: the size its reads are bounded by
        return size
    return os.fstat(f.fileno()).st_size


def has_metadata(directory: CheckpointDir) -> bool:
    """Whether the directory holds a ``.metadata`` file (locally: a regular one)."""
    if directory.remote:
        return _remote.exists(directory._url(METADATA_NAME), directory.storage_options)
    try:
        return stat.S_ISREG(os.lstat(directory._path(METADATA_NAME)).st_mode)
    except OSError:
        return False


class AtCheckpointDir:
    """What DCP asks of a storage reader and writer about where the checkpoint is (``self.path``)."""

    path: CheckpointDir

    @property
    def checkpoint_id(self) -> str:
        return str(self.path)

    @classmethod
    def validate_checkpoint_id(cls, checkpoint_id: str | os.PathLike[str]) -> bool:
        return isinstance(os.fspath(checkpoint_id), str)  # a local path or a scheme:// URL (fsspec)

    def _move_to(self, checkpoint_id: str | os.PathLike[str] | None) -> None:
        """``reset(checkpoint_id)``: a new directory, with the same ``storage_options``."""
        if checkpoint_id:
            self.path = checkpoint_dir(checkpoint_id, self.path.storage_options)

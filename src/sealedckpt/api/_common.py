"""What every API entry point shares: file handles, the audit record, GC pauses."""

from __future__ import annotations

import builtins
import contextlib
import gc
import os
from collections.abc import Iterator
from typing import Any, BinaryIO

from .._remote import is_url, open_read, reader, redact, writer
from ..stores.audit import AuditLog
from ..stores.keystore import Keystore

PathOrFile = str | os.PathLike[str] | BinaryIO
#: fsspec options for ``scheme://`` URLs (credentials, endpoint); None: the store's environment.
StorageOptions = dict[str, Any] | None


def audit_log(audit: AuditLog | None, keystore: Keystore | None) -> AuditLog | None:
    """The log to record into: ``audit``, else the one the environment switches on (off by default)."""
    return audit if audit is not None else AuditLog.from_env(default=False, keystore=keystore)


@contextlib.contextmanager
def audited(log: AuditLog | None, op: str, f: object, info: dict[str, Any]) -> Iterator[None]:
    """Record the operation into ``log`` (if any) with its outcome, success or failure.

    ``info`` holds the record's fields as the operation learns them; ``info["path"]`` (when set)
    replaces ``f`` as the recorded path.
    """
    if log is None:
        yield
        return
    path = redact(os.fspath(f)) if isinstance(f, (str, os.PathLike)) else None
    try:
        yield
    except BaseException as exc:
        log.record(op, **{"path": path, **info, "outcome": f"error: {type(exc).__name__}"})
        raise
    log.record(op, **{"path": path, **info, "outcome": "ok"})


@contextlib.contextmanager
def reading(f: PathOrFile, storage_options: StorageOptions = None, *, whole: bool = False) -> Iterator[BinaryIO]:
    """``f`` opened for reading (a path or a ``scheme://`` URL), or as given (a file object).
    ``whole``: every byte will be read (large ranged reads for a URL)."""
    if is_url(f):
        with open_read(str(f), storage_options, whole=whole) as fh:
            yield fh  # type: ignore[misc]
    elif isinstance(f, (str, os.PathLike)):
        with builtins.open(f, "rb") as fh:
            yield fh
    else:
        yield f


#: A path or URL opened for reading (the caller closes it).
open_path = reader
#: A path replaced atomically (temp, fsync, rename), or a URL written atomically (see ``_remote``).
writing = writer


@contextlib.contextmanager
def gc_paused() -> Iterator[None]:
    """Building or parsing a structure of many small objects would trigger repeated full
    collections (O(live objects) each); none of the objects made here form cycles."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()

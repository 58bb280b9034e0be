"""Sealed directories at a ``scheme://`` URL, through a private local copy.

A sealed directory is many files checked together (the manifest lists every file and its
digest), so the directory code works on a local copy: reading one downloads every object under
the URL into a fresh 0700 temp directory (removed afterwards) and checks that; publishing one
uploads every file, each atomically, the manifest and its signatures last, so a reader that
finds the manifest finds every file it lists.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from .. import _remote
from ..errors import InvalidArgumentError
from ..release.directory import MANIFEST
from ..release.signatures import SIGNATURES

_BLOCK = 4 << 20


@contextlib.contextmanager
def scratch() -> Iterator[Path]:
    """A fresh private (0700) local directory, removed afterwards."""
    tmp = tempfile.mkdtemp(prefix="sealedckpt-")
    try:
        yield Path(tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


@contextlib.contextmanager
def fetched(url: str) -> Iterator[Path]:
    """Every object under ``url``, downloaded into a private local directory."""
    with scratch() as tmp:
        local = tmp / "dir"
        local.mkdir()
        for rel in _remote.find(url):
            target = local.joinpath(*rel.split("/"))
            if ".." in rel.split("/"):
                continue  # never written outside the copy (a key named a/../../x)
            target.parent.mkdir(parents=True, exist_ok=True)
            with _remote.open_read(_remote.join(url, rel), whole=True) as src, open(target, "wb") as out:
                shutil.copyfileobj(src, out, _BLOCK)
        yield local


def upload(local: Path, url: str, names: list[str]) -> None:
    """Upload ``names`` (relative ``/`` paths under ``local``) to ``url``, each atomically, in order."""
    for rel in names:
        with open(local.joinpath(*rel.split("/")), "rb") as src, _remote.atomic_write(_remote.join(url, rel)) as out:
            shutil.copyfileobj(src, out, _BLOCK)


def publish(local: Path, url: str) -> None:
    """Upload the sealed directory ``local`` to the new ``url``: the manifest and signatures last."""
    if _remote.find(url):
        raise InvalidArgumentError(
            f"{_remote.redact(url)} already holds objects; a sealed directory goes to a new place"
        )
    names = sorted(Path(root, f).relative_to(local).as_posix() for root, _, files in os.walk(local) for f in files)
    last = [n for n in (MANIFEST, SIGNATURES) if n in names]
    upload(local, url, [n for n in names if n not in last] + last)

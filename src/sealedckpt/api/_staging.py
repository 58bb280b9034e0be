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
from ..errors import FormatError, InvalidArgumentError, SealedCkptError
from ..release.directory import MANIFEST, MAX_MANIFEST, DirEntry, parse_manifest
from ..release.signatures import MAX_SIG_FILE, SIGNATURES

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
    """The sealed directory at ``url`` as a private local copy, every read bounded: the manifest
    and signatures (at most their format limits), then each object the manifest lists (at most
    what its entry allows); an object it does not list becomes an empty file of that name, so the
    local check reports it without it being downloaded."""
    objects = _remote.find(url)
    limits: dict[str, int] = {MANIFEST: MAX_MANIFEST, SIGNATURES: MAX_SIG_FILE}
    with scratch() as tmp:
        local = tmp / "dir"
        local.mkdir()
        for name in (MANIFEST, SIGNATURES):
            if name in objects:
                _download(url, name, objects[name], limits[name], local)
        if MANIFEST in objects:
            with contextlib.suppress(SealedCkptError):  # a bad manifest: the local check says why
                entries, _ = parse_manifest((local / MANIFEST).read_bytes())
                limits.update((e.path, _entry_limit(e)) for e in entries)
        for rel, size in objects.items():
            if rel not in (MANIFEST, SIGNATURES):
                _download(url, rel, size, limits.get(rel, 0), local)
        yield local


def _entry_limit(e: DirEntry) -> int:
    """The largest object ``e`` may be: a public file's size; a sealed file's payload plus the
    most its tags, digests, header and trailer can add."""
    if e.kind == "public":
        return e.size
    return e.size + (e.size // 65536 + 1) * 64 + (16 << 20)


def _download(url: str, rel: str, size: int, limit: int, local: Path) -> None:
    parts = rel.split("/")
    if ".." in parts or "" in parts:
        raise FormatError(f"{_remote.redact(url)}: object name {rel!r} cannot be part of a sealed directory")
    target = local.joinpath(*parts)
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(target, "wb") as out:
        if size > limit:  # unlisted (limit 0) or too large: an empty stand-in, never the bytes
            if limit:
                raise FormatError(f"{_remote.redact(_remote.join(url, rel))}: {size:,} bytes, more than its "
                                  "manifest entry allows")  # fmt: skip
            return
        with _remote.open_read(_remote.join(url, rel), whole=True) as src:
            if src.size > max(limit, size):
                raise FormatError(f"{_remote.redact(_remote.join(url, rel))}: changed while being read")
            shutil.copyfileobj(src, out, _BLOCK)


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

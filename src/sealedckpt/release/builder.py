"""Sealed model directories built from memory: no plaintext file is ever written.

:func:`seal_dir <sealedckpt.release.directory.seal_dir>` seals the files of a directory on disk;
:func:`seal_items` seals files that exist only in memory (a framework's state_dict shards, its
JSON config) into the same layout: ``NAME.sealed`` files and a (signed) manifest. The directory
appears complete or not at all: everything is written into a hidden staging directory next to
it, renamed into place last.
"""

from __future__ import annotations

import os
import secrets
import shutil
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from .. import container
from .._fs import atomic_write, fsync_dir
from ..crypto import SigningKey
from ..errors import FormatError, InvalidArgumentError
from .directory import MANIFEST, MAX_FILES, DirEntry, _safe_rel, blob_layout, write_manifest
from .signatures import SIGNATURES


@dataclass(frozen=True)
class Item:
    """One file of the directory, as bytes in memory: its original name, ``kind``
    (``"safetensors"``: a flat state_dict payload; ``"blob"``: any file's bytes) and payload."""

    source: str
    kind: str
    payload_len: int
    segments: Iterable[memoryview]


def blob_item(source: str, data: bytes) -> Item:
    """A file of ``data`` bytes, sealed as a blob (``config.json``, a tokenizer file...)."""
    layout = blob_layout(os.path.basename(source), len(data))
    return Item(source, "blob", layout.payload_len, [memoryview(layout.header), memoryview(data)])


def _check_source(source: str, kind: str, seen: set[str]) -> None:
    _safe_rel(source)
    if source in (MANIFEST, SIGNATURES) or source in seen:
        raise InvalidArgumentError(f"{source!r} cannot be a file of a sealed directory (reserved or repeated)")
    if (kind == "safetensors") != source.endswith(".safetensors") or kind not in ("safetensors", "blob"):
        raise InvalidArgumentError(f"{source!r}: a shard must be named *.safetensors, and only a shard")
    seen.add(source)


def seal_items(
    out_dir: str | os.PathLike[str],
    items: Iterable[Item],
    *,
    keys: Sequence[container.SealKey],
    signers: Sequence[SigningKey] = (),
    metadata: dict[str, str] | None = None,
) -> list[DirEntry]:
    """Seal every item (taken one at a time from ``items``) into the new directory ``out_dir``
    with a manifest signed by ``signers``. ``out_dir`` must be absent or empty."""
    out = Path(out_dir)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise FormatError(f"{out} exists and is not empty")
    meta = dict(metadata or {})
    out.parent.mkdir(parents=True, exist_ok=True)
    stage = out.parent / f".{out.name}.{secrets.token_hex(6)}.partial"
    os.mkdir(stage)
    try:
        entries: list[DirEntry] = []
        seen: set[str] = set()
        for it in items:
            _check_source(it.source, it.kind, seen)
            if len(entries) >= MAX_FILES:
                raise InvalidArgumentError(f"a sealed directory holds at most {MAX_FILES} files")
            dst = stage / (it.source + ".sealed")
            dst.parent.mkdir(parents=True, exist_ok=True)
            with atomic_write(dst) as f:
                summary = container.seal(f, it.payload_len, it.segments, keys=keys, metadata=meta, want_root=True)
            assert summary.root is not None
            entries.append(DirEntry(it.source + ".sealed", it.source, it.kind, "root:" + summary.root.hex(),
                                    it.payload_len))  # fmt: skip
        if not entries:
            raise InvalidArgumentError("nothing to seal: no files")
        write_manifest(stage, entries, meta, signers)
        if out.exists():
            out.rmdir()
        os.replace(stage, out)
        fsync_dir(str(out.parent))
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise
    return entries

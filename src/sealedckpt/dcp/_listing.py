"""The list of data files a DCP checkpoint's metadata names, in that file's public metadata.

The sealed ``.metadata`` file carries, in its public (MAC-authenticated, and signed when the
checkpoint is) metadata, ``sealedckpt.dcp = "1"`` and the list of every data file with its size,
key commitment and content root, as strict JSON split over ``dcp.files.<n>`` entries. Anyone can
read the list; a key holder or a signature vouches for it. No torch here.
"""

from __future__ import annotations

import hmac
import json
from dataclasses import dataclass
from pathlib import Path

from .._json import strict_loads
from ..errors import FormatError, IntegrityError
from . import _io

MARK_KEY = "sealedckpt.dcp"
MARK_VALUE = "1"
_FILES_KEY = "dcp.files."
_PART_BYTES = 60_000  # below the container's 64 KiB cap on one metadata value
_HEX32 = frozenset("0123456789abcdef")


@dataclass(frozen=True)
class DataFile:
    """One rank's sealed data file as the metadata names it."""

    name: str
    size: int
    commitment: str  # hex of the header's key commitment
    root: str  # hex of the content root (BLAKE3 over the content header and every chunk digest)

    def check_root(self, root: bytes) -> None:
        if not hmac.compare_digest(bytes.fromhex(self.root), root):
            raise IntegrityError(f"{self.name}: content does not match the root the checkpoint metadata lists "
                                 "(a swapped, stale or modified rank file)")  # fmt: skip

    def check_commitment(self, commitment: bytes) -> None:
        if not hmac.compare_digest(bytes.fromhex(self.commitment), commitment):
            raise IntegrityError(f"{self.name}: not the file this checkpoint's metadata lists "
                                 "(a swapped or stale rank file)")  # fmt: skip


def encode(files: list[DataFile]) -> dict[str, str]:
    """The public metadata entries that list ``files``."""
    out = {MARK_KEY: MARK_VALUE}
    part: list[list[object]] = []
    size = 2
    for f in sorted(files, key=lambda x: x.name):
        row: list[object] = [f.name, f.size, f.commitment, f.root]
        n = len(json.dumps(row)) + 1
        if part and size + n > _PART_BYTES:
            out[f"{_FILES_KEY}{len(out) - 1}"] = json.dumps(part, separators=(",", ":"))
            part, size = [], 2
        part.append(row)
        size += n
    out[f"{_FILES_KEY}{len(out) - 1}"] = json.dumps(part, separators=(",", ":"))
    return out


def is_dcp(metadata: dict[str, str]) -> bool:
    return metadata.get(MARK_KEY) is not None


def _hex32(x: object) -> bool:
    return isinstance(x, str) and len(x) == 64 and set(x) <= _HEX32


def decode(metadata: dict[str, str]) -> list[DataFile]:
    """The data files listed in ``metadata`` (strict: a malformed list is a FormatError)."""
    if metadata.get(MARK_KEY) != MARK_VALUE:
        raise FormatError("not a sealed DCP checkpoint metadata file (or a version this release does not know)")
    parts = sorted((k for k in metadata if k.startswith(_FILES_KEY)), key=lambda k: (len(k), k))
    if parts != [f"{_FILES_KEY}{i}" for i in range(len(parts))] or not parts:
        raise FormatError("the checkpoint metadata's file list is malformed")
    files: list[DataFile] = []
    for k in parts:
        rows = strict_loads(metadata[k], "the checkpoint metadata's file list")
        if not isinstance(rows, list):
            raise FormatError("the checkpoint metadata's file list is malformed")
        for row in rows:
            ok = isinstance(row, list) and len(row) == 4 and isinstance(row[0], str) and _io.is_data_name(row[0])
            ok = ok and type(row[1]) is int and 0 < row[1] < 1 << 62 and _hex32(row[2]) and _hex32(row[3])
            if not ok:
                raise FormatError("the checkpoint metadata's file list has a malformed entry")
            files.append(DataFile(row[0], row[1], row[2], row[3]))
    if len({f.name for f in files}) != len(files):
        raise FormatError("the checkpoint metadata lists a data file twice")
    return files


def check_present(directory: Path, files: list[DataFile]) -> None:
    """Every listed data file is there with its listed size, and no other data file is."""
    listed = {f.name: f for f in files}
    for name in _io.list_names(directory):
        if _io.is_data_name(name) and name not in listed:
            raise IntegrityError(f"{directory / name}: a data file the checkpoint metadata does not list "
                                 "(left from another save, or planted)")  # fmt: skip
    for f in files:
        size = _io.size_of(directory, f.name)
        if size is None:
            raise IntegrityError(f"{directory / f.name}: a data file the checkpoint metadata lists is missing")
        if size != f.size:
            raise IntegrityError(f"{directory / f.name}: {size} bytes, the checkpoint metadata lists {f.size} "
                                 "(truncated, swapped or stale)")  # fmt: skip

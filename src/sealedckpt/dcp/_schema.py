"""DCP's ``Metadata`` as strict JSON with its own schema (no pickle), and back.

Written: ``{"format", "version", "state_dict", "storage", "storage_meta"}``; ``state_dict`` maps
each fully qualified name to ``{"kind": "bytes"}`` or a tensor's dtype, size, properties and
chunks; ``storage`` lists where each item lives: ``[fqn, offset or null, file, key, kind]``.
Parsing is strict: unknown fields, types or dtypes are a FormatError. ``planner_data`` travels
next to this document through the structure codec.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import torch
from torch.distributed.checkpoint.metadata import (
    BytesStorageMetadata,
    ChunkStorageMetadata,
    Metadata,
    MetadataIndex,
    StorageMeta,
    TensorProperties,
    TensorStorageMetadata,
)

from .._json import strict_loads
from ..errors import FormatError

FORMAT = "sealedckpt-dcp/1"
KINDS = ("tensor", "object")
_MAX_DIMS = 64
_MEMORY_FORMATS = {
    "contiguous": torch.contiguous_format,
    "channels_last": torch.channels_last,
    "preserve": torch.preserve_format,
}
_FORMAT_NAMES = {v: k for k, v in _MEMORY_FORMATS.items()}


@dataclass(frozen=True)
class Location:
    """Where one stored item lives: a data file, the item's key in it, and its kind."""

    file: str
    key: str
    kind: str  # "tensor" or "object"


def _dtype_name(dt: torch.dtype) -> str:
    return str(dt).removeprefix("torch.")


def _dtype(name: object) -> torch.dtype:
    dt = getattr(torch, name, None) if isinstance(name, str) and name.isidentifier() else None
    if not isinstance(dt, torch.dtype):
        raise FormatError(f"checkpoint metadata names an unknown dtype {name!r}")
    return dt


def _tensor_json(md: TensorStorageMetadata) -> dict[str, Any]:
    p = md.properties
    if p.layout != torch.strided:
        raise FormatError(f"cannot record a tensor with layout {p.layout}")
    return {
        "kind": "tensor", "dtype": _dtype_name(p.dtype), "requires_grad": bool(p.requires_grad),
        "memory_format": _FORMAT_NAMES.get(p.memory_format, "contiguous"), "pin_memory": bool(p.pin_memory),
        "size": list(md.size), "chunks": [[list(c.offsets), list(c.sizes)] for c in md.chunks],
    }  # fmt: skip


def to_json(md: Metadata, storage: dict[MetadataIndex, Location]) -> str:
    """``md`` (its planner_data excepted) and the item locations as one strict JSON document."""
    sd: dict[str, Any] = {}
    for fqn, item in md.state_dict_metadata.items():
        sd[fqn] = {"kind": "bytes"} if isinstance(item, BytesStorageMetadata) else _tensor_json(item)
    rows = [[i.fqn, None if i.offset is None else list(i.offset), loc.file, loc.key, loc.kind]
            for i, loc in storage.items()]  # fmt: skip
    sm = md.storage_meta
    meta = None
    if sm is not None:
        cid = None if sm.checkpoint_id is None else str(sm.checkpoint_id)
        meta = {"checkpoint_id": cid, "save_id": sm.save_id, "modules": list(sm.modules)}
    doc = {"format": FORMAT, "version": md.version, "state_dict": sd, "storage": rows, "storage_meta": meta}
    return json.dumps(doc, separators=(",", ":"), allow_nan=False)


def _fields(obj: object, want: set[str], what: str) -> dict[str, Any]:
    if not isinstance(obj, dict) or set(obj) != want:
        raise FormatError(f"checkpoint metadata: malformed {what}")
    return obj


def _ints(x: object, what: str, n: int | None = None) -> list[int]:
    if not isinstance(x, list) or len(x) > _MAX_DIMS or (n is not None and len(x) != n):
        raise FormatError(f"checkpoint metadata: malformed {what}")
    out: list[int] = []
    for v in x:
        if type(v) is not int or not 0 <= v < 1 << 62:
            raise FormatError(f"checkpoint metadata: malformed {what}")
        out.append(v)
    return out


def _str_or_none(x: object, what: str) -> str | None:
    if x is not None and not isinstance(x, str):
        raise FormatError(f"checkpoint metadata: malformed {what}")
    return x


def _tensor_md(node: dict[str, Any], fqn: str) -> TensorStorageMetadata:
    want = {"kind", "dtype", "requires_grad", "memory_format", "pin_memory", "size", "chunks"}
    node = _fields(node, want, f"entry for {fqn!r}")
    if type(node["requires_grad"]) is not bool or type(node["pin_memory"]) is not bool:
        raise FormatError(f"checkpoint metadata: malformed entry for {fqn!r}")
    if node["memory_format"] not in _MEMORY_FORMATS:
        raise FormatError(f"checkpoint metadata: unknown memory format for {fqn!r}")
    size = _ints(node["size"], f"size of {fqn!r}")
    if not isinstance(node["chunks"], list):
        raise FormatError(f"checkpoint metadata: malformed chunks of {fqn!r}")
    chunks = []
    for c in node["chunks"]:
        if not isinstance(c, list) or len(c) != 2:
            raise FormatError(f"checkpoint metadata: malformed chunk of {fqn!r}")
        off, sizes = _ints(c[0], f"chunk of {fqn!r}", len(size)), _ints(c[1], f"chunk of {fqn!r}", len(size))
        if any(o + s > t for o, s, t in zip(off, sizes, size, strict=True)):
            raise FormatError(f"checkpoint metadata: a chunk of {fqn!r} lies outside the tensor")
        chunks.append(ChunkStorageMetadata(offsets=torch.Size(off), sizes=torch.Size(sizes)))
    fmt = _MEMORY_FORMATS[node["memory_format"]]
    props = TensorProperties(dtype=_dtype(node["dtype"]), requires_grad=node["requires_grad"], memory_format=fmt,
                             pin_memory=node["pin_memory"])  # fmt: skip
    return TensorStorageMetadata(properties=props, size=torch.Size(size), chunks=chunks)


def _storage(rows: object, sd: dict[str, Any], files: set[str]) -> dict[MetadataIndex, Location]:
    if not isinstance(rows, list):
        raise FormatError("checkpoint metadata: malformed storage list")
    out: dict[MetadataIndex, Location] = {}
    for row in rows:
        ok = isinstance(row, list) and len(row) == 5 and isinstance(row[0], str) and row[0] in sd
        ok = ok and isinstance(row[2], str) and row[2] in files and isinstance(row[3], str) and row[4] in KINDS
        if not ok:
            raise FormatError("checkpoint metadata: a malformed or dangling storage entry")
        offset = None if row[1] is None else _ints(row[1], f"offset of {row[0]!r}")
        if (row[4] == "tensor") != isinstance(sd[row[0]], TensorStorageMetadata) or (offset is None) != (
            row[4] == "object"
        ):
            raise FormatError(f"checkpoint metadata: the storage entry of {row[0]!r} does not match its kind")
        idx = MetadataIndex(row[0], offset)
        if idx in out:
            raise FormatError(f"checkpoint metadata: {row[0]!r} is stored twice")
        out[idx] = Location(row[2], row[3], row[4])
    return out


def from_json(text: str, files: set[str]) -> tuple[Metadata, dict[MetadataIndex, Location]]:
    """Parse the document :func:`to_json` writes; every storage entry must name one of ``files``."""
    want = {"format", "version", "state_dict", "storage", "storage_meta"}
    doc = _fields(strict_loads(text, "checkpoint metadata"), want, "document")
    if doc["format"] != FORMAT:
        raise FormatError(f"checkpoint metadata format {doc['format']!r} is not {FORMAT!r}")
    if not isinstance(doc["state_dict"], dict):
        raise FormatError("checkpoint metadata: malformed state_dict")
    sd: dict[str, Any] = {}
    for fqn, node in doc["state_dict"].items():
        if isinstance(node, dict) and node.get("kind") == "bytes":
            _fields(node, {"kind"}, f"entry for {fqn!r}")
            sd[fqn] = BytesStorageMetadata()
        elif isinstance(node, dict) and node.get("kind") == "tensor":
            sd[fqn] = _tensor_md(node, fqn)
        else:
            raise FormatError(f"checkpoint metadata: malformed entry for {fqn!r}")
    storage = _storage(doc["storage"], sd, files)
    sm = None
    if doc["storage_meta"] is not None:
        m = _fields(doc["storage_meta"], {"checkpoint_id", "save_id", "modules"}, "storage_meta")
        mods = m["modules"]
        if not isinstance(mods, list) or not all(isinstance(x, str) for x in mods):
            raise FormatError("checkpoint metadata: malformed storage_meta")
        sm = StorageMeta(checkpoint_id=_str_or_none(m["checkpoint_id"], "checkpoint_id"),
                         save_id=_str_or_none(m["save_id"], "save_id"), modules=mods)  # fmt: skip
    md = Metadata(state_dict_metadata=sd, storage_meta=sm, version=_str_or_none(doc["version"], "version"))
    return md, storage

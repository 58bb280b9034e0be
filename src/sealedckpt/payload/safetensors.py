"""The plaintext payload: a safetensors file, built and parsed strictly (no torch here).

Parsing follows the safetensors rules: 8-byte little-endian header length, a JSON object
with no duplicate keys, known dtypes, non-negative integer shapes, and data offsets that
are contiguous from 0 with no gap or overlap and cover the data section exactly, with
``end - begin == numel * itemsize``.
"""

from __future__ import annotations

import json
import operator
import struct
from dataclasses import dataclass
from typing import Any, NamedTuple

from .._json import strict_loads
from ..container import SealedReader
from ..errors import FormatError
from . import structure as st

MAX_HEADER_LEN = 100_000_000
ITEMSIZE = {
    "BOOL": 1, "U8": 1, "I8": 1, "F8_E5M2": 1, "F8_E4M3": 1,
    "I16": 2, "U16": 2, "F16": 2, "BF16": 2,
    "I32": 4, "U32": 4, "F32": 4,
    "I64": 8, "U64": 8, "F64": 8,
}  # fmt: skip
STRUCTURE_KEY = "sealedckpt.structure"
VERSION_KEY = "sealedckpt.version"
STRUCTURE_VERSION = "1"


class Entry(NamedTuple):
    name: str
    dtype: str
    shape: tuple[int, ...]
    begin: int  # offsets relative to the start of the data section
    end: int

    @property
    def nbytes(self) -> int:
        return self.end - self.begin


@dataclass(frozen=True)
class Layout:
    header: bytes  # the 8-byte length prefix and the padded JSON header
    entries: list[Entry]

    @property
    def data_start(self) -> int:
        return len(self.header)

    @property
    def payload_len(self) -> int:
        return self.data_start + (self.entries[-1].end if self.entries else 0)


def build_layout(specs: list[tuple[str, str, tuple[int, ...], int]], metadata: dict[str, str]) -> Layout:
    """Lay out ``(name, dtype, shape, nbytes)`` entries back to back, in the order given."""
    header: dict[str, Any] = {"__metadata__": metadata}
    entries = []
    pos = 0
    for name, dtype, shape, nbytes in specs:
        header[name] = {"dtype": dtype, "shape": list(shape), "data_offsets": [pos, pos + nbytes]}
        entries.append(Entry(name, dtype, shape, pos, pos + nbytes))
        pos += nbytes
    raw = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    raw += b" " * (-(8 + len(raw)) % 8)
    return Layout(struct.pack("<Q", len(raw)) + raw, entries)


def strict_json(raw: bytes | str, what: str) -> Any:
    """Parse JSON rejecting duplicate keys, NaN/Infinity literals, bad UTF-8 and deep nesting."""
    return strict_loads(raw, what)


def header_len(prefix: bytes, payload_len: int) -> int:
    """Length of the JSON header from the payload's first 8 bytes, capped and bounded."""
    if payload_len < 8 or len(prefix) < 8:
        raise FormatError("payload too short to be a safetensors file")
    (n,) = struct.unpack_from("<Q", prefix, 0)
    if n < 2 or n > MAX_HEADER_LEN or 8 + n > payload_len:
        raise FormatError(f"payload header length {n} out of bounds")
    return int(n)


def parse_header(raw: bytes, data_len: int) -> tuple[dict[str, str], list[Entry]]:
    """Validate a safetensors JSON header against a data section of ``data_len`` bytes."""
    if not raw.startswith(b"{"):
        raise FormatError("payload header does not start with '{'")
    obj = strict_json(raw.rstrip(b" "), "payload header")
    if not isinstance(obj, dict):
        raise FormatError("payload header is not a JSON object")
    meta = obj.pop("__metadata__", {})
    if not isinstance(meta, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in meta.items()):
        raise FormatError("payload __metadata__ must map strings to strings")
    entries = []
    for name, info in obj.items():
        if type(info) is not dict or info.keys() != _ENTRY_FIELDS:
            raise FormatError(f"payload entry {name!r} must have exactly dtype, shape and data_offsets")
        dtype, shape, offs = info["dtype"], info["shape"], info["data_offsets"]
        itemsize = ITEMSIZE.get(dtype) if type(dtype) is str else None
        if itemsize is None:
            raise FormatError(f"payload entry {name!r} has unknown dtype {dtype!r}")
        if type(shape) is not list or len(shape) > 64:
            raise FormatError(f"payload entry {name!r} has an invalid shape")
        numel = nonzero = 1
        for d in shape:  # at most 64 dims below 2**63 each: exact big-int arithmetic, no overflow
            if type(d) is not int or not 0 <= d < _U63:
                raise FormatError(f"payload entry {name!r} has an invalid shape")
            numel *= d
            nonzero *= d or 1
        if nonzero >= _U63:
            raise FormatError(f"payload entry {name!r} has a shape too large to represent")
        begin, end = offs if type(offs) is list and len(offs) == 2 else (None, None)
        if not (type(begin) is int and type(end) is int and 0 <= begin <= end < _U63):
            raise FormatError(f"payload entry {name!r} has invalid data_offsets")
        if end - begin != numel * itemsize:
            raise FormatError(f"payload entry {name!r}: byte length does not match shape and dtype")
        entries.append(Entry(name, dtype, tuple(shape), begin, end))
    entries.sort(key=_BY_OFFSETS)
    pos = 0
    for e in entries:
        if e.begin != pos:
            raise FormatError(
                f"payload entry {e.name!r} overlaps or leaves a gap (begins at {e.begin}, expected {pos})"
            )
        pos = e.end
    if pos != data_len:
        raise FormatError(f"payload data section is {data_len} bytes but entries cover {pos}")
    return meta, entries


_U63 = 1 << 63
_ENTRY_FIELDS = frozenset({"dtype", "shape", "data_offsets"})
_BY_OFFSETS = operator.attrgetter("begin", "end")


def structure_metadata(structure: Any) -> dict[str, str]:
    """The payload metadata that carries a structure (version first, as every writer lays it out)."""
    return {VERSION_KEY: STRUCTURE_VERSION, STRUCTURE_KEY: st.dumps(structure)}


def read_header(reader: SealedReader) -> tuple[int, dict[str, str], list[Entry]]:
    """Decrypt and parse a sealed payload's header: (data section start, metadata, entries)."""
    total = reader.content.payload_len
    hlen = header_len(reader.read_prefix(8), total)
    if 8 + hlen != reader.content.head_len:
        raise FormatError(
            f"payload header ends at {8 + hlen}, but the file header says the head is {reader.content.head_len} bytes"
        )
    meta, entries = parse_header(reader.read_prefix(8 + hlen)[8:], total - 8 - hlen)
    return 8 + hlen, meta, entries


def reframe(raw_header: bytes, data_len: int) -> Layout:
    """A new header for a plain safetensors file: same entries and data section, plus the
    sealedckpt structure (a flat dict of tensors), so ``sealedckpt.load`` returns a state_dict.
    Needs no torch and never touches the data bytes."""
    meta, entries = parse_header(raw_header, data_len)
    if any(k.startswith("sealedckpt.") for k in meta):
        raise FormatError("input safetensors metadata already uses the reserved 'sealedckpt.' keys")
    structure = st.state_dict([(e.name, e.dtype, e.shape) for e in entries])
    new_meta = {**meta, **structure_metadata(structure)}
    return build_layout([(e.name, e.dtype, e.shape, e.nbytes) for e in entries], new_meta)

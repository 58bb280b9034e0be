"""The payload index: header and structure read and fully validated before any tensor memory
is allocated. Both the full load and the lazy reader start here."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..container import SealedReader
from ..errors import FormatError
from . import safetensors as pl
from . import structure as st
from .views import np_dtype, numpy_st_dtype

_DIM_LIMIT = 1 << 62
_FLOATING = frozenset(d for d in pl.ITEMSIZE if d.startswith(("F", "BF")))


@dataclass(frozen=True)
class PayloadIndex:
    """The payload's parsed and validated header and structure (no tensor data read yet)."""

    data_start: int
    entries: dict[str, pl.Entry]  # in data order
    metadata: dict[str, str]  # the payload's own __metadata__, sealedckpt keys removed
    structure: Any
    tensors: list[dict[str, Any]] = field(default_factory=list)  # every tensor node, in walk order
    arrays: list[dict[str, Any]] = field(default_factory=list)  # every ndarray node
    named: dict[str, dict[str, Any]] = field(default_factory=dict)  # dotted path -> first tensor there

    def leaf(self, node: dict[str, Any], path: str | None) -> None:
        """Validate a leaf node against the entries (the ``structure.walk`` visitor)."""
        tag = node["t"]
        if tag == "tensor":
            self._check_tensor(node)
            self.tensors.append(node)
            if path is not None:
                self.named.setdefault(path or "<root>", node)
        elif tag == "ndarray":
            e = self._entry(node["e"])
            dt = np_dtype(node["dtype"])
            if numpy_st_dtype(dt) != e.dtype or list(e.shape) != node["shape"]:
                raise st.invalid("ndarray matches its entry")
            self.arrays.append(node)
        elif tag == "npscalar":
            if numpy_st_dtype(np_dtype(node["dtype"])) is None:
                raise st.invalid("numpy scalar")
        elif tag == "size" and not all(type(d) is int and 0 <= d < 1 << 63 for d in node["v"]):
            raise st.invalid("size value")

    def sequence(self, items: list[Any], is_tuple: bool) -> None:
        """Nothing to check beyond what ``walk`` checks."""

    def mapping(self, items: list[tuple[Any, Any]], node: dict[str, Any], meta: Any) -> None:
        """Nothing to check beyond what ``walk`` checks (keys are checked when built)."""

    def composite(self, node: dict[str, Any], items: list[Any]) -> None:
        """Nothing to check beyond what ``walk`` checks (members are checked when built)."""

    def _entry(self, name: str) -> pl.Entry:
        e = self.entries.get(name)
        if e is None:
            raise FormatError(f"structure refers to a missing payload entry {name!r}")
        return e

    def _check_tensor(self, node: dict[str, Any]) -> None:
        e = self.entries.get(node["e"])
        if e is None:
            raise FormatError(f"structure refers to a missing payload entry {node['e']!r}")
        dtype, shape, stride, offset = node["dtype"], node["shape"], node["stride"], node["offset"]
        itemsize = pl.ITEMSIZE.get(dtype)
        if itemsize is None:
            raise st.invalid("tensor dtype")
        if node.get("rg") and dtype not in _FLOATING:
            raise st.invalid("only a floating point tensor can require grad")
        if not (len(shape) == len(stride) <= 64 and 0 <= offset < _DIM_LIMIT):
            raise st.invalid("tensor shape/stride/offset")
        last, numel = offset, 1  # at most 64 dims below 2**62 each: exact big-int arithmetic
        for d, s in zip(shape, stride, strict=True):
            if not (type(d) is int and type(s) is int and 0 <= d < _DIM_LIMIT and 0 <= s < _DIM_LIMIT):
                raise st.invalid("tensor shape/stride/offset")
            numel *= d or 1
            last += (d - 1) * s
        if numel >= 1 << 63:
            raise st.invalid("tensor shape/stride/offset")
        if (last + 1) * itemsize > e.end - e.begin and 0 not in shape:
            raise st.invalid("tensor view within its storage")


def read_index(reader: SealedReader) -> PayloadIndex:
    """Read, authenticate and validate the payload header and its structure."""
    data_start, meta, entry_list = pl.read_header(reader)
    reader.release_prefix()
    if meta.get(pl.VERSION_KEY) != pl.STRUCTURE_VERSION or pl.STRUCTURE_KEY not in meta:
        raise FormatError("payload carries no sealedckpt structure of a known version")
    structure = pl.strict_json(meta[pl.STRUCTURE_KEY], "structure")
    own = {k: v for k, v in meta.items() if not k.startswith("sealedckpt.")}
    index = PayloadIndex(data_start, {e.name: e for e in entry_list}, own, structure)
    st.walk(structure, index)
    return index

"""Lazy, per-tensor reads of a sealed checkpoint, like ``safetensors.safe_open``.

Only the payload header's chunks and the chunks that hold what is asked for are read and
decrypted; each is authenticated (AES-GCM under the file key, and, under a signature policy,
against its signed digest) before any byte of it is used. A lazy read therefore vouches for what it
returns, not for the rest of the file: use ``load`` or ``verify`` to check every chunk.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any, BinaryIO

import torch

from ..container import SealedReader
from ..errors import FormatError
from . import safetensors as pl
from .codec import PayloadIndex, byte_view, read_index, view_tensor


def _tensor_leaves(node: Any, path: str, out: dict[str, dict[str, Any]]) -> None:
    if isinstance(node, list):
        for i, v in enumerate(node):
            _tensor_leaves(v, f"{path}.{i}" if path else str(i), out)
        return
    if not isinstance(node, dict):
        return
    tag = node["t"]
    if tag == "tensor":
        out.setdefault(path or "<root>", node)
    elif tag == "tuple":
        for i, v in enumerate(node["v"]):
            _tensor_leaves(v, f"{path}.{i}" if path else str(i), out)
    elif tag in ("dict", "odict"):
        for k, v in node["v"]:
            key = k if isinstance(k, (str, int, float, bool)) or k is None else None
            if key is not None:
                _tensor_leaves(v, f"{path}.{key}" if path else str(key), out)


class TensorSlice:
    """``open(...).get_slice(name)[...]``: reads only the rows (first-dimension range) asked for."""

    def __init__(self, owner: SealedFile, node: dict[str, Any]) -> None:
        self._owner, self._node = owner, node

    def get_shape(self) -> list[int]:
        return list(self._node["shape"])

    def get_dtype(self) -> str:
        return str(self._node["dtype"])

    def __getitem__(self, idx: Any) -> torch.Tensor:
        node = self._node
        idx = idx if isinstance(idx, tuple) else (idx,)
        shape, stride = node["shape"], node["stride"]
        if not idx or not shape:
            return self._owner._materialize(node)[idx]
        first, rest = idx[0], idx[1:]
        if isinstance(first, int):
            n = shape[0]
            i = first + n if first < 0 else first
            if not 0 <= i < n:
                raise IndexError(f"index {first} is out of bounds for dimension 0 with size {n}")
            sub = dict(node, shape=shape[1:], stride=stride[1:], offset=node["offset"] + i * stride[0])
            t = self._owner._materialize(sub)
            return t[rest] if rest else t
        if isinstance(first, slice) and (first.step is None or first.step > 0):
            start, stop, step = first.indices(shape[0])
            count = len(range(start, stop, step))
            sub = dict(node, shape=[count, *shape[1:]], stride=[stride[0] * step, *stride[1:]],
                       offset=node["offset"] + (start * stride[0] if count else 0))  # fmt: skip
            t = self._owner._materialize(sub)
            return t[(slice(None), *rest)] if rest else t
        return self._owner._materialize(node)[idx]


class SealedFile:
    """An opened sealed checkpoint: ``keys()``, ``metadata()``, ``get_tensor()``, ``get_slice()``.

    Keys are the dotted paths of every tensor in the checkpoint (``model.layer.weight``,
    ``optimizer.state.0.exp_avg``); for a plain state_dict they are its keys.
    """

    def __init__(
        self, reader: SealedReader, device: str | torch.device = "cpu", closer: BinaryIO | None = None
    ) -> None:
        self._reader = reader
        self._device = torch.device(device)
        self._closer = closer
        self._index: PayloadIndex = read_index(reader)
        self._entries = {e.name: e for e in self._index.entries}
        self._tensors: dict[str, dict[str, Any]] = {}
        _tensor_leaves(self._index.structure, "", self._tensors)

    def keys(self) -> list[str]:
        return list(self._tensors)

    def __iter__(self) -> Iterator[str]:
        return iter(self._tensors)

    def __contains__(self, name: object) -> bool:
        return name in self._tensors

    def metadata(self) -> dict[str, str]:
        """The payload's own metadata (e.g. from a sealed safetensors file), overlaid with the
        file's public, authenticated metadata."""
        return {**self._index.metadata, **self.content_metadata}

    @property
    def content_metadata(self) -> dict[str, str]:
        return dict(self._reader.content.metadata)

    def _node(self, name: str) -> dict[str, Any]:
        try:
            return self._tensors[name]
        except KeyError:
            raise KeyError(f"no tensor named {name!r} in this checkpoint") from None

    def get_tensor(self, name: str) -> torch.Tensor:
        return self._materialize(self._node(name))

    def get_slice(self, name: str) -> TensorSlice:
        return TensorSlice(self, self._node(name))

    def _materialize(self, node: dict[str, Any]) -> torch.Tensor:
        """Read the byte span a (possibly sliced) view covers, authenticate, build the tensor."""
        size = pl.ITEMSIZE[node["dtype"]]
        shape, stride, offset = node["shape"], node["stride"], node["offset"]
        if math.prod(shape) == 0:
            span = 0
        else:
            span = (sum((d - 1) * s for d, s in zip(shape, stride, strict=True)) + 1) * size
        entry = self._entries[node["e"]]
        lo = offset * size
        if lo + span > entry.nbytes:
            raise FormatError("tensor view lies outside its payload entry")
        buf = torch.empty(span, dtype=torch.uint8)
        if span:
            start = self._index.data_start + entry.begin + lo
            self._reader.decrypt_regions([(start, byte_view(buf.numpy()))], only_covering=True)
            if node["dtype"] == "BOOL" and bool((buf > 1).any()):
                raise FormatError("bool tensor holds bytes other than 0 and 1")
        t = view_tensor(dict(node, offset=0), buf)
        return t if self._device.type == "cpu" else t.to(self._device)

    def close(self) -> None:
        if self._closer is not None:
            self._closer.close()
            self._closer = None

    def __enter__(self) -> SealedFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

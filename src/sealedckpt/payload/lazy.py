"""Lazy, per-tensor reads of a sealed checkpoint, like ``safetensors.safe_open``.

Only the payload header's chunks and the chunks that hold what is asked for are read and
decrypted; each is authenticated (AES-GCM under the file key, and, when the file is signed,
against its signed digest) before any byte of it is used. A lazy read therefore vouches for what it
returns, not for the rest of the file: use ``load`` or ``verify`` to check every chunk.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, BinaryIO

import torch

from ..container import SealedReader, Signer
from .decode import Builder
from .devices import lazy_device
from .index import read_index
from .structure import contiguous_strides, find, walk
from .views import ST_TO_TORCH, byte_view, check_bool_bytes, flat_bytes, np_dtype, view_span, view_tensor


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


class _LazyBuilder(Builder):
    """The load-side builder, with tensors and arrays read one at a time through a SealedFile."""

    def __init__(self, owner: SealedFile) -> None:
        super().__init__({}, {})
        self._owner = owner

    def leaf(self, node: dict[str, Any], path: str | None) -> Any:
        if node["t"] == "tensor":
            return self._owner._materialize(node)
        if node["t"] == "ndarray":
            n = self._owner._index.entries[node["e"]]
            flat = self._owner._materialize({**node, "t": "tensor", "dtype": "U8", "shape": [n.end - n.begin],
                                             "stride": [1], "offset": 0, "device": "cpu"})  # fmt: skip
            return flat.numpy().view(np_dtype(node["dtype"])).reshape(node["shape"])
        return super().leaf(node, path)


class SealedFile:
    """An opened sealed checkpoint: ``keys()``, ``metadata()``, ``get_tensor()``, ``get_slice()``.

    Keys are the dotted paths of every tensor in the checkpoint (``model.layer.weight``,
    ``optimizer.state.0.exp_avg``); for a plain state_dict they are its keys.
    """

    def __init__(
        self, reader: SealedReader, device: str | torch.device = "cpu", closer: BinaryIO | None = None
    ) -> None:
        self._reader = reader
        self._device = lazy_device(device)
        self._closer = closer
        self._index = read_index(reader)
        self._tensors = self._index.named

    def keys(self) -> list[str]:
        return list(self._tensors)

    def __iter__(self) -> Iterator[str]:
        return iter(self._tensors)

    def __contains__(self, name: object) -> bool:
        return name in self._tensors

    @property
    def signature_status(self) -> str:
        """``"unsigned"``, ``"signed, not verified"`` (not every chunk was read yet) or ``"verified"``."""
        return self._reader.signature_status

    @property
    def signers(self) -> list[Signer]:
        """The signers, once every chunk was read and checked against their signed digests; else empty."""
        return self._reader.signers

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

    def __getitem__(self, name: str) -> torch.Tensor:
        return self.get_tensor(name)

    def get(self, name: str) -> Any:
        """Any part of the checkpoint by its dotted path (``"epoch"``, ``"optimizer.param_groups"``,
        ``"model"``), rebuilt as ``load`` would; the tensors in it are read lazily."""
        try:
            node = find(self._index.structure, name)
        except KeyError:
            raise KeyError(f"nothing named {name!r} in this checkpoint") from None
        return walk(node, _LazyBuilder(self), name)

    def get_slice(self, name: str) -> TensorSlice:
        return TensorSlice(self, self._node(name))

    def direct_region(self, name: str, out: torch.Tensor) -> tuple[int, memoryview] | None:
        """``(payload offset, out's bytes)`` when tensor ``name`` can be decrypted straight into
        ``out`` (CPU, contiguous, same dtype and shape, stored contiguous, not bool); else None.
        Hand such regions to :meth:`read_regions`."""
        node = self._node(name)
        dtype = ST_TO_TORCH.get(node["dtype"])
        ok = out.device.type == "cpu" and out.is_contiguous() and out.dtype is dtype and dtype is not torch.bool
        ok = ok and list(out.shape) == node["shape"] and node["stride"] == contiguous_strides(node["shape"])
        if not ok or out.numel() == 0:
            return None
        lo, _ = view_span(node)
        start = self._index.data_start + self._index.entries[node["e"]].begin + lo
        return start, byte_view(flat_bytes(out).numpy())

    def read_regions(self, regions: list[tuple[int, memoryview]]) -> None:
        """Decrypt the chunks under ``regions`` (sorted, non-overlapping) straight into them, in
        parallel; every chunk is authenticated first. On failure the regions hold garbage."""
        self._reader.decrypt_regions(regions, only_covering=True)

    def _materialize(self, node: dict[str, Any]) -> torch.Tensor:
        """Read the byte span a (possibly sliced) view covers, authenticate, build the tensor."""
        lo, hi = view_span(node)
        buf = torch.empty(hi - lo, dtype=torch.uint8)
        local = dict(node, offset=0)
        if hi > lo:
            start = self._index.data_start + self._index.entries[node["e"]].begin + lo
            self._reader.decrypt_regions([(start, byte_view(buf.numpy()))], only_covering=True)
            if node["dtype"] == "BOOL":
                check_bool_bytes(local, buf)
        t = view_tensor(local, buf)
        return t if self._device.type == "cpu" else t.to(self._device)

    def close(self) -> None:
        if self._closer is not None:
            self._closer.close()
            self._closer = None

    def __enter__(self) -> SealedFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

"""A point-in-time copy of a checkpoint for background saves (imports torch; loaded on demand).

Tensors are copied storage by storage into host buffers that are reused from one snapshot to
the next when their sizes match, so views that share a storage stay views of one buffer and a
steady training loop allocates (and page-faults) its snapshot memory once. Containers (list,
tuple, dict, OrderedDict with its ``_metadata``) are rebuilt, numpy arrays copied; immutable
leaves are shared. At most one checkpoint's tensor bytes are held: :meth:`Snapshotter.take`
must not be called again until the previous snapshot was written.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import types
from collections import OrderedDict
from typing import Any

import numpy as np
import torch

from ..errors import UnsupportedTypeError
from ..payload import extra

_LEAVES = (type(None), bool, int, float, str, bytes, torch.dtype, torch.device, torch.Size)
MAX_DEPTH = 1000


class Snapshotter:
    """Copies objects into reusable host buffers; ``nbytes`` is what the buffers hold."""

    def __init__(self) -> None:
        self._pool: dict[int, list[torch.Tensor]] = {}
        self._used: dict[int, list[torch.Tensor]] = {}
        self._copies: dict[tuple[str, int, int], torch.Tensor] = {}
        self._stack: set[int] = set()
        self.event: Any = None  # a CUDA event the writer waits on before reading the buffers

    @property
    def nbytes(self) -> int:
        return sum(b.numel() for bufs in self._pool.values() for b in bufs)

    def take(self, obj: Any) -> Any:
        """A copy of ``obj`` that later changes to ``obj`` (or its tensors) cannot reach."""
        self._used, self._copies, self._stack = {}, {}, set()
        try:
            out = self._copy(obj, "", 0)
            if any(k[0].startswith("cuda") for k in self._copies):
                self.event = torch.cuda.Event()  # type: ignore[no-untyped-call]
                self.event.record()
            else:
                self.event = None
        finally:
            self._pool = self._used  # buffers not needed this time are freed
            self._copies = {}
        return out

    def ready(self) -> None:
        """Block until every device-to-host copy of the last snapshot has landed."""
        if self.event is not None:
            self.event.synchronize()

    def _copy(self, obj: Any, path: str, depth: int) -> Any:
        if depth > MAX_DEPTH:
            raise UnsupportedTypeError(path, f"nested deeper than {MAX_DEPTH} levels")
        t = type(obj)
        if t in _LEAVES:
            return obj
        if t is torch.Tensor or t is torch.nn.Parameter:
            return self._tensor(obj)
        if t is np.ndarray or isinstance(obj, np.generic):
            return obj.copy()
        if t in (list, tuple, dict, OrderedDict):
            if id(obj) in self._stack:
                raise UnsupportedTypeError(path, "the object contains itself (a reference cycle)")
            self._stack.add(id(obj))
            try:
                return self._container(obj, path, depth)
            finally:
                self._stack.discard(id(obj))
        if extra.encode_leaf(obj, path) is not None:  # datetime, Decimal, UUID, Path, Enum...: immutable
            return obj
        return self._composite(obj, path, depth)

    def _composite(self, obj: Any, path: str, depth: int) -> Any:
        """Sets, namespaces and registered dataclasses, rebuilt around copies of their members."""
        t = type(obj)
        if t in (set, frozenset):
            return t(self._copy(m, path, depth + 1) for m in obj)
        if t in (argparse.Namespace, types.SimpleNamespace):
            return t(**{k: self._copy(v, f"{path}.{k}", depth + 1) for k, v in vars(obj).items()})
        if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
            _, fields = extra.dataclass_fields(obj, path)  # refuses an unregistered class now, not later
            out = copy.copy(obj)
            for k, v in fields:
                object.__setattr__(out, k, self._copy(v, f"{path}.{k}", depth + 1))
            return out
        raise UnsupportedTypeError(path, f"type {t.__module__}.{t.__qualname__} cannot be stored without pickle")

    def _container(self, obj: Any, path: str, depth: int) -> Any:
        def sub(k: object) -> str:
            return f"{path}.{k}" if path else str(k)

        if type(obj) is list:
            return [self._copy(v, sub(i), depth + 1) for i, v in enumerate(obj)]
        if type(obj) is tuple:
            return tuple(self._copy(v, sub(i), depth + 1) for i, v in enumerate(obj))
        items = [(self._copy(k, sub(k), depth + 1), self._copy(v, sub(k), depth + 1)) for k, v in obj.items()]
        if type(obj) is dict:
            return dict(items)
        out: OrderedDict[Any, Any] = OrderedDict(items)
        meta = getattr(obj, "_metadata", None)
        if meta is not None:
            out._metadata = copy.deepcopy(meta)  # type: ignore[attr-defined]
        return out

    def _buffer(self, nbytes: int, pinned: bool) -> torch.Tensor:
        free = self._pool.get(nbytes)
        buf = free.pop() if free else torch.empty(nbytes, dtype=torch.uint8, pin_memory=pinned)
        self._used.setdefault(nbytes, []).append(buf)
        return buf

    def _tensor(self, t: torch.Tensor) -> torch.Tensor:
        if t.layout != torch.strided or t.is_quantized or t.device.type == "meta":
            return t  # the encoder refuses these with its own message
        data = t.detach()
        if data.is_neg() or data.is_conj():
            data = data.resolve_neg().resolve_conj()
        storage = data.untyped_storage()
        nbytes = storage.nbytes()
        key = (str(data.device), storage.data_ptr(), nbytes)
        whole = self._copies.get(key) if nbytes else None
        if whole is None:
            cuda = data.device.type == "cuda"
            whole = self._buffer(nbytes, pinned=cuda)
            src = torch.empty(0, dtype=torch.uint8, device=data.device).set_(storage)
            whole.copy_(src, non_blocking=cuda)
            if nbytes:
                self._copies[key] = whole
        view = torch.empty(0, dtype=data.dtype).set_(
            whole.untyped_storage(), data.storage_offset(), data.shape, data.stride()
        )
        if type(t) is torch.nn.Parameter:
            return torch.nn.Parameter(view, requires_grad=t.requires_grad)
        return view.requires_grad_(t.requires_grad)

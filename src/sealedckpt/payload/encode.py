"""Saving: a checkpoint object -> a safetensors payload plan (no pickle anywhere).

Tensors become safetensors entries (one per distinct storage, so tied weights are stored once);
everything else becomes the structure (docs/FORMAT.md §9.2).
"""

from __future__ import annotations

import argparse
import base64
import dataclasses
import datetime
import decimal
import enum
import json
import math
import types
import uuid
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, TypeVar

import numpy as np
import torch

from ..container.format import default_chunk_log2
from ..errors import UnsupportedTypeError
from . import extra
from . import safetensors as pl
from . import structure as st
from .views import TORCH_TO_ST, byte_view, numpy_st_dtype

T = TypeVar("T")
_COMPOSITES = (set, frozenset, argparse.Namespace, types.SimpleNamespace)
_KEY_TYPES = (
    str, int, float, bool, bytes, tuple, frozenset, complex, datetime.datetime, datetime.date, datetime.time,
    datetime.timedelta, decimal.Decimal, uuid.UUID, *extra.PATHS.values(),
)  # fmt: skip


@dataclass
class _Storage:
    name: str
    dtype: str  # safetensors dtype of the entry
    shape: tuple[int, ...]
    nbytes: int
    source: Any  # a tensor storage or ndarray whose bytes are the entry
    refs: list[dict[str, Any]] = field(default_factory=list)


@dataclass(frozen=True)
class PayloadPlan:
    """A checkpoint laid out as safetensors bytes, ready to stream."""

    layout: pl.Layout
    sources: list[Any]

    @property
    def payload_len(self) -> int:
        return self.layout.payload_len

    def segments(self) -> Iterator[memoryview]:
        yield memoryview(self.layout.header)
        for src in self.sources:
            yield _bytes_view(src)


def _bytes_view(src: Any) -> memoryview:
    if isinstance(src, np.ndarray):
        return byte_view(src) if src.size else memoryview(b"")
    storage: torch.UntypedStorage = src
    if storage.nbytes() == 0:
        return memoryview(b"")
    t = torch.empty(0, dtype=torch.uint8, device=storage.device).set_(storage)
    if t.device.type != "cpu":
        t = t.cpu()
    return byte_view(t.numpy())


def _check_text(s: str, path: str) -> None:
    try:
        s.encode("utf-8")
    except UnicodeEncodeError:
        raise UnsupportedTypeError(path, "a string with lone surrogates cannot be stored as UTF-8") from None


def _unsupported_hint(obj: object) -> str | None:
    if callable(getattr(obj, "state_dict", None)):  # a module, an optimizer, a scheduler...
        return "save its state instead: sealedckpt.save(obj.state_dict(), path, ...)"
    if isinstance(obj, dict):
        return "convert it with dict(...) first"
    if dataclasses.is_dataclass(obj):
        return extra.REGISTER_HINT
    if isinstance(obj, torch.Tensor):
        return "tensor subclasses are not stored; save a plain tensor (t.detach().clone() as torch.Tensor)"
    return None


class _Encoder:
    def __init__(self) -> None:
        self.storages: dict[tuple[str, int, int], _Storage] = {}
        self.order: list[_Storage] = []
        self.names: set[str] = {"__metadata__"}
        self._stack: set[int] = set()

    def _name(self, path: str) -> str:
        base = path or "<root>"
        name, i = base, 1
        while name in self.names:
            name, i = f"{base}~{i}", i + 1
        self.names.add(name)
        return name

    def encode(self, obj: Any, path: str, depth: int = 0) -> Any:
        if depth > st.MAX_DEPTH:
            raise UnsupportedTypeError(path, f"nested deeper than {st.MAX_DEPTH} levels")
        t = type(obj)
        if obj is None or t is bool or t is int:
            return obj
        if t is str:
            if not obj.isascii():
                _check_text(obj, path)
            return obj
        if t is float:
            if math.isfinite(obj):
                return obj
            return st.tagged("float", "nan" if math.isnan(obj) else ("inf" if obj > 0 else "-inf"))
        if t is bytes:
            return st.tagged("bytes", base64.b64encode(obj).decode("ascii"))
        if t is torch.Tensor or t is torch.nn.Parameter:
            return self._tensor(obj, path)
        if t is np.ndarray:
            return self._ndarray(obj, path)
        if isinstance(obj, np.generic):
            return self._npscalar(obj, path)
        if t is torch.dtype:
            return st.tagged("dtype", str(obj).removeprefix("torch."))
        if t is torch.device:
            return st.tagged("device", str(obj))
        if t is torch.Size:
            return st.tagged("size", list(obj))
        node = extra.encode_leaf(obj, path)
        if node is not None:
            return node
        composite = t in _COMPOSITES or (dataclasses.is_dataclass(obj) and not isinstance(obj, type))
        if t in (list, tuple, dict, OrderedDict) or composite:
            if id(obj) in self._stack:
                raise UnsupportedTypeError(path, "the object contains itself (a reference cycle)")
            self._stack.add(id(obj))
            try:
                return self._composite(obj, path, depth) if composite else self._container(obj, path, depth)
            finally:
                self._stack.discard(id(obj))
        raise UnsupportedTypeError(
            path, f"type {t.__module__}.{t.__qualname__} cannot be stored without pickle", hint=_unsupported_hint(obj)
        )

    def _container(self, obj: Any, path: str, depth: int) -> Any:
        def sub(k: object) -> str:
            return f"{path}.{k}" if path else str(k)

        if type(obj) is list:
            return [self.encode(v, sub(i), depth + 1) for i, v in enumerate(obj)]
        if type(obj) is tuple:
            return st.tagged("tuple", [self.encode(v, sub(i), depth + 1) for i, v in enumerate(obj)])
        items = [[self._key(k, sub(k), depth + 1), self.encode(v, sub(k), depth + 1)] for k, v in obj.items()]
        if type(obj) is dict:
            return st.tagged("dict", items)
        out = st.tagged("odict", items)
        meta = getattr(obj, "_metadata", None)
        if meta is not None:
            out["meta"] = self.encode(meta, sub("_metadata"), depth + 1)
        return out

    def _composite(self, obj: Any, path: str, depth: int) -> dict[str, Any]:
        """A set or frozenset (members sorted by their JSON), a namespace or a registered dataclass."""
        t = type(obj)
        if t in (set, frozenset):
            before = len(self.order)
            members = [self.encode(v, f"{path}.<member>", depth + 1) for v in obj]
            if len(self.order) != before:
                raise UnsupportedTypeError(path, "a set of tensors or arrays has no defined order to store")
            texts = sorted((json.dumps(m, sort_keys=True, separators=(",", ":")), i) for i, m in enumerate(members))
            if len({text for text, _ in texts}) != len(texts):
                raise UnsupportedTypeError(path, "two set members would load as one (distinct NaN objects)")
            return st.tagged(t.__name__, [members[i] for _, i in texts])
        if t in (argparse.Namespace, types.SimpleNamespace):
            fields = list(vars(obj).items())
            node = st.tagged("namespace" if t is argparse.Namespace else "simplens", [])
        else:
            name, fields = extra.dataclass_fields(obj, path)
            node = {"t": "dataclass", "cls": name, "v": []}
        for k, v in fields:
            if type(k) is not str:
                raise UnsupportedTypeError(path, f"attribute name {k!r} is not a string")
            _check_text(k, path)
            node["v"].append([k, self.encode(v, f"{path}.{k}" if path else k, depth + 1)])
        return node

    def _key(self, k: Any, path: str, depth: int) -> Any:
        if type(k) in _KEY_TYPES or k is None or isinstance(k, enum.Enum):
            return self.encode(k, path, depth)
        raise UnsupportedTypeError(path, f"dict key of type {type(k).__qualname__} cannot be stored")

    def _tensor(self, t: torch.Tensor, path: str) -> dict[str, Any]:
        if t.layout != torch.strided:
            raise UnsupportedTypeError(path, f"{t.layout} tensors are not supported; store t.to_dense()")
        if t.is_quantized:
            raise UnsupportedTypeError(path, "quantized tensors are not supported")
        dtype = TORCH_TO_ST.get(t.dtype)
        if dtype is None:
            raise UnsupportedTypeError(
                path, f"dtype {t.dtype} cannot be stored in safetensors", hint="convert it explicitly"
            )
        if t.device.type == "meta":
            raise UnsupportedTypeError(path, "meta tensors have no data to store")
        data = t.detach()
        if data.is_neg():
            data = data.resolve_neg()
        storage = data.untyped_storage()
        dev = str(t.device)
        nbytes = storage.nbytes()
        key = (dev, storage.data_ptr(), nbytes) if nbytes else ("empty", id(data), len(self.order))
        rec = self.storages.get(key)
        if rec is None:
            rec = _Storage(self._name(path), "U8", (nbytes,), nbytes, storage)
            self.storages[key] = rec
            self.order.append(rec)
        ref = st.tensor_node(
            rec.name, dtype, list(data.shape), list(data.stride()), int(data.storage_offset()), dev,
            requires_grad=t.requires_grad, param=type(t) is torch.nn.Parameter,
        )  # fmt: skip
        rec.refs.append(ref)
        return ref

    def _ndarray(self, a: np.ndarray[Any, Any], path: str) -> dict[str, Any]:
        dtype = numpy_st_dtype(a.dtype)
        if dtype is None:
            raise UnsupportedTypeError(
                path, f"numpy dtype {a.dtype} cannot be stored", hint="object/str/complex arrays need pickle"
            )
        le = np.ascontiguousarray(a, dtype=a.dtype.newbyteorder("<"))
        rec = _Storage(self._name(path), dtype, tuple(a.shape), le.nbytes, le)
        self.order.append(rec)
        return {"t": "ndarray", "e": rec.name, "dtype": le.dtype.str, "shape": list(a.shape)}

    def _npscalar(self, x: np.generic, path: str) -> dict[str, Any]:
        if numpy_st_dtype(x.dtype) is None:
            raise UnsupportedTypeError(path, f"numpy scalar of dtype {x.dtype} cannot be stored")
        le = np.asarray(x, dtype=x.dtype.newbyteorder("<"))
        return {"t": "npscalar", "dtype": le.dtype.str, "v": base64.b64encode(le.tobytes()).decode("ascii")}

    def finish(self) -> list[tuple[str, str, tuple[int, ...], int]]:
        """Choose each storage's entry shape (a lone, whole, contiguous tensor keeps its own) and
        the data order (see :func:`chunk_aligned_order`)."""
        for rec in self.order:
            if isinstance(rec.source, torch.UntypedStorage):
                _shape_entry(rec)
        total = sum(rec.nbytes for rec in self.order)
        self.order = chunk_aligned_order(self.order, 1 << default_chunk_log2(total), lambda rec: rec.nbytes)
        return [(rec.name, rec.dtype, rec.shape, rec.nbytes) for rec in self.order]


def chunk_aligned_order(items: list[T], chunk: int, nbytes: Callable[[T], int]) -> list[T]:
    """``items`` in data order: first those whose size is a whole number of chunks, then the rest,
    each group in the order given. The data section's chunks start at its first byte (FORMAT.md
    §6), so every item of the first group starts on a chunk boundary and a lazy read of it
    decrypts exactly its own chunks. A layout choice of the writer; readers take any order."""
    whole: list[T] = []
    rest: list[T] = []
    for it in items:
        n = nbytes(it)
        (whole if n and n % chunk == 0 else rest).append(it)
    return whole + rest


def _shape_entry(rec: _Storage) -> None:
    dtypes = {r["dtype"] for r in rec.refs}
    if len(dtypes) != 1:
        return  # views of several dtypes over one storage: keep raw bytes (U8)
    dtype = dtypes.pop()
    size = pl.ITEMSIZE[dtype]
    if rec.nbytes % size:
        return
    if len(rec.refs) == 1:
        r = rec.refs[0]
        whole = r["offset"] == 0 and math.prod(r["shape"]) * size == rec.nbytes
        if whole and r["stride"] == st.contiguous_strides(r["shape"]):
            rec.dtype, rec.shape = dtype, tuple(r["shape"])
            return
    rec.dtype, rec.shape = dtype, (rec.nbytes // size,)


def plan_payload(obj: Any) -> PayloadPlan:
    """Lay ``obj`` out as a safetensors payload: entries for its tensors and arrays, the rest as structure."""
    enc = _Encoder()
    structure = enc.encode(obj, "")
    specs = enc.finish()
    return PayloadPlan(pl.build_layout(specs, pl.structure_metadata(structure)), [rec.source for rec in enc.order])

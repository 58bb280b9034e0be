"""Checkpoint objects <-> safetensors payload (the only module that creates tensors).

Tensors become safetensors entries (one per distinct storage, so tied weights are stored once);
everything else travels as tagged JSON in ``__metadata__["sealedckpt.structure"]``
(docs/FORMAT.md §8). No pickle anywhere.
"""

from __future__ import annotations

import base64
import json
import math
import sys
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from ..container import SealedReader
from ..errors import DeviceError, FormatError, UnsupportedTypeError
from . import safetensors as pl

MAX_DEPTH = 100

TORCH_TO_ST: dict[torch.dtype, str] = {
    torch.bool: "BOOL", torch.uint8: "U8", torch.int8: "I8",
    torch.int16: "I16", torch.uint16: "U16", torch.float16: "F16", torch.bfloat16: "BF16",
    torch.int32: "I32", torch.uint32: "U32", torch.float32: "F32",
    torch.int64: "I64", torch.uint64: "U64", torch.float64: "F64",
    torch.float8_e4m3fn: "F8_E4M3", torch.float8_e5m2: "F8_E5M2",
}  # fmt: skip
ST_TO_TORCH = {v: k for k, v in TORCH_TO_ST.items()}
# torch.dtype values by name, read from the module dict (getattr could trigger lazy imports).
TORCH_DTYPES: dict[str, torch.dtype] = {n: d for n, d in vars(torch).items() if isinstance(d, torch.dtype)}
NUMPY_KINDS = {"b": "BOOL", "u": "U", "i": "I", "f": "F"}

MapLocation = None | str | torch.device | dict[str, str] | Callable[..., Any]

if sys.byteorder != "little":  # pragma: no cover
    raise ImportError("sealedckpt supports little-endian hosts only")


def _numpy_st_dtype(dt: np.dtype[Any]) -> str | None:
    if dt.kind == "b":
        return "BOOL"
    if dt.kind in "uif" and dt.itemsize in (1, 2, 4, 8):
        name = {"u": "U", "i": "I", "f": "F"}[dt.kind] + str(dt.itemsize * 8)
        return name if name in pl.ITEMSIZE else None
    return None


# --- saving --------------------------------------------------------------------------------


@dataclass
class _Storage:
    name: str
    dtype: str  # safetensors dtype of the entry
    shape: tuple[int, ...]
    nbytes: int
    source: Any  # a tensor or ndarray whose bytes are the entry
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


def byte_view(arr: Any) -> memoryview:
    """A flat byte view of a contiguous numpy array (or of a CPU tensor's numpy view)."""
    return memoryview(arr).cast("B")


def _bytes_view(src: Any) -> memoryview:
    if isinstance(src, np.ndarray):
        return byte_view(src) if src.size else memoryview(b"")
    st: torch.UntypedStorage = src
    if st.nbytes() == 0:
        return memoryview(b"")
    t = torch.empty(0, dtype=torch.uint8, device=st.device).set_(st)
    if t.device.type != "cpu":
        t = t.cpu()
    return byte_view(t.numpy())


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
        if depth > MAX_DEPTH:
            raise UnsupportedTypeError(path, f"nested deeper than {MAX_DEPTH} levels")
        t = type(obj)
        if obj is None or t is bool or t is str:
            return obj
        if t is int:
            return obj
        if t is float:
            if math.isfinite(obj):
                return obj
            return {"t": "float", "v": "nan" if math.isnan(obj) else ("inf" if obj > 0 else "-inf")}
        if t is bytes:
            return {"t": "bytes", "v": base64.b64encode(obj).decode("ascii")}
        if t is torch.Tensor or t is torch.nn.Parameter:
            return self._tensor(obj, path)
        if t is np.ndarray:
            return self._ndarray(obj, path)
        if isinstance(obj, np.generic):
            return self._npscalar(obj, path)
        if t is torch.dtype:
            return {"t": "dtype", "v": str(obj).removeprefix("torch.")}
        if t is torch.device:
            return {"t": "device", "v": str(obj)}
        if t is torch.Size:
            return {"t": "size", "v": list(obj)}
        if t in (list, tuple, dict, OrderedDict):
            if id(obj) in self._stack:
                raise UnsupportedTypeError(path, "the object contains itself (a reference cycle)")
            self._stack.add(id(obj))
            try:
                return self._container(obj, path, depth)
            finally:
                self._stack.discard(id(obj))
        hint = None
        if isinstance(obj, dict):
            hint = "convert it with dict(...) first"
        elif isinstance(obj, torch.Tensor):
            hint = "tensor subclasses are not stored; save a plain tensor (t.detach().clone() as torch.Tensor)"
        raise UnsupportedTypeError(
            path, f"type {t.__module__}.{t.__qualname__} cannot be stored without pickle", hint=hint
        )

    def _container(self, obj: Any, path: str, depth: int) -> Any:
        def sub(k: object) -> str:
            return f"{path}.{k}" if path else str(k)

        if type(obj) is list:
            return [self.encode(v, sub(i), depth + 1) for i, v in enumerate(obj)]
        if type(obj) is tuple:
            return {"t": "tuple", "v": [self.encode(v, sub(i), depth + 1) for i, v in enumerate(obj)]}
        items = [[self._key(k, sub(k), depth + 1), self.encode(v, sub(k), depth + 1)] for k, v in obj.items()]
        if type(obj) is dict:
            return {"t": "dict", "v": items}
        out: dict[str, Any] = {"t": "odict", "v": items}
        meta = getattr(obj, "_metadata", None)
        if meta is not None:
            out["meta"] = self.encode(meta, sub("_metadata"), depth + 1)
        return out

    def _key(self, k: Any, path: str, depth: int) -> Any:
        if type(k) in (str, int, float, bool, bytes, tuple) or k is None:
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
        st = data.untyped_storage()
        dev = str(t.device)
        key = (dev, st.data_ptr(), st.nbytes()) if st.nbytes() else ("empty", id(data), len(self.order))
        rec = self.storages.get(key)
        if rec is None:
            rec = _Storage(self._name(path), "U8", (st.nbytes(),), st.nbytes(), st)
            self.storages[key] = rec
            self.order.append(rec)
        ref: dict[str, Any] = {
            "t": "tensor", "e": rec.name, "dtype": dtype, "shape": list(data.shape),
            "stride": list(data.stride()), "offset": data.storage_offset(), "device": dev,
        }  # fmt: skip
        if t.requires_grad:
            ref["rg"] = True
        if type(t) is torch.nn.Parameter:
            ref["param"] = True
        rec.refs.append(ref)
        return ref

    def _ndarray(self, a: np.ndarray[Any, Any], path: str) -> dict[str, Any]:
        dtype = _numpy_st_dtype(a.dtype)
        if dtype is None:
            raise UnsupportedTypeError(
                path, f"numpy dtype {a.dtype} cannot be stored", hint="object/str/complex arrays need pickle"
            )
        le = np.ascontiguousarray(a, dtype=a.dtype.newbyteorder("<"))
        rec = _Storage(self._name(path), dtype, tuple(a.shape), le.nbytes, le)
        self.order.append(rec)
        return {"t": "ndarray", "e": rec.name, "dtype": le.dtype.str, "shape": list(a.shape)}

    def _npscalar(self, x: np.generic, path: str) -> dict[str, Any]:
        if _numpy_st_dtype(x.dtype) is None:
            raise UnsupportedTypeError(path, f"numpy scalar of dtype {x.dtype} cannot be stored")
        le = np.asarray(x, dtype=x.dtype.newbyteorder("<"))
        return {"t": "npscalar", "dtype": le.dtype.str, "v": base64.b64encode(le.tobytes()).decode("ascii")}

    def finish(self) -> list[tuple[str, str, tuple[int, ...], int]]:
        """Choose each storage's entry shape: a lone, whole, contiguous tensor keeps its own."""
        specs = []
        for rec in self.order:
            if isinstance(rec.source, torch.UntypedStorage):
                _shape_entry(rec)
            specs.append((rec.name, rec.dtype, rec.shape, rec.nbytes))
        return specs


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
        numel = math.prod(r["shape"])
        contiguous = r["stride"] == _contiguous_strides(r["shape"])
        if r["offset"] == 0 and contiguous and numel * size == rec.nbytes:
            rec.dtype, rec.shape = dtype, tuple(r["shape"])
            return
    rec.dtype, rec.shape = dtype, (rec.nbytes // size,)


def _contiguous_strides(shape: list[int]) -> list[int]:
    strides, acc = [], 1
    for d in reversed(shape):
        strides.append(acc)
        acc *= max(d, 1)
    return strides[::-1]


def plan_payload(obj: Any) -> PayloadPlan:
    enc = _Encoder()
    structure = enc.encode(obj, "")
    specs = enc.finish()
    meta = {
        pl.VERSION_KEY: pl.STRUCTURE_VERSION,
        pl.STRUCTURE_KEY: json.dumps(structure, separators=(",", ":"), ensure_ascii=False, allow_nan=False),
    }
    return PayloadPlan(pl.build_layout(specs, meta), [rec.source for rec in enc.order])


# --- loading -------------------------------------------------------------------------------


def _target_device(saved: str, map_location: MapLocation) -> torch.device | None:
    """The device for a storage saved on ``saved``; None means "ask the callable"."""
    try:
        if map_location is None:
            return torch.device(saved)
        if isinstance(map_location, (str, torch.device)):
            return torch.device(map_location)
        if isinstance(map_location, dict):
            return torch.device(map_location.get(saved, saved))
    except (RuntimeError, TypeError) as exc:
        raise DeviceError(f"invalid device in map_location or file: {exc}") from None
    if callable(map_location):
        return None
    raise TypeError("map_location must be None, a str, a torch.device, a dict or a callable")


class _Decoder:
    def __init__(self, entries: dict[str, pl.Entry]) -> None:
        self.entries = entries
        self.tensor_refs: list[dict[str, Any]] = []
        self.array_refs: list[dict[str, Any]] = []

    def check(self, node: Any, depth: int = 0) -> None:
        """Validate the structure fully before any memory is allocated for it."""
        if depth > MAX_DEPTH:
            raise FormatError("structure nested too deeply")
        if node is None or isinstance(node, (bool, str, int, float)):
            return
        if isinstance(node, list):
            for v in node:
                self.check(v, depth + 1)
            return
        if not isinstance(node, dict) or not isinstance(node.get("t"), str):
            raise FormatError("structure node is not a tagged object")
        tag = node["t"]
        allowed = _FIELDS.get(tag)
        if allowed is None or not allowed[0] <= node.keys() <= allowed[1]:
            raise FormatError(f"structure node {tag!r} has unexpected fields")
        if tag == "tensor":
            self._check_tensor(node)
        elif tag == "tuple":
            _require(isinstance(node["v"], list), "tuple value")
            for v in node["v"]:
                self.check(v, depth + 1)
        elif tag in ("dict", "odict"):
            _require(isinstance(node["v"], list), "dict items")
            for kv in node["v"]:
                _require(isinstance(kv, list) and len(kv) == 2, "dict item")
                self.check(kv[0], depth + 1)
                self.check(kv[1], depth + 1)
            if "meta" in node:
                self.check(node["meta"], depth + 1)
        elif tag == "ndarray":
            e = self._entry(node["e"])
            _require(isinstance(node["dtype"], str) and isinstance(node["shape"], list), "ndarray fields")
            dt = _np_dtype(node["dtype"])
            _require(_numpy_st_dtype(dt) == e.dtype and list(e.shape) == node["shape"], "ndarray matches its entry")
            self.array_refs.append(node)
        elif tag == "npscalar":
            dt = _np_dtype(node["dtype"])
            _require(_numpy_st_dtype(dt) is not None and isinstance(node["v"], str), "numpy scalar")
        elif tag in ("float", "bytes", "dtype", "device"):
            _require(isinstance(node["v"], str), f"{tag} value")
        elif tag == "size":
            _require(isinstance(node["v"], list) and all(type(d) is int and d >= 0 for d in node["v"]), "size value")

    def _entry(self, name: object) -> pl.Entry:
        if not isinstance(name, str) or name not in self.entries:
            raise FormatError(f"structure refers to a missing payload entry {name!r}")
        return self.entries[name]

    def _check_tensor(self, node: dict[str, Any]) -> None:
        e = self._entry(node["e"])
        dtype, shape, stride, offset = node["dtype"], node["shape"], node["stride"], node["offset"]
        _require(dtype in ST_TO_TORCH, "tensor dtype")
        _require(isinstance(node["device"], str), "tensor device")
        ok = (
            type(shape) is list and type(stride) is list and len(shape) == len(stride) <= 64
            and type(offset) is int and 0 <= offset < _DIM_LIMIT
        )  # fmt: skip
        last, empty, nonzero = offset, False, 1
        if ok:
            for d, st in zip(shape, stride, strict=True):
                if type(d) is not int or type(st) is not int or not (0 <= d < _DIM_LIMIT and 0 <= st < _DIM_LIMIT):
                    ok = False
                    break
                empty = empty or d == 0
                nonzero *= d or 1
                last += (d - 1) * st
        _require(ok and nonzero < 1 << 63, "tensor shape/stride/offset")
        if not empty:
            _require((last + 1) * pl.ITEMSIZE[dtype] <= e.nbytes, "tensor view within its storage")
        self.tensor_refs.append(node)


_DIM_LIMIT = 1 << 62

_TENSOR_FIELDS = frozenset({"t", "e", "dtype", "shape", "stride", "offset", "device"})
_FIELDS: dict[str, tuple[frozenset[str], frozenset[str]]] = {  # tag -> (required fields, allowed fields)
    "tuple": (frozenset({"t", "v"}), frozenset({"t", "v"})),
    "dict": (frozenset({"t", "v"}), frozenset({"t", "v"})),
    "odict": (frozenset({"t", "v"}), frozenset({"t", "v", "meta"})),
    "float": (frozenset({"t", "v"}), frozenset({"t", "v"})),
    "bytes": (frozenset({"t", "v"}), frozenset({"t", "v"})),
    "dtype": (frozenset({"t", "v"}), frozenset({"t", "v"})),
    "device": (frozenset({"t", "v"}), frozenset({"t", "v"})),
    "size": (frozenset({"t", "v"}), frozenset({"t", "v"})),
    "npscalar": (frozenset({"t", "dtype", "v"}), frozenset({"t", "dtype", "v"})),
    "ndarray": (frozenset({"t", "e", "dtype", "shape"}), frozenset({"t", "e", "dtype", "shape"})),
    "tensor": (_TENSOR_FIELDS, _TENSOR_FIELDS | {"rg", "param"}),
}


def _require(cond: bool, what: str) -> None:
    if not cond:
        raise FormatError(f"invalid structure: {what}")


def _np_dtype(s: str) -> np.dtype[Any]:
    try:
        dt = np.dtype(s)
    except TypeError:
        raise FormatError(f"unknown numpy dtype {s!r}") from None
    if dt.byteorder not in ("<", "|", "="):
        raise FormatError(f"numpy dtype {s!r} is not little-endian")
    return dt


@dataclass(frozen=True)
class PayloadIndex:
    """The payload's parsed and fully validated header and structure (no tensor data read yet)."""

    data_start: int
    entries: list[pl.Entry]
    metadata: dict[str, str]  # the payload's own __metadata__, sealedckpt keys removed
    structure: Any
    decoder: _Decoder


def read_index(reader: SealedReader) -> PayloadIndex:
    total = reader.content.payload_len
    hlen = pl.header_len(reader.read_prefix(8), total)
    raw = reader.read_prefix(8 + hlen)[8:]
    reader.release_prefix()
    data_start = 8 + hlen
    meta, entry_list = pl.parse_header(raw, total - data_start)
    if meta.get(pl.VERSION_KEY) != pl.STRUCTURE_VERSION or pl.STRUCTURE_KEY not in meta:
        raise FormatError("payload carries no sealedckpt structure of a known version")
    structure = pl.strict_json(meta[pl.STRUCTURE_KEY], "structure")
    dec = _Decoder({e.name: e for e in entry_list})
    dec.check(structure)
    own = {k: v for k, v in meta.items() if not k.startswith("sealedckpt.")}
    return PayloadIndex(data_start, entry_list, own, structure, dec)


def flat_bytes(t: torch.Tensor) -> torch.Tensor:
    """A contiguous tensor's bytes as a flat uint8 view (no copy)."""
    return t.reshape(-1).view(torch.uint8)


def _entry_buffer(e: pl.Entry) -> tuple[torch.Tensor, memoryview]:
    """CPU memory for one entry, allocated with the entry's own dtype and shape (so that the
    tensor that is the whole entry needs no view), and a writable byte view of it."""
    t = torch.empty(e.shape, dtype=ST_TO_TORCH[e.dtype])
    if not t.numel():
        return t, memoryview(b"")
    try:
        arr = t.numpy()
    except TypeError:  # bfloat16 and float8 have no numpy dtype
        arr = flat_bytes(t).numpy()
    return t, byte_view(arr)


def view_tensor(node: dict[str, Any], base: torch.Tensor) -> torch.Tensor:
    """A tensor node viewed over ``base``, its entry's memory (flat uint8, or typed and shaped as
    ``_entry_buffer`` allocates it) on any device."""
    dtype = ST_TO_TORCH[node["dtype"]]
    if base.dtype is not dtype:
        size = pl.ITEMSIZE[node["dtype"]]
        raw = flat_bytes(base)
        base = raw[: (raw.numel() // size) * size].view(dtype)
    return _wrap(node, base.as_strided(node["shape"], node["stride"], node["offset"]))


def _is_whole(node: dict[str, Any], base: torch.Tensor) -> bool:
    return (
        base.dtype is ST_TO_TORCH[node["dtype"]] and node["offset"] == 0
        and list(base.shape) == node["shape"] and list(base.stride()) == node["stride"]
    )  # fmt: skip


def _wrap(node: dict[str, Any], t: torch.Tensor) -> torch.Tensor:
    if node.get("param"):
        return torch.nn.Parameter(t, requires_grad=bool(node.get("rg")))
    if node.get("rg"):
        t.requires_grad_(True)
    return t


def decode_payload(reader: SealedReader, map_location: MapLocation = None, workers: int | None = None) -> Any:
    """Authenticate and decrypt the whole payload, then rebuild the object."""
    index = read_index(reader)
    data_start, entry_list, structure, dec = index.data_start, index.entries, index.structure, index.decoder
    entries = {e.name: e for e in entry_list}

    devices: dict[str, str] = {}
    for ref in dec.tensor_refs:
        if devices.setdefault(ref["e"], ref["device"]) != ref["device"]:
            raise FormatError(f"payload entry {ref['e']!r} is referenced from two devices")
    per_device = {dev: _target_device(dev, map_location) for dev in set(devices.values())}
    targets = {name: per_device[dev] for name, dev in devices.items()}

    streamed = {
        name for name, tgt in targets.items() if tgt is not None and tgt.type not in ("cpu", "meta")
    }  # decrypted through pinned staging buffers straight into device memory
    buffers: dict[str, torch.Tensor] = {}
    device_bufs: dict[str, torch.Tensor] = {}
    regions = []
    for e in entry_list:
        tgt = targets.get(e.name)
        if tgt is not None and tgt.type == "meta":
            continue  # authenticated below, never materialized
        if e.name in streamed:
            assert tgt is not None
            device_bufs[e.name] = _device_alloc(tgt, e.nbytes)
            continue
        buf, view = _entry_buffer(e)
        buffers[e.name] = buf
        if e.nbytes:
            regions.append((data_start + e.begin, view))
    if device_bufs:
        _stream_to_devices(reader, data_start, entry_list, buffers, device_bufs, workers)
    else:
        reader.decrypt_regions(regions, workers)
    _check_bools(dec, {**buffers, **device_bufs})

    bases: dict[str, torch.Tensor] = dict(device_bufs)
    for name, e in entries.items():
        if name in buffers:
            tgt = targets.get(name, _CPU)
            buf = buffers[name]
            on_cpu = tgt is not None and tgt.type == "cpu"
            bases[name] = buf if on_cpu else _place(buf, tgt, devices[name], map_location)
        elif name not in bases:
            bases[name] = torch.empty(e.nbytes, dtype=torch.uint8, device="meta")
    return _Builder(bases, buffers).build(structure)


STAGING_BYTES = 16 << 20
_CPU = torch.device("cpu")


class DeviceCopier:
    """Host-to-device copies through two pinned staging buffers, each copy overlapping the
    decryption of the next window. Tests substitute a fake to exercise this on CPU."""

    def __init__(self) -> None:
        self.cuda = torch.cuda.is_available()

    def staging(self, nbytes: int) -> torch.Tensor:
        return torch.empty(nbytes, dtype=torch.uint8, pin_memory=self.cuda)

    def copy(self, dst: torch.Tensor, src: torch.Tensor) -> None:
        dst.copy_(src, non_blocking=self.cuda)

    def fence(self) -> Any:
        if not self.cuda:
            return None
        ev = torch.cuda.Event()  # type: ignore[no-untyped-call]
        ev.record()
        return ev

    def wait(self, fence: Any) -> None:
        if fence is not None:
            fence.synchronize()


def _device_alloc(device: torch.device, nbytes: int) -> torch.Tensor:
    try:
        return torch.empty(nbytes, dtype=torch.uint8, device=device)
    except (RuntimeError, AssertionError) as exc:
        raise DeviceError(
            f"cannot allocate on {device}: {exc}",
            hint="pass map_location='cpu' (or a dict such as {'cuda:0': 'cpu'})",
        ) from None


def _stream_to_devices(
    reader: SealedReader,
    data_start: int,
    entry_list: list[pl.Entry],
    cpu_bufs: dict[str, torch.Tensor],
    device_bufs: dict[str, torch.Tensor],
    workers: int | None,
) -> None:
    """Decrypt window by window into a staging buffer and hand each entry's bytes to its
    destination: device memory (asynchronous copies) or its CPU buffer. The host never holds
    more than two windows of plaintext for device-bound entries."""
    cs = reader.content.chunk_size
    total = reader.content.payload_len
    window = max(cs, (STAGING_BYTES // cs) * cs)
    copier = DeviceCopier()
    staging = [copier.staging(min(window, total)) for _ in range(2 if total > window else 1)]
    fences: list[Any] = [None] * len(staging)
    spans = [(data_start + e.begin, data_start + e.end, e.name) for e in entry_list if e.nbytes]
    for k, lo in enumerate(range(0, total, window)):
        hi = min(lo + window, total)
        slot = k % len(staging)
        copier.wait(fences[slot])  # the copies out of this buffer are done
        buf = staging[slot][: hi - lo]
        reader.decrypt_regions([(lo, byte_view(buf.numpy()))], workers, only_covering=True)
        for start, end, name in spans:
            a, b = max(start, lo), min(end, hi)
            if a >= b:
                continue
            src = buf[a - lo : b - lo]
            if name in device_bufs:
                copier.copy(device_bufs[name][a - start : b - start], src)
            else:
                flat_bytes(cpu_bufs[name])[a - start : b - start].copy_(src)
        fences[slot] = copier.fence()
    for f in fences:
        copier.wait(f)
    reader.finish()


def _check_bools(dec: _Decoder, buffers: dict[str, torch.Tensor]) -> None:
    """torch and numpy require bool bytes to be 0 or 1: check every byte a bool view covers."""
    for ref in dec.tensor_refs:
        buf = buffers.get(ref["e"])
        if ref["dtype"] == "BOOL" and buf is not None and math.prod(ref["shape"]) > 0:
            if bool((flat_bytes(buf).as_strided(ref["shape"], ref["stride"], ref["offset"]) > 1).any()):
                raise FormatError(f"bool tensor over payload entry {ref['e']!r} holds bytes other than 0 and 1")
    for ref in dec.array_refs:
        if _np_dtype(ref["dtype"]).kind == "b" and bool((flat_bytes(buffers[ref["e"]]) > 1).any()):
            raise FormatError(f"bool array in payload entry {ref['e']!r} holds bytes other than 0 and 1")


def _place(buf: torch.Tensor, tgt: torch.device | None, saved: str, map_location: MapLocation) -> torch.Tensor:
    try:
        if tgt is None:
            assert callable(map_location)
            res = map_location(buf.untyped_storage(), saved)
            if not isinstance(res, torch.UntypedStorage):
                raise TypeError("a map_location callable must return a torch.UntypedStorage")
            return torch.empty(0, dtype=torch.uint8, device=res.device).set_(res)
        if tgt.type == "cpu":
            return buf
        return buf.to(tgt)
    except (RuntimeError, AssertionError) as exc:
        raise DeviceError(
            f"cannot place a tensor saved on {saved!r} onto {tgt}: {exc}",
            hint="pass map_location='cpu' (or a dict such as {'cuda:0': 'cpu'})",
        ) from None


class _Builder:
    """Rebuilds the checkpoint object over decrypted entry memory. The first tensor that is
    exactly its entry gets the entry's tensor itself; every other one is a view of it."""

    def __init__(self, bases: dict[str, torch.Tensor], cpu: dict[str, torch.Tensor]) -> None:
        self.bases = bases
        self.cpu = cpu
        self.claimed: set[str] = set()

    def build(self, node: Any) -> Any:
        if node is None or isinstance(node, (bool, str, int, float)):
            return node
        if isinstance(node, list):
            return [self.build(v) for v in node]
        tag = node["t"]
        if tag == "tensor":  # the common case first
            name = node["e"]
            base = self.bases[name]
            if name not in self.claimed and _is_whole(node, base):
                self.claimed.add(name)
                return _wrap(node, base)
            # the entry's own tensor may have been given requires_grad; views of it stay leaves
            return view_tensor(node, base.detach() if base.requires_grad else base)
        if tag == "tuple":
            return tuple(self.build(v) for v in node["v"])
        if tag in ("dict", "odict"):
            out: dict[Any, Any] = {} if tag == "dict" else OrderedDict()
            for k, v in node["v"]:
                key = self.build(k)
                try:
                    if key in out:
                        raise FormatError("duplicate dict key in structure")
                    out[key] = self.build(v)
                except TypeError:
                    raise FormatError("unhashable dict key in structure") from None
            if "meta" in node:
                out._metadata = self.build(node["meta"])  # type: ignore[attr-defined]
            return out
        if tag == "ndarray":
            dt = _np_dtype(node["dtype"])
            arr = flat_bytes(self.cpu[node["e"]]).numpy().view(dt)
            return arr.reshape(node["shape"])
        if tag == "npscalar":
            dt = _np_dtype(node["dtype"])
            raw = _b64(node["v"])
            if len(raw) != dt.itemsize:
                raise FormatError("numpy scalar has the wrong size")
            return np.frombuffer(raw, dtype=dt)[0]
        if tag == "float":
            v = {"nan": math.nan, "inf": math.inf, "-inf": -math.inf}.get(node["v"])
            if v is None:
                raise FormatError(f"invalid float tag {node['v']!r}")
            return v
        if tag == "bytes":
            return _b64(node["v"])
        if tag == "dtype":
            tdt = TORCH_DTYPES.get(node["v"])
            if tdt is None:
                raise FormatError(f"unknown torch dtype {node['v']!r}")
            return tdt
        if tag == "device":
            try:
                return torch.device(node["v"])
            except RuntimeError:
                raise FormatError(f"invalid device {node['v']!r}") from None
        if tag == "size":
            return torch.Size(node["v"])
        raise FormatError(f"unknown structure tag {tag!r}")  # pragma: no cover - check() rejects it


def _b64(s: str) -> bytes:
    try:
        raw = base64.b64decode(s, validate=True)
    except ValueError:
        raise FormatError("invalid base64 in structure") from None
    if base64.b64encode(raw).decode("ascii") != s:
        raise FormatError("non-canonical base64 in structure")
    return raw

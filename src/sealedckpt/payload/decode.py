"""Loading: a whole sealed payload -> the checkpoint object.

Every entry is decrypted in place, in parallel, into its final memory (CPU entries allocated with
their own dtype and shape; device-bound entries through pinned staging windows), then the
structure is rebuilt over it with views.
"""

from __future__ import annotations

import argparse
import base64
import math
import types
from collections import OrderedDict
from typing import Any

import numpy as np
import torch

from ..container import SealedReader
from ..errors import FormatError
from . import devices, extra
from . import structure as st
from .devices import MapLocation
from .index import PayloadIndex, read_index
from .views import check_bool_bytes, entry_buffer, flat_bytes, is_whole, np_dtype, view_tensor, wrap

# torch.dtype values by name, read from the module dict (getattr could trigger lazy imports).
_TORCH_DTYPES: dict[str, torch.dtype] = {n: d for n, d in vars(torch).items() if isinstance(d, torch.dtype)}
_FLOAT_TAGS = {"nan": math.nan, "inf": math.inf, "-inf": -math.inf}
_CPU = torch.device("cpu")


def decode_payload(reader: SealedReader, map_location: MapLocation = None, workers: int | None = None) -> Any:
    """Authenticate and decrypt the whole payload, then rebuild the object."""
    index = read_index(reader)
    saved_on = _saved_devices(index)
    per_device = {dev: devices.target_device(dev, map_location) for dev in set(saved_on.values())}
    targets = {name: per_device[dev] for name, dev in saved_on.items()}
    on_device = {name for name, tgt in targets.items() if tgt is not None and tgt.type not in ("cpu", "meta")}
    bufs = _decrypt(reader, index, targets, on_device, workers)
    for node in index.tensors:
        if node["dtype"] == "BOOL" and node["e"] in bufs:
            check_bool_bytes(node, bufs[node["e"]])
    for node in index.arrays:
        if np_dtype(node["dtype"]).kind == "b":
            check_bool_bytes(node, bufs[node["e"]])
    bases: dict[str, torch.Tensor] = {}
    for name, e in index.entries.items():
        tgt = targets.get(name, _CPU)
        if name in on_device or (name in bufs and tgt is not None and tgt.type == "cpu"):
            bases[name] = bufs[name]
        elif name in bufs:
            bases[name] = devices.place(bufs[name], tgt, saved_on[name], map_location)
        else:
            bases[name] = torch.empty(e.nbytes, dtype=torch.uint8, device="meta")
    cpu = {name: buf for name, buf in bufs.items() if name not in on_device}
    return st.walk(index.structure, Builder(bases, cpu))


def _saved_devices(index: PayloadIndex) -> dict[str, str]:
    """Each tensor entry's saved device; an entry is saved on one device."""
    saved_on: dict[str, str] = {}
    for node in index.tensors:
        if saved_on.setdefault(node["e"], node["device"]) != node["device"]:
            raise FormatError(f"payload entry {node['e']!r} is referenced from two devices")
    return saved_on


def _decrypt(
    reader: SealedReader,
    index: PayloadIndex,
    targets: dict[str, torch.device | None],
    on_device: set[str],
    workers: int | None,
) -> dict[str, torch.Tensor]:
    """Allocate every materialized entry's final memory and decrypt into it in place (entries
    mapped to "meta" are authenticated but never allocated)."""
    bufs: dict[str, torch.Tensor] = {}
    regions = []
    copier = devices.DeviceCopier() if on_device else None
    for name, e in index.entries.items():
        tgt = targets.get(name)
        if tgt is not None and tgt.type == "meta":
            continue
        if copier is not None and name in on_device:
            assert tgt is not None
            bufs[name] = copier.alloc(tgt, e.nbytes)
            continue
        bufs[name], view = entry_buffer(e)
        if e.nbytes:
            regions.append((index.data_start + e.begin, view))
    if copier is not None:
        entries = list(index.entries.values())
        devices.stream_to_devices(reader, index.data_start, entries, bufs, on_device, copier, workers)
    else:
        reader.decrypt_regions(regions, workers)
    return bufs


class Builder:
    """Rebuilds the checkpoint object over decrypted entry memory (a ``structure.walk`` visitor).
    The first tensor that is exactly its entry gets the entry's tensor itself; every other one is
    a view of it."""

    def __init__(self, bases: dict[str, torch.Tensor], cpu: dict[str, torch.Tensor]) -> None:
        self.bases = bases
        self.cpu = cpu
        self.claimed: set[str] = set()

    def sequence(self, items: list[Any], is_tuple: bool) -> Any:
        return tuple(items) if is_tuple else items

    def mapping(self, items: list[tuple[Any, Any]], node: dict[str, Any], meta: Any) -> Any:
        out: dict[Any, Any] = {} if node["t"] == "dict" else OrderedDict()
        for key, value in items:
            try:
                if key in out:
                    raise FormatError("duplicate dict key in structure")
                out[key] = value
            except TypeError:
                raise FormatError("unhashable dict key in structure") from None
        if "meta" in node:
            out._metadata = meta  # type: ignore[attr-defined]
        return out

    def composite(self, node: dict[str, Any], items: list[Any]) -> Any:
        tag = node["t"]
        if tag in st.SET_TAGS:
            return _set(items, tag == "frozenset")
        names = [k for k, _ in items]
        if len(set(names)) != len(names):
            raise FormatError(f"duplicate field name in a {tag}")
        if tag == "dataclass":
            return extra.build_dataclass(node["cls"], items)
        return (argparse.Namespace if tag == "namespace" else types.SimpleNamespace)(**dict(items))

    def leaf(self, node: dict[str, Any], path: str | None) -> Any:
        tag = node["t"]
        v: Any = node.get("v")
        if tag in extra.LEAF_TAGS:
            return extra.decode_leaf(node)
        if tag == "tensor":
            return self._tensor(node)
        if tag == "ndarray":
            arr = flat_bytes(self.cpu[node["e"]]).numpy().view(np_dtype(node["dtype"]))
            return arr.reshape(node["shape"])
        if tag == "npscalar":
            dt, raw = np_dtype(node["dtype"]), _b64(v)
            if len(raw) != dt.itemsize:
                raise FormatError("numpy scalar has the wrong size")
            return np.frombuffer(raw, dtype=dt)[0]
        if tag == "float":
            if v not in _FLOAT_TAGS:
                raise FormatError(f"invalid float tag {v!r}")
            return _FLOAT_TAGS[v]
        if tag == "bytes":
            return _b64(v)
        if tag == "dtype":
            if v not in _TORCH_DTYPES:
                raise FormatError(f"unknown torch dtype {v!r}")
            return _TORCH_DTYPES[v]
        if tag == "device":
            try:
                return torch.device(v)
            except RuntimeError:
                raise FormatError(f"invalid device {v!r}") from None
        return torch.Size(v)  # "size", the last leaf tag

    def _tensor(self, node: dict[str, Any]) -> torch.Tensor:
        name = node["e"]
        base = self.bases[name]
        if name not in self.claimed and is_whole(node, base):
            self.claimed.add(name)
            return wrap(node, base)
        # the entry's own tensor may have been given requires_grad; views of it stay leaves
        return view_tensor(node, base.detach() if base.requires_grad else base)


def _set(items: list[Any], frozen: bool) -> set[Any] | frozenset[Any]:
    if any(isinstance(x, (torch.Tensor, np.ndarray)) for x in items):
        raise FormatError("a set holds a tensor or an array")
    try:
        out = frozenset(items) if frozen else set(items)
    except TypeError:
        raise FormatError("unhashable set member in structure") from None
    if len(out) != len(items):
        raise FormatError("duplicate set member in structure")
    return out


def _b64(s: str) -> bytes:
    try:
        raw = base64.b64decode(s, validate=True)
    except ValueError:
        raise FormatError("invalid base64 in structure") from None
    if base64.b64encode(raw).decode("ascii") != s:
        raise FormatError("non-canonical base64 in structure")
    return raw

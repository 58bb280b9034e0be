"""Entry memory and the tensors viewed over it, shared by the full and the lazy read (and dtypes)."""

from __future__ import annotations

import math
import sys
from typing import Any

import numpy as np
import torch

from ..errors import FormatError
from . import safetensors as pl

if sys.byteorder != "little":  # pragma: no cover
    raise ImportError("sealedckpt supports little-endian hosts only")

TORCH_TO_ST: dict[torch.dtype, str] = {
    torch.bool: "BOOL", torch.uint8: "U8", torch.int8: "I8",
    torch.int16: "I16", torch.uint16: "U16", torch.float16: "F16", torch.bfloat16: "BF16",
    torch.int32: "I32", torch.uint32: "U32", torch.float32: "F32",
    torch.int64: "I64", torch.uint64: "U64", torch.float64: "F64",
    torch.float8_e4m3fn: "F8_E4M3", torch.float8_e5m2: "F8_E5M2",
}  # fmt: skip
ST_TO_TORCH = {v: k for k, v in TORCH_TO_ST.items()}


def numpy_st_dtype(dt: np.dtype[Any]) -> str | None:
    """The safetensors dtype holding a numpy dtype's values, or None if there is none."""
    if dt.kind == "b":
        return "BOOL"
    if dt.kind in "uif" and dt.itemsize in (1, 2, 4, 8):
        name = {"u": "U", "i": "I", "f": "F"}[dt.kind] + str(dt.itemsize * 8)
        return name if name in pl.ITEMSIZE else None
    return None


def np_dtype(s: str) -> np.dtype[Any]:
    """A little-endian numpy dtype from its structure string."""
    try:
        dt = np.dtype(s)
    except (TypeError, ValueError, SyntaxError):
        raise FormatError(f"unknown numpy dtype {s!r}") from None
    if dt.byteorder not in ("<", "|", "="):
        raise FormatError(f"numpy dtype {s!r} is not little-endian")
    return dt


def byte_view(arr: Any) -> memoryview:
    """A flat byte view of a contiguous numpy array (or of a CPU tensor's numpy view)."""
    return memoryview(arr).cast("B")


def flat_bytes(t: torch.Tensor) -> torch.Tensor:
    """A contiguous tensor's bytes as a flat uint8 view (no copy)."""
    return t.reshape(-1).view(torch.uint8)


def entry_buffer(e: pl.Entry) -> tuple[torch.Tensor, memoryview]:
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


def view_span(node: dict[str, Any]) -> tuple[int, int]:
    """The byte range ``[lo, hi)`` of its entry that a validated tensor node covers (empty: lo == hi)."""
    size = pl.ITEMSIZE[node["dtype"]]
    lo = node["offset"] * size
    if math.prod(node["shape"]) == 0:
        return lo, lo
    return lo, (sum((d - 1) * s for d, s in zip(node["shape"], node["stride"], strict=True)) + 1) * size + lo


def check_bool_bytes(node: dict[str, Any], base: torch.Tensor) -> None:
    """torch and numpy require bool bytes to be 0 or 1: check every byte a bool node covers."""
    raw = flat_bytes(base)
    if node["t"] == "tensor":
        if math.prod(node["shape"]) == 0:
            return
        raw = raw.as_strided(node["shape"], node["stride"], node["offset"])
    if bool((raw > 1).any()):
        what = "bool tensor over" if node["t"] == "tensor" else "bool array in"
        raise FormatError(f"{what} payload entry {node['e']!r} holds bytes other than 0 and 1")


def view_tensor(node: dict[str, Any], base: torch.Tensor) -> torch.Tensor:
    """A tensor node viewed over ``base``, its entry's memory (flat uint8, or typed and shaped as
    ``entry_buffer`` allocates it) on any device."""
    dtype = ST_TO_TORCH[node["dtype"]]
    if base.dtype is not dtype:
        size = pl.ITEMSIZE[node["dtype"]]
        raw = flat_bytes(base)
        base = raw[: (raw.numel() // size) * size].view(dtype)
    return wrap(node, base.as_strided(node["shape"], node["stride"], node["offset"]))


def is_whole(node: dict[str, Any], base: torch.Tensor) -> bool:
    """Whether a tensor node is exactly ``base`` (its entry's own typed, shaped tensor)."""
    return (
        base.dtype is ST_TO_TORCH[node["dtype"]] and node["offset"] == 0
        and list(base.shape) == node["shape"] and list(base.stride()) == node["stride"]
    )  # fmt: skip


def wrap(node: dict[str, Any], t: torch.Tensor) -> torch.Tensor:
    """``t`` as the node asks: a Parameter, and/or requiring grad."""
    if node.get("param"):
        return torch.nn.Parameter(t, requires_grad=bool(node.get("rg")))
    if node.get("rg"):
        t.requires_grad_(True)
    return t

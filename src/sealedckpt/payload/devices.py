"""Where loaded tensors go: ``map_location``, device memory, and staging decrypted bytes into it."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from ..container import SealedReader
from ..errors import ArgumentTypeError, DeviceError
from . import safetensors as pl
from .views import byte_view, flat_bytes

MapLocation = None | str | torch.device | dict[str, str] | Callable[..., Any]

_HINT = "pass map_location='cpu' (or a dict such as {'cuda:0': 'cpu'})"


def target_device(saved: str, map_location: MapLocation) -> torch.device | None:
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
    raise ArgumentTypeError("map_location must be None, a str, a torch.device, a dict or a callable")


def lazy_device(device: str | torch.device) -> torch.device:
    """The device lazy reads put tensors on, checked up front (a DeviceError, not a late assert)."""
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise DeviceError(f"invalid device {device!r}: {exc}", hint="pass device='cpu' or 'cuda:0'") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise DeviceError(f"device {device!r} asked for, but CUDA is not available here", hint="pass device='cpu'")
    return dev


def place(buf: torch.Tensor, tgt: torch.device | None, saved: str, map_location: MapLocation) -> torch.Tensor:
    """A decrypted CPU entry moved to its target device (or handed to the map_location callable)."""
    try:
        if tgt is None:
            assert callable(map_location)
            res = map_location(buf.untyped_storage(), saved)
            if not isinstance(res, torch.UntypedStorage):
                raise ArgumentTypeError("a map_location callable must return a torch.UntypedStorage")
            return torch.empty(0, dtype=torch.uint8, device=res.device).set_(res)
        if tgt.type == "cpu":
            return buf
        return buf.to(tgt)
    except (RuntimeError, AssertionError, ImportError) as exc:
        raise DeviceError(f"cannot place a tensor saved on {saved!r} onto {tgt}: {exc}", hint=_HINT) from None


class DeviceCopier:
    """Device memory, and host-to-device copies through two pinned staging buffers of ``window``
    bytes, each copy overlapping the decryption of the next window. Tests substitute a fake
    (monkeypatching ``devices.DeviceCopier``) to exercise this on CPU."""

    window = 16 << 20

    def __init__(self) -> None:
        self.cuda = torch.cuda.is_available()

    def alloc(self, device: torch.device, nbytes: int) -> torch.Tensor:
        try:
            return torch.empty(nbytes, dtype=torch.uint8, device=device)
        except (RuntimeError, AssertionError, ImportError) as exc:
            raise DeviceError(f"cannot allocate on {device}: {exc}", hint=_HINT) from None

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


def stream_to_devices(
    reader: SealedReader,
    data_start: int,
    entries: list[pl.Entry],
    bufs: dict[str, torch.Tensor],
    on_device: set[str],
    copier: DeviceCopier,
    workers: int | None,
) -> None:
    """Decrypt window by window into a staging buffer and hand each entry's bytes to its buffer:
    device memory (``on_device``, asynchronous copies) or CPU memory. The host never holds more
    than two windows of plaintext for device-bound entries."""
    c = reader.content
    groups = c.groups(range(c.n_chunks), copier.window)  # chunk-aligned windows: no chunk read twice
    windows = [(c.chunk_start(g[0]), c.chunk_start(g[-1]) + c.plain_len(g[-1])) for g in groups]
    size = max(hi - lo for lo, hi in windows)
    staging = [copier.staging(size) for _ in range(min(2, len(windows)))]
    fences: list[Any] = [None] * len(staging)
    spans = [(data_start + e.begin, data_start + e.end, e.name) for e in entries if e.nbytes and e.name in bufs]
    for k, (lo, hi) in enumerate(windows):
        if lo == hi:
            continue  # the empty chunk of an empty payload
        slot = k % len(staging)
        copier.wait(fences[slot])  # the copies out of this buffer are done
        buf = staging[slot][: hi - lo]
        reader.decrypt_regions([(lo, byte_view(buf.numpy()))], workers, only_covering=True)
        for start, end, name in spans:
            a, b = max(start, lo), min(end, hi)
            if a >= b:
                continue
            src = buf[a - lo : b - lo]
            if name in on_device:
                copier.copy(bufs[name][a - start : b - start], src)
            else:
                flat_bytes(bufs[name])[a - start : b - start].copy_(src)
        fences[slot] = copier.fence()
    for f in fences:
        copier.wait(f)
    reader.finish()

"""Single files in and out of the sealed format: plain safetensors, trusted legacy pickles."""

from __future__ import annotations

import contextlib
import mmap
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import BinaryIO

from .. import container
from .._remote import writer
from ..container import sniff
from ..crypto import SigningKey
from ..errors import FormatError, UnsafePayloadError
from ..payload import safetensors as payload

Progress = Callable[[int], None]
#: Called once with the total byte count of the work; returns the callback for byte counts.
ProgressStart = Callable[[int], Progress]


class UnpicklingWarning(UserWarning):
    """A trusted legacy file is being unpickled (``allow_pickle=True``)."""


_LEGACY_HINT = "if you trust this file, convert it with --allow-pickle (it is unpickled with weights_only=True)"


def seal_layout(
    f: BinaryIO,
    layout: payload.Layout,
    data_start: int,
    dst: str | os.PathLike[str],
    *,
    keys: Sequence[container.SealKey],
    signers: Sequence[SigningKey] = (),
    metadata: dict[str, str] | None = None,
    progress: ProgressStart | None = None,
    want_root: bool = False,
    expires_at: int | None = None,
) -> container.SealSummary:
    """Seal ``layout``'s header followed by ``f``'s bytes from ``data_start`` (mapped, not copied) into ``dst``."""
    size = os.fstat(f.fileno()).st_size
    mm = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) if size > data_start else None
    view = memoryview(mm)[data_start:] if mm is not None else memoryview(b"")
    try:
        tick = progress(layout.payload_len) if progress is not None else None
        with writer(dst) as out:  # a path (temp, fsync, rename) or a URL (see sealedckpt._remote)
            segments = [memoryview(layout.header), view]
            return container.seal(out, layout.payload_len, segments, keys=keys, signers=signers,
                                  metadata=metadata, progress=tick, want_root=want_root,
                                  expires_at=expires_at)  # fmt: skip
    finally:
        # After a failure, slices of the map may live on in the traceback: then the map is closed
        # when they are collected, and the original error (not a BufferError) is raised.
        with contextlib.suppress(BufferError):
            view.release()
            if mm is not None:
                mm.close()


def file_kind(path: str | os.PathLike[str]) -> str:
    """What ``path`` holds, from its first and last bytes (see :func:`sealedckpt.container.sniff.classify`)."""
    with open(path, "rb") as f:
        head = f.read(sniff.HEAD_SIZE)
        size = f.seek(0, os.SEEK_END)
        f.seek(max(0, size - sniff.TAIL_SIZE))
        return sniff.classify(head, f.read(sniff.TAIL_SIZE))


def check_sealable(src: str | os.PathLike[str], allow_pickle: bool) -> str:
    """``"safetensors"`` or ``"legacy"``; a sealed, pickle-based (unless allowed) or unknown input is refused."""
    kind = file_kind(src)
    if kind == "sealed":
        raise FormatError(f"{src} is already sealed", hint="use `sealedckpt rewrap` to change its keys")
    if kind == "safetensors":
        return kind
    if kind in sniff.LEGACY_KINDS:
        if not allow_pickle:
            raise UnsafePayloadError(
                f"{src} is a pickle-based file (torch.save, TorchScript or legacy); refusing to unpickle it",
                hint=_LEGACY_HINT,
            )
        return "legacy"
    raise FormatError(f"{src}: not a safetensors or torch checkpoint file (content looks like: {kind})")


def seal_safetensors(
    src: str | os.PathLike[str],
    dst: str | os.PathLike[str],
    *,
    keys: Sequence[container.SealKey],
    signers: Sequence[SigningKey],
    metadata: dict[str, str] | None,
    progress: ProgressStart | None = None,
    expires_at: int | None = None,
) -> container.SealSummary:
    """Stream a plain safetensors file into a sealed one; no torch, no copy of the tensor data."""
    with open(src, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        hlen = payload.header_len(f.read(8), size)
        layout = payload.reframe(f.read(hlen), size - 8 - hlen)
        return seal_layout(f, layout, 8 + hlen, dst, keys=keys, signers=signers, metadata=metadata,
                           progress=progress, expires_at=expires_at)  # fmt: skip


def seal_legacy(
    src: str | os.PathLike[str],
    dst: str | os.PathLike[str],
    *,
    keys: Sequence[container.SealKey],
    signers: Sequence[SigningKey],
    metadata: dict[str, str] | None,
    progress: ProgressStart | None = None,
    expires_at: int | None = None,
) -> container.SealSummary:
    """The explicit, opt-in legacy converter: unpickles (weights_only=True) a file the caller trusts."""
    import pickle  # pickle-ok: only its UnpicklingError, in the opt-in converter (never on the load path)

    import torch

    from ..payload.codec import plan_payload

    try:
        obj = torch.load(Path(src), map_location="cpu", weights_only=True)  # pickle-ok: explicit allow_pickle opt-in
    except (pickle.UnpicklingError, RuntimeError, ValueError, EOFError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UnsafePayloadError(
            f"{src}: the weights_only unpickler refused it or could not read it: {first}",
            hint="only tensors and plain containers can be converted; re-save the file with "
            "torch.save(model.state_dict()) or safetensors from a trusted environment",
        ) from None
    plan = plan_payload(obj)
    tick = progress(plan.payload_len) if progress is not None else None
    with writer(dst) as out:
        return container.seal(out, plan.payload_len, plan.segments(), keys=keys, signers=signers,
                              metadata=metadata, progress=tick, expires_at=expires_at)  # fmt: skip

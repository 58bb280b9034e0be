"""Sealed ``torch.distributed.checkpoint`` (DCP) storage: every rank's file sealed, no pickle.

``SealedStorageWriter`` / ``SealedStorageReader`` plug into ``dcp.save`` / ``dcp.load`` (and
``dcp.async_save``) unchanged; ``save`` / ``load`` are the same calls with failures raised as
:class:`~sealedckpt.SealedCkptError` on every rank; ``verify`` / ``inspect`` check a checkpoint
directory without a key and without importing torch (so does this package's import).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ._verify import DcpFile, DcpVerifyResult, inspect, is_dcp_dir, verify

if TYPE_CHECKING:
    from ._calls import load, save
    from .reader import SealedStorageReader
    from .writer import SealedStorageWriter

_LAZY = {
    "SealedStorageWriter": ".writer",
    "SealedStorageReader": ".reader",
    "save": "._calls",
    "load": "._calls",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "DcpFile",
    "DcpVerifyResult",
    "SealedStorageReader",
    "SealedStorageWriter",
    "inspect",
    "is_dcp_dir",
    "load",
    "save",
    "verify",
]

"""``verify`` / ``inspect`` of a sealed DCP checkpoint directory: no key, no torch.

``verify`` checks the metadata file's signatures and every chunk, then every data file it lists:
present with its listed size, every chunk hashed, its content root equal to the listed root; a
data file the metadata does not list fails. Anything else fails with a SealedCkptError.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .. import container
from ..api import _keys
from ..api._keys import Trusted
from ..api._trust import keys_of
from ..container import PublicInfo, Signer
from ..errors import FormatError, IntegrityError, SealedCkptError
from . import _io, _listing


@dataclass(frozen=True)
class DcpFile:
    name: str
    size: int
    root: str  # blake3:<hex>


@dataclass(frozen=True)
class DcpVerifyResult:
    signers: list[Signer]
    root: str  # the metadata file's content root, blake3:<hex>
    metadata: dict[str, str]  # the metadata file's public metadata, without the file list
    files: list[DcpFile]


def is_dcp_dir(path: str | os.PathLike[str], *, storage_options: dict[str, Any] | None = None) -> bool:
    """Whether ``path`` (a local directory or a ``scheme://`` URL prefix) holds a sealed DCP
    ``.metadata`` file. A URL costs one existence check, plus the file's header when present."""
    try:
        directory = _io.checkpoint_dir(path, storage_options)
        if not directory.remote and not os.path.isdir(directory.where):
            return False
        if not _io.has_metadata(directory):
            return False
        with _io.open_read(directory, _io.METADATA_NAME, _io.MAX_METADATA_FILE) as f:
            return _listing.is_dcp(container.read_public_info(f).metadata)
    except (SealedCkptError, OSError):
        return False


def _own_metadata(meta: dict[str, str]) -> dict[str, str]:
    return {k: v for k, v in meta.items() if k != _listing.MARK_KEY and not k.startswith("dcp.files.")}


def verify(
    path: str | os.PathLike[str],
    *,
    trusted_signers: Trusted = None,
    progress: Callable[[int], None] | None = None,
    storage_options: dict[str, Any] | None = None,
) -> DcpVerifyResult:
    """Check a sealed DCP checkpoint directory (a local path or a ``scheme://`` URL) without a
    key (it must be signed)."""
    directory = _io.checkpoint_dir(path, storage_options)
    trusted = _keys.trusted(trusted_signers)
    with _io.open_read(directory, _io.METADATA_NAME, _io.MAX_METADATA_FILE, whole=True) as f:
        res = container.verify_file(f, keys_of(trusted), progress)
    if trusted is not None:
        trusted.check(res.signers, res.metadata)
    files = _listing.decode(res.metadata)
    _listing.check_present(directory, files)
    out = []
    for facts in files:
        with _io.open_read(directory, facts.name, whole=True) as f:
            if _io.opened_size(f) != facts.size:
                raise IntegrityError(f"{directory.show(facts.name)}: size differs from the checkpoint metadata's")
            root, _ = container.compute_root(f, progress)
        facts.check_root(root)
        out.append(DcpFile(facts.name, facts.size, container.root_label(root)))
    return DcpVerifyResult(res.signers, container.root_label(res.root), _own_metadata(res.metadata), out)


def inspect(
    path: str | os.PathLike[str], *, storage_options: dict[str, Any] | None = None
) -> tuple[PublicInfo, list[DcpFile]]:
    """The metadata file's public header and the data files it lists (nothing is verified)."""
    directory = _io.checkpoint_dir(path, storage_options)
    with _io.open_read(directory, _io.METADATA_NAME, _io.MAX_METADATA_FILE) as f:
        info = container.read_public_info(f)
    if not _listing.is_dcp(info.metadata):
        raise FormatError(f"{directory}: not a sealed DCP checkpoint")
    files = [DcpFile(x.name, x.size, f"blake3:{x.root}") for x in _listing.decode(info.metadata)]
    return info, files


__all__ = ["DcpFile", "DcpVerifyResult", "inspect", "is_dcp_dir", "verify"]

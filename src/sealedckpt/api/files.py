"""Files on disk: seal a plain safetensors file, unseal one, change who can open sealed files."""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from typing import Any

from .. import _remote, container
from ..container import SealSummary
from ..crypto import SigningKey
from ..errors import DecryptionError
from ..release import files as release_files
from ..release.files import ProgressStart
from ..release.policy import check_release
from ..stores.audit import AuditLog
from ..stores.keystore import Keystore
from . import _keys
from ._common import audit_log, audited, open_path, writing
from ._keys import LoadKey, SaveKey, Trusted
from ._trust import keys_of
from .checkpoint import reader_fields

StrPath = str | os.PathLike[str]


def seal_file(
    src: StrPath,
    dst: StrPath,
    *,
    key: SaveKey | Sequence[SaveKey] | None = None,
    sign_with: SigningKey | Sequence[SigningKey] | None = None,
    metadata: dict[str, str] | None = None,
    allow_pickle: bool = False,
    progress: ProgressStart | None = None,
    keystore: Keystore | None = None,
    audit: AuditLog | None = None,
    expires_at: int | None = None,
) -> SealSummary:
    """Seal a plain safetensors file ``src`` into ``dst`` (streamed; torch is not imported).

    A pickle-based ``src`` (torch.save, TorchScript, legacy) is refused with
    :class:`~sealedckpt.UnsafePayloadError`, unless ``allow_pickle``: then it is unpickled with
    ``weights_only=True`` (an :class:`UnpicklingWarning` says so); do that only for a file you trust.
    A sealed or unrecognised ``src`` is a :class:`~sealedckpt.FormatError`.
    """
    log = audit_log(audit, keystore)
    info: dict[str, Any] = {}
    with audited(log, "seal", src, info):
        keys = _keys.save_keys(key, keystore)
        signers = _keys.signers(sign_with)
        kind = release_files.check_sealable(src, allow_pickle)
        if kind == "legacy":
            warnings.warn(
                f"unpickling {src} (weights_only=True) because of --allow-pickle; do this only for files you trust",
                release_files.UnpicklingWarning,
                stacklevel=2,
            )
            convert = release_files.seal_legacy
        else:
            convert = release_files.seal_safetensors
        summary = convert(src, dst, keys=keys, signers=signers, metadata=metadata, progress=progress,
                          expires_at=expires_at)  # fmt: skip
        info.update(path=dst, digest=summary.digest, key_ids=summary.key_ids, signer_ids=summary.signer_ids,
                    detail={"input": os.path.abspath(src)})  # fmt: skip
    return summary


def unseal_file(
    src: StrPath,
    dst: StrPath,
    *,
    key: LoadKey | Sequence[LoadKey] | None = None,
    trusted_signers: Trusted = None,
    min_version: int | None = None,
    expect_model: str | None = None,
    progress: ProgressStart | None = None,
    keystore: Keystore | None = None,
    audit: AuditLog | None = None,
    allow_rollback: bool = False,
) -> int:
    """Decrypt the sealed file ``src`` into ``dst`` as a plain safetensors file; returns its size.

    Signatures, the release policy, the payload's header and structure (parsed strictly, as by
    :func:`load`; anything else, a pickle say, is a :class:`~sealedckpt.FormatError`) and every
    chunk are checked; ``dst`` is created with mode 0600 (or ``src``'s, if stricter) and replaced
    atomically, only once everything checked out: on any failure it never appears.
    """
    from ..payload.index import read_index

    log = audit_log(audit, keystore)
    keys = _keys.load_keys(key, keystore)
    trusted = _keys.trusted(trusted_signers)
    info: dict[str, Any] = {}
    with audited(log, "open", src, info), open_path(src, whole=True) as f:
        mode = 0o600 if _remote.is_url(src) else 0o600 & os.fstat(f.fileno()).st_mode
        reader = container.open_sealed(f, keys, trusted_signers=keys_of(trusted))
        check_release(reader.content.metadata, min_version, expect_model)
        if trusted is not None:
            trusted.check(reader.unverified_signers, reader.content.metadata, allow_rollback)
        read_index(reader)  # before a byte is written: a safetensors payload with a valid structure
        shown = _remote.redact(str(dst)) if _remote.is_url(dst) else os.path.abspath(dst)
        info.update(reader_fields(reader), detail={"output": shown})
        tick = progress(reader.content.payload_len) if progress is not None else None
        with writing(dst, mode=mode) as out:
            n = reader.write_plaintext(out, tick)
        info.update(reader_fields(reader))  # every chunk checked: the signed root and signers count
        if trusted is not None:
            trusted.remember(reader.content.metadata)
        return n


def opens_with(path: StrPath, key: LoadKey | Sequence[LoadKey]) -> bool:
    """Whether ``key`` opens a key slot of the sealed file ``path`` (the header and signatures are
    read; no chunk is). Other failures (not sealed, tampered) raise."""
    keys = _keys.load_keys(key, None)
    with open_path(path) as f:
        try:
            container.open_sealed(f, keys, require_signature=False)
        except DecryptionError:
            return False
    return True


def rewrap_file(
    path: StrPath,
    *,
    key: LoadKey | Sequence[LoadKey] | None = None,
    add: SaveKey | Sequence[SaveKey] | None = None,
    keep: bool = False,
    remove: Sequence[str] = (),
    progress: ProgressStart | None = None,
    keystore: Keystore | None = None,
    audit: AuditLog | None = None,
) -> list[str]:
    """Change who can open a sealed file, in place: new key slots for ``add`` (replacing the
    old ones, or alongside them with ``keep``, less the ``remove``-d slot ids); the content,
    chunks and signatures stay as they are. ``key`` opens the file now. Returns the slot labels.
    """
    log = audit_log(audit, keystore)
    opener = _keys.load_keys(key, keystore)
    new = [] if add is None else _keys.save_keys(add, None)
    info: dict[str, Any] = {}
    with audited(log, "rewrap", path, info):
        with open_path(path, whole=True) as f, writing(path) as out:
            size = f.seek(0, os.SEEK_END)
            tick = progress(size) if progress is not None else None
            labels = container.rewrap(f, out, opener, new, keep=keep, remove=remove, progress=tick)
        info["key_ids"] = [x for x in labels if not x.startswith("#")]
    return labels

"""Checkpoints in code: save, load, open, inspect, verify, sign."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, BinaryIO

from .. import container
from ..container import PublicInfo, VerifyResult
from ..crypto import SigningKey
from ..errors import ArgumentTypeError, InvalidArgumentError, RollbackError
from ..release.policy import check_release
from ..stores.audit import AuditLog
from ..stores.keystore import Keystore
from . import _keys
from ._common import PathOrFile, StorageOptions, audit_log, audited, gc_paused, open_path, reading, writing
from ._keys import LoadKey, SaveKey, Trusted
from ._trust import keys_of

if TYPE_CHECKING:
    from ..payload.codec import MapLocation


def save(
    obj: Any,
    f: PathOrFile,
    *,
    key: SaveKey | Sequence[SaveKey] | None = None,
    sign_with: SigningKey | Sequence[SigningKey] | None = None,
    metadata: dict[str, str] | None = None,
    keystore: Keystore | None = None,
    audit: AuditLog | None = None,
    storage_options: StorageOptions = None,
    expires_at: int | None = None,
) -> None:
    """Seal ``obj`` (a whole training checkpoint) into ``f``, like ``torch.save``.

    A path is replaced atomically and durably (temp file, fsync, rename, fsync of the
    directory); a ``scheme://`` URL (fsspec; ``storage_options`` for its file system) is written
    so that the object appears only whole (see docs/TRAINING.md, "Object storage").
    ``metadata`` stays public (readable by :func:`inspect`) and authenticated. ``sign_with`` signs
    a release statement (docs/FORMAT.md §8.1), expiring at ``expires_at`` (Unix seconds) when given.
    ``key=None`` uses :func:`default_key` (from ``keystore``, default ``Keystore()``).
    """
    from ..payload.codec import plan_payload

    log = audit_log(audit, keystore)
    keys = _keys.save_keys(key, keystore)
    signers = _keys.signers(sign_with)
    with gc_paused():
        plan = plan_payload(obj)
    info: dict[str, Any] = {"key_ids": [_keys.key_label(k) for k in keys], "signer_ids": [s.key_id for s in signers]}
    with audited(log, "save", f, info):
        to_path = isinstance(f, (str, os.PathLike))
        target = writing(f, storage_options) if isinstance(f, (str, os.PathLike)) else contextlib.nullcontext(f)
        with target as out:
            summary = container.seal(out, plan.payload_len, plan.segments(), keys=keys, signers=signers,
                                     metadata=metadata, expires_at=expires_at)  # fmt: skip
        flush = None if to_path else getattr(f, "flush", None)
        if flush is not None:
            flush()
        info["digest"] = summary.digest


def load(
    f: PathOrFile,
    map_location: MapLocation = None,
    *,
    key: LoadKey | Sequence[LoadKey] | None = None,
    trusted_signers: Trusted = None,
    require_signature: bool | None = None,
    min_version: int | None = None,
    expect_model: str | None = None,
    keystore: Keystore | None = None,
    audit: AuditLog | None = None,
    storage_options: StorageOptions = None,
    allow_rollback: bool = False,
    weights_only: bool | None = None,
    mmap: bool | None = None,
    pickle_module: Any = None,
    **pickle_load_args: Any,
) -> Any:
    """Open a sealed checkpoint, like ``torch.load``; never unpickles anything.

    Takes torch's call shapes: ``map_location`` may be positional; ``weights_only=True`` (or
    None) is what every load does; ``weights_only=False``, ``pickle_module`` and pickle keyword
    arguments are refused with an explanation (there is no pickle to configure). ``mmap=True`` is
    accepted and loads as usual: encrypted bytes cannot be mapped from the file, and a load
    already holds no second copy (peak memory ≈ the checkpoint); for reads of a few tensors use
    :func:`safe_open`, which decrypts only the chunks they need.

    Every chunk is authenticated (and, in a signed file, checked against the signed
    digests) before any object is returned. ``trusted_signers="store"`` uses the trust
    store and its policy (roles, scopes, thresholds, expiry, revocation, remembered versions:
    a model older than one loaded before is refused unless ``allow_rollback``);
    ``SEALEDCKPT_REQUIRE_SIGNATURE=1`` makes that the default. ``min_version`` and
    ``expect_model`` check the public ``version`` / ``model`` metadata (rollback protection).
    """
    from ..payload.codec import decode_payload

    _refuse_pickle_options(weights_only, pickle_module, pickle_load_args)
    if mmap not in (True, False, None):
        raise ArgumentTypeError(f"mmap must be True, False or None, not {mmap!r}")
    log = audit_log(audit, keystore)
    keys = _keys.load_keys(key, keystore)
    trusted = _keys.trusted(trusted_signers, policy=require_signature is not False)
    if require_signature is False and trusted is not None:
        raise ArgumentTypeError("trusted_signers given with require_signature=False")
    info: dict[str, Any] = {}
    with audited(log, "load", f, info), reading(f, storage_options, whole=True) as fh, gc_paused():
        reader = container.open_sealed(fh, keys, trusted_signers=keys_of(trusted), require_signature=require_signature)
        info.update(reader_fields(reader))
        check_release(reader.content.metadata, min_version, expect_model)
        if trusted is not None:
            trusted.check(reader.unverified_signers, reader.content.metadata, allow_rollback)
        obj = decode_payload(reader, map_location)
        info.update(reader_fields(reader))  # now every chunk was checked: the signed root and signers
        if trusted is not None:
            trusted.remember(reader.content.metadata)
        return obj


def _refuse_pickle_options(weights_only: bool | None, pickle_module: Any, pickle_args: dict[str, Any]) -> None:
    """torch.load's pickle options, given to a loader that has no pickle: explain, never ignore."""
    fix = "sealedckpt files never hold a pickle; to convert a legacy torch.save file you trust, run "
    fix += "`sealedckpt seal FILE -o OUT --allow-pickle` once"
    if weights_only is False:
        raise InvalidArgumentError(
            "weights_only=False asks for an unpickler that may run code; sealedckpt has none: every load "
            "is weights-only (tensors and plain data, no code)",
            hint="drop weights_only=False; " + fix,
        )
    if weights_only not in (True, None):
        raise ArgumentTypeError(f"weights_only must be True, False or None, not {weights_only!r}")
    if pickle_module is not None:
        raise InvalidArgumentError("pickle_module= has no effect: sealedckpt never unpickles", hint=fix)
    if pickle_args:
        raise ArgumentTypeError(
            f"unexpected keyword argument(s) {', '.join(sorted(pickle_args))} (torch.load passes them to pickle; "
            "sealedckpt never unpickles)"
        )


def reader_fields(reader: container.SealedReader) -> dict[str, Any]:
    """The audit fields of an opened file: key slot ids, and what was checked so far. The signed
    root and the signers count only once every chunk digest was checked in this operation;
    before that the digest is the key commitment (checked with the header MAC)."""
    verified = reader.signature_status == "verified"
    return {
        "digest": container.content_digest(reader.trailer.root if verified else None, reader.content.commitment),
        "key_ids": [s for s in container.slot_ids(reader.header) if not s.startswith("#")],
        "signer_ids": [s.key_id for s in reader.signers],
    }


def inspect(f: PathOrFile, *, storage_options: StorageOptions = None) -> PublicInfo:
    """Public facts from the header, without a key (and without importing torch).

    Signatures listed here are NOT verified; use :func:`verify`.
    """
    with reading(f, storage_options) as fh:
        return container.read_public_info(fh)


def verify(
    f: PathOrFile,
    *,
    trusted_signers: Trusted = None,
    min_version: int | None = None,
    expect_model: str | None = None,
    progress: Callable[[int], None] | None = None,
    audit: AuditLog | None = None,
    storage_options: StorageOptions = None,
    allow_rollback: bool = False,
) -> VerifyResult:
    """Check every signature and every chunk digest without a decryption key.

    With ``trusted_signers`` (keys, or ``"store"``), at least one signature must be by one of
    them; ``SEALEDCKPT_REQUIRE_SIGNATURE=1`` makes the trust store the default. ``min_version`` /
    ``expect_model`` need trusted signers: without a key, only a trusted signature authenticates
    the public metadata (anyone can sign a file with a key of their own).
    """
    log = audit_log(audit, None)
    trusted = _keys.trusted(trusted_signers)
    if trusted is None and (min_version is not None or expect_model is not None):
        raise RollbackError(
            "cannot check model/version without a key unless a trusted signature vouches for them",
            hint="pass trusted_signers= (--trust PUBKEY), or check with the key (load / unseal)",
        )
    info: dict[str, Any] = {}
    with audited(log, "verify", f, info):
        with reading(f, storage_options, whole=True) as fh:
            res = container.verify_file(fh, keys_of(trusted), progress)
        info["digest"] = container.root_label(res.root)
        info["signer_ids"] = [s.key_id for s in res.signers]
        check_release(res.metadata, min_version, expect_model)
        if trusted is not None:
            trusted.check(res.signers, res.metadata, allow_rollback)
    return res


def sign(
    path: str | os.PathLike[str],
    sign_with: SigningKey | Sequence[SigningKey],
    *,
    trusted_signers: Trusted = None,
    audit: AuditLog | None = None,
    statement: str = "counter-signature",
    expires_at: int | None = None,
) -> VerifyResult:
    """Add signatures to a sealed file in place, without a decryption key: a ``statement`` of
    type ``counter-signature`` (default), ``audit`` or ``release``, optionally expiring at
    ``expires_at`` (Unix seconds).

    Existing signatures and every chunk are verified first (and, with ``trusted_signers``, a
    trusted release signature must be there): an auditor signs only what checked out.
    """
    log = audit_log(audit, None)
    signers = _keys.signers(sign_with)
    trusted = _keys.trusted(trusted_signers, policy=False)
    info: dict[str, Any] = {"signer_ids": [s.key_id for s in signers]}
    with audited(log, "sign", path, info), open_path(path, whole=True) as fh, writing(path) as out:
        res = container.add_signatures(fh, out, signers, trusted_signers=keys_of(trusted), kind=statement,
                                       expires_at=expires_at)  # fmt: skip
        info["digest"] = container.root_label(res.root)
        return res


def safe_open(
    filename: PathOrFile,
    framework: str = "pt",
    device: str | Any = "cpu",
    *,
    key: LoadKey | Sequence[LoadKey] | None = None,
    trusted_signers: Trusted = None,
    require_signature: bool | None = None,
    keystore: Keystore | None = None,
) -> Any:
    """``safetensors.safe_open``'s call shape over a sealed file: ``keys()``, ``metadata()``,
    ``get_tensor(name)`` (also ``f[name]``), ``get_slice(name)[...]``; see :func:`open`.
    Only ``framework="pt"`` exists: tensors are torch tensors."""
    if framework not in ("pt", "torch"):
        raise InvalidArgumentError(
            f"framework={framework!r} is not supported: sealedckpt reads torch tensors", hint='pass framework="pt"'
        )
    return open(
        filename, key=key, device=device, trusted_signers=trusted_signers, require_signature=require_signature,
        keystore=keystore,
    )  # fmt: skip


def open(
    f: PathOrFile,
    *,
    key: LoadKey | Sequence[LoadKey] | None = None,
    device: str | Any = "cpu",
    trusted_signers: Trusted = None,
    require_signature: bool | None = None,
    min_version: int | None = None,
    expect_model: str | None = None,
    keystore: Keystore | None = None,
    storage_options: StorageOptions = None,
    allow_rollback: bool = False,
) -> Any:
    """Open a sealed checkpoint for lazy per-tensor reads (a context manager, like
    ``safetensors.safe_open``): ``.keys()``, ``.metadata()``, ``.get_tensor(name)``,
    ``.get_slice(name)[...]`` read and authenticate only the chunks that hold what is asked for.
    ``min_version`` / ``expect_model`` check the MAC-checked public metadata, as :func:`load` does.
    Over a ``scheme://`` URL each chunk is one ranged read: only the header, the trailer and the
    chunks holding what is asked for are fetched.
    """
    from ..payload.lazy import SealedFile

    keys = _keys.load_keys(key, keystore)
    trusted = _keys.trusted(trusted_signers, policy=require_signature is not False)
    owned = isinstance(f, (str, os.PathLike))
    fh: BinaryIO = open_path(f, storage_options) if isinstance(f, (str, os.PathLike)) else f
    try:
        reader = container.open_sealed(fh, keys, trusted_signers=keys_of(trusted), require_signature=require_signature)
        check_release(reader.content.metadata, min_version, expect_model)
        if trusted is not None:
            trusted.check(reader.unverified_signers, reader.content.metadata, allow_rollback)
        return SealedFile(reader, device, fh if owned else None)
    except BaseException:
        if owned:
            fh.close()
        raise

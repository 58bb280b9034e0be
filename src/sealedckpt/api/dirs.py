"""Sealed model directories: seal, verify, sign, unseal, load (see :mod:`sealedckpt.release.directory`)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from ..crypto import SigningKey
from ..errors import SignatureError
from ..release import directory as distdir
from ..release.directory import DirEntry, DirVerifyResult
from ..release.policy import DirReleaseCheck
from ..stores.audit import AuditLog
from ..stores.keystore import Keystore
from . import _keys
from ._common import audit_log, audited, gc_paused
from ._keys import LoadKey, SaveKey, Trusted
from ._trust import keys_of

if TYPE_CHECKING:
    from ..payload.codec import MapLocation

StrPath = str | os.PathLike[str]


def seal_dir(
    src: StrPath,
    dst: StrPath,
    *,
    key: SaveKey | Sequence[SaveKey] | None = None,
    sign_with: SigningKey | Sequence[SigningKey] | None = None,
    keep_public: bool = False,
    metadata: dict[str, str] | None = None,
    keystore: Keystore | None = None,
    audit: AuditLog | None = None,
    expires_at: int | None = None,
) -> list[DirEntry]:
    """Seal every ``*.safetensors`` shard of the directory ``src`` (and every other file, unless
    ``keep_public``) into the new directory ``dst``, with a manifest signed by ``sign_with``."""
    log = audit_log(audit, keystore)
    info: dict[str, Any] = {}
    with audited(log, "seal-dir", src, info):
        keys = _keys.save_keys(key, keystore)
        signers = _keys.signers(sign_with)
        entries = distdir.seal_dir(src, dst, keys=keys, signers=signers, keep_public=keep_public, metadata=metadata,
                                  expires_at=expires_at)  # fmt: skip
        info.update(path=dst, digest="sha256:" + distdir.manifest_sha256(dst),
                    key_ids=[_keys.key_label(k) for k in keys], signer_ids=[s.key_id for s in signers],
                    detail={"input": os.path.abspath(src), "files": str(len(entries))})  # fmt: skip
    return entries


def verify_dir(
    d: StrPath,
    *,
    trusted_signers: Trusted = None,
    min_version: int | None = None,
    expect_model: str | None = None,
    require_signed: bool = False,
    audit: AuditLog | None = None,
    allow_rollback: bool = False,
) -> DirVerifyResult:
    """Check a sealed directory without a key: the manifest's signatures (at least one by
    ``trusted_signers`` when given; ``SEALEDCKPT_REQUIRE_SIGNATURE=1`` makes the trust store the
    default), the release metadata, and that it holds exactly the listed files with their
    digests. ``require_signed`` refuses an unsigned manifest. ``min_version``/``expect_model``
    need a verified trusted signature (the only thing that authenticates the manifest without a
    key); without one they raise :class:`RollbackError`."""
    log = audit_log(audit, None)
    trusted = _keys.trusted(trusted_signers)
    info: dict[str, Any] = {}
    with audited(log, "verify-dir", d, info):
        res = distdir.verify_dir(d, trusted_signers=keys_of(trusted))
        info.update(digest=f"sha256:{res.manifest_sha256}", signer_ids=[s.key_id for s in res.signers])
        DirReleaseCheck(min_version, expect_model).manifest(res.signers, res.metadata, key_holder=False)
        if trusted is not None:
            trusted.check(res.signers, res.metadata, allow_rollback)
        if require_signed and not res.signers:
            raise SignatureError("the manifest is not signed: nothing proves who published it",
                                 hint="sign it with `sealedckpt sign-dir DIR --key NAME`")  # fmt: skip
    return res


def sign_dir(
    d: StrPath,
    sign_with: SigningKey | Sequence[SigningKey],
    *,
    trusted_signers: Trusted = None,
    audit: AuditLog | None = None,
    statement: str = "counter-signature",
    expires_at: int | None = None,
) -> DirVerifyResult:
    """Add signatures (a ``statement`` of type ``counter-signature``, ``audit`` or ``release``)
    to a sealed directory's manifest, after verifying the directory (and, with
    ``trusted_signers``, that a trusted release signature is there). Returns what was verified."""
    log = audit_log(audit, None)
    signers = _keys.signers(sign_with)
    trusted = _keys.trusted(trusted_signers, policy=False)
    info: dict[str, Any] = {"signer_ids": [s.key_id for s in signers]}
    with audited(log, "sign-dir", d, info):
        res = distdir.verify_dir(d, trusted_signers=keys_of(trusted))
        distdir.add_dir_signatures(d, signers, kind=statement, expires_at=expires_at)
        info["digest"] = f"sha256:{res.manifest_sha256}"
    return res


def unseal_dir(
    d: StrPath,
    dst: StrPath,
    *,
    key: LoadKey | Sequence[LoadKey] | None = None,
    trusted_signers: Trusted = None,
    min_version: int | None = None,
    expect_model: str | None = None,
    keystore: Keystore | None = None,
    audit: AuditLog | None = None,
    allow_rollback: bool = False,
) -> list[str]:
    """Verify a sealed directory, then write its original files into the new directory ``dst``
    (shards as plain safetensors, decrypted files 0600). Returns the files written.

    ``min_version``/``expect_model`` are checked against the manifest when a trusted signature
    verified, else against every sealed file's MAC-checked header."""
    log = audit_log(audit, keystore)
    keys = _keys.load_keys(key, keystore)
    trusted = _keys.trusted(trusted_signers)
    info: dict[str, Any] = {}
    with audited(log, "open-dir", d, info):
        res = distdir.verify_dir(d, trusted_signers=keys_of(trusted), check_files=False)
        info.update(digest=f"sha256:{res.manifest_sha256}", signer_ids=[s.key_id for s in res.signers],
                    detail={"output": os.path.abspath(dst)})  # fmt: skip
        if trusted is not None:
            trusted.check(res.signers, res.metadata, allow_rollback)
        release = DirReleaseCheck(min_version, expect_model)
        written = distdir.unseal_dir(d, dst, keys, trusted_signers=keys_of(trusted), release=release)
        if trusted is not None:
            trusted.remember(res.metadata)
        return written


def load_dir(
    path: StrPath,
    *,
    key: LoadKey | Sequence[LoadKey] | None = None,
    map_location: MapLocation = None,
    trusted_signers: Trusted = None,
    min_version: int | None = None,
    expect_model: str | None = None,
    keystore: Keystore | None = None,
    allow_rollback: bool = False,
) -> dict[str, Any]:
    """Load a sealed model directory (``sealedckpt seal-dir``) into one state_dict.

    The manifest's signature is checked first (with ``trusted_signers``, or the trust store under
    ``SEALEDCKPT_REQUIRE_SIGNATURE=1``); the directory must hold exactly the listed files, each
    with its listed digest (shards are hashed while they are decrypted, other files checked
    whole); shards are merged and checked against ``*.index.json``'s ``weight_map``.
    ``min_version`` / ``expect_model`` are checked against the manifest when a trusted signature
    verified, else against every sealed file's MAC-checked header (rollback protection).
    """
    from ..release.loading import load_state

    trusted = _keys.trusted(trusted_signers)
    keys = _keys.load_keys(key, keystore)
    with gc_paused():
        release = DirReleaseCheck(min_version, expect_model)

        seen: list[DirVerifyResult] = []

        def check(res: DirVerifyResult) -> None:
            seen.append(res)
            if trusted is not None:
                trusted.check(res.signers, res.metadata, allow_rollback)

        state = load_state(path, keys, trusted_signers=keys_of(trusted), map_location=map_location, release=release,
                           on_verified=check)  # fmt: skip
        if trusted is not None:
            trusted.remember(seen[0].metadata)
        return state

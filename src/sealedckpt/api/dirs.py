"""Sealed model directories: seal, verify, sign, unseal, load (see :mod:`sealedckpt.release.directory`).

Each takes a ``scheme://`` URL for the sealed directory too (see :mod:`sealedckpt.api._staging`:
a private local copy is checked; publishing uploads the manifest last)."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .. import _remote
from ..crypto import SigningKey
from ..errors import SealedCkptError, SignatureError
from ..release import directory as distdir
from ..release.directory import DirEntry, DirVerifyResult
from ..release.policy import DirReleaseCheck
from ..release.signatures import SIGNATURES
from ..stores.audit import AuditLog
from ..stores.keystore import Keystore
from . import _keys, _staging
from ._common import audit_log, audited, gc_paused
from ._keys import LoadKey, SaveKey, Trusted
from ._trust import keys_of

if TYPE_CHECKING:
    from ..payload.codec import MapLocation

StrPath = str | os.PathLike[str]


@contextlib.contextmanager
def _local(d: StrPath) -> Iterator[StrPath]:
    """``d`` itself, or a local copy of the sealed directory at the URL ``d``."""
    if _remote.is_url(d):
        with _staging.fetched(str(d)) as local:
            try:
                yield local
            except SealedCkptError as exc:  # name the URL, not the private copy
                if exc.args and isinstance(exc.args[0], str):
                    exc.args = (exc.args[0].replace(str(local), _remote.redact(str(d)).rstrip("/")), *exc.args[1:])
                raise
    else:
        yield d


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
        with contextlib.ExitStack() as stack:
            out: StrPath = dst
            if _remote.is_url(dst):
                out = stack.enter_context(_staging.scratch()) / "sealed"
            entries = distdir.seal_dir(src, out, keys=keys, signers=signers, keep_public=keep_public,
                                       metadata=metadata, expires_at=expires_at)  # fmt: skip
            manifest = distdir.manifest_sha256(out)
            if out is not dst:
                _staging.publish(Path(out), str(dst))
        info.update(path=dst, digest="sha256:" + manifest,
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
    with audited(log, "verify-dir", d, info), _local(d) as local:
        res = distdir.verify_dir(local, trusted_signers=keys_of(trusted))
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
    with audited(log, "sign-dir", d, info), _local(d) as local:
        res = distdir.verify_dir(local, trusted_signers=keys_of(trusted))
        distdir.add_dir_signatures(local, signers, kind=statement, expires_at=expires_at)
        if local is not d:
            _staging.upload(Path(local), str(d), [SIGNATURES])
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
    with audited(log, "open-dir", d, info), _local(d) as local:
        res = distdir.verify_dir(local, trusted_signers=keys_of(trusted), check_files=False)
        info.update(digest=f"sha256:{res.manifest_sha256}", signer_ids=[s.key_id for s in res.signers],
                    detail={"output": os.path.abspath(dst)})  # fmt: skip
        if trusted is not None:
            trusted.check(res.signers, res.metadata, allow_rollback)
        release = DirReleaseCheck(min_version, expect_model)
        written = distdir.unseal_dir(local, dst, keys, trusted_signers=keys_of(trusted), release=release)
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
    with gc_paused(), _local(path) as local:
        release = DirReleaseCheck(min_version, expect_model)

        seen: list[DirVerifyResult] = []

        def check(res: DirVerifyResult) -> None:
            seen.append(res)
            if trusted is not None:
                trusted.check(res.signers, res.metadata, allow_rollback)

        state = load_state(local, keys, trusted_signers=keys_of(trusted), map_location=map_location, release=release,
                           on_verified=check)  # fmt: skip
        if trusted is not None:
            trusted.remember(seen[0].metadata)
        return state

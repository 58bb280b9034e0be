"""The public entry points: save, load, inspect, verify."""

from __future__ import annotations

import builtins
import contextlib
import gc
import os
import struct
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, Literal

from . import container
from ._fs import atomic_write
from .container import PublicInfo, VerifyResult
from .crypto import Passphrase, RecipientKey, RecipientPublicKey, SigningKey, SymmetricKey, VerifyKey
from .errors import FormatError, IntegrityError, NoKeyError, RollbackError, SealedCkptError
from .stores import keystore as keys_mod

if TYPE_CHECKING:
    from .payload.codec import MapLocation

PathOrFile = str | os.PathLike[str] | BinaryIO
RawKey = bytes | bytearray | memoryview
SaveKey = SymmetricKey | RecipientPublicKey | RecipientKey | Passphrase | RawKey
LoadKey = SymmetricKey | RecipientKey | Passphrase | RawKey


def _one(k: object, for_save: bool) -> container.SealKey | container.OpenKey:
    if isinstance(k, (bytes, bytearray, memoryview)):
        try:
            return SymmetricKey(k)
        except ValueError as exc:
            raise TypeError(str(exc)) from None
    if isinstance(k, (SymmetricKey, Passphrase)):
        return k
    if isinstance(k, RecipientKey):
        return k.public if for_save else k
    if isinstance(k, RecipientPublicKey) and for_save:
        return k
    allowed = "SymmetricKey, RecipientPublicKey, Passphrase" if for_save else "SymmetricKey, RecipientKey, Passphrase"
    raise TypeError(f"a key must be a {allowed} or 32 raw bytes, not {type(k).__name__}")


def _listify(key: object) -> list[object]:
    if isinstance(key, (SymmetricKey, RecipientPublicKey, RecipientKey, Passphrase, bytes, bytearray, memoryview)):
        return [key]
    if isinstance(key, (list, tuple)):
        if not key:
            raise TypeError("key=[] names no key")
        return list(key)
    raise TypeError(f"key must be a key or a list of keys, not {type(key).__name__}")


def _save_keys(key: SaveKey | Sequence[SaveKey] | None) -> list[container.SealKey]:
    if key is None:
        return [default_key()]
    return [_one(k, True) for k in _listify(key)]  # type: ignore[misc]


def _load_keys(key: LoadKey | Sequence[LoadKey] | None) -> container.KeySource:
    if key is None:
        env = keys_mod.env_key()
        if env is not None:
            return [env]
        return _keystore_resolver
    return [_one(k, False) for k in _listify(key)]  # type: ignore[misc]


def default_key() -> SymmetricKey:
    """The key used when ``save(key=None)``: ``$SEALEDCKPT_KEY``, else the keystore's default."""
    env = keys_mod.env_key()
    if env is not None:
        return env
    ks = keys_mod.Keystore()
    rec = ks.default("symmetric")
    if rec is None:
        raise NoKeyError(
            "no key given and no default key is set",
            hint="create one with `sealedckpt key gen --default`, set SEALEDCKPT_KEY, or pass key=",
        )
    key = ks.secret(rec)
    assert isinstance(key, SymmetricKey)
    return key


def _keystore_resolver(header: container.Header) -> list[container.OpenKey]:
    labels = container.slot_ids(header)
    ids = [s for s in labels if not s.startswith("#")]
    want_recipients = any(s.endswith(":recipient") for s in labels)
    found = keys_mod.Keystore().keys_for_header(ids, want_recipients)
    keys = [k for k in found if isinstance(k, (SymmetricKey, RecipientKey))]
    if not keys:
        raise NoKeyError(
            "no key given, and the keystore holds no key this file is sealed for",
            hint="pass key=, import the key with `sealedckpt key import`, or set SEALEDCKPT_KEY",
        )
    return list(keys)


def _signers(sign_with: SigningKey | Sequence[SigningKey] | None) -> list[SigningKey]:
    if sign_with is None:
        return []
    if isinstance(sign_with, SigningKey):
        return [sign_with]
    out = list(sign_with)
    if not all(isinstance(s, SigningKey) for s in out):
        raise TypeError("sign_with must be a SigningKey or a list of them")
    return out


Trusted = VerifyKey | Sequence[VerifyKey] | Literal["store"] | None


def _trusted(trusted_signers: Trusted) -> list[VerifyKey] | None:
    if trusted_signers is None:
        return None
    if isinstance(trusted_signers, str):
        if trusted_signers != "store":
            raise TypeError('trusted_signers must be VerifyKey objects or "store"')
        from .stores.trust import TrustStore

        return TrustStore().keys()
    if isinstance(trusted_signers, VerifyKey):
        return [trusted_signers]
    out = list(trusted_signers)
    if not all(isinstance(v, VerifyKey) for v in out):
        raise TypeError("trusted_signers must be VerifyKey objects (use SigningKey.public)")
    return out


@contextlib.contextmanager
def _reading(f: PathOrFile) -> Iterator[BinaryIO]:
    if isinstance(f, (str, os.PathLike)):
        with builtins.open(f, "rb") as fh:
            yield fh
    else:
        yield f


@contextlib.contextmanager
def _gc_paused() -> Iterator[None]:
    """Building or parsing a structure of many small objects would trigger repeated full
    collections (O(live objects) each); none of the objects made here form cycles."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


@contextlib.contextmanager
def _audited(op: str, f: object, info: dict[str, Any]) -> Iterator[None]:
    """Record the operation (when the audit log is on) with its outcome, success or failure."""
    from .stores import audit

    if not audit.api_enabled():
        yield
        return
    path = os.fspath(f) if isinstance(f, (str, os.PathLike)) else None
    try:
        yield
    except BaseException as exc:
        kind = type(exc).__name__
        audit.record(op, path=path, outcome=f"error: {kind}", **info)
        raise
    audit.record(op, path=path, outcome="ok", **info)


@contextlib.contextmanager
def _typed_errors() -> Iterator[None]:
    """Belt and braces: a parser slip must still surface as a SealedCkptError."""
    try:
        yield
    except SealedCkptError:
        raise
    except (ValueError, KeyError, IndexError, OverflowError, struct.error) as exc:
        raise FormatError(f"malformed sealed checkpoint ({type(exc).__name__})") from exc


def save(
    obj: Any,
    f: PathOrFile,
    *,
    key: SaveKey | Sequence[SaveKey] | None = None,
    sign_with: SigningKey | Sequence[SigningKey] | None = None,
    metadata: dict[str, str] | None = None,
) -> None:
    """Seal ``obj`` (a whole training checkpoint) into ``f``, like ``torch.save``.

    A path is replaced atomically and durably (temp file, fsync, rename, fsync of the
    directory). ``metadata`` stays public (readable by :func:`inspect`) and authenticated.
    """
    from .payload.codec import plan_payload

    keys = _save_keys(key)
    signers = _signers(sign_with)
    with _gc_paused():
        plan = plan_payload(obj)
    info: dict[str, Any] = {"key_ids": [getattr(k, "key_id", "passphrase") for k in keys],
                            "signer_ids": [s.key_id for s in signers]}  # fmt: skip
    with _audited("save", f, info):
        if isinstance(f, (str, os.PathLike)):
            with atomic_write(f) as out:
                summary = container.seal(
                    out, plan.payload_len, plan.segments(), keys=keys, signers=signers, metadata=metadata
                )
        else:
            summary = container.seal(
                f, plan.payload_len, plan.segments(), keys=keys, signers=signers, metadata=metadata
            )
            flush = getattr(f, "flush", None)
            if flush is not None:
                flush()
        info["digest"] = summary.digest


def load(
    f: PathOrFile,
    *,
    key: LoadKey | Sequence[LoadKey] | None = None,
    map_location: MapLocation = None,
    trusted_signers: Trusted = None,
    require_signature: bool | None = None,
    min_version: int | None = None,
    expect_model: str | None = None,
) -> Any:
    """Open a sealed checkpoint, like ``torch.load``; never unpickles anything.

    Every chunk is authenticated (and, under a signature policy, checked against the
    signed digests) before any object is returned. ``trusted_signers="store"`` uses the trust
    store; ``SEALEDCKPT_REQUIRE_SIGNATURE=1`` makes that the default. ``min_version`` and
    ``expect_model`` check the public ``version`` / ``model`` metadata (rollback protection).
    """
    from .stores.trust import signature_required

    keys = _load_keys(key)
    if trusted_signers is None and require_signature is not False and signature_required():
        trusted_signers = "store"
    trusted = _trusted(trusted_signers)
    if require_signature is False and trusted is not None:
        raise TypeError("trusted_signers given with require_signature=False")
    info: dict[str, Any] = {}
    with _audited("load", f, info), _reading(f) as fh, _typed_errors(), _gc_paused():
        reader = container.open_sealed(fh, keys, trusted_signers=trusted, require_signature=require_signature)
        info["digest"] = container.content_digest(reader.trailer.root, reader.content.commitment)
        info["key_ids"] = [s for s in container.slot_ids(reader.header) if not s.startswith("#")]
        info["signer_ids"] = [s.key_id for s in reader.signers]
        check_release(reader.content.metadata, min_version, expect_model)
        from .payload.codec import decode_payload

        return decode_payload(reader, map_location)


def inspect(f: PathOrFile) -> PublicInfo:
    """Public facts from the header, without a key (and without importing torch).

    Signatures listed here are NOT verified; use :func:`verify`.
    """
    with _reading(f) as fh, _typed_errors():
        return container.read_public_info(fh)


def verify(
    f: PathOrFile,
    *,
    trusted_signers: Trusted = None,
    min_version: int | None = None,
    expect_model: str | None = None,
    progress: Callable[[int], None] | None = None,
) -> VerifyResult:
    """Check every signature and every chunk digest without a decryption key.

    With ``trusted_signers`` (keys, or ``"store"``), at least one signature must be by one of
    them; ``SEALEDCKPT_REQUIRE_SIGNATURE=1`` makes the trust store the default.
    """
    from .stores.trust import signature_required

    if trusted_signers is None and signature_required():
        trusted_signers = "store"
    trusted = _trusted(trusted_signers)
    info: dict[str, Any] = {}
    with _audited("verify", f, info):
        with _reading(f) as fh, _typed_errors():
            res = container.verify_file(fh, trusted, progress)
        info["digest"] = container.root_label(res.root)
        info["signer_ids"] = [s.key_id for s in res.signers]
        check_release(res.metadata, min_version, expect_model)
    return res


def check_release(metadata: dict[str, str], min_version: int | None, expect_model: str | None) -> None:
    """Rollback protection: the signed public ``model``/``version`` metadata must match."""
    if expect_model is not None and metadata.get("model") != expect_model:
        raise RollbackError(f"file is model {metadata.get('model')!r}, expected {expect_model!r}")
    if min_version is None:
        return
    raw = metadata.get("version")
    if raw is None or not raw.isdigit() or len(raw) > 18:
        raise RollbackError(f"file has no numeric public 'version' metadata (got {raw!r}); min_version={min_version}")
    if int(raw) < min_version:
        raise RollbackError(f"file is version {int(raw)}, older than the required minimum {min_version} (replayed?)")


def sign(
    path: str | os.PathLike[str],
    sign_with: SigningKey | Sequence[SigningKey],
    *,
    trusted_signers: Trusted = None,
) -> VerifyResult:
    """Add (counter-)signatures to a sealed file in place, without a decryption key.

    Existing signatures and every chunk are verified first (and, with ``trusted_signers``, at
    least one existing signature must be trusted): an auditor signs only what checked out.
    """
    signers = _signers(sign_with)
    trusted = _trusted(trusted_signers)
    info: dict[str, Any] = {"signer_ids": [s.key_id for s in signers]}
    with _audited("sign", path, info), builtins.open(path, "rb") as fh, _typed_errors(), atomic_write(path) as out:
        res = container.add_signatures(fh, out, signers, trusted_signers=trusted)
        info["digest"] = container.root_label(res.root)
        return res


def load_dir(
    path: str | os.PathLike[str],
    *,
    key: LoadKey | Sequence[LoadKey] | None = None,
    map_location: MapLocation = None,
    trusted_signers: Trusted = None,
) -> dict[str, Any]:
    """Load a sealed model directory (``sealedckpt seal-dir``) into one state_dict.

    The manifest's signature is checked first (with ``trusted_signers``, or the trust store under
    ``SEALEDCKPT_REQUIRE_SIGNATURE=1``); the directory must hold exactly the listed files, each
    with its listed digest (shards are hashed while they are decrypted, other files checked
    whole); shards are merged and checked against ``*.index.json``'s ``weight_map``.
    """
    import io as _io
    import json as _json

    from .payload.codec import decode_payload
    from .release import directory as distdir
    from .stores.trust import signature_required

    if trusted_signers is None and signature_required():
        trusted_signers = "store"
    trusted = _trusted(trusted_signers)
    keys = _load_keys(key)
    root = os.fspath(path)
    with _typed_errors(), _gc_paused():
        res = distdir.verify_dir(root, trusted_signers=trusted, check_files=False)
        state: dict[str, Any] = {}
        origin: dict[str, str] = {}
        index: dict[str, Any] | None = None
        for e in res.entries:
            full = os.path.join(root, e.path)
            if e.kind == "safetensors":
                with builtins.open(full, "rb") as fh:
                    reader = container.open_sealed(fh, keys)
                    reader.expect_root(distdir.expected_root(e))
                    shard = decode_payload(reader, map_location)
                if not isinstance(shard, dict):
                    raise FormatError(f"{e.path} does not hold a state_dict")
                for name, tensor in shard.items():
                    if name in state:
                        raise FormatError(f"tensor {name!r} appears in two shards")
                    state[name] = tensor
                    origin[name] = os.path.basename(e.source)
            elif e.source.endswith(".index.json"):
                if e.kind == "public":
                    distdir.check_entry(Path(root), e)
                    with builtins.open(full, "rb") as fh:
                        raw = fh.read(distdir.MAX_MANIFEST)
                else:
                    buf = _io.BytesIO()
                    with builtins.open(full, "rb") as fh:
                        reader = container.open_sealed(fh, keys)
                        reader.expect_root(distdir.expected_root(e))
                        distdir._write_blob(reader, buf)
                    raw = buf.getvalue()
                index = _json.loads(raw)
            else:
                distdir.check_entry(Path(root), e)  # not loaded, but part of the signed set
        if index is not None:
            weight_map = index.get("weight_map") if isinstance(index, dict) else None
            if not isinstance(weight_map, dict):
                raise FormatError("index.json has no weight_map")
            if set(weight_map) != set(state):
                missing, extra = set(weight_map) - set(state), set(state) - set(weight_map)
                raise IntegrityError(
                    f"shards do not match the index (missing {sorted(missing)[:3]}, extra {sorted(extra)[:3]})"
                )
            for name, shard_name in weight_map.items():
                if origin[name] != shard_name:
                    raise IntegrityError(f"tensor {name!r} came from {origin[name]}, the index says {shard_name}")
    return state


def open(
    f: PathOrFile,
    *,
    key: LoadKey | Sequence[LoadKey] | None = None,
    device: str | Any = "cpu",
    trusted_signers: Trusted = None,
    require_signature: bool | None = None,
) -> Any:
    """Open a sealed checkpoint for lazy per-tensor reads (a context manager, like
    ``safetensors.safe_open``): ``.keys()``, ``.metadata()``, ``.get_tensor(name)``,
    ``.get_slice(name)[...]`` read and authenticate only the chunks that hold what is asked for.
    """
    from .payload.lazy import SealedFile
    from .stores.trust import signature_required

    keys = _load_keys(key)
    if trusted_signers is None and require_signature is not False and signature_required():
        trusted_signers = "store"
    trusted = _trusted(trusted_signers)
    owned = isinstance(f, (str, os.PathLike))
    fh: BinaryIO = builtins.open(f, "rb") if isinstance(f, (str, os.PathLike)) else f
    try:
        with _typed_errors():
            reader = container.open_sealed(fh, keys, trusted_signers=trusted, require_signature=require_signature)
            return SealedFile(reader, device, fh if owned else None)
    except BaseException:
        if owned:
            fh.close()
        raise

"""Keys, signers and trusted signers as the API accepts them, normalised for the container."""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Literal

from .. import container
from ..crypto import Passphrase, RecipientKey, RecipientPublicKey, SigningKey, SymmetricKey, VerifyKey
from ..errors import ArgumentTypeError, InvalidArgumentError, NoKeyError
from ..stores import keystore as keys_mod
from ..stores.keystore import Keystore
from ..stores.trust import TrustStore, signature_required
from ._trust import Trust

RawKey = bytes | bytearray | memoryview
SaveKey = SymmetricKey | RecipientPublicKey | RecipientKey | Passphrase | RawKey
LoadKey = SymmetricKey | RecipientKey | Passphrase | RawKey
Trusted = VerifyKey | Sequence[VerifyKey] | Literal["store"] | TrustStore | None


def _one(k: object, for_save: bool) -> container.SealKey | container.OpenKey:
    if isinstance(k, (bytes, bytearray, memoryview)):
        try:
            return SymmetricKey(k)
        except InvalidArgumentError as exc:
            raise ArgumentTypeError(str(exc)) from None
    if isinstance(k, (SymmetricKey, Passphrase)):
        return k
    if isinstance(k, RecipientKey):
        return k.public if for_save else k
    if isinstance(k, RecipientPublicKey) and for_save:
        return k
    allowed = "SymmetricKey, RecipientPublicKey, Passphrase" if for_save else "SymmetricKey, RecipientKey, Passphrase"
    raise ArgumentTypeError(f"a key must be a {allowed} or 32 raw bytes, not {type(k).__name__}")


def _listify(key: object) -> list[object]:
    if isinstance(key, (SymmetricKey, RecipientPublicKey, RecipientKey, Passphrase, bytes, bytearray, memoryview)):
        return [key]
    if isinstance(key, (list, tuple)):
        if not key:
            raise ArgumentTypeError("key=[] names no key")
        return list(key)
    raise ArgumentTypeError(f"key must be a key or a list of keys, not {type(key).__name__}")


def save_keys(key: SaveKey | Sequence[SaveKey] | None, keystore: Keystore | None) -> list[container.SealKey]:
    """The keys to seal for: ``key``, else :func:`default_key`."""
    if key is None:
        return [default_key(keystore)]
    return [_one(k, True) for k in _listify(key)]  # type: ignore[misc]


def load_keys(key: LoadKey | Sequence[LoadKey] | None, keystore: Keystore | None) -> container.KeySource:
    """The keys to open with: ``key``, else ``$SEALEDCKPT_KEY``, else the keys in ``keystore``
    (default ``Keystore()``) that the file names."""
    if key is None:
        env = keys_mod.env_key()
        if env is not None:
            return [env]
        return functools.partial(_keystore_resolver, keystore if keystore is not None else Keystore())
    return [_one(k, False) for k in _listify(key)]  # type: ignore[misc]


def key_label(k: container.SealKey) -> str:
    """The audit label of a sealing key: its key id, or ``passphrase``."""
    return getattr(k, "key_id", "passphrase")


def default_key(keystore: Keystore | None = None) -> SymmetricKey:
    """The key used when ``save(key=None)``: ``$SEALEDCKPT_KEY``, else the keystore's default."""
    env = keys_mod.env_key()
    if env is not None:
        return env
    ks = keystore if keystore is not None else Keystore()
    rec = ks.default("symmetric")
    if rec is None:
        raise NoKeyError(
            "no key given and no default key is set",
            hint="create one with `sealedckpt key gen --default`, set SEALEDCKPT_KEY, "
            "or pass a key (--key NAME; key= in Python)",
        )
    key = ks.secret(rec)
    assert isinstance(key, SymmetricKey)
    return key


def _keystore_resolver(keystore: Keystore, header: container.Header) -> list[container.OpenKey]:
    keys = [k for k in keystore.keys_for_slots(header.slots) if isinstance(k, (SymmetricKey, RecipientKey))]
    if not keys and any(s.kind == "passphrase" for s in header.slots):
        raise NoKeyError(
            "this file is sealed with a passphrase, and none was given",
            hint="pass --passphrase (asked on the terminal, or --passphrase-file FILE); Passphrase(...) in Python",
        )
    if not keys:
        raise NoKeyError(
            "no key given, and the keystore holds no key this file is sealed for",
            hint="pass the key (--key NAME or --identity FILE; key= in Python), "
            "import it with `sealedckpt key import`, or set SEALEDCKPT_KEY",
        )
    return list(keys)


def signers(sign_with: SigningKey | Sequence[SigningKey] | None) -> list[SigningKey]:
    """``sign_with`` as a list; every item must be a SigningKey."""
    if sign_with is None:
        return []
    if isinstance(sign_with, SigningKey):
        return [sign_with]
    out = list(sign_with)
    if not all(isinstance(s, SigningKey) for s in out):
        raise ArgumentTypeError("sign_with must be a SigningKey or a list of them")
    return out


def trusted(trusted_signers: Trusted, *, policy: bool = True) -> Trust | None:
    """The keys a signature must come from and the checks once signers are known, or None for no
    requirement.

    ``"store"`` (or a :class:`TrustStore`, e.g. with an injected clock) means the trust store and
    its policy; with ``policy``, ``None`` means the trust store when ``SEALEDCKPT_REQUIRE_SIGNATURE``
    is set (the one place that default is applied).
    """
    if trusted_signers is None:
        if not (policy and signature_required()):
            return None
        trusted_signers = "store"
    if isinstance(trusted_signers, TrustStore):
        return Trust.of_store(trusted_signers)
    if isinstance(trusted_signers, str):
        if trusted_signers != "store":
            raise ArgumentTypeError('trusted_signers must be VerifyKey objects or "store"')
        return Trust.of_store(TrustStore())
    if isinstance(trusted_signers, VerifyKey):
        return Trust([trusted_signers])
    out = list(trusted_signers)
    if not all(isinstance(v, VerifyKey) for v in out):
        raise ArgumentTypeError("trusted_signers must be VerifyKey objects (use SigningKey.public)")
    return Trust(list(out))

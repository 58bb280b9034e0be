"""The keystore: named keys, a registry of their public facts plus a secret backend.

``keyring`` cannot list entries, so public facts about every key (id, name, kind, created,
public key, default, retired/replaced-by, where the secret lives) are kept in a registry file
under the data directory; the secrets live in a backend (:mod:`.backends`).
"""

from __future__ import annotations

import base64
import contextlib
import datetime as _dt
import json
import os
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Literal, Protocol

from .._fs import atomic_write
from ..crypto import (
    CompositeSigningKey,
    CompositeVerifyKey,
    Passphrase,
    PQRecipientKey,
    PQRecipientPublicKey,
    RecipientKey,
    RecipientPublicKey,
    SigningKey,
    SymmetricKey,
    VerifyKey,
    open_secret,
    seal_secret,
    textkeys,
)
from ..errors import InvalidArgumentError, KeystoreError, NoKeyError
from ._records import read_records
from .backends import (
    FileSecrets,
    KeyringSecrets,
    SecretBackend,
    check_private,
    choose_backend,
    default_home,
    home_lock,
    private_dir,
)

Kind = Literal["symmetric", "recipient", "signing", "pq-recipient", "pq-signing"]
KINDS: tuple[Kind, ...] = ("symmetric", "recipient", "signing", "pq-recipient", "pq-signing")
#: The key class each kind generates (the PQ kinds: crypto/pq.py).
_GENERATE: dict[str, type[SymmetricKey] | type[RecipientKey] | type[SigningKey]] = {
    "symmetric": SymmetricKey,
    "recipient": RecipientKey,
    "signing": SigningKey,
    "pq-recipient": PQRecipientKey,
    "pq-signing": CompositeSigningKey,
}
ENV_KEY = "SEALEDCKPT_KEY"
ENV_PASSPHRASE_FILE = "SEALEDCKPT_KEYSTORE_PASSPHRASE_FILE"
_PROTECTED_PREFIX = "sealedckpt-protected-v1:"
_PROTECT_AAD = b"sealedckpt/v1 protected key\x00"
REGISTRY_VERSION = 1

SecretKey = SymmetricKey | SigningKey | RecipientKey
PublicKey = RecipientPublicKey | VerifyKey


# --- registry -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class KeyRecord:
    """Public facts about one key. Never holds a secret."""

    id: str
    name: str
    kind: Kind
    created: str
    backend: str  # where the secret lives: "file", "keyring", "memory", or "none" (public only)
    public: str | None = None  # text form of the public key (recipient / signing kinds)
    default: bool = False
    retired: bool = False
    replaced_by: str | None = None
    protected: bool = False  # secret encrypted under a passphrase

    @property
    def has_secret(self) -> bool:
        return self.backend != "none"


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _kind_of(k: SecretKey | PublicKey) -> Kind:
    if isinstance(k, SymmetricKey):
        return "symmetric"
    if isinstance(k, (PQRecipientKey, PQRecipientPublicKey)):
        return "pq-recipient"
    if isinstance(k, (CompositeSigningKey, CompositeVerifyKey)):
        return "pq-signing"
    if isinstance(k, (RecipientKey, RecipientPublicKey)):
        return "recipient"
    return "signing"


PassphraseProvider = Callable[["KeyRecord"], Passphrase | None]


class SlotHint(Protocol):
    """What the keystore needs to know of a key slot (the container's slot objects fit)."""

    @property
    def kind(self) -> str: ...
    @property
    def key_id(self) -> str | None: ...


class Keystore:
    """Named keys: a registry of public facts plus a secret backend.

    ``passphrase`` is asked for the passphrase of a protected key when the caller of
    :meth:`secret` gave none and ``SEALEDCKPT_KEYSTORE_PASSPHRASE_FILE`` is unset (the CLI
    prompts); it may return None to decline.
    """

    def __init__(
        self,
        home: Path | str | None = None,
        secrets: SecretBackend | None = None,
        *,
        passphrase: PassphraseProvider | None = None,
    ) -> None:
        self.home = Path(home) if home is not None else default_home()
        self._secrets = secrets
        self._backends: dict[str, SecretBackend] = {}
        self._passphrase = passphrase

    # -- plumbing --

    def _ask(self, record: KeyRecord) -> Passphrase | None:
        return self._passphrase(record) if self._passphrase is not None else None

    @property
    def registry_path(self) -> Path:
        return self.home / "registry.json"

    def secrets(self) -> SecretBackend:
        if self._secrets is None:
            private_dir(self.home)
            self._secrets = choose_backend(self.home)
        return self._secrets

    def _backend(self, name: str) -> SecretBackend:
        if self._secrets is not None and self._secrets.name == name:
            return self._secrets
        if name not in self._backends:
            if name == "file":
                self._backends[name] = FileSecrets(self.home / "keys")
            elif name == "keyring":
                self._backends[name] = KeyringSecrets()
            else:
                raise KeystoreError(f"the secret of this key is in a {name!r} store that is not open")
        return self._backends[name]

    def _locked(self) -> contextlib.AbstractContextManager[None]:
        return home_lock(self.home, "registry.lock")

    def _read(self) -> list[KeyRecord]:
        p = self.registry_path
        if not p.exists():
            return []
        check_private(self.home, want_dir=True)
        return read_records(p, "keystore registry", REGISTRY_VERSION, "keys", KeyRecord)

    def _write(self, records: list[KeyRecord]) -> None:
        doc = {"version": REGISTRY_VERSION, "keys": [asdict(r) for r in records]}
        with atomic_write(self.registry_path, mode=0o600) as f:
            f.write(json.dumps(doc, indent=2, sort_keys=True).encode("utf-8") + b"\n")

    # -- queries --

    def records(self) -> list[KeyRecord]:
        return self._read()

    def find(self, ref: str) -> KeyRecord:
        """A key by name, id, or unique id prefix (4+ hex digits)."""
        records = self._read()
        for r in records:
            if r.name == ref or r.id == ref:
                return r
        hits = [r for r in records if len(ref) >= 4 and r.id.startswith(ref.lower())]
        if len(hits) == 1:
            return hits[0]
        if len(hits) > 1:
            raise KeystoreError(f"key id prefix {ref!r} is ambiguous")
        raise KeystoreError(f"no key named {ref!r} in {self.home}", hint="list keys with `sealedckpt key list`")

    def default(self, kind: Kind = "symmetric") -> KeyRecord | None:
        return next((r for r in self._read() if r.kind == kind and r.default), None)

    def secret(self, record: KeyRecord, passphrase: Passphrase | None = None) -> SecretKey:
        """The key itself. A protected key needs its passphrase (or the env passphrase file)."""
        if not record.has_secret:
            raise KeystoreError(f"key {record.name!r} is public only (no secret stored)")
        text = self._backend(record.backend).get(record.id)
        if text is None:
            raise KeystoreError(
                f"the secret of key {record.name!r} ({record.id}) is missing from the {record.backend} store"
            )
        if text.startswith(_PROTECTED_PREFIX):
            passphrase = passphrase or _env_passphrase() or self._ask(record)
            if passphrase is None:
                raise NoKeyError(
                    f"key {record.name!r} is protected by a passphrase",
                    hint=f"enter it when asked, or point {ENV_PASSPHRASE_FILE} at a file holding it",
                )
            try:
                blob = base64.b64decode(text[len(_PROTECTED_PREFIX) :], validate=True)
            except ValueError:
                raise KeystoreError(f"protected key {record.name!r} is damaged") from None
            plain = open_secret(passphrase, blob, _PROTECT_AAD + record.id.encode())
            if plain is None:
                raise NoKeyError(f"wrong passphrase for key {record.name!r}")
            text = plain.decode("ascii")
        try:
            key = textkeys.secret_from_text(text)
        except ValueError:
            raise KeystoreError(f"the stored secret of key {record.name!r} is damaged") from None
        if key.key_id != record.id:
            raise KeystoreError(f"the stored secret of key {record.name!r} does not match its id")
        return key

    def public(self, record: KeyRecord) -> PublicKey:
        if record.public is None:
            raise KeystoreError(f"key {record.name!r} ({record.kind}) has no public key")
        return textkeys.public_from_text(record.public)

    # -- changes --

    def add(
        self,
        key: SecretKey | PublicKey,
        name: str | None = None,
        *,
        default: bool = False,
        protect: Passphrase | None = None,
    ) -> KeyRecord:
        """Store a key (secret, or public only) under a unique name."""
        kind = _kind_of(key)
        secret = isinstance(key, (SymmetricKey, SigningKey, RecipientKey))
        if protect is not None and not secret:
            raise InvalidArgumentError("only secret keys can be passphrase-protected")
        public: str | None = None
        if isinstance(key, (SigningKey, RecipientKey)):
            public = textkeys.public_to_text(key.public)
        elif isinstance(key, (VerifyKey, RecipientPublicKey)):
            public = textkeys.public_to_text(key)
        with self._locked():
            records = self._read()
            name = name or f"{kind}-{key.key_id[:8]}"
            check_name(name)
            if any(r.name == name for r in records):
                raise KeystoreError(f"a key named {name!r} already exists")
            if any(r.id == key.key_id for r in records):
                raise KeystoreError(f"this key is already stored (id {key.key_id})")
            backend = "none"
            if isinstance(key, (SymmetricKey, SigningKey, RecipientKey)):
                store = self.secrets()
                text = textkeys.secret_to_text(key)
                if protect is not None:
                    blob = seal_secret(protect, text.encode("ascii"), _PROTECT_AAD + key.key_id.encode())
                    text = _PROTECTED_PREFIX + base64.b64encode(blob).decode("ascii")
                store.put(key.key_id, text)
                backend = store.name
            is_default = default or (secret and not any(r.kind == kind and r.default for r in records))
            if is_default:
                records = [replace(r, default=False) if r.kind == kind else r for r in records]
            rec = KeyRecord(
                key.key_id, name, kind, _now(), backend, public, default=is_default, protected=protect is not None
            )
            records.append(rec)
            self._write(records)
        return rec

    def generate(
        self,
        kind: Kind = "symmetric",
        name: str | None = None,
        *,
        default: bool = False,
        protect: Passphrase | None = None,
    ) -> KeyRecord:
        cls = _GENERATE.get(kind)
        if cls is None:
            raise InvalidArgumentError(f"unknown key kind {kind!r}")
        return self.add(cls.generate(), name, default=default, protect=protect)

    def set_default(self, ref: str) -> KeyRecord:
        with self._locked():
            target = self.find(ref)
            if target.retired or not target.has_secret:
                raise KeystoreError(f"key {target.name!r} cannot be the default (retired or public only)")
            records = [replace(r, default=(r.id == target.id)) if r.kind == target.kind else r for r in self._read()]
            self._write(records)
        return self.find(target.id)

    def remove(self, ref: str) -> KeyRecord:
        with self._locked():
            rec = self.find(ref)
            if rec.has_secret:
                self._backend(rec.backend).delete(rec.id)
            self._write([r for r in self._read() if r.id != rec.id])
        return rec

    def rotate(self, ref: str, *, protect: Passphrase | None = None) -> tuple[KeyRecord, KeyRecord]:
        """A new key of the same kind becomes the default; the old one is kept, retired."""
        old = self.find(ref)
        if not old.has_secret:
            raise KeystoreError(f"key {old.name!r} is public only; rotate it where its secret lives")
        if old.retired:
            raise KeystoreError(f"key {old.name!r} is already retired (replaced by {old.replaced_by})")
        base = old.name.split("@", 1)[0]
        stamp = _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%dT%H%M%S")
        names = {r.name for r in self._read()}
        name, n = f"{base}@{stamp}", 2
        while name in names:
            name, n = f"{base}@{stamp}-{n}", n + 1
        new = self.generate(old.kind, name, default=True, protect=protect)
        with self._locked():
            records = [
                replace(r, retired=True, replaced_by=new.id, default=False) if r.id == old.id else r
                for r in self._read()
            ]
            self._write(records)
        return self.find(old.id), new

    # -- resolution for save / load --

    def keys_for_slots(self, slots: Sequence[SlotHint]) -> list[SecretKey]:
        """Secrets that could open a file with these key slots: the symmetric keys their hints
        name, then every recipient identity if a slot is for a recipient. Each key is unlocked
        at most once, however many slots name it (a protected key costs one scrypt run)."""
        by_id = {r.id: r for r in self._read() if r.has_secret}
        wanted: list[KeyRecord] = []
        for slot in slots:
            rec = by_id.get(slot.key_id) if slot.kind == "symmetric" and slot.key_id is not None else None
            if rec is not None and rec.kind == "symmetric" and rec not in wanted:
                wanted.append(rec)
        for kind in ("recipient", "pq-recipient"):
            if any(slot.kind == kind for slot in slots):
                wanted.extend(r for r in by_id.values() if r.kind == kind)
        return [self.secret(r) for r in wanted]


def check_name(name: str) -> None:
    if not (1 <= len(name) <= 64) or not all(c.isalnum() or c in "-_.@" for c in name) or name[0] in ".-":
        raise KeystoreError(f"invalid key name {name!r}: use 1-64 letters, digits, '-', '_', '.', '@'")


def _env_passphrase() -> Passphrase | None:
    path = os.environ.get(ENV_PASSPHRASE_FILE)
    if not path:
        return None
    try:
        text = Path(path).read_text(encoding="utf-8").rstrip("\n")
    except OSError as exc:
        raise KeystoreError(f"cannot read {ENV_PASSPHRASE_FILE}: {exc.strerror}") from None
    return Passphrase(text)


def env_key() -> SymmetricKey | None:
    """``SEALEDCKPT_KEY``: a symmetric key in text form (``SCKPT-SYMMETRIC-KEY-1...``) or base64."""
    text = os.environ.get(ENV_KEY)
    if not text:
        return None
    text = text.strip()
    try:
        if text.upper().startswith(textkeys.HRP_SYMMETRIC.upper() + "1"):
            key = textkeys.secret_from_text(text)
            assert isinstance(key, SymmetricKey)
            return key
        return SymmetricKey(base64.b64decode(text, validate=True))
    except ValueError:
        raise KeystoreError(f"{ENV_KEY} does not hold a valid 32-byte key (text form or base64)") from None

"""The keystore: secrets in the OS keyring or in sealedckpt's own file store, plus a registry.

``keyring`` cannot list entries, so public facts about every key (id, name, kind, created,
public key, default, retired/replaced-by, where the secret lives) are kept in a registry file
under the data directory. Secrets live in one of:

- :class:`KeyringSecrets`: the OS keyring via the ``keyring`` package (service ``sealedckpt``,
  one entry per key id, the key's text form as the password);
- :class:`FileSecrets`: ``$SEALEDCKPT_HOME/keys/<id>.key``, directory 0700 and files 0600,
  created with O_EXCL; a group- or world-accessible store is refused;
- :class:`MemorySecrets`: for tests.

Which one: ``SEALEDCKPT_KEYSTORE=keyring|file`` forces it; otherwise the OS keyring when
``keyring`` has a recommended backend, else the file store (said once, when it is created,
as a :class:`KeystoreNotice` warning).
"""

from __future__ import annotations

import base64
import contextlib
import datetime as _dt
import json
import os
import stat
import sys
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Literal, Protocol

from .._fs import atomic_write
from ..crypto import (
    Passphrase,
    RecipientKey,
    RecipientPublicKey,
    SigningKey,
    SymmetricKey,
    VerifyKey,
    open_secret,
    seal_secret,
    textkeys,
)
from ..errors import KeystoreError, NoKeyError

Kind = Literal["symmetric", "recipient", "signing"]
KINDS: tuple[Kind, ...] = ("symmetric", "recipient", "signing")
SERVICE = "sealedckpt"
ENV_HOME = "SEALEDCKPT_HOME"
ENV_BACKEND = "SEALEDCKPT_KEYSTORE"
ENV_KEY = "SEALEDCKPT_KEY"
ENV_PASSPHRASE_FILE = "SEALEDCKPT_KEYSTORE_PASSPHRASE_FILE"
_PROTECTED_PREFIX = "sealedckpt-protected-v1:"
_PROTECT_AAD = b"sealedckpt/v1 protected key\x00"
REGISTRY_VERSION = 1

SecretKey = SymmetricKey | SigningKey | RecipientKey
PublicKey = RecipientPublicKey | VerifyKey


class KeystoreNotice(UserWarning):
    """Informational: which secret store is in use."""


def default_home() -> Path:
    """``$SEALEDCKPT_HOME``, else the platform's per-user data directory."""
    env = os.environ.get(ENV_HOME)
    if env:
        return Path(env)
    if sys.platform == "win32":  # pragma: no cover
        return Path(os.environ.get("LOCALAPPDATA", Path.home() / "AppData" / "Local")) / "sealedckpt"
    if sys.platform == "darwin":  # pragma: no cover
        return Path.home() / "Library" / "Application Support" / "sealedckpt"
    xdg = os.environ.get("XDG_DATA_HOME")
    return (Path(xdg) if xdg else Path.home() / ".local" / "share") / "sealedckpt"


# --- secret backends ----------------------------------------------------------------------------


class SecretBackend(Protocol):
    name: str

    def put(self, key_id: str, secret: str) -> None: ...
    def get(self, key_id: str) -> str | None: ...
    def delete(self, key_id: str) -> None: ...


class MemorySecrets:
    name = "memory"

    def __init__(self) -> None:
        self._d: dict[str, str] = {}

    def put(self, key_id: str, secret: str) -> None:
        if key_id in self._d:
            raise KeystoreError(f"a secret for key {key_id} already exists")
        self._d[key_id] = secret

    def get(self, key_id: str) -> str | None:
        return self._d.get(key_id)

    def delete(self, key_id: str) -> None:
        self._d.pop(key_id, None)


def _check_private(path: Path, want_dir: bool) -> None:
    st = os.lstat(path)
    if stat.S_ISLNK(st.st_mode):
        raise KeystoreError(f"{path} is a symbolic link; refusing to use it")
    if want_dir != stat.S_ISDIR(st.st_mode):
        raise KeystoreError(f"{path} is not a {'directory' if want_dir else 'regular file'}")
    if os.name == "posix":
        if st.st_mode & 0o077:
            raise KeystoreError(
                f"{path} is accessible by other users (mode {stat.S_IMODE(st.st_mode):o}); refusing to use it",
                hint=f"chmod {'700' if want_dir else '600'} {path}",
            )
        if st.st_uid != os.getuid():
            raise KeystoreError(f"{path} is owned by another user; refusing to use it")


def _private_dir(path: Path) -> Path:
    try:
        path.mkdir(mode=0o700, parents=True)
    except FileExistsError:
        pass  # another process may have won the race; _check_private vets what is there
    else:
        os.chmod(path, 0o700)  # mkdir's mode is masked by the umask
    _check_private(path, want_dir=True)
    return path


class FileSecrets:
    """Secrets as 0600 files in a 0700 directory (the embedded default)."""

    name = "file"

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def _path(self, key_id: str) -> Path:
        if not key_id.isalnum():
            raise KeystoreError(f"invalid key id {key_id!r}")
        return _private_dir(self.directory) / f"{key_id}.key"

    def put(self, key_id: str, secret: str) -> None:
        p = self._path(key_id)
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
        try:
            fd = os.open(p, flags, 0o600)
        except FileExistsError:
            raise KeystoreError(f"a secret for key {key_id} already exists") from None
        with os.fdopen(fd, "w", encoding="ascii") as f:
            f.write(secret + "\n")
            f.flush()
            os.fsync(f.fileno())

    def get(self, key_id: str) -> str | None:
        p = self._path(key_id)
        try:
            _check_private(p, want_dir=False)
            return p.read_text(encoding="ascii").strip()
        except FileNotFoundError:  # absent, or removed by another process meanwhile
            return None

    def delete(self, key_id: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            self._path(key_id).unlink()


class KeyringSecrets:
    """Secrets in the OS keyring (Secret Service, macOS Keychain, Windows Credential Locker)."""

    name = "keyring"

    def __init__(self, backend: Any = None) -> None:
        import keyring

        self._kr = backend if backend is not None else keyring.get_keyring()

    def put(self, key_id: str, secret: str) -> None:
        if self.get(key_id) is not None:
            raise KeystoreError(f"a secret for key {key_id} already exists in the keyring")
        self._call(self._kr.set_password, SERVICE, key_id, secret)

    def get(self, key_id: str) -> str | None:
        out = self._call(self._kr.get_password, SERVICE, key_id)
        return None if out is None else str(out)

    def delete(self, key_id: str) -> None:
        import keyring.errors

        with contextlib.suppress(keyring.errors.PasswordDeleteError):
            self._call(self._kr.delete_password, SERVICE, key_id)

    @staticmethod
    def _call(fn: Callable[..., Any], *args: str) -> Any:
        import keyring.errors

        try:
            return fn(*args)
        except keyring.errors.PasswordDeleteError:
            raise
        except keyring.errors.KeyringError as exc:
            raise KeystoreError(
                f"OS keyring failed: {type(exc).__name__}", hint=f"set {ENV_BACKEND}=file to use the file keystore"
            ) from None


def keyring_available() -> bool:
    """True when ``keyring`` has a recommended (priority >= 1) backend."""
    try:
        import keyring
        from keyring.backends import fail
    except ImportError:  # pragma: no cover - keyring is a dependency
        return False
    kr = keyring.get_keyring()
    return not isinstance(kr, fail.Keyring) and float(getattr(kr, "priority", 0)) >= 1


def choose_backend(home: Path) -> SecretBackend:
    forced = os.environ.get(ENV_BACKEND, "").strip().lower()
    if forced == "keyring":
        return KeyringSecrets()
    if forced == "file":
        return FileSecrets(home / "keys")
    if forced:
        raise KeystoreError(f"{ENV_BACKEND} must be 'keyring' or 'file', not {forced!r}")
    if keyring_available():
        return KeyringSecrets()
    if (home / "keys").exists():
        return FileSecrets(home / "keys")  # said when the store was created
    warnings.warn(
        f"no OS keyring available; using sealedckpt's file keystore in {home / 'keys'} (files 0600). "
        f"Set {ENV_BACKEND}=file to silence this, or =keyring to require the OS keyring.",
        KeystoreNotice,
        stacklevel=3,
    )
    return FileSecrets(home / "keys")


@contextlib.contextmanager
def home_lock(home: Path, name: str) -> Iterator[None]:
    """An exclusive flock on ``home/name``: read-modify-write of a registry by many processes."""
    _private_dir(home)
    fd = os.open(home / name, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o600)
    try:
        if os.name == "posix":
            import fcntl

            fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


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
    if isinstance(k, (RecipientKey, RecipientPublicKey)):
        return "recipient"
    return "signing"


PassphraseProvider = Callable[["KeyRecord"], Passphrase | None]
_provider: PassphraseProvider | None = None


def set_passphrase_provider(fn: PassphraseProvider | None) -> None:
    """How protected keys get their passphrase when the caller gave none (the CLI prompts)."""
    global _provider
    _provider = fn


class Keystore:
    """Named keys: a registry of public facts plus a secret backend."""

    def __init__(self, home: Path | None = None, secrets: SecretBackend | None = None) -> None:
        self.home = Path(home) if home is not None else default_home()
        self._secrets = secrets
        self._backends: dict[str, SecretBackend] = {}

    # -- plumbing --

    @property
    def registry_path(self) -> Path:
        return self.home / "registry.json"

    def secrets(self) -> SecretBackend:
        if self._secrets is None:
            _private_dir(self.home)
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
        _check_private(self.home, want_dir=True)
        try:
            doc = json.loads(p.read_text(encoding="utf-8"))
            if doc.get("version") != REGISTRY_VERSION:
                raise KeystoreError(f"unsupported keystore registry version {doc.get('version')!r}")
            return [KeyRecord(**r) for r in doc["keys"]]
        except (ValueError, TypeError, KeyError) as exc:
            raise KeystoreError(f"keystore registry {p} is damaged: {type(exc).__name__}") from None

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
            passphrase = passphrase or _env_passphrase() or (_provider(record) if _provider else None)
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
            raise ValueError("only secret keys can be passphrase-protected")
        public: str | None = None
        if isinstance(key, (SigningKey, RecipientKey)):
            public = textkeys.public_to_text(key.public)
        elif isinstance(key, (VerifyKey, RecipientPublicKey)):
            public = textkeys.public_to_text(key)
        with self._locked():
            records = self._read()
            name = name or f"{kind}-{key.key_id[:8]}"
            _check_name(name)
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
        key: SecretKey
        if kind == "symmetric":
            key = SymmetricKey.generate()
        elif kind == "recipient":
            key = RecipientKey.generate()
        elif kind == "signing":
            key = SigningKey.generate()
        else:
            raise ValueError(f"unknown key kind {kind!r}")
        return self.add(key, name, default=default, protect=protect)

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

    def keys_for_header(self, slot_key_ids: Sequence[str], want_recipients: bool) -> list[SecretKey]:
        """Secrets that could open a file: symmetric keys its slot hints name, then identities."""
        out: list[SecretKey] = []
        by_id = {r.id: r for r in self._read() if r.has_secret}
        for kid in slot_key_ids:
            rec = by_id.get(kid)
            if rec is not None and rec.kind == "symmetric":
                out.append(self.secret(rec))
        if want_recipients:
            out.extend(self.secret(r) for r in by_id.values() if r.kind == "recipient")
        return out


def _check_name(name: str) -> None:
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

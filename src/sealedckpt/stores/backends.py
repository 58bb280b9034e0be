"""Where secrets live: the OS keyring, or sealedckpt's own 0600 file store.

- :class:`KeyringSecrets`: the OS keyring via the ``keyring`` package (service ``sealedckpt``,
  one entry per key id, the key's text form as the password);
- :class:`FileSecrets`: ``$SEALEDCKPT_HOME/keys/<id>.key``, directory 0700 and files 0600,
  created with O_EXCL; a group- or world-accessible store is refused.

Which one: ``SEALEDCKPT_KEYSTORE=keyring|file`` forces it; otherwise the OS keyring when
``keyring`` has a recommended backend, else the file store (said once, when it is created,
as a :class:`KeystoreNotice` warning).
"""

from __future__ import annotations

import contextlib
import os
import stat
import sys
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Protocol

from .._fs import flock
from ..errors import KeystoreError

SERVICE = "sealedckpt"
ENV_HOME = "SEALEDCKPT_HOME"
ENV_BACKEND = "SEALEDCKPT_KEYSTORE"


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


class SecretBackend(Protocol):
    name: str

    def put(self, key_id: str, secret: str) -> None: ...
    def get(self, key_id: str) -> str | None: ...
    def delete(self, key_id: str) -> None: ...


def check_private(path: Path, want_dir: bool) -> None:
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


def private_dir(path: Path) -> Path:
    try:
        path.mkdir(mode=0o700, parents=True)
    except FileExistsError:
        pass  # another process may have won the race; check_private vets what is there
    else:
        os.chmod(path, 0o700)  # mkdir's mode is masked by the umask
    check_private(path, want_dir=True)
    return path


class FileSecrets:
    """Secrets as 0600 files in a 0700 directory (the embedded default)."""

    name = "file"

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def _path(self, key_id: str) -> Path:
        if not key_id.isalnum():
            raise KeystoreError(f"invalid key id {key_id!r}")
        return private_dir(self.directory) / f"{key_id}.key"

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
            check_private(p, want_dir=False)
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
    private_dir(home)
    fd = os.open(home / name, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o600)
    try:
        flock(fd, exclusive=True)
        yield
    finally:
        os.close(fd)

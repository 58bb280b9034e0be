"""Keystore conformance: every secret backend passes the same suite, including a real Secret Service."""

from __future__ import annotations

import json
import os
import stat
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import MemorySecrets

import sealedckpt
from sealedckpt.crypto import (
    CompositeSigningKey,
    Passphrase,
    PQRecipientKey,
    RecipientKey,
    SigningKey,
    SymmetricKey,
    textkeys,
)
from sealedckpt.stores import backends
from sealedckpt.stores import keystore as keys


def _secret_service() -> object | None:
    """A real Secret Service keyring, when a session bus with an unlocked gnome-keyring is up."""
    try:
        from keyring.backends import SecretService

        kr = SecretService.Keyring()
        kr.get_password("sealedckpt-probe", "probe")
    except Exception:  # the probe only decides whether to run; errors mean "not available"
        return None
    return kr


SECRET_SERVICE = _secret_service()
NEED_SECRET_SERVICE = os.environ.get("SEALEDCKPT_TEST_SECRET_SERVICE") == "1" or os.environ.get("CI") == "true"


def test_secret_service_is_present_when_required() -> None:
    if NEED_SECRET_SERVICE:
        assert SECRET_SERVICE is not None, "CI must run these tests against a real Secret Service (./run test)"
    else:
        pytest.skip("no Secret Service session here; `./run test` starts one")


@pytest.fixture(params=["memory", "file", "secret-service"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[backends.SecretBackend]:
    if request.param == "memory":
        yield MemorySecrets()
    elif request.param == "file":
        yield backends.FileSecrets(tmp_path / "home" / "keys")
    else:
        if SECRET_SERVICE is None:
            pytest.skip("no Secret Service session")
        yield backends.KeyringSecrets(SECRET_SERVICE)


def _kid() -> str:
    return uuid.uuid4().hex[:16]


def test_backend_put_get_delete(backend: backends.SecretBackend) -> None:
    kid = _kid()
    assert backend.get(kid) is None
    text = textkeys.secret_to_text(SymmetricKey.generate())
    backend.put(kid, text)
    assert backend.get(kid) == text
    with pytest.raises(keys.KeystoreError, match="already exists"):
        backend.put(kid, "other")
    assert backend.get(kid) == text  # not overwritten
    backend.delete(kid)
    assert backend.get(kid) is None
    backend.delete(kid)  # idempotent


@pytest.mark.parametrize("kind", keys.KINDS)
def test_keystore_over_each_backend(backend: backends.SecretBackend, tmp_path: Path, kind: keys.Kind) -> None:
    ks = keys.Keystore(tmp_path / "home", secrets=backend)
    rec = ks.generate(kind, f"k-{kind}")
    assert rec.default and rec.backend == backend.name and ks.find(f"k-{kind}") == rec
    key = ks.secret(rec)
    assert key.key_id == rec.id
    classes = {"symmetric": SymmetricKey, "recipient": RecipientKey, "signing": SigningKey,
               "pq-recipient": PQRecipientKey, "pq-signing": CompositeSigningKey}  # fmt: skip
    assert type(key) is classes[kind]
    if kind != "symmetric":
        assert rec.public is not None and ks.public(rec) == key.public  # type: ignore[union-attr]
    second = ks.generate(kind, f"k2-{kind}", default=True)
    assert ks.default(kind) == ks.find(second.id) and not ks.find(rec.id).default
    old, new = ks.rotate(second.name)
    assert old.retired and old.replaced_by == new.id and new.default and not old.default
    assert ks.secret(old).key_id == old.id  # retired keys still open old files
    for r in ks.records():
        ks.remove(r.id)
        assert backend.get(r.id) is None
    assert ks.records() == []


def test_passphrase_protected_key(backend: backends.SecretBackend, tmp_path: Path) -> None:
    ks = keys.Keystore(tmp_path / "home", secrets=backend)
    pw = Passphrase("correct horse", log2n=10)
    rec = ks.generate("symmetric", "prot", protect=pw)
    assert rec.protected
    stored = backend.get(rec.id)
    assert stored is not None and stored.startswith("sealedckpt-protected-v1:") and "SCKPT-" not in stored
    with pytest.raises(sealedckpt.NoKeyError, match="protected by a passphrase"):
        ks.secret(rec)
    with pytest.raises(sealedckpt.NoKeyError, match="wrong passphrase"):
        ks.secret(rec, Passphrase("wrong", log2n=10))
    assert ks.secret(rec, Passphrase("correct horse")).key_id == rec.id
    ks.remove(rec.id)


def test_passphrase_callback_is_injected(tmp_path: Path) -> None:
    """A protected key asks the keystore's own callback, with the record it is unlocking."""
    asked: list[str] = []

    def ask(rec: keys.KeyRecord) -> Passphrase | None:
        asked.append(rec.name)
        return Passphrase("pw", log2n=10) if rec.name == "prot" else None

    home = tmp_path / "home"
    shared = MemorySecrets()
    keys.Keystore(home, secrets=shared).generate("symmetric", "prot", protect=Passphrase("pw", log2n=10))
    keys.Keystore(home, secrets=shared).generate("symmetric", "other", protect=Passphrase("x", log2n=10))
    ks = keys.Keystore(home, secrets=shared, passphrase=ask)
    assert ks.secret(ks.find("prot")).key_id == ks.find("prot").id
    with pytest.raises(sealedckpt.NoKeyError, match="protected by a passphrase"):
        ks.secret(ks.find("other"))  # the callback declined
    assert asked == ["prot", "other"]
    with pytest.raises(sealedckpt.NoKeyError, match="protected by a passphrase"):
        keys.Keystore(home, secrets=shared).secret(ks.find("prot"))  # another keystore: no callback


def test_file_store_layout_and_permissions(tmp_path: Path) -> None:
    home = tmp_path / "home"
    ks = keys.Keystore(home, secrets=backends.FileSecrets(home / "keys"))
    rec = ks.generate("symmetric", "a")
    assert stat.S_IMODE(os.stat(home).st_mode) == 0o700
    assert stat.S_IMODE(os.stat(home / "keys").st_mode) == 0o700
    assert stat.S_IMODE(os.stat(home / "keys" / f"{rec.id}.key").st_mode) == 0o600
    assert stat.S_IMODE(os.stat(home / "registry.json").st_mode) == 0o600
    registry = (home / "registry.json").read_text()
    secret = (home / "keys" / f"{rec.id}.key").read_text().strip()
    assert secret.startswith("SCKPT-SYMMETRIC-KEY-1") and secret not in registry
    assert json.loads(registry)["keys"][0]["name"] == "a"


def test_file_store_refuses_loose_permissions_and_links(tmp_path: Path) -> None:
    home = tmp_path / "home"
    store = backends.FileSecrets(home / "keys")
    ks = keys.Keystore(home, secrets=store)
    rec = ks.generate("symmetric", "a")
    key_file = home / "keys" / f"{rec.id}.key"
    os.chmod(key_file, 0o644)
    with pytest.raises(keys.KeystoreError, match="accessible by other users") as ei:
        ks.secret(rec)
    assert ei.value.hint == f"chmod 600 {key_file}"
    os.chmod(key_file, 0o600)
    os.chmod(home / "keys", 0o755)
    with pytest.raises(keys.KeystoreError, match="accessible by other users"):
        ks.secret(rec)
    os.chmod(home / "keys", 0o700)
    target = tmp_path / "elsewhere.key"
    target.write_text(key_file.read_text())
    os.chmod(target, 0o600)
    key_file.unlink()
    key_file.symlink_to(target)
    with pytest.raises(keys.KeystoreError, match="symbolic link"):
        ks.secret(rec)


def test_names_ids_and_public_only_entries(tmp_path: Path) -> None:
    ks = keys.Keystore(tmp_path / "h", secrets=MemorySecrets())
    rec = ks.generate("symmetric", "train")
    assert ks.find(rec.id[:6]) == rec and ks.find(rec.id) == rec
    with pytest.raises(keys.KeystoreError, match="already exists"):
        ks.generate("symmetric", "train")
    with pytest.raises(keys.KeystoreError, match="invalid key name"):
        ks.generate("symmetric", "../evil")
    with pytest.raises(keys.KeystoreError, match="no key named"):
        ks.find("nope")
    vk = SigningKey.generate().public
    pub = ks.add(vk, "partner")
    assert not pub.has_secret and not pub.default and ks.public(pub) == vk
    with pytest.raises(keys.KeystoreError, match="public only"):
        ks.secret(pub)
    with pytest.raises(keys.KeystoreError, match="already stored"):
        ks.add(vk, "again")


def test_backend_choice(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SEALEDCKPT_KEYSTORE", "file")
    assert isinstance(backends.choose_backend(tmp_path), backends.FileSecrets)
    monkeypatch.setenv("SEALEDCKPT_KEYSTORE", "bogus")
    with pytest.raises(keys.KeystoreError, match="must be 'keyring' or 'file'"):
        backends.choose_backend(tmp_path)
    monkeypatch.delenv("SEALEDCKPT_KEYSTORE")
    monkeypatch.setattr(backends, "keyring_available", lambda: False)
    with pytest.warns(backends.KeystoreNotice, match="file keystore"):
        assert isinstance(backends.choose_backend(tmp_path), backends.FileSecrets)
    (tmp_path / "keys").mkdir()
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert isinstance(backends.choose_backend(tmp_path), backends.FileSecrets)  # said once only
    monkeypatch.setattr(backends, "keyring_available", lambda: True)
    assert isinstance(backends.choose_backend(tmp_path), backends.KeyringSecrets)


def test_concurrent_writers_do_not_lose_keys(tmp_path: Path) -> None:
    import multiprocessing as mp

    home = tmp_path / "home"
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_gen_many, args=(str(home), i)) for i in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    ks = keys.Keystore(home, secrets=backends.FileSecrets(home / "keys"))
    names = sorted(r.name for r in ks.records())
    assert names == sorted(f"w{i}-{j}" for i in range(4) for j in range(5))
    assert sum(r.default for r in ks.records()) == 1


def test_private_dir_tolerates_losing_the_mkdir_race(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Another process creates the directory between our check and our mkdir: not an error."""
    target = tmp_path / "home"
    real_mkdir = Path.mkdir

    def racing_mkdir(self: Path, mode: int = 0o777, parents: bool = False, exist_ok: bool = False) -> None:
        real_mkdir(self, mode=0o700, parents=parents, exist_ok=True)  # the other process wins
        raise FileExistsError(17, "File exists", str(self))

    monkeypatch.setattr(Path, "mkdir", racing_mkdir)
    assert backends.private_dir(target) == target
    assert stat.S_IMODE(target.stat().st_mode) == 0o700
    monkeypatch.undo()
    os.chmod(target, 0o755)  # what the winner left is still vetted
    with pytest.raises(keys.KeystoreError, match="accessible by other users"):
        backends.private_dir(target)


def _gen_many(home: str, i: int) -> None:
    ks = keys.Keystore(Path(home), secrets=backends.FileSecrets(Path(home) / "keys"))
    for j in range(5):
        ks.generate("symmetric", f"w{i}-{j}")

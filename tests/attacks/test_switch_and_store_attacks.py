"""Attacks on switches and stores: unknown switch values, slot hints naming one protected key,
crafted trust stores and registries, audit records of a failed signed load."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import sealedckpt


@pytest.fixture
def unsigned(tmp_path: Path, key: sealedckpt.SymmetricKey) -> Path:
    p = tmp_path / "u.sealed"
    sealedckpt.save({"w": torch.ones(2)}, p, key=key)
    return p


@pytest.mark.parametrize("value", ["required", "enabled", "always", "y", "2", "ON please"])
def test_require_signature_unknown_value_fails_closed(
    monkeypatch: pytest.MonkeyPatch, unsigned: Path, key: sealedckpt.SymmetricKey, value: str
) -> None:
    monkeypatch.setenv("SEALEDCKPT_REQUIRE_SIGNATURE", value)
    with pytest.raises(sealedckpt.SignatureError, match="SEALEDCKPT_REQUIRE_SIGNATURE must be 1 or 0"):
        sealedckpt.load(unsigned, key=key)
    with pytest.raises(sealedckpt.SignatureError, match="must be 1 or 0"):
        sealedckpt.open(unsigned, key=key)
    with pytest.raises(sealedckpt.SignatureError, match="must be 1 or 0"):
        sealedckpt.verify(unsigned)


@pytest.mark.parametrize("value", ["0", "off", "no", "false", ""])
def test_require_signature_off_values(
    monkeypatch: pytest.MonkeyPatch, unsigned: Path, key: sealedckpt.SymmetricKey, value: str
) -> None:
    monkeypatch.setenv("SEALEDCKPT_REQUIRE_SIGNATURE", value)
    assert torch.equal(sealedckpt.load(unsigned, key=key)["w"], torch.ones(2))


def test_protected_keystore_key_is_unlocked_once_per_open(tmp_path: Path) -> None:
    """64 slots whose (unauthenticated) hints all name one passphrase-protected keystore key:
    the keystore asks for the passphrase, and runs scrypt, once, not 64 times."""
    from helpers import MemorySecrets

    from sealedckpt.stores.keystore import KeyRecord, Keystore

    home, secrets = tmp_path / "home", MemorySecrets()
    rec = Keystore(home, secrets=secrets).generate("symmetric", "prot", protect=sealedckpt.Passphrase("pw", log2n=10))
    asked: list[str] = []

    def ask(r: KeyRecord) -> sealedckpt.Passphrase:
        asked.append(r.name)
        return sealedckpt.Passphrase("pw", log2n=10)

    others = [sealedckpt.SymmetricKey.generate() for _ in range(64)]
    path = tmp_path / "many.sealed"
    sealedckpt.save({"w": torch.ones(1)}, path, key=others)
    blob = path.read_bytes()
    for k in others:  # every slot's hint now names the protected key
        assert blob.count(k.key_id_bytes) == 1
        blob = blob.replace(k.key_id_bytes, bytes.fromhex(rec.id))
    path.write_bytes(blob)
    with pytest.raises(sealedckpt.IntegrityError):
        sealedckpt.load(path, keystore=Keystore(home, secrets=secrets, passphrase=ask))
    assert asked == ["prot"]


@pytest.mark.parametrize(
    "doc",
    [
        b"",
        b"[]",
        b'{"version": 1}',
        b'{"version": 1, "publishers": {}}',
        b'{"version": 1, "publishers": [5]}',
        b'{"version": 1, "publishers": [{"name": 5, "public": "x", "added": "t"}]}',
        b'{"version": 1, "publishers": [{"name": "a", "public": "x"}]}',
        b'{"version": 1, "publishers": [{"name": "a", "public": "x", "added": "t", "extra": 1}]}',
        b'{"version": 1, "publishers": [{"name": "a", "public": "sckpt-vk1xyz", "added": "t"}]}',
        b'{"version": true, "publishers": []}',
        b'{"version": 1, "version": 1, "publishers": []}',
        b"\xff\xfe",
        b"[" * 100_000,
    ],
)
def test_trust_store_parser_is_strict_and_typed(tmp_path: Path, doc: bytes) -> None:
    from sealedckpt.stores.trust import TrustStore

    home = tmp_path / "home"
    home.mkdir(mode=0o700)
    (home / "trust.json").write_bytes(doc)
    (home / "trust.json").chmod(0o600)
    with pytest.raises(sealedckpt.KeystoreError):
        TrustStore(home).publishers()


def test_keystore_registry_parser_is_strict_and_typed(tmp_path: Path) -> None:
    from sealedckpt.stores.keystore import Keystore

    home = tmp_path / "home"
    ks = Keystore(home, secrets=__import__("helpers").MemorySecrets())
    ks.generate("symmetric", "a")
    raw = (home / "registry.json").read_text()
    for bad in (raw.replace('"symmetric"', '"bogus"'), raw.replace('"default": true', '"default": 1'), "{}"):
        (home / "registry.json").write_text(bad)
        with pytest.raises(sealedckpt.KeystoreError):
            ks.records()


def test_audit_names_the_signed_root_only_after_every_chunk_was_checked(
    tmp_path: Path, key: sealedckpt.SymmetricKey, signer: sealedckpt.SigningKey
) -> None:
    """A load that fails half-way records the key commitment, never the publisher's root or signers."""
    from sealedckpt.stores.audit import AuditLog, read

    path = tmp_path / "s.sealed"
    sealedckpt.save({"w": torch.ones(1 << 21)}, path, key=key, sign_with=signer)  # 8 MiB: 2+ chunks
    log = AuditLog(tmp_path / "audit.jsonl")
    sealedckpt.load(path, key=key, audit=log)
    ok = read(log.path)[-1]
    assert ok["outcome"] == "ok" and ok["digest"].startswith("blake3:") and ok["signer_ids"] == [signer.key_id]
    blob = bytearray(path.read_bytes())
    blob[len(blob) // 2] ^= 1  # a chunk in the middle
    path.write_bytes(bytes(blob))
    with pytest.raises(sealedckpt.IntegrityError):
        sealedckpt.load(path, key=key, audit=log)
    bad = read(log.path)[-1]
    assert bad["outcome"] == "error: IntegrityError"
    assert bad["digest"].startswith("commitment:") and bad["signer_ids"] == []

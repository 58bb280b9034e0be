"""Recipient (X25519) and passphrase (scrypt) slots, rewrap, and key=None resolution."""

from __future__ import annotations

import io
import struct
from pathlib import Path

import pytest
import torch
from helpers import load_bytes, seal_bytes

import sealedckpt
from sealedckpt import container
from sealedckpt.container import format as fmt
from sealedckpt.container.header import read_header
from sealedckpt.container.slots import ScryptSlot
from sealedckpt.container.stream import Source
from sealedckpt.crypto import Passphrase, RecipientKey, textkeys
from sealedckpt.stores import keystore as keys

FAST = 10  # scrypt work factor for tests


def test_multiple_recipients_each_open_the_file() -> None:
    alice, bob, eve = RecipientKey.generate(), RecipientKey.generate(), RecipientKey.generate()
    sym = sealedckpt.SymmetricKey.generate()
    data = seal_bytes({"w": torch.arange(4)}, [alice.public, bob, sym])  # a RecipientKey seals to its public half
    for k in (alice, bob, sym):
        assert torch.equal(load_bytes(data, k)["w"], torch.arange(4))  # type: ignore[index]
    with pytest.raises(sealedckpt.DecryptionError, match="2 recipient slot"):
        load_bytes(data, eve)
    info = sealedckpt.inspect(io.BytesIO(data))
    assert [s["type"] for s in info.key_slots] == ["recipient", "recipient", "symmetric"]


def test_recipient_slots_carry_no_identifier() -> None:
    alice = RecipientKey.generate()
    data = seal_bytes({"x": 1}, alice.public)
    assert alice.public.to_bytes() not in data and bytes.fromhex(alice.key_id) not in data


def test_low_order_share_is_rejected() -> None:
    alice = RecipientKey.generate()
    data = bytearray(seal_bytes({"x": 1}, alice.public))
    (content_len,) = struct.unpack_from("<I", data, 12)
    body = fmt.PREAMBLE_SIZE + content_len + 4 + 2 + 3
    data[body : body + 32] = bytes(32)  # the all-zero point has low order
    with pytest.raises(sealedckpt.FormatError, match="low-order"):
        load_bytes(bytes(data), alice)


def test_passphrase_slot() -> None:
    data = seal_bytes({"x": 1}, Passphrase("pw", log2n=FAST))
    assert load_bytes(data, Passphrase("pw")) == {"x": 1}
    with pytest.raises(sealedckpt.DecryptionError, match="wrong passphrase"):
        load_bytes(data, Passphrase("nope"))
    with pytest.raises(sealedckpt.FormatError, match="above the cap"):
        load_bytes(data, Passphrase("pw", max_log2n=FAST - 1))


def test_passphrase_work_factor_cap_protects_the_loader() -> None:
    """A crafted file demanding 2**30 scrypt is refused before any KDF work."""
    import time

    data = bytearray(seal_bytes({"x": 1}, Passphrase("pw", log2n=FAST)))
    (content_len,) = struct.unpack_from("<I", data, 12)
    data[fmt.PREAMBLE_SIZE + content_len + 4 + 2 + 3] = 30
    t = time.perf_counter()
    with pytest.raises(sealedckpt.FormatError, match="2\\*\\*30"):
        load_bytes(bytes(data), Passphrase("pw"))
    assert time.perf_counter() - t < 1.0


def test_passphrase_must_be_alone() -> None:
    with pytest.raises(ValueError, match="only key"):
        seal_bytes({"x": 1}, [Passphrase("pw", log2n=FAST), sealedckpt.SymmetricKey.generate()])
    # a crafted file with a passphrase slot next to another slot is malformed
    sym = sealedckpt.SymmetricKey.generate()
    data = seal_bytes({"x": 1}, sym)
    src = Source(io.BytesIO(data))
    header = read_header(src)
    slots = [*header.slots, ScryptSlot(FAST, bytes(16), bytes(48))]
    with pytest.raises(ValueError):
        fmt.build_slots(slots)
    raw = struct.pack("<H", len(slots)) + b"".join(
        bytes([s.type]) + struct.pack("<H", len(s.body)) + s.body for s in slots
    )
    with pytest.raises(sealedckpt.FormatError, match="only key slot"):
        fmt.parse_slots(raw)


def test_rewrap_replaces_slots_and_keeps_signatures() -> None:
    old, new = sealedckpt.SymmetricKey.generate(), sealedckpt.SymmetricKey.generate()
    signer = sealedckpt.SigningKey.generate()
    alice = RecipientKey.generate()
    data = seal_bytes({"w": torch.ones(3)}, old, sign_with=signer, metadata={"v": "1"})
    out = io.BytesIO()
    labels = container.rewrap(io.BytesIO(data), out, [old], [new, alice.public])
    assert labels == [new.key_id, "#1:recipient"]
    rewrapped = out.getvalue()
    for k in (new, alice):
        assert torch.equal(load_bytes(rewrapped, k, trusted_signers=[signer.public])["w"], torch.ones(3))  # type: ignore[index]
    with pytest.raises(sealedckpt.DecryptionError):
        load_bytes(rewrapped, old)
    assert sealedckpt.verify(io.BytesIO(rewrapped)).root == sealedckpt.verify(io.BytesIO(data)).root
    # the ciphertext is byte-identical: no re-encryption
    assert rewrapped.endswith(data[len(data) - 1000 :])


def test_rewrap_keep_and_remove() -> None:
    a, b, c = (sealedckpt.SymmetricKey.generate() for _ in range(3))
    data = seal_bytes({"x": 1}, [a, b])
    out = io.BytesIO()
    labels = container.rewrap(io.BytesIO(data), out, [a], [c], keep=True, remove=[b.key_id])
    assert labels == [a.key_id, c.key_id]
    with pytest.raises(sealedckpt.DecryptionError):
        load_bytes(out.getvalue(), b)
    with pytest.raises(sealedckpt.FormatError, match="no key slot"):
        container.rewrap(io.BytesIO(data), io.BytesIO(), [a], [], keep=True, remove=["0000000000000000"])
    with pytest.raises(ValueError, match="no key slot"):
        container.rewrap(io.BytesIO(data), io.BytesIO(), [a], [], keep=True, remove=[a.key_id, b.key_id])


def test_rewrap_needs_a_key_that_opens_the_file() -> None:
    data = seal_bytes({"x": 1}, sealedckpt.SymmetricKey.generate())
    out = io.BytesIO()
    with pytest.raises(sealedckpt.DecryptionError):
        container.rewrap(
            io.BytesIO(data), out, [sealedckpt.SymmetricKey.generate()], [sealedckpt.SymmetricKey.generate()]
        )
    assert out.getvalue() == b""  # nothing written


def test_key_none_uses_env_then_keystore(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(sealedckpt.NoKeyError, match="no default key"):
        seal_bytes({"x": 1}, None)
    ks = keys.Keystore()
    rec = ks.generate("symmetric", "main")
    data = seal_bytes({"x": 1}, None)
    info = sealedckpt.inspect(io.BytesIO(data))
    assert info.key_slots == [{"type": "symmetric", "key_id": rec.id}]
    assert load_bytes(data, None) == {"x": 1}  # the keystore finds the key the slot names
    # after rotation the retired key still opens old files
    _old, new = ks.rotate("main")
    assert load_bytes(data, None) == {"x": 1}
    assert sealedckpt.inspect(io.BytesIO(seal_bytes({"x": 2}, None))).key_slots[0]["key_id"] == new.id
    # SEALEDCKPT_KEY wins over the keystore
    env = sealedckpt.SymmetricKey.generate()
    monkeypatch.setenv("SEALEDCKPT_KEY", textkeys.secret_to_text(env))
    assert sealedckpt.inspect(io.BytesIO(seal_bytes({"x": 3}, None))).key_slots[0]["key_id"] == env.key_id
    with pytest.raises(sealedckpt.DecryptionError):
        load_bytes(data, None)  # env key given: the keystore is not consulted
    import base64

    monkeypatch.setenv("SEALEDCKPT_KEY", base64.b64encode(env.to_bytes()).decode())
    assert load_bytes(seal_bytes({"x": 4}, None), env) == {"x": 4}
    monkeypatch.setenv("SEALEDCKPT_KEY", "not a key")
    with pytest.raises(keys.KeystoreError, match="SEALEDCKPT_KEY"):
        seal_bytes({"x": 1}, None)


def test_keystore_recipient_identity_opens_files_sealed_to_it(monkeypatch: pytest.MonkeyPatch) -> None:
    ks = keys.Keystore()
    rec = ks.generate("recipient", "me")
    pub = ks.public(rec)
    data = seal_bytes({"x": 1}, pub)
    assert load_bytes(data, None) == {"x": 1}
    with pytest.raises(sealedckpt.NoKeyError, match="holds no key"):
        load_bytes(seal_bytes({"x": 1}, sealedckpt.SymmetricKey.generate()), None)


def test_key_types_are_checked() -> None:
    with pytest.raises(TypeError):
        seal_bytes({"x": 1}, sealedckpt.SigningKey.generate())
    with pytest.raises(TypeError):
        load_bytes(seal_bytes({"x": 1}, sealedckpt.SymmetricKey.generate()), RecipientKey.generate().public)
    with pytest.raises(TypeError):
        seal_bytes({"x": 1}, [])


def test_text_forms_reject_a_single_changed_character() -> None:
    for k in (RecipientKey.generate().public, sealedckpt.SigningKey.generate().public):
        text = textkeys.public_to_text(k)
        assert textkeys.public_from_text(text) == k
        assert textkeys.public_from_text(text.upper()) == k  # case-insensitive, not mixed
        for i in range(text.index("1") + 1, len(text)):
            alt = "q" if text[i] != "q" else "p"
            with pytest.raises(ValueError):
                textkeys.public_from_text(text[:i] + alt + text[i + 1 :])
    for s in (sealedckpt.SymmetricKey.generate(), sealedckpt.SigningKey.generate(), RecipientKey.generate()):
        t = textkeys.secret_to_text(s)
        assert t.startswith("SCKPT-") and textkeys.secret_from_text(t) == s
    assert "SCKPT" not in repr(sealedckpt.SymmetricKey.generate())


def test_secret_keys_refuse_pickling_and_compare_by_value() -> None:
    import copy
    import pickle

    for cls in (sealedckpt.SymmetricKey, sealedckpt.SigningKey, RecipientKey):
        k = cls.generate()
        assert k == cls.from_bytes(k.to_bytes()) and hash(k) == hash(cls.from_bytes(bytes(k)))
        assert k != cls.generate() and k.key_id in repr(k) and k.to_bytes().hex() not in repr(k)
        with pytest.raises(TypeError):
            pickle.dumps(k)
        with pytest.raises(TypeError):
            copy.copy(k)
    assert sealedckpt.SymmetricKey(bytes(32)) != sealedckpt.SigningKey(bytes(32))  # same bytes, other kind

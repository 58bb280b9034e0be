"""Hardening of the container and crypto layers (docs/FORMAT.md §5, §7, §8):

* signers are reported only once their signatures and every chunk digest they cover were checked;
* small-order and non-canonical Ed25519 public keys are refused wherever a VerifyKey is built;
* lazy reads release only chunks that authenticate at their position, final flag included;
* passphrase slots: one error for "does not open" and "opens but fails the commitment", a
  labelled scrypt salt; symmetric slots: a wrap key per file (HKDF salted with the file salt).
"""

from __future__ import annotations

import io
import sys
from pathlib import Path

import pytest
import torch
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

import sealedckpt
from sealedckpt import Passphrase, SigningKey, SymmetricKey, VerifyKey, container
from sealedckpt.crypto import textkeys

sys.path.insert(0, str(Path(__file__).resolve().parent / "attacks"))

from make_sig_corpus import ED25519_IDENTITY, Forger, sealed_bytes, state

sys.path.insert(0, str(Path(__file__).resolve().parent))
from helpers import last_signature

P = 2**255 - 19
ORDER8 = [
    bytes.fromhex("26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc05"),
    bytes.fromhex("c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac037a"),
]
#: The 8 torsion points (y = 0, 1, p-1 and the two order-8 y values, each with x sign 0 and 1)
#: and the non-canonical encodings of y = 0 and y = 1 (p and p + 1), as libsodium's blocklist.
SMALL_ORDER = [
    y.to_bytes(32, "little") for y in (0, 1, P - 1, P, P + 1)
] + ORDER8  # fmt: skip
SMALL_ORDER += [b[:31] + bytes([b[31] | 0x80]) for b in SMALL_ORDER]
NON_CANONICAL = [(P + k).to_bytes(32, "little") for k in (2, 9, 18)] + [b"\xff" * 32, b"\xff" * 31 + b"\x7f"]


@pytest.fixture
def key() -> SymmetricKey:
    return SymmetricKey.generate()


@pytest.fixture
def publisher() -> SigningKey:
    return SigningKey.generate()


# --- item 1: signers only for content that was checked -----------------------------------


def test_signers_only_after_every_chunk_is_checked(key: SymmetricKey, publisher: SigningKey) -> None:
    data = sealed_bytes(state(), [key], [publisher])
    reader = container.open_sealed(io.BytesIO(data), [key])
    assert reader.signature_status == "signed, not verified" and reader.signers == []
    assert [s.key_id for s in reader.unverified_signers] == [publisher.key_id]
    reader.decrypt_regions([])
    assert reader.signature_status == "verified"
    assert [s.key_id for s in reader.signers] == [publisher.key_id]


def test_unsigned_status(key: SymmetricKey) -> None:
    reader = container.open_sealed(io.BytesIO(sealed_bytes(state(), [key])), [key])
    reader.decrypt_regions([])
    assert reader.signature_status == "unsigned" and reader.signers == [] == reader.unverified_signers


def test_lazy_reads_verify_what_they_return_not_the_file(key: SymmetricKey, publisher: SigningKey) -> None:
    data = sealed_bytes(state(), [key], [publisher])
    reader = container.open_sealed(io.BytesIO(data), [key])
    buf = bytearray(16)
    reader.decrypt_regions([(0, memoryview(buf))], only_covering=True)
    assert reader.signature_status == "signed, not verified" and reader.signers == []
    n = reader.content.n_chunks
    reader.decrypt_regions(
        [(i * reader.content.chunk_size, memoryview(bytearray(1))) for i in range(n)], only_covering=True
    )
    assert reader.signature_status == "verified"  # every chunk was read and checked


def test_coreceipient_forgery_refused_without_policy(key: SymmetricKey, publisher: SigningKey) -> None:
    f = Forger(sealed_bytes(state(), [key], [publisher]), key)
    last = f.content.n_chunks - 1
    plain = bytearray(f.plaintext(last))
    plain[-1] ^= 0x40
    f.reencrypt(last, bytes(plain))
    for trusted in (None, [publisher.public]):
        reader = container.open_sealed(io.BytesIO(f.bytes()), [key], trusted_signers=trusted)
        assert reader.signers == []
        with pytest.raises(sealedckpt.IntegrityError, match=f"chunk {last} does not match its signed digest"):
            reader.decrypt_regions([])
        assert reader.signers == []
        with pytest.raises(sealedckpt.IntegrityError):
            sealedckpt.load(io.BytesIO(f.bytes()), key=key, trusted_signers=trusted)
    out = io.BytesIO()
    with pytest.raises(sealedckpt.IntegrityError):
        container.open_sealed(io.BytesIO(f.bytes()), [key]).write_plaintext(out)


def test_tampered_signed_chunk_still_reports_a_tag_failure(key: SymmetricKey, publisher: SigningKey) -> None:
    f = Forger(sealed_bytes(state(), [key], [publisher]), key)
    f.data[f.chunk_offset(1) + 3] ^= 1
    reader = container.open_sealed(io.BytesIO(f.bytes()), [key])
    with pytest.raises(sealedckpt.IntegrityError, match=r"chunk 1 of .* failed authentication"):
        reader.decrypt_regions([])


# --- item 2: small-order and non-canonical Ed25519 keys ---------------------------------


@pytest.mark.parametrize("raw", SMALL_ORDER, ids=[b.hex()[:8] + b.hex()[-2:] for b in SMALL_ORDER])
def test_verify_key_refuses_small_order_points(raw: bytes) -> None:
    with pytest.raises(sealedckpt.SignatureError, match=r"small-order|canonical"):
        VerifyKey(raw)
    with pytest.raises(sealedckpt.SignatureError):
        textkeys.verify_key_from_text(textkeys.encode(textkeys.HRP_VERIFY, raw))


@pytest.mark.parametrize("raw", NON_CANONICAL, ids=[b.hex()[:4] + b.hex()[-2:] for b in NON_CANONICAL])
def test_verify_key_refuses_non_canonical_encodings(raw: bytes) -> None:
    with pytest.raises(sealedckpt.SignatureError, match="canonical"):
        VerifyKey(raw)


def test_verify_key_accepts_real_keys() -> None:
    for _ in range(50):
        pub = SigningKey.generate().public
        assert VerifyKey(pub.to_bytes()) == pub


def test_identity_signer_in_trailer_refused(key: SymmetricKey, publisher: SigningKey) -> None:
    data = bytearray(sealed_bytes({"x": torch.ones(3)}, [key], [publisher]))
    at = last_signature(data)
    data[at["pk"] : at["pk"] + 32] = ED25519_IDENTITY
    data[at["sig"] :] = ED25519_IDENTITY + bytes(32)
    with pytest.raises(sealedckpt.SignatureError, match="small-order"):
        container.open_sealed(io.BytesIO(bytes(data)), [key])
    info = container.read_public_info(io.BytesIO(bytes(data)))  # inspect still lists it, unverified
    assert len(info.signatures) == 1


# --- item 3: what a lazy reader may release ------------------------------------------------


def _lazy_get(data: bytes, key: SymmetricKey, name: str) -> torch.Tensor:
    with sealedckpt.open(io.BytesIO(data), key=key) as f:
        return f.get_tensor(name)


def test_lazy_last_chunk_needs_the_final_flag(key: SymmetricKey) -> None:
    f = Forger(sealed_bytes(state(), [key]), key)
    last = f.content.n_chunks - 1
    f.reencrypt(last, f.plaintext(last), final=False)
    assert _lazy_get(f.bytes(), key, "a").sum().item() == 0
    with pytest.raises(sealedckpt.IntegrityError, match=f"chunk {last} of"):
        _lazy_get(f.bytes(), key, "c")


def test_lazy_middle_chunk_marked_final_refused(key: SymmetricKey) -> None:
    f = Forger(sealed_bytes(state(), [key]), key)
    f.reencrypt(2, f.plaintext(2), final=True)
    with pytest.raises(sealedckpt.IntegrityError, match="chunk 2 of"):
        _lazy_get(f.bytes(), key, "b")


def test_lazy_open_refuses_a_file_of_the_wrong_length(key: SymmetricKey) -> None:
    data = sealed_bytes(state(), [key])
    for bad in (data[:-1], data + b"\x00", data[: len(data) - 2 - 100] + data[-2:]):
        with pytest.raises(sealedckpt.IntegrityError):
            sealedckpt.open(io.BytesIO(bad), key=key)


def test_lazy_signed_forgery_refused_without_policy(key: SymmetricKey, publisher: SigningKey) -> None:
    f = Forger(sealed_bytes(state(), [key], [publisher]), key)
    last = f.content.n_chunks - 1
    plain = bytearray(f.plaintext(last))
    plain[-1] ^= 0x40
    f.reencrypt(last, bytes(plain))
    with pytest.raises(sealedckpt.IntegrityError, match="signed digest"):
        _lazy_get(f.bytes(), key, "c")


# --- item 4: passphrase and symmetric slots -----------------------------------------------


def _slot_body(data: bytes) -> tuple[bytes, bytes]:
    """(file salt, body of the only key slot)."""
    header = container.header.read_header(container.stream.Source(io.BytesIO(data)))
    return header.content.salt, header.slots[0].body


def test_passphrase_partition_is_one_error() -> None:
    pw = Passphrase("correct horse", log2n=10)
    data = sealed_bytes({"x": torch.ones(3)}, [pw])
    f = Forger(data, pw)

    def flip_commitment(content: bytearray) -> None:
        content[44] ^= 1

    f.remac(flip_commitment)
    mac_flipped = bytearray(data)
    mac_flipped[f.header.size - 1] ^= 1
    errors = []
    for blob, p in ((data, Passphrase("wrong horse")), (f.bytes(), pw), (bytes(mac_flipped), pw)):
        with pytest.raises(sealedckpt.SealedCkptError) as info:
            sealedckpt.load(io.BytesIO(blob), key=p)
        errors.append((type(info.value), str(info.value)))
    assert errors == [(sealedckpt.DecryptionError, "wrong passphrase")] * 3


def test_scrypt_salt_is_labelled() -> None:
    pw = Passphrase("correct horse", log2n=10)
    data = sealed_bytes({"x": torch.ones(3)}, [pw])
    salt, body = _slot_body(data)
    wk = Scrypt(salt=b"sealedckpt/v1 scrypt salt\x00" + body[1:17], length=32, n=1 << 10, r=8, p=1).derive(
        b"correct horse"
    )
    dek = AESGCM(wk).decrypt(bytes(12), body[17:], b"sealedckpt/v1 scrypt slot\x00" + salt)
    assert len(dek) == 32


def test_symmetric_wrap_key_is_per_file(key: SymmetricKey) -> None:
    data = sealed_bytes({"x": torch.ones(3)}, [key])
    salt, body = _slot_body(data)
    wk = HKDF(algorithm=hashes.SHA256(), length=32, salt=salt, info=b"sealedckpt/v1 symmetric wrap key").derive(
        key.to_bytes()
    )
    dek = AESGCM(wk).decrypt(body[8:20], body[20:], b"sealedckpt/v1 symmetric slot\x00" + salt)
    assert len(dek) == 32

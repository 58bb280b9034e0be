"""Any modification of a sealed file is detected and returns nothing."""

from __future__ import annotations

import io
import struct
import sys
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import sealedckpt
from sealedckpt.container import format as fmt

sys.path.insert(0, str(Path(__file__).resolve().parent))
from helpers import last_signature

FAILS = (sealedckpt.IntegrityError, sealedckpt.FormatError, sealedckpt.SignatureError)


def _seal(obj: object, key: sealedckpt.SymmetricKey, **kw: object) -> bytes:
    buf = io.BytesIO()
    sealedckpt.save(obj, buf, key=key, **kw)  # type: ignore[arg-type]
    return buf.getvalue()


def _load(data: bytes, key: sealedckpt.SymmetricKey, **kw: object) -> object:
    return sealedckpt.load(io.BytesIO(data), key=key, **kw)  # type: ignore[arg-type]


def _slot_region(data: bytes) -> range:
    (content_len,) = struct.unpack_from("<I", data, 12)
    start = fmt.PREAMBLE_SIZE + content_len
    (slots_len,) = struct.unpack_from("<I", data, start)
    return range(start, start + 4 + slots_len)


def test_every_single_bit_flip_of_a_small_signed_file_fails(
    key: sealedckpt.SymmetricKey, signer: sealedckpt.SigningKey
) -> None:
    data = _seal({"w": torch.tensor([1.0, 2.0]), "step": 3}, key, sign_with=signer, metadata={"m": "v"})
    assert _load(data, key, trusted_signers=[signer.public])["step"] == 3  # type: ignore[index]
    slots = _slot_region(data)
    n_fail = 0
    for i in range(len(data)):
        for bit in range(8):
            bad = bytearray(data)
            bad[i] ^= 1 << bit
            with pytest.raises(sealedckpt.SealedCkptError) as ei:
                _load(bytes(bad), key, trusted_signers=[signer.public])
            err = ei.value
            if i in slots:
                # A flipped slot type turns our slot into an unknown one: no slot opens.
                assert isinstance(err, (*FAILS, sealedckpt.DecryptionError)), (i, bit, err)
            elif i < 8:
                assert isinstance(err, (sealedckpt.UnsafePayloadError, sealedckpt.FormatError)), (i, bit, err)
            else:
                assert isinstance(err, FAILS), (i, bit, type(err), err)
            n_fail += 1
    assert n_fail == 8 * len(data)


def test_every_single_bit_flip_of_a_small_unsigned_file_fails(key: sealedckpt.SymmetricKey) -> None:
    data = _seal({"w": torch.arange(3)}, key)
    slots = _slot_region(data)
    for i in range(8, len(data)):
        for bit in range(8):
            bad = bytearray(data)
            bad[i] ^= 1 << bit
            with pytest.raises(sealedckpt.SealedCkptError) as ei:
                _load(bytes(bad), key)
            allowed = (*FAILS, sealedckpt.DecryptionError) if i in slots else FAILS
            assert isinstance(ei.value, allowed), (i, bit, ei.value)


@pytest.fixture(scope="module")
def big() -> tuple[sealedckpt.SymmetricKey, sealedckpt.SigningKey, bytes]:
    key = sealedckpt.SymmetricKey.generate()
    signer = sealedckpt.SigningKey.generate()
    gen = torch.Generator().manual_seed(0)
    obj = {f"layer{i}": torch.randn(1_500_000, generator=gen) for i in range(6)}  # ~36 MB, 9 chunks
    return key, signer, _seal(obj, key, sign_with=signer)


@settings(max_examples=40, deadline=None)
@given(st.data())
def test_sampled_bit_flips_of_a_large_file_fail(
    big: tuple[sealedckpt.SymmetricKey, sealedckpt.SigningKey, bytes], data: st.DataObject
) -> None:
    key, signer, blob = big
    pos = data.draw(st.integers(8, len(blob) - 1), label="byte")
    bit = data.draw(st.integers(0, 7), label="bit")
    bad = bytearray(blob)
    bad[pos] ^= 1 << bit
    with pytest.raises(sealedckpt.SealedCkptError):
        _load(bytes(bad), key)
    with pytest.raises(sealedckpt.SealedCkptError):
        _load(bytes(bad), key, trusted_signers=[signer.public])


@settings(max_examples=40, deadline=None)
@given(st.data())
def test_truncation_at_any_offset_fails(
    big: tuple[sealedckpt.SymmetricKey, sealedckpt.SigningKey, bytes], data: st.DataObject
) -> None:
    key, _, blob = big
    cut = data.draw(st.integers(0, len(blob) - 1), label="cut")
    with pytest.raises(sealedckpt.SealedCkptError):
        _load(blob[:cut], key)


def test_truncation_at_chunk_boundaries_and_trailing_data_fail(
    big: tuple[sealedckpt.SymmetricKey, sealedckpt.SigningKey, bytes],
) -> None:
    key, _, blob = big
    _, spans = _chunks(blob)
    assert len(spans) >= 9
    ct_end = spans[-1][0] + spans[-1][1]
    for cut in [off for off, _ in spans] + [ct_end, ct_end + 2, len(blob) - 1]:
        with pytest.raises(sealedckpt.IntegrityError, match="truncated"):
            _load(blob[:cut], key)
    for extra in (b"\x00", b"x" * 1000):
        with pytest.raises(sealedckpt.IntegrityError, match="trailing"):
            _load(blob + extra, key)


def _chunks(blob: bytes) -> tuple[int, list[tuple[int, int]]]:
    """Where chunk 0 starts, and each chunk's (file offset, length with tag): the head run of
    chunks covers the payload header, the body run the rest (docs/FORMAT.md §7)."""
    from sealedckpt.container.header import read_header
    from sealedckpt.container.stream import Source

    info = sealedckpt.inspect(io.BytesIO(blob))
    n, cs, head = info.chunks, info.chunk_size, info.head_len
    start = read_header(Source(io.BytesIO(blob))).size
    plain = [min(cs, head - a) for a in range(0, head, cs)]
    plain += [min(cs, info.payload_len - a) for a in range(head, info.payload_len, cs)]
    assert len(plain) == n
    spans, pos = [], start
    for p in plain:
        spans.append((pos, p + 16))
        pos += p + 16
    return start, spans


def test_chunk_swap_and_duplication_fail(big: tuple[sealedckpt.SymmetricKey, sealedckpt.SigningKey, bytes]) -> None:
    key, _, blob = big
    _, spans = _chunks(blob)
    assert len(spans) >= 4 and spans[1][1] == spans[2][1]  # two full body chunks
    (a, step), (b, _) = spans[1], spans[2]
    c1, c2 = blob[a : a + step], blob[b : b + step]
    swapped = blob[:a] + c2 + c1 + blob[b + step :]
    dup = blob[:a] + c1 + c1 + blob[b + step :]
    for bad in (swapped, dup):
        with pytest.raises(sealedckpt.IntegrityError, match=r"chunk [12] "):
            _load(bad, key)


def test_cross_file_splice_fails(key: sealedckpt.SymmetricKey) -> None:
    obj = {"w": torch.zeros(2_000_000)}
    a, b = _seal(obj, key), _seal(obj, key)
    start, spans = _chunks(a)
    step = spans[0][1]  # the head chunk: the same length in both files
    spliced = a[:start] + b[start : start + step] + a[start + step :]
    with pytest.raises(sealedckpt.IntegrityError):
        _load(spliced, key)
    # whole headers swapped between files: a's header with b's chunks
    with pytest.raises(sealedckpt.IntegrityError):
        _load(a[:start] + b[start:], key)


def test_wrong_key_raises_decryption_error(key: sealedckpt.SymmetricKey) -> None:
    data = _seal({"x": 1}, key)
    with pytest.raises(sealedckpt.DecryptionError, match="none of the 1 key"):
        _load(data, sealedckpt.SymmetricKey.generate())
    assert not isinstance(sealedckpt.DecryptionError("x"), sealedckpt.IntegrityError)


def test_signature_policy(key: sealedckpt.SymmetricKey, signer: sealedckpt.SigningKey) -> None:
    other = sealedckpt.SigningKey.generate()
    unsigned = _seal({"x": 1}, key)
    signed = _seal({"x": 1}, key, sign_with=signer)
    both = _seal({"x": 1}, key, sign_with=[signer, other])
    assert _load(signed, key, trusted_signers=[signer.public]) == {"x": 1}
    assert _load(both, key, trusted_signers=signer.public) == {"x": 1}
    assert _load(signed, key) == {"x": 1}  # no policy: the signature is still checked, trust not required
    with pytest.raises(sealedckpt.SignatureError, match="not signed"):
        _load(unsigned, key, trusted_signers=[signer.public])
    with pytest.raises(sealedckpt.SignatureError, match="untrusted"):
        _load(signed, key, trusted_signers=[other.public])
    with pytest.raises(sealedckpt.SignatureError):
        _load(unsigned, key, require_signature=True)
    with pytest.raises(sealedckpt.SignatureError, match="no trusted signers"):
        _load(signed, key, require_signature=True)


def test_signature_claiming_a_trusted_key_but_made_by_another_fails(
    key: sealedckpt.SymmetricKey, signer: sealedckpt.SigningKey
) -> None:
    mallory = sealedckpt.SigningKey.generate()
    data = bytearray(_seal({"x": 1}, key, sign_with=mallory))
    at = last_signature(data)
    data[at["pk"] : at["pk"] + 32] = signer.public.to_bytes()  # the hint names the trusted key
    with pytest.raises(sealedckpt.SignatureError, match="does not verify"):
        _load(bytes(data), key, trusted_signers=[signer.public])


def test_stripping_the_signature_is_caught_by_policy(
    key: sealedckpt.SymmetricKey, signer: sealedckpt.SigningKey
) -> None:
    data = _seal({"x": 1}, key, sign_with=signer)
    stripped = data[: last_signature(data)["block"] - 32 - 2] + b"\x00\x00"  # one chunk: 32-byte table
    assert _load(stripped, key) == {"x": 1}  # a key holder may always publish unsigned content
    with pytest.raises(sealedckpt.SignatureError):
        _load(stripped, key, trusted_signers=[signer.public])


def test_keyless_verify(key: sealedckpt.SymmetricKey, signer: sealedckpt.SigningKey) -> None:
    data = _seal({"w": torch.ones(10)}, key, sign_with=signer, metadata={"name": "m"})
    res = sealedckpt.verify(io.BytesIO(data), trusted_signers=[signer.public])
    assert [s.key_id for s in res.signers] == [signer.key_id] and res.signers[0].trusted
    assert res.metadata == {"name": "m"} and len(res.root) == 32
    start, _ = _chunks(data)
    bad = bytearray(data)
    bad[start + 5] ^= 1
    with pytest.raises(sealedckpt.IntegrityError, match="signed digest"):
        sealedckpt.verify(io.BytesIO(bytes(bad)))
    with pytest.raises(sealedckpt.SignatureError, match="not signed"):
        sealedckpt.verify(io.BytesIO(_seal({"x": 1}, key)))
    with pytest.raises(sealedckpt.SignatureError, match="untrusted"):
        sealedckpt.verify(io.BytesIO(data), trusted_signers=[sealedckpt.SigningKey.generate().public])


def test_recipient_holding_the_key_cannot_forge_signed_content(
    key: sealedckpt.SymmetricKey, signer: sealedckpt.SigningKey
) -> None:
    """A key holder re-encrypts different content under the same header and reuses the trailer."""
    from sealedckpt import container, crypto
    from sealedckpt.container.slots import open_slots

    data = _seal({"w": torch.zeros(4)}, key, sign_with=signer)
    _, spans = _chunks(data)
    reader = container.open_sealed(io.BytesIO(data), [key])
    payload = bytearray(reader.read_prefix(reader.content.payload_len))
    payload[-1] ^= 0x40  # change a weight
    dek = open_slots(reader.header.slots, reader.content.salt, [key])
    cipher = crypto.ChunkCipher(crypto.derive_file_keys(dek, reader.content.salt).payload_key)
    last = len(spans) - 1  # the body chunk that holds the weight, re-encrypted under the same DEK
    off, n = spans[last]
    out = bytearray(n)
    cipher.encrypt_into(last, True, bytes(payload[reader.content.head_len :]), memoryview(out))
    forged = data[:off] + bytes(out) + data[off + n :]
    assert len(forged) == len(data)
    with pytest.raises(sealedckpt.IntegrityError, match="signed digest"):
        _load(forged, key)  # no policy: a signed file's chunks are still checked (FORMAT.md §8)
    with pytest.raises(sealedckpt.IntegrityError, match="signed digest"):
        _load(forged, key, trusted_signers=[signer.public])
    with pytest.raises(sealedckpt.IntegrityError):
        sealedckpt.verify(io.BytesIO(forged))

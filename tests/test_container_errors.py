"""The container raises only SealedCkptError subclasses for any damaged sealed file.

Valid files are mutated (bytes flipped, overwritten, inserted, cut, appended) and handed to
the container functions directly, without the API layer in between.
"""

from __future__ import annotations

import io
import struct
from collections.abc import Callable

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sealedckpt import container
from sealedckpt.crypto import Passphrase, RecipientKey, SigningKey, SymmetricKey
from sealedckpt.errors import SealedCkptError

_SYM = SymmetricKey(bytes(range(32)))
_IDENTITY = RecipientKey(bytes(range(1, 33)))
_SIGNER = SigningKey(bytes(range(2, 34)))
_PASSPHRASE = Passphrase("correct horse", log2n=2, max_log2n=6)
_KEYS = [_SYM, _IDENTITY, _PASSPHRASE]
_PAYLOAD = bytes(i % 251 for i in range((1 << 16) + 1000))  # two chunks of 2**16


def _seal(keys: list[container.SealKey], signers: list[SigningKey]) -> bytes:
    out = io.BytesIO()
    container.seal(
        out, len(_PAYLOAD), [memoryview(_PAYLOAD)], keys=keys, signers=signers, metadata={"m": "v"}, chunk_log2=16
    )
    return out.getvalue()


_FILES = [
    _seal([_SYM, _IDENTITY.public], [_SIGNER]),
    _seal([_SYM], []),
    _seal([_PASSPHRASE], [_SIGNER]),
]


def _full_open(data: bytes) -> None:
    reader = container.open_sealed(io.BytesIO(data), _KEYS)
    reader.read_prefix(min(8, reader.content.payload_len))
    reader.release_prefix()
    buf = bytearray(reader.content.payload_len)
    reader.decrypt_regions([(0, memoryview(buf))])
    reader.write_plaintext(io.BytesIO())


_CALLS: list[Callable[[bytes], object]] = [
    lambda d: container.read_public_info(io.BytesIO(d)),
    lambda d: container.verify_file(io.BytesIO(d), None),
    lambda d: container.verify_file(io.BytesIO(d), [_SIGNER.public]),
    lambda d: container.compute_root(io.BytesIO(d)),
    lambda d: container.open_sealed(io.BytesIO(d), _KEYS, trusted_signers=[_SIGNER.public]),
    _full_open,
    lambda d: container.rewrap(io.BytesIO(d), io.BytesIO(), _KEYS, [_SYM, _IDENTITY.public]),
    lambda d: container.add_signatures(io.BytesIO(d), io.BytesIO(), [SigningKey(bytes(32))]),
]


def _mutations(size: int) -> st.SearchStrategy[tuple[str, int, bytes]]:
    head = st.integers(0, min(size, 400))  # most parsing happens in the header and the trailer
    tail = st.integers(max(0, size - 400), size)
    pos = st.one_of(head, tail, st.integers(0, size))
    ops = st.sampled_from(["flip", "overwrite", "insert", "cut", "truncate", "append"])
    return st.tuples(ops, pos, st.binary(min_size=1, max_size=64))


def _apply(data: bytes, op: str, pos: int, blob: bytes) -> bytes:
    if op == "flip" and data:
        i = min(pos, len(data) - 1)
        return data[:i] + bytes([data[i] ^ (blob[0] or 1)]) + data[i + 1 :]
    if op == "overwrite":
        return data[:pos] + blob + data[pos + len(blob) :]
    if op == "insert":
        return data[:pos] + blob + data[pos:]
    if op == "cut":
        return data[:pos] + data[pos + len(blob) :]
    if op == "truncate":
        return data[:pos]
    return data + blob  # append, or flip on an empty file


@pytest.mark.parametrize("index", range(len(_FILES)))
@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_damaged_files_raise_only_sealedckpt_errors(index: int, data: st.DataObject) -> None:
    original = _FILES[index]
    edits = data.draw(st.lists(_mutations(len(original)), min_size=1, max_size=3))
    damaged = original
    for op, pos, blob in edits:
        damaged = _apply(damaged, op, min(pos, len(damaged)), blob)
    for call in _CALLS:
        try:
            call(damaged)
        except SealedCkptError:
            pass


def test_every_call_accepts_the_undamaged_file() -> None:
    for call in _CALLS:
        call(_FILES[0])


def test_deeply_nested_json_is_not_a_crash() -> None:
    body = b'{"a":' + b"[" * 1005
    head = struct.pack("<Q", len(body)) + body
    with pytest.raises(SealedCkptError):
        container.read_public_info(io.BytesIO(head))

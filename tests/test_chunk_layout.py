"""The chunk layout (docs/FORMAT.md §7): a head run of chunks over the payload header, then a
body run over the data section, each cut every chunk_size bytes."""

from __future__ import annotations

import io
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sealedckpt import container
from sealedckpt.container import format as fmt
from sealedckpt.crypto import SymmetricKey
from sealedckpt.errors import FormatError, InvalidArgumentError

_KEY = SymmetricKey(bytes(range(32)))


def _content(payload_len: int, head_len: int, log2: int = 16) -> fmt.Content:
    return fmt.Content(fmt.PAYLOAD_SAFETENSORS, log2, payload_len, bytes(32), bytes(32), {}, head_len)


@given(st.integers(0, 1 << 20), st.data(), st.integers(16, 18))
def test_chunks_tile_the_payload(payload_len: int, data: st.DataObject, log2: int) -> None:
    head = data.draw(st.integers(0, payload_len))
    c = _content(payload_len, head, log2)
    cs = 1 << log2
    spans = [(c.chunk_start(i), c.plain_len(i)) for i in range(c.n_chunks)]
    pos = 0
    for i, (start, n) in enumerate(spans):
        assert start == pos and (0 < n <= cs or (payload_len == 0 and n == 0))
        assert c.chunk_offset(i) == start + 16 * i
        pos += n
    assert pos == payload_len and c.ciphertext_len == payload_len + 16 * len(spans)
    assert c.n_head == -(-head // cs) and c.n_chunks == max(1, c.n_head + -(-(payload_len - head) // cs))
    if head < payload_len:
        assert c.chunk_start(c.n_head) == head  # the body starts a chunk
    assert c.max_plain_len == max(n for _, n in spans)
    for i, (start, n) in enumerate(spans):
        if n:
            assert c.chunk_at(start) == c.chunk_at(start + n - 1) == i
            assert c.chunks_for(start, n) == range(i, i + 1)
    if payload_len:
        a = data.draw(st.integers(0, payload_len - 1))
        b = data.draw(st.integers(a + 1, payload_len))
        r = c.chunks_for(a, b - a)
        assert c.chunk_start(r[0]) <= a and b <= c.chunk_start(r[-1]) + c.plain_len(r[-1])
        assert all(c.plain_len(i) for i in r)


def test_groups_are_runs_of_consecutive_chunks() -> None:
    c = _content(10 * 65536 + 5, 1000)
    groups = c.groups(list(range(c.n_chunks)), 3 * 65536)
    assert [i for g in groups for i in g] == list(range(c.n_chunks))
    assert all(sum(c.plain_len(i) for i in g) <= 3 * 65536 for g in groups)
    assert c.groups([0, 1, 5, 6, 7], 1 << 30) == [[0, 1], [5, 6, 7]]
    assert c.groups([3], 1) == [[3]]  # one chunk longer than the size still makes a group


def test_head_len_is_checked_when_built_and_parsed() -> None:
    with pytest.raises(InvalidArgumentError):
        fmt.build_content(_content(100, 101))
    raw = bytearray(fmt.build_content(_content(100, 100)))
    assert fmt.parse_content(bytes(raw)).head_len == 100
    struct.pack_into("<Q", raw, 12, 101)  # head_len follows payload_len
    with pytest.raises(FormatError, match="head length 101 exceeds"):
        fmt.parse_content(bytes(raw))


def test_chunk_count_cap_counts_the_head_run() -> None:
    top = fmt.max_payload_len(16)
    fmt.build_content(_content(top, 0))  # exactly MAX_CHUNKS chunks
    with pytest.raises(InvalidArgumentError):
        fmt.build_content(_content(top, 1))  # the head run makes it one more
    raw = bytearray(fmt.build_content(_content(top, 0)))
    struct.pack_into("<Q", raw, 12, 1)
    with pytest.raises(FormatError, match="chunks"):
        fmt.parse_content(bytes(raw))


def test_default_chunk_size_grows_only_for_huge_payloads() -> None:
    assert fmt.default_chunk_log2(0) == fmt.DEFAULT_CHUNK_LOG2 == 20
    assert fmt.default_chunk_log2(1 << 40) == 20
    assert fmt.default_chunk_log2(fmt.max_payload_len(20)) == 21
    assert fmt.default_chunk_log2(1 << 50) == fmt.MAX_CHUNK_LOG2


@pytest.mark.parametrize(
    ("payload", "head"),
    [
        (b"", 0),
        (b"abc", 3),  # shorter than a length prefix: all head
        (struct.pack("<Q", 4) + b"{}  " + b"data", 12),
        (struct.pack("<Q", 1 << 40) + b"x" * 10, 18),  # a length past the end is capped
    ],
)
def test_seal_takes_the_head_from_the_payload_length_prefix(payload: bytes, head: int) -> None:
    out = io.BytesIO()
    pieces = [memoryview(payload[i : i + 3]) for i in range(0, len(payload), 3)]  # the prefix split up
    container.seal(out, len(payload), pieces, keys=[_KEY], chunk_log2=16)
    info = container.read_public_info(io.BytesIO(out.getvalue()))
    assert info.head_len == head and info.chunks == max(1, (head > 0) + (len(payload) > head))
    reader = container.open_sealed(io.BytesIO(out.getvalue()), [_KEY])
    buf = bytearray(len(payload))
    reader.decrypt_regions([(0, memoryview(buf))])
    assert bytes(buf) == payload


@pytest.mark.parametrize("delta", [-1, 1])
def test_seal_refuses_a_payload_of_another_length(delta: int) -> None:
    payload = struct.pack("<Q", 4) + b"{}  " + bytes(70_000)
    with pytest.raises(InvalidArgumentError, match="shorter" if delta > 0 else "longer"):
        container.seal(io.BytesIO(), len(payload) + delta, [memoryview(payload)], keys=[_KEY], chunk_log2=16)

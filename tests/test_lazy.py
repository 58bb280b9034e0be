"""sealedckpt.open: lazy per-tensor reads that touch only the chunks they need."""

from __future__ import annotations

import io
import threading
from typing import Any

import pytest
import torch
from helpers import last_signature

import sealedckpt
from sealedckpt.crypto import ChunkCipher


class CountingFile(io.RawIOBase):
    """A seekable file object without fileno(), counting every byte read."""

    def __init__(self, data: bytes) -> None:
        self._b = io.BytesIO(data)
        self.bytes_read = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def seek(self, pos: int, whence: int = 0) -> int:
        return self._b.seek(pos, whence)

    def tell(self) -> int:
        return self._b.tell()

    def readinto(self, buf: Any) -> int:
        n = self._b.readinto(buf)
        self.bytes_read += n
        return n


@pytest.fixture(scope="module")
def big() -> tuple[sealedckpt.SymmetricKey, sealedckpt.SigningKey, dict[str, torch.Tensor], bytes]:
    """12 layers of a 4 KiB norm and a 4 MiB weight (~48 MiB): the weights straddle chunk boundaries."""
    key, signer = sealedckpt.SymmetricKey.generate(), sealedckpt.SigningKey.generate()
    gen = torch.Generator().manual_seed(0)
    sd = {}
    for i in range(12):
        sd[f"layers.{i}.norm"] = torch.randn(1024, generator=gen)
        sd[f"layers.{i}.weight"] = torch.randn(1024, 1024, generator=gen)  # 4 MiB
    buf = io.BytesIO()
    sealedckpt.save(sd, buf, key=key, sign_with=signer, metadata={"model": "m"})
    return key, signer, sd, buf.getvalue()


def tensor_chunks(data: bytes, key: Any, name: str) -> tuple[int, int]:
    """The first and last chunk (0 is the head) holding tensor ``name``'s bytes."""
    with sealedckpt.open(io.BytesIO(data), key=key) as sf:
        e, c = sf._index.entries[name], sf._reader.content
        start = sf._index.data_start + e.begin
        return c.chunks_for(start, e.end - e.begin)[0], c.chunks_for(start, e.end - e.begin)[-1]


class DecryptCounter:
    """Counts the plaintext bytes of every AES-GCM chunk decryption (wraps ChunkCipher.decrypt_into)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.bytes = 0
        self.calls = 0
        orig = ChunkCipher.decrypt_into

        def counting(cipher: ChunkCipher, index: int, final: bool, ct: Any, out: Any) -> bool:
            self.bytes += len(out)
            self.calls += 1
            return orig(cipher, index, final, ct, out)

        monkeypatch.setattr(ChunkCipher, "decrypt_into", counting)


def test_get_tensor_reads_only_its_chunks(
    big: tuple[Any, Any, dict[str, torch.Tensor], bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    key, signer, sd, data = big
    info = sealedckpt.inspect(io.BytesIO(data))
    cs, head = info.chunk_size, info.head_len
    assert 0 < head < cs and info.chunks == 1 + -(-(info.payload_len - head) // cs)
    counter = DecryptCounter(monkeypatch)
    f = CountingFile(data)
    with sealedckpt.open(f, key=key, trusted_signers=[signer.public]) as sf:
        opened, decrypted = f.bytes_read, counter.bytes
        assert sorted(sf.keys()) == sorted(sd) and sf.metadata() == {"model": "m"}
        name = "layers.7.weight"
        t = sf.get_tensor(name)
        assert torch.equal(t, sd[name])
        read, tensor_decrypted = f.bytes_read - opened, counter.bytes - decrypted
    not_chunks = len(data) - info.payload_len - 16 * info.chunks  # preamble..MAC and the trailer
    # opening reads a 1 KiB sniff, the header, the trailer (signatures, digest table) and the head
    # chunk (the payload's own header, nothing more), and decrypts exactly the payload header
    assert opened == 1024 + not_chunks + head + 16
    assert decrypted == head
    # the tensor: exactly its own chunks, read and decrypted. Its size is a whole number of chunks,
    # so the writer put it on a chunk boundary, ahead of the 4 KiB norms (chunk_aligned_order)
    nbytes = 4 << 20
    assert tensor_decrypted == nbytes and read == nbytes + 16 * (nbytes // cs)
    assert counter.bytes == nbytes + head  # the whole lazy read: the tensor and the payload header


def test_writer_puts_whole_chunk_tensors_on_chunk_boundaries(
    big: tuple[Any, Any, dict[str, torch.Tensor], bytes],
) -> None:
    """Data order is a writer's choice: whole-chunk entries first (each then starts on a chunk
    boundary), then the rest, each group in checkpoint order; a load gives back the same dict."""
    key, _, sd, data = big
    with sealedckpt.open(io.BytesIO(data), key=key) as sf:
        entries = list(sf._index.entries.values())  # in data order
        cs = sf._reader.content.chunk_size
    assert [e.name for e in entries] == [f"layers.{i}.weight" for i in range(12)] + [
        f"layers.{i}.norm" for i in range(12)
    ]
    assert [e.begin % cs for e in entries[:12]] == [0] * 12
    assert list(sealedckpt.load(io.BytesIO(data), key=key)) == list(sd)  # checkpoint order, not data order


def test_chunk_aligned_order() -> None:
    from sealedckpt.payload.encode import chunk_aligned_order

    sizes = [5, 8, 0, 16, 3, 8, 24]
    assert chunk_aligned_order(sizes, 8, lambda n: n) == [8, 16, 8, 24, 5, 0, 3]
    assert chunk_aligned_order([], 8, lambda n: n) == []


@pytest.mark.parametrize("chunk_log2", [16, 18, 20, 22])
@pytest.mark.parametrize("nbytes", [4 << 20, (4 << 20) + 12_345, 3_000])
def test_lazy_read_decrypts_at_most_the_tensor_and_one_chunk(
    key: sealedckpt.SymmetricKey, monkeypatch: pytest.MonkeyPatch, chunk_log2: int, nbytes: int
) -> None:
    """A lazy read decrypts the payload header once and then only the chunks under the tensor:
    at most ``nbytes + chunk`` for a tensor whose size is a multiple of the chunk size, else at
    most ``nbytes + 2 * chunk``; whatever comes before it in the file."""
    from sealedckpt import container
    from sealedckpt.payload.codec import plan_payload

    gen = torch.Generator().manual_seed(chunk_log2)
    t = torch.randint(0, 255, (nbytes,), dtype=torch.uint8, generator=gen)
    obj = {"a": torch.randn(777, generator=gen), "t": t, "b": torch.randn(5000, generator=gen)}
    plan = plan_payload(obj)
    buf = io.BytesIO()
    container.seal(buf, plan.payload_len, plan.segments(), keys=[key], chunk_log2=chunk_log2)
    cs, head = 1 << chunk_log2, len(plan.layout.header)
    counter = DecryptCounter(monkeypatch)
    with sealedckpt.open(io.BytesIO(buf.getvalue()), key=key) as sf:
        assert counter.bytes == head
        assert torch.equal(sf["t"], obj["t"])
    slack = cs if nbytes % cs == 0 else 2 * cs
    assert counter.bytes - head <= nbytes + slack
    assert counter.bytes - head <= -(-nbytes // cs) * cs + cs  # never more than one chunk past its own


def test_get_slice_reads_only_the_rows(big: tuple[Any, Any, dict[str, torch.Tensor], bytes]) -> None:
    key, _, sd, data = big
    f = CountingFile(data)
    with sealedckpt.open(f, key=key) as sf:
        before = f.bytes_read
        s = sf.get_slice("layers.3.weight")
        assert s.get_shape() == [1024, 1024] and s.get_dtype() == "F32"
        rows = s[10:20]
        assert torch.equal(rows, sd["layers.3.weight"][10:20])
        assert f.bytes_read - before <= 2 * (sf._reader.content.chunk_size + 16)  # 40 rows: 160 KiB
        w = sd["layers.3.weight"]
        assert torch.equal(s[5], w[5]) and torch.equal(s[-1], w[-1])
        with pytest.raises(ValueError):  # torch itself has no negative steps
            s[100:0:-7]
        assert torch.equal(s[::256, 3:7], w[::256, 3:7])
        assert torch.equal(s[..., 2], w[..., 2])
        with pytest.raises(IndexError):
            s[1024]


def test_nested_checkpoints_and_views(key: sealedckpt.SymmetricKey) -> None:
    w = torch.randn(8, 4)
    ck = {"model": {"w": w, "wt": w.t()}, "optimizer": {"state": {0: {"exp_avg": torch.ones(3)}}}, "epoch": 3}
    buf = io.BytesIO()
    sealedckpt.save(ck, buf, key=key)
    with sealedckpt.open(io.BytesIO(buf.getvalue()), key=key, device="meta") as sf:
        assert sf.keys() == ["model.w", "model.wt", "optimizer.state.0.exp_avg"]
        assert sf.get_tensor("model.wt").device.type == "meta"
    with sealedckpt.open(io.BytesIO(buf.getvalue()), key=key) as sf:
        assert torch.equal(sf.get_tensor("model.wt"), w.t())
        assert torch.equal(sf.get_slice("model.wt")[1], w.t()[1])
        with pytest.raises(KeyError):
            sf.get_tensor("epoch")


def test_lazy_reads_authenticate_what_they_read(big: tuple[Any, Any, dict[str, torch.Tensor], bytes]) -> None:
    key, _signer, _, data = big
    info = sealedckpt.inspect(io.BytesIO(data))
    n_chunks = info.chunks
    first_chunk = last_signature(data)["block"] - 32 * n_chunks - 2 - (info.payload_len + 16 * n_chunks)
    cs, head = info.chunk_size, info.head_len
    # a body chunk in the middle of layers.5.weight (chunk 0 is the head: the payload header)
    k = tensor_chunks(data, key, "layers.5.weight")[0] + 2
    bad = bytearray(data)
    bad[first_chunk + head + 16 + (k - 1) * (cs + 16) + 100] ^= 1  # inside chunk k
    with sealedckpt.open(io.BytesIO(bytes(bad)), key=key) as sf:
        assert sf.get_tensor("layers.0.weight").shape == (1024, 1024)  # other chunks: fine
        with pytest.raises(sealedckpt.IntegrityError, match=f"chunk {k} "):
            sf.get_tensor("layers.5.weight")
    with pytest.raises(sealedckpt.SignatureError):
        sealedckpt.open(io.BytesIO(data), key=key, trusted_signers=[sealedckpt.SigningKey.generate().public])


@pytest.mark.parametrize("tampered", [("first",), ("last",), ("first", "last")])
def test_a_lazy_read_in_two_halves_raises_the_first_failing_chunk(
    big: tuple[Any, Any, dict[str, torch.Tensor], bytes], tampered: tuple[str, ...], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A read split in two runs its first half on the calling thread and its second on one more
    thread: a failure in either half raises, the lower chunk's first, and nothing is returned."""
    from sealedckpt.container import reader

    monkeypatch.setattr(reader, "_SPLIT_MIN", 4)  # split this 4-chunk read (2 + 2)
    halves: list[tuple[list[int], list[int]]] = []
    run_two = reader.run_two

    def spy(job: Any, first: list[int], second: list[int], name: str) -> None:
        halves.append((first, second))
        run_two(job, first, second, name)

    monkeypatch.setattr(reader, "run_two", spy)
    key, _signer, sd, data = big
    info = sealedckpt.inspect(io.BytesIO(data))
    first_chunk = last_signature(data)["block"] - 32 * info.chunks - 2 - (info.payload_len + 16 * info.chunks)
    cs, head = info.chunk_size, info.head_len
    lo, hi = tensor_chunks(data, key, "layers.5.weight")
    chunks = {"first": lo, "last": hi}
    assert hi - lo == 3  # four chunks: split 2 + 2
    bad = bytearray(data)
    for which in tampered:
        bad[first_chunk + head + 16 + (chunks[which] - 1) * (cs + 16) + 100] ^= 1
    with sealedckpt.open(io.BytesIO(bytes(bad)), key=key) as sf:
        with pytest.raises(sealedckpt.IntegrityError, match=f"chunk {chunks[tampered[0]]} "):
            sf.get_tensor("layers.5.weight")
        assert torch.equal(sf.get_tensor("layers.0.weight"), sd["layers.0.weight"])  # still usable
    with sealedckpt.open(io.BytesIO(data), key=key) as sf:
        assert torch.equal(sf.get_tensor("layers.5.weight"), sd["layers.5.weight"])
    assert halves[0] == ([lo, lo + 1], [lo + 2, hi])  # it was split


def test_a_small_lazy_read_stays_on_the_calling_thread(
    big: tuple[Any, Any, dict[str, torch.Tensor], bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Under ``_SPLIT_MIN`` chunks (4 MiB here) a second thread costs more than it saves."""
    from sealedckpt.container import reader

    key, _, sd, data = big
    threads: set[str] = set()
    decrypt = ChunkCipher.decrypt_into

    def where(cipher: ChunkCipher, index: int, final: bool, ct: Any, out: Any) -> bool:
        threads.add(threading.current_thread().name)
        return decrypt(cipher, index, final, ct, out)

    monkeypatch.setattr(ChunkCipher, "decrypt_into", where)
    assert reader._SPLIT_MIN > 4
    with sealedckpt.open(io.BytesIO(data), key=key) as sf:
        assert torch.equal(sf.get_tensor("layers.5.weight"), sd["layers.5.weight"])
    assert threads == {threading.current_thread().name}


def test_open_a_path_and_close(tmp_path: Any, key: sealedckpt.SymmetricKey) -> None:
    p = tmp_path / "x.sealed"
    sealedckpt.save({"a": torch.arange(5)}, p, key=key)
    sf = sealedckpt.open(p, key=key)
    assert torch.equal(sf.get_tensor("a"), torch.arange(5))
    sf.close()
    with pytest.raises(sealedckpt.DecryptionError):
        sealedckpt.open(p, key=sealedckpt.SymmetricKey.generate())


def test_payload_header_spanning_several_chunks(key: sealedckpt.SymmetricKey) -> None:
    """With 64 KiB chunks, 3,000 tensors' header spans several chunks: it is read (and the
    chunks' buffers reused) correctly, by load and by open."""
    from sealedckpt import container
    from sealedckpt.payload.codec import plan_payload

    obj = {f"layer.{i}.w": torch.full((3,), float(i)) for i in range(3000)}
    plan = plan_payload(obj)
    assert len(plan.layout.header) > 3 * 65536
    buf = io.BytesIO()
    container.seal(buf, plan.payload_len, plan.segments(), keys=[key], chunk_log2=16)
    data = buf.getvalue()
    out = sealedckpt.load(io.BytesIO(data), key=key)
    assert list(out) == list(obj) and all(torch.equal(out[k], v) for k, v in obj.items())
    with sealedckpt.open(io.BytesIO(data), key=key) as f:
        assert torch.equal(f.get_tensor("layer.2999.w"), obj["layer.2999.w"])
        assert torch.equal(f.get_tensor("layer.0.w"), obj["layer.0.w"])


def test_whole_chunk_entries_first_keeps_every_kind_of_tensor(key: sealedckpt.SymmetricKey) -> None:
    """Moving whole-chunk storages ahead changes no value: tied weights, views, bool, bf16,
    Parameters and small tensors come back equal from a load and from lazy reads."""
    mib = 1 << 20
    gen = torch.Generator().manual_seed(7)
    w = torch.randn(mib // 4, generator=gen)  # 1 MiB fp32: a whole chunk
    ck = {
        "norm": torch.randn(10, generator=gen),
        "w": w,
        "tied": w,  # the same storage, stored once
        "rows": w.view(256, 1024)[3:5],  # a view into it
        "mask": torch.rand(2 * mib, generator=gen) > 0.5,  # 2 MiB bool
        "half": torch.randn(mib, generator=gen).to(torch.bfloat16),  # 2 MiB bf16
        "p": torch.nn.Parameter(torch.randn(3, 4, generator=gen)),
        "odd": torch.randn(mib // 4 + 1, generator=gen),  # just over a chunk: not first
        "epoch": 3,
    }
    buf = io.BytesIO()
    sealedckpt.save(ck, buf, key=key)
    data = buf.getvalue()
    out = sealedckpt.load(io.BytesIO(data), key=key)
    assert list(out) == list(ck) and out["epoch"] == 3
    for k, v in ck.items():
        if isinstance(v, torch.Tensor):
            assert torch.equal(out[k], v) and out[k].dtype == v.dtype and type(out[k]) is type(v), k
    assert out["tied"].data_ptr() == out["w"].data_ptr()
    with sealedckpt.open(io.BytesIO(data), key=key) as sf:
        entries = list(sf._index.entries.values())
        cs = sf._reader.content.chunk_size
        for k in ("w", "mask", "half", "odd", "norm"):
            assert torch.equal(sf[k], ck[k]), k
    whole = [e for e in entries if e.end - e.begin and (e.end - e.begin) % cs == 0]
    assert entries[: len(whole)] == whole and {e.name for e in whole} == {"w", "mask", "half"}
    assert all(e.begin % cs == 0 for e in whole)

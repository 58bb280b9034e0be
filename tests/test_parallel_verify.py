"""The parallel hashing paths (``verify_file``, ``compute_root``, verified ``load``, ``verify_dir``)
refuse a tampered or forged chunk wherever it sits, return what the serial path returns, and keep
at most one chunk buffer per worker."""

from __future__ import annotations

import functools
import io
import sys
from pathlib import Path
from typing import Any

import pytest
import safetensors.torch as st
import torch

import sealedckpt
from sealedckpt import SigningKey, SymmetricKey, container
from sealedckpt.container.stream import ChunkStream
from sealedckpt.release import directory as distdir

sys.path.insert(0, str(Path(__file__).resolve().parent / "attacks"))

from make_sig_corpus import Forger, sealed_bytes

STATE = {"w": torch.arange(700_000, dtype=torch.float32), "b": torch.ones(1000)}  # ~43 chunks of 64 KiB


@pytest.fixture(scope="module")
def signing() -> SigningKey:
    return SigningKey.generate()


@pytest.fixture(scope="module")
def sym() -> SymmetricKey:
    return SymmetricKey.generate()


@pytest.fixture(scope="module")
def signed(sym: SymmetricKey, signing: SigningKey) -> bytes:
    return sealed_bytes(STATE, [sym], [signing])


def _positions(n: int) -> list[int]:
    return [0, n // 2, n - 1]


def test_many_chunks(signed: bytes, sym: SymmetricKey) -> None:
    assert Forger(signed, sym).content.n_chunks > 40


@pytest.mark.parametrize("where", ["first", "middle", "last"])
def test_tampered_chunk_refused_by_every_path(
    where: str, signed: bytes, sym: SymmetricKey, signing: SigningKey
) -> None:
    f = Forger(signed, sym)
    i = _positions(f.content.n_chunks)[["first", "middle", "last"].index(where)]
    f.data[f.chunk_offset(i) + 7] ^= 1
    data = f.bytes()
    for workers in (1, 2, 4):
        with pytest.raises(sealedckpt.IntegrityError, match=f"chunk {i} does not match its signed digest"):
            container.verify_file(io.BytesIO(data), [signing.public], workers=workers)
        with pytest.raises(sealedckpt.IntegrityError, match=f"chunk {i} does not match its signed digest"):
            container.compute_root(io.BytesIO(data), workers=workers)
    with pytest.raises(sealedckpt.IntegrityError, match=f"chunk {i} of .* failed authentication"):
        sealedckpt.load(io.BytesIO(data), key=sym, trusted_signers=[signing.public])
    with pytest.raises(sealedckpt.IntegrityError):
        sealedckpt.verify(io.BytesIO(data), trusted_signers=[signing.public])


@pytest.mark.parametrize("where", ["first", "middle", "last"])
def test_forged_chunk_refused_by_every_path(where: str, signed: bytes, sym: SymmetricKey, signing: SigningKey) -> None:
    """A co-recipient re-encrypts chunk ``i``: its tag is valid, only the signed digest catches it."""
    f = Forger(signed, sym)
    i = _positions(f.content.n_chunks)[["first", "middle", "last"].index(where)]
    plain = bytearray(f.plaintext(i))
    plain[-1] ^= 0x40
    f.reencrypt(i, bytes(plain))
    data = f.bytes()
    match = f"chunk {i} does not match its signed digest"
    with pytest.raises(sealedckpt.IntegrityError, match=match):
        container.verify_file(io.BytesIO(data), None)
    with pytest.raises(sealedckpt.IntegrityError, match=match):
        container.compute_root(io.BytesIO(data))
    for trusted in (None, [signing.public]):
        with pytest.raises(sealedckpt.IntegrityError, match=match):
            sealedckpt.load(io.BytesIO(data), key=sym, trusted_signers=trusted)


def test_parallel_digests_match_serial(signed: bytes, sym: SymmetricKey, signing: SigningKey) -> None:
    unsigned = sealed_bytes(STATE, [sym])
    for data in (signed, unsigned):
        roots = {container.compute_root(io.BytesIO(data), workers=w)[0] for w in (1, 2, 3, 8)}
        assert len(roots) == 1
    res = container.verify_file(io.BytesIO(signed), [signing.public], workers=4)
    assert res.root == container.compute_root(io.BytesIO(signed))[0]
    out = sealedckpt.load(io.BytesIO(signed), key=sym, trusted_signers=[signing.public])
    assert all(torch.equal(out[k], v) for k, v in STATE.items())


def test_progress_in_order_and_complete(signed: bytes, sym: SymmetricKey, signing: SigningKey) -> None:
    c = Forger(signed, sym).content
    seen: list[int] = []
    container.verify_file(io.BytesIO(signed), None, progress=seen.append, workers=4)
    assert seen == [c.plain_len(i) + 16 for i in range(c.n_chunks)]


def test_one_buffer_per_worker(signed: bytes, monkeypatch: pytest.MonkeyPatch) -> None:
    made: list[int] = []
    orig = ChunkStream.scratch

    def counting(self: ChunkStream) -> memoryview:
        made.append(1)
        return orig(self)

    monkeypatch.setattr(ChunkStream, "scratch", counting)
    container.compute_root(io.BytesIO(signed), workers=3)
    assert 1 <= len(made) <= 3


def test_compute_roots_of_several_files_match_one_at_a_time(
    signed: bytes, sym: SymmetricKey, signing: SigningKey
) -> None:
    """One pool for several files (a directory's shards) gives each file's own root and content."""
    small = sealed_bytes({"x": torch.arange(10)}, [sym], [signing])  # one chunk
    unsigned = sealed_bytes(STATE, [sym])
    datas = [signed, small, unsigned, signed]
    want = [container.compute_root(io.BytesIO(d)) for d in datas]
    for workers in (1, 2, 4):
        got = container.compute_roots([io.BytesIO(d) for d in datas], workers=workers)
        assert [(r, c.payload_len) for r, c in got] == [(r, c.payload_len) for r, c in want]
    assert len({r for r, _ in want}) == 3  # signed twice: same root; the others differ


@pytest.mark.parametrize("workers", [1, 2, 4])
def test_compute_roots_raises_the_first_failing_file(
    signed: bytes, sym: SymmetricKey, signing: SigningKey, workers: int
) -> None:
    """Files tampered at different chunks: the error is the earlier file's, whichever thread
    hashed which chunk first."""
    late, early = Forger(signed, sym), Forger(signed, sym)
    n = late.content.n_chunks
    late.data[late.chunk_offset(n - 1) + 3] ^= 1  # last chunk of the second file
    early.data[early.chunk_offset(n // 2) + 3] ^= 1  # middle chunk of the third file
    files = [io.BytesIO(signed), io.BytesIO(late.bytes()), io.BytesIO(early.bytes())]
    with pytest.raises(sealedckpt.IntegrityError, match=f"chunk {n - 1} does not match its signed digest"):
        container.compute_roots(files, workers=workers)


@pytest.fixture
def small_chunks(monkeypatch: pytest.MonkeyPatch) -> None:
    """Files that ``seal_dir`` writes get 64 KiB chunks."""
    monkeypatch.setattr(container, "seal", functools.partial(container.seal, chunk_log2=16))


@pytest.mark.usefixtures("small_chunks")
@pytest.mark.parametrize("where", ["first", "middle", "last"])
def test_verify_dir_refuses_a_tampered_chunk_of_any_shard(
    where: str, tmp_path: Path, sym: SymmetricKey, signing: SigningKey
) -> None:
    src = tmp_path / "src"
    src.mkdir()
    for s in range(4):
        st.save_file({f"w{s}": torch.full((200_000,), float(s))}, str(src / f"model-{s}.safetensors"))
    out = tmp_path / "sealed"
    distdir.seal_dir(src, out, keys=[sym], signers=[signing])
    assert len(distdir.verify_dir(out, trusted_signers=[signing.public]).entries) == 4
    for victim in ("model-0.safetensors.sealed", "model-2.safetensors.sealed"):
        path = out / victim
        data = bytearray(path.read_bytes())
        f: Any = Forger(bytes(data), sym)
        i = _positions(f.content.n_chunks)[["first", "middle", "last"].index(where)]
        assert f.content.n_chunks > 10
        off = f.chunk_offset(i) + 5
        data[off] ^= 1
        path.write_bytes(bytes(data))
        with pytest.raises(sealedckpt.IntegrityError, match=victim):
            distdir.verify_dir(out, trusted_signers=[signing.public])
        data[off] ^= 1
        path.write_bytes(bytes(data))
    distdir.verify_dir(out, trusted_signers=[signing.public])


def test_verify_dir_hashes_sealed_files_in_batches_on_one_pool(
    tmp_path: Path, sym: SymmetricKey, signing: SigningKey, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Sealed files are hashed ``_FILES_AT_ONCE`` at a time, each batch on one pool; a file
    tampered in a later batch is still found and named."""
    src = tmp_path / "src"
    src.mkdir()
    for s in range(5):
        st.save_file({f"w{s}": torch.full((30_000,), float(s))}, str(src / f"model-{s}.safetensors"))
    (src / "config.json").write_text("{}")
    out = tmp_path / "sealed"
    distdir.seal_dir(src, out, keys=[sym], signers=[signing])
    batches: list[int] = []
    roots = container.compute_roots

    def spy(files: Any, workers: Any = None) -> Any:
        batches.append(len(files))
        return roots(files, workers)

    monkeypatch.setattr(distdir, "_FILES_AT_ONCE", 2)
    monkeypatch.setattr(container, "compute_roots", spy)
    assert len(distdir.verify_dir(out, trusted_signers=[signing.public]).entries) == 6
    assert batches == [2, 2, 2]  # config.json is sealed too
    victim = out / "model-3.safetensors.sealed"
    data = bytearray(victim.read_bytes())
    data[len(data) // 2] ^= 1
    victim.write_bytes(bytes(data))
    with pytest.raises(sealedckpt.IntegrityError, match=r"model-3\.safetensors"):
        distdir.verify_dir(out, trusted_signers=[signing.public])

"""sealedckpt.open: lazy per-tensor reads that touch only the chunks they need."""

from __future__ import annotations

import io
from typing import Any

import pytest
import torch
from helpers import last_signature

import sealedckpt


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
    key, signer = sealedckpt.SymmetricKey.generate(), sealedckpt.SigningKey.generate()
    gen = torch.Generator().manual_seed(0)
    sd = {f"layers.{i}.weight": torch.randn(1024, 1024, generator=gen) for i in range(12)}  # 4 MiB each, ~48 MiB
    buf = io.BytesIO()
    sealedckpt.save(sd, buf, key=key, sign_with=signer, metadata={"model": "m"})
    return key, signer, sd, buf.getvalue()


def test_get_tensor_reads_only_its_chunks(big: tuple[Any, Any, dict[str, torch.Tensor], bytes]) -> None:
    key, signer, sd, data = big
    f = CountingFile(data)
    with sealedckpt.open(f, key=key, trusted_signers=[signer.public]) as sf:
        opened = f.bytes_read
        assert sorted(sf.keys()) == sorted(sd) and sf.metadata() == {"model": "m"}
        t = sf.get_tensor("layers.7.weight")
        assert torch.equal(t, sd["layers.7.weight"])
    info = sealedckpt.inspect(io.BytesIO(data))
    chunk = info.chunk_size + 16
    n_chunks = -(-info.payload_len // info.chunk_size)
    not_chunks = len(data) - info.payload_len - 16 * n_chunks  # preamble..MAC and the trailer
    # opening reads: a 1 KiB sniff, the header, the trailer (signatures, digest table), and chunk 0
    # (the payload's own header); nothing else
    assert opened == 1024 + not_chunks + chunk
    assert f.bytes_read - opened <= 2 * chunk  # a 4 MiB tensor spans at most two 4 MiB chunks
    assert f.bytes_read <= 3 * chunk + not_chunks + 1024  # 3 of 12 chunks, not the file


def test_get_slice_reads_only_the_rows(big: tuple[Any, Any, dict[str, torch.Tensor], bytes]) -> None:
    key, _, sd, data = big
    f = CountingFile(data)
    with sealedckpt.open(f, key=key) as sf:
        before = f.bytes_read
        s = sf.get_slice("layers.3.weight")
        assert s.get_shape() == [1024, 1024] and s.get_dtype() == "F32"
        rows = s[10:20]
        assert torch.equal(rows, sd["layers.3.weight"][10:20])
        assert f.bytes_read - before <= 4 * 1024 * 1024 + 16  # one chunk
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
    n_chunks = -(-info.payload_len // info.chunk_size)
    first_chunk = last_signature(data)["block"] - 32 * n_chunks - 2 - (info.payload_len + 16 * n_chunks)
    bad = bytearray(data)
    bad[first_chunk + 6 * (info.chunk_size + 16) + 100] ^= 1  # inside chunk 6
    with sealedckpt.open(io.BytesIO(bytes(bad)), key=key) as sf:
        assert sf.get_tensor("layers.0.weight").shape == (1024, 1024)  # chunks 0-1: fine
        with pytest.raises(sealedckpt.IntegrityError, match="chunk 6"):
            sf.get_tensor("layers.5.weight")
    with pytest.raises(sealedckpt.SignatureError):
        sealedckpt.open(io.BytesIO(data), key=key, trusted_signers=[sealedckpt.SigningKey.generate().public])


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

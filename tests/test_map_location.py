"""map_location forms, tested on CPU with the meta device."""

from __future__ import annotations

import io

import pytest
import torch
from helpers import seal_bytes

import sealedckpt
from sealedckpt.payload import devices, encode


@pytest.mark.parametrize("loc", ["meta", torch.device("meta"), {"cpu": "meta"}])
def test_meta_targets(loc: object, key: sealedckpt.SymmetricKey) -> None:
    w = torch.randn(4, 3)
    data = seal_bytes({"w": w, "tied": w, "t": w.t(), "n": 5}, key)
    out = sealedckpt.load(io.BytesIO(data), key=key, map_location=loc)  # type: ignore[arg-type]
    assert out["w"].device.type == "meta" and out["w"].shape == (4, 3) and out["w"].dtype == torch.float32
    assert out["t"].shape == (3, 4) and out["t"].stride() == (1, 3)
    assert out["tied"].untyped_storage()._cdata == out["w"].untyped_storage()._cdata  # still one storage
    assert out["n"] == 5


def test_meta_target_still_authenticates_every_chunk(key: sealedckpt.SymmetricKey) -> None:
    data = bytearray(seal_bytes({"w": torch.randn(100)}, key))
    data[-40] ^= 1  # inside the last (only) chunk's ciphertext
    with pytest.raises(sealedckpt.IntegrityError):
        sealedckpt.load(io.BytesIO(bytes(data)), key=key, map_location="meta")


def test_dict_remaps_only_named_devices(key: sealedckpt.SymmetricKey) -> None:
    data = seal_bytes({"a": torch.ones(2)}, key)
    out = sealedckpt.load(io.BytesIO(data), key=key, map_location={"cuda:0": "meta"})
    assert out["a"].device.type == "cpu"


def test_callable_map_location_like_torch(key: sealedckpt.SymmetricKey) -> None:
    data = seal_bytes({"a": torch.arange(4.0)}, key)
    seen: list[str] = []

    def keep_on_cpu(storage: torch.UntypedStorage, location: str) -> torch.UntypedStorage:
        seen.append(location)
        return storage

    out = sealedckpt.load(io.BytesIO(data), key=key, map_location=keep_on_cpu)
    assert seen == ["cpu"] and torch.equal(out["a"], torch.arange(4.0))


def test_saved_cuda_tensor_without_cuda_is_a_device_error(
    key: sealedckpt.SymmetricKey, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A file recording cuda:0 (faked here) needs map_location on a CPU-only machine."""
    real = encode._Encoder._tensor

    def fake_cuda(self: encode._Encoder, t: torch.Tensor, path: str) -> dict[str, object]:
        ref = real(self, t, path)
        ref["device"] = "cuda:0"
        return ref

    monkeypatch.setattr(encode._Encoder, "_tensor", fake_cuda)
    data = seal_bytes({"a": torch.ones(3)}, key)
    monkeypatch.undo()
    if not torch.cuda.is_available():
        with pytest.raises(sealedckpt.DeviceError) as ei:
            sealedckpt.load(io.BytesIO(data), key=key)
        assert "map_location" in str(ei.value)
    for loc in ("cpu", torch.device("cpu"), {"cuda:0": "cpu"}, lambda s, loc: s):
        out = sealedckpt.load(io.BytesIO(data), key=key, map_location=loc)
        assert out["a"].device.type == "cpu" and torch.equal(out["a"], torch.ones(3))
    out = sealedckpt.load(io.BytesIO(data), key=key, map_location={"cuda:0": "meta"})
    assert out["a"].device.type == "meta"


def test_gpu_path_streams_through_staging_buffers(
    key: sealedckpt.SymmetricKey, monkeypatch: pytest.MonkeyPatch
) -> None:
    """map_location="cuda:1" on a CPU machine, with a fake device: entries are decrypted window by
    window into two staging buffers and copied out; no full host copy of the checkpoint is made."""
    staged: list[int] = []
    copied: list[int] = []
    allocated: list[tuple[str, int]] = []

    class FakeCopier(devices.DeviceCopier):
        window = 4 << 20

        def staging(self, nbytes: int) -> torch.Tensor:
            staged.append(nbytes)
            return torch.empty(nbytes, dtype=torch.uint8)

        def copy(self, dst: torch.Tensor, src: torch.Tensor) -> None:
            copied.append(src.numel())
            dst.copy_(src)

        def alloc(self, device: torch.device, nbytes: int) -> torch.Tensor:
            allocated.append((str(device), nbytes))
            return torch.empty(nbytes, dtype=torch.uint8)  # stands in for device memory

    monkeypatch.setattr(devices, "DeviceCopier", FakeCopier)
    gen = torch.Generator().manual_seed(0)
    w = torch.randn(3_000_000, generator=gen)  # 12 MB: three 4 MiB windows
    obj = {"w": w, "tied": w[10:20], "b": torch.arange(7), "epoch": 1}
    data = seal_bytes(obj, key)
    out = sealedckpt.load(io.BytesIO(data), key=key, map_location="cuda:1")
    assert torch.equal(out["w"], w) and torch.equal(out["tied"], w[10:20]) and torch.equal(out["b"], torch.arange(7))
    assert out["tied"].data_ptr() == out["w"].data_ptr() + 40  # still one storage
    assert staged == [4 << 20, 4 << 20]  # two staging buffers, never a full-size host copy
    assert sorted(allocated) == sorted([("cuda:1", 12_000_000), ("cuda:1", 56)])
    assert sum(copied) == 12_000_056
    # a tampered last chunk fails after the earlier windows were already copied: nothing is returned
    bad = bytearray(data)
    bad[-50] ^= 1
    with pytest.raises(sealedckpt.IntegrityError):
        sealedckpt.load(io.BytesIO(bytes(bad)), key=key, map_location="cuda:1")


def test_gpu_path_with_some_entries_kept_on_cpu(key: sealedckpt.SymmetricKey, monkeypatch: pytest.MonkeyPatch) -> None:
    """A file whose tensors were saved on two devices, one mapped to a (fake) GPU and one kept on
    the CPU: the CPU entries are filled from the same staging windows, typed and shaped."""
    real = encode._Encoder._tensor

    def on_gpu_if_big(self: encode._Encoder, t: torch.Tensor, path: str) -> dict[str, object]:
        ref = real(self, t, path)
        if t.numel() > 100:
            ref["device"] = "cuda:0"
        return ref

    monkeypatch.setattr(encode._Encoder, "_tensor", on_gpu_if_big)
    gen = torch.Generator().manual_seed(1)
    big = torch.randn(1_500_000, generator=gen)  # 6 MB: spans two 4 MiB windows
    small = torch.randn(4, 5, generator=gen).to(torch.bfloat16)  # no numpy dtype: the byte-view fallback
    flags = torch.tensor([True, False, True])
    data = seal_bytes({"big": big, "small": small, "flags": flags}, key)
    monkeypatch.undo()

    class FakeCopier(devices.DeviceCopier):
        window = 4 << 20

        def staging(self, nbytes: int) -> torch.Tensor:
            return torch.empty(nbytes, dtype=torch.uint8)

        def copy(self, dst: torch.Tensor, src: torch.Tensor) -> None:
            dst.copy_(src)

        def alloc(self, device: torch.device, nbytes: int) -> torch.Tensor:
            on_device.append(nbytes)
            return torch.empty(nbytes, dtype=torch.uint8)

    on_device: list[int] = []
    monkeypatch.setattr(devices, "DeviceCopier", FakeCopier)
    out = sealedckpt.load(io.BytesIO(data), key=key)
    assert on_device == [6_000_000]
    assert torch.equal(out["big"], big)
    assert out["small"].dtype == torch.bfloat16 and out["small"].shape == (4, 5) and torch.equal(out["small"], small)
    assert out["flags"].dtype == torch.bool and torch.equal(out["flags"], flags)


def test_invalid_map_location(key: sealedckpt.SymmetricKey) -> None:
    data = seal_bytes({"a": torch.ones(1)}, key)
    with pytest.raises(sealedckpt.DeviceError):
        sealedckpt.load(io.BytesIO(data), key=key, map_location="no-such-device")
    with pytest.raises(TypeError):
        sealedckpt.load(io.BytesIO(data), key=key, map_location=3)  # type: ignore[arg-type]

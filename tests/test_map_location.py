"""map_location forms, tested on CPU with the meta device."""

from __future__ import annotations

import io

import pytest
import torch

import sealedckpt
from sealedckpt import serialize


def _sealed(obj: object, key: sealedckpt.SymmetricKey) -> bytes:
    buf = io.BytesIO()
    sealedckpt.save(obj, buf, key=key)
    return buf.getvalue()


@pytest.mark.parametrize("loc", ["meta", torch.device("meta"), {"cpu": "meta"}])
def test_meta_targets(loc: object, key: sealedckpt.SymmetricKey) -> None:
    w = torch.randn(4, 3)
    data = _sealed({"w": w, "tied": w, "t": w.t(), "n": 5}, key)
    out = sealedckpt.load(io.BytesIO(data), key=key, map_location=loc)  # type: ignore[arg-type]
    assert out["w"].device.type == "meta" and out["w"].shape == (4, 3) and out["w"].dtype == torch.float32
    assert out["t"].shape == (3, 4) and out["t"].stride() == (1, 3)
    assert out["tied"].untyped_storage()._cdata == out["w"].untyped_storage()._cdata  # still one storage
    assert out["n"] == 5


def test_meta_target_still_authenticates_every_chunk(key: sealedckpt.SymmetricKey) -> None:
    data = bytearray(_sealed({"w": torch.randn(100)}, key))
    data[-40] ^= 1  # inside the last (only) chunk's ciphertext
    with pytest.raises(sealedckpt.IntegrityError):
        sealedckpt.load(io.BytesIO(bytes(data)), key=key, map_location="meta")


def test_dict_remaps_only_named_devices(key: sealedckpt.SymmetricKey) -> None:
    data = _sealed({"a": torch.ones(2)}, key)
    out = sealedckpt.load(io.BytesIO(data), key=key, map_location={"cuda:0": "meta"})
    assert out["a"].device.type == "cpu"


def test_callable_map_location_like_torch(key: sealedckpt.SymmetricKey) -> None:
    data = _sealed({"a": torch.arange(4.0)}, key)
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
    real = serialize._Encoder._tensor

    def fake_cuda(self: serialize._Encoder, t: torch.Tensor, path: str) -> dict[str, object]:
        ref = real(self, t, path)
        ref["device"] = "cuda:0"
        return ref

    monkeypatch.setattr(serialize._Encoder, "_tensor", fake_cuda)
    data = _sealed({"a": torch.ones(3)}, key)
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


def test_non_cpu_target_copies_through_to(key: sealedckpt.SymmetricKey, monkeypatch: pytest.MonkeyPatch) -> None:
    """The GPU path (buffer.to(device)) exercised with a fake device copy."""
    calls: list[str] = []
    real_place = serialize._place

    def fake_place(buf: torch.Tensor, tgt: torch.device | None, saved: str, loc: object) -> torch.Tensor:
        if tgt is not None and tgt.type == "cuda":
            calls.append(str(tgt))
            return buf.clone()  # stands in for the host-to-device copy
        return real_place(buf, tgt, saved, loc)  # type: ignore[arg-type]

    monkeypatch.setattr(serialize, "_place", fake_place)
    w = torch.randn(5)
    data = _sealed({"w": w, "w2": w}, key)
    out = sealedckpt.load(io.BytesIO(data), key=key, map_location="cuda:1")
    assert calls == ["cuda:1"]  # one copy per storage, tied tensors still share it
    assert out["w"].data_ptr() == out["w2"].data_ptr() and torch.equal(out["w"], w)


def test_invalid_map_location(key: sealedckpt.SymmetricKey) -> None:
    data = _sealed({"a": torch.ones(1)}, key)
    with pytest.raises(sealedckpt.DeviceError):
        sealedckpt.load(io.BytesIO(data), key=key, map_location="no-such-device")
    with pytest.raises(TypeError):
        sealedckpt.load(io.BytesIO(data), key=key, map_location=3)  # type: ignore[arg-type]

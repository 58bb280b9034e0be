"""Whole training checkpoints round-trip with equal types and bitwise-equal tensors."""

from __future__ import annotations

import io
import random
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import assert_same

import sealedckpt


def _training_setup(
    seed: int = 0,
) -> tuple[torch.nn.Module, torch.optim.Optimizer, torch.optim.lr_scheduler.LRScheduler]:
    torch.manual_seed(seed)
    model = torch.nn.Sequential(
        torch.nn.Linear(3, 16), torch.nn.BatchNorm1d(16), torch.nn.ReLU(), torch.nn.Linear(16, 1)
    )
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=0.05, total_steps=100)
    return model, opt, sched


def _step(model: torch.nn.Module, opt: torch.optim.Optimizer, sched: torch.optim.lr_scheduler.LRScheduler) -> float:
    x = torch.randn(32, 3)
    y = (x * torch.tensor([1.0, -2.0, 0.5])).sum(1, keepdim=True) + 0.1 * torch.randn(32, 1)
    loss = torch.nn.functional.mse_loss(model(x), y)
    opt.zero_grad()
    loss.backward()
    opt.step()
    sched.step()
    return loss.item()


def _checkpoint(
    model: torch.nn.Module, opt: torch.optim.Optimizer, sched: torch.optim.lr_scheduler.LRScheduler
) -> dict[str, object]:
    return {
        "model": model.state_dict(),
        "optimizer": opt.state_dict(),
        "scheduler": sched.state_dict(),
        "epoch": 7,
        "rng": torch.get_rng_state(),
        "py_rng": random.getstate(),
        "np_rng": np.random.get_state(),
    }


def test_training_checkpoint_round_trips_exactly(tmp_path: Path, key: sealedckpt.SymmetricKey) -> None:
    model, opt, sched = _training_setup()
    for _ in range(3):
        _step(model, opt, sched)
    ckpt = _checkpoint(model, opt, sched)
    path = tmp_path / "ckpt.sealed"
    sealedckpt.save(ckpt, path, key=key)
    out = sealedckpt.load(path, key=key)
    assert_same(ckpt, out)
    # the details torch.load users rely on
    assert list(out["optimizer"]["state"].keys()) == [0, 1, 2, 3, 4, 5]
    assert isinstance(out["optimizer"]["param_groups"][0]["betas"], tuple)
    assert out["model"]._metadata["1"] == {"version": 2}  # BatchNorm versioning
    assert out["rng"].dtype == torch.uint8 and out["rng"].shape == (5056,)
    assert isinstance(out["np_rng"][1], np.ndarray) and out["np_rng"][1].dtype == np.uint32


def test_resume_equals_uninterrupted_training(tmp_path: Path, key: sealedckpt.SymmetricKey) -> None:
    random.seed(1)
    np.random.seed(1)
    model, opt, sched = _training_setup()
    for _ in range(5):
        _step(model, opt, sched)
    sealedckpt.save(_checkpoint(model, opt, sched), tmp_path / "c.sealed", key=key)
    uninterrupted = [_step(model, opt, sched) for _ in range(5)]
    final = {k: v.clone() for k, v in model.state_dict().items()}

    # A fresh process would start from scratch: rebuild everything, then resume.
    torch.manual_seed(12345)
    model2, opt2, sched2 = _training_setup(seed=99)
    ck = sealedckpt.load(tmp_path / "c.sealed", key=key)
    model2.load_state_dict(ck["model"])
    opt2.load_state_dict(ck["optimizer"])
    sched2.load_state_dict(ck["scheduler"])
    torch.set_rng_state(ck["rng"])
    random.setstate(ck["py_rng"])
    np.random.set_state(ck["np_rng"])
    resumed = [_step(model2, opt2, sched2) for _ in range(5)]
    assert resumed == uninterrupted
    for k, v in model2.state_dict().items():
        assert torch.equal(v, final[k]), k


ALL_DTYPES = [
    torch.bool, torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64,
    torch.uint16, torch.uint32, torch.uint64, torch.float16, torch.bfloat16,
    torch.float32, torch.float64, torch.float8_e4m3fn, torch.float8_e5m2,
]  # fmt: skip


@pytest.mark.parametrize("dtype", ALL_DTYPES, ids=str)
def test_every_dtype(dtype: torch.dtype, key: sealedckpt.SymmetricKey) -> None:
    raw = torch.randint(0, 256, (3, 5, 7), dtype=torch.uint8)
    if dtype == torch.bool:
        t = raw % 2 == 1
    else:
        t = raw.repeat_interleave(dtype.itemsize, dim=-1).view(dtype) if dtype.itemsize > 1 else raw.view(dtype)
    obj = {"t": t, "zero_dim": t.flatten()[0].clone(), "empty": t[:0], "transposed": t.transpose(0, 2)}
    buf = io.BytesIO()
    sealedckpt.save(obj, buf, key=key)
    out = sealedckpt.load(io.BytesIO(buf.getvalue()), key=key)
    assert_same(obj, out)
    assert out["zero_dim"].dim() == 0


def test_python_values_and_types(key: sealedckpt.SymmetricKey) -> None:
    od: OrderedDict[str, int] = OrderedDict(b=1, a=2)
    od._metadata = {"": {"version": 3}}  # type: ignore[attr-defined]
    obj = {
        "none": None, "t": True, "f": False, "i": -(2**70), "pcg": 2**125 + 12345, "x": 1.5,
        "neg0": -0.0, "nan": float("nan"), "inf": float("inf"), "minf": float("-inf"),
        "s": "héllo\x00", "b": b"\x00\xffraw", "l": [1, [2, (3,)]], "tuple": (1, "a", None),
        0: "int key", 1.5: "float key", (1, 2): "tuple key", None: "none key", True: "bool key",
        "od": od, "dtype": torch.float8_e5m2, "device": torch.device("cuda", 1), "size": torch.Size([2, 0, 3]),
        "np_arr": np.arange(6, dtype=">i4").reshape(2, 3), "np_f": np.float32(1.25), "np_b": np.bool_(True),
        "empty": {}, "empty_list": [], "empty_tuple": (),
    }  # fmt: skip
    buf = io.BytesIO()
    sealedckpt.save(obj, buf, key=key)
    out = sealedckpt.load(io.BytesIO(buf.getvalue()), key=key)
    arr = out.pop("np_arr")
    expected_arr = obj.pop("np_arr")
    assert isinstance(arr, np.ndarray)
    assert np.array_equal(arr, expected_arr) and arr.dtype == np.dtype("<i4")  # stored little-endian
    assert_same(obj, out)
    assert out["od"]._metadata == {"": {"version": 3}}


def test_tied_weights_stay_tied_and_are_stored_once(key: sealedckpt.SymmetricKey) -> None:
    emb = torch.randn(1000, 64)
    obj = {"embed.weight": emb, "lm_head.weight": emb, "half": emb[:500], "col": emb[:, 3]}
    buf = io.BytesIO()
    sealedckpt.save(obj, buf, key=key)
    size = len(buf.getvalue())
    assert size < emb.numel() * 4 * 1.1  # one copy, not four
    out = sealedckpt.load(io.BytesIO(buf.getvalue()), key=key)
    assert out["embed.weight"].data_ptr() == out["lm_head.weight"].data_ptr()
    assert out["half"].data_ptr() == out["embed.weight"].data_ptr()
    assert out["col"].stride() == (64,)
    out["embed.weight"][0, 3] = 42.0
    assert out["lm_head.weight"][0, 3] == 42.0 and out["col"][0] == 42.0
    assert out["embed.weight"] is not out["lm_head.weight"]  # distinct tensors over one storage, as torch.load
    assert_same(obj, sealedckpt.load(io.BytesIO(buf.getvalue()), key=key))


def test_each_untied_tensor_owns_its_storage(key: sealedckpt.SymmetricKey) -> None:
    obj = {"a": torch.ones(10), "b": torch.zeros(10)}
    buf = io.BytesIO()
    sealedckpt.save(obj, buf, key=key)
    out = sealedckpt.load(io.BytesIO(buf.getvalue()), key=key)
    assert out["a"].untyped_storage().nbytes() == 40
    assert out["a"].untyped_storage().data_ptr() != out["b"].untyped_storage().data_ptr()
    assert out["a"]._base is None  # the tensor is its storage's own, not a view of a loader buffer


def test_parameters_and_requires_grad(key: sealedckpt.SymmetricKey) -> None:
    p = torch.nn.Parameter(torch.randn(3))
    frozen = torch.nn.Parameter(torch.randn(2), requires_grad=False)
    leaf = torch.randn(4, requires_grad=True)
    buf = io.BytesIO()
    sealedckpt.save({"p": p, "frozen": frozen, "leaf": leaf}, buf, key=key)
    out = sealedckpt.load(io.BytesIO(buf.getvalue()), key=key)
    assert type(out["p"]) is torch.nn.Parameter and out["p"].requires_grad
    assert type(out["frozen"]) is torch.nn.Parameter and not out["frozen"].requires_grad
    assert type(out["leaf"]) is torch.Tensor and out["leaf"].requires_grad


def test_views_of_a_tensor_that_requires_grad_load_as_leaves(key: sealedckpt.SymmetricKey) -> None:
    """As torch.load gives them: every loaded tensor is a leaf, tied views included."""
    leaf = torch.randn(4, requires_grad=True)
    p = torch.nn.Parameter(torch.randn(6))
    buf = io.BytesIO()
    sealedckpt.save({"leaf": leaf, "head": leaf[:2], "p": p, "p_view": p[1:3]}, buf, key=key)
    out = sealedckpt.load(io.BytesIO(buf.getvalue()), key=key)
    for name in ("leaf", "head", "p", "p_view"):
        assert out[name].grad_fn is None and out[name].is_leaf and out[name].requires_grad, name
    assert out["head"].data_ptr() == out["leaf"].data_ptr() and out["p_view"].data_ptr() == out["p"].data_ptr() + 4
    assert torch.equal(out["head"].detach(), leaf[:2].detach())


def test_caller_tensors_are_not_modified(key: sealedckpt.SymmetricKey) -> None:
    t = torch.arange(1 << 20, dtype=torch.float32)  # spans chunks
    before = t.clone()
    sealedckpt.save({"t": t, "v": t[::3]}, io.BytesIO(), key=key)
    assert torch.equal(t, before)


def test_multi_chunk_payload(key: sealedckpt.SymmetricKey) -> None:
    gen = torch.Generator().manual_seed(0)
    obj = {f"w{i}": torch.randn(int(n), generator=gen) for i, n in enumerate([3_000_000, 1, 700_001, 2_097_152])}
    buf = io.BytesIO()
    sealedckpt.save(obj, buf, key=key)
    info = sealedckpt.inspect(io.BytesIO(buf.getvalue()))
    assert info.payload_len > 3 * info.chunk_size
    assert_same(obj, sealedckpt.load(io.BytesIO(buf.getvalue()), key=key))


@pytest.mark.parametrize(
    ("obj", "path"),
    [
        ({"optimizer": {"state": {3: {"foo": object()}}}}, "optimizer.state.3.foo"),
        ({"a": [1, {torch.zeros(1)}]}, "a.1"),  # sets are stored, but not sets of tensors
        ({"c": torch.zeros(2, dtype=torch.complex64)}, "c"),
        ({"q": torch.quantize_per_tensor(torch.ones(2), 0.1, 0, torch.qint8)}, "q"),
        ({"s": torch.eye(2).to_sparse()}, "s"),
        ({"m": torch.empty(2, device="meta")}, "m"),
        ({"o": np.array([object()])}, "o"),
        ({"d": __import__("collections").defaultdict(int)}, "d"),
        ({"k": {object(): 1}}, "k.<"),
    ],
)
def test_unstorable_objects_raise_typed_error_naming_the_path(
    obj: object, path: str, key: sealedckpt.SymmetricKey
) -> None:
    with pytest.raises(sealedckpt.UnsupportedTypeError) as ei:
        sealedckpt.save(obj, io.BytesIO(), key=key)
    assert isinstance(ei.value, TypeError) and isinstance(ei.value, sealedckpt.SealedCkptError)
    assert path in str(ei.value)


def test_cycle_is_refused(key: sealedckpt.SymmetricKey) -> None:
    a: list[object] = []
    a.append(a)
    with pytest.raises(sealedckpt.UnsupportedTypeError, match="cycle"):
        sealedckpt.save({"a": a}, io.BytesIO(), key=key)


def test_payload_is_plain_safetensors(key: sealedckpt.SymmetricKey) -> None:
    import safetensors.torch

    from sealedckpt import container

    sd = {"layer.weight": torch.randn(4, 4), "layer.bias": torch.randn(4)}
    buf = io.BytesIO()
    sealedckpt.save(sd, buf, key=key)
    reader = container.open_sealed(io.BytesIO(buf.getvalue()), [key])
    payload = reader.read_prefix(reader.content.payload_len)
    loaded = safetensors.torch.load(payload)
    assert set(loaded) == {"layer.weight", "layer.bias"}
    for k, v in sd.items():
        assert torch.equal(loaded[k], v)


def test_keys_as_raw_bytes_and_lists(key: sealedckpt.SymmetricKey) -> None:
    other = sealedckpt.SymmetricKey.generate()
    buf = io.BytesIO()
    sealedckpt.save({"x": 1}, buf, key=[key.to_bytes(), other])
    assert sealedckpt.load(io.BytesIO(buf.getvalue()), key=other) == {"x": 1}
    assert sealedckpt.load(io.BytesIO(buf.getvalue()), key=bytes(key)) == {"x": 1}
    assert sealedckpt.load(io.BytesIO(buf.getvalue()), key=[sealedckpt.SymmetricKey.generate(), key]) == {"x": 1}


def test_no_key_is_a_clear_error() -> None:
    with pytest.raises(sealedckpt.NoKeyError, match="no key"):
        sealedckpt.save({"x": 1}, io.BytesIO())
    with pytest.raises(TypeError):
        sealedckpt.save({"x": 1}, io.BytesIO(), key="not a key")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        sealedckpt.save({"x": 1}, io.BytesIO(), key=b"short")


def test_save_streams_to_a_non_seekable_writer(key: sealedckpt.SymmetricKey) -> None:
    class Pipe:
        def __init__(self) -> None:
            self.data = bytearray()

        def write(self, b: bytes) -> int:
            self.data += b
            return len(b)

    p = Pipe()
    sealedckpt.save({"w": torch.arange(10)}, p, key=key)  # type: ignore[arg-type]
    assert torch.equal(sealedckpt.load(io.BytesIO(bytes(p.data)), key=key)["w"], torch.arange(10))


def test_public_metadata_is_readable_without_key_and_authenticated(key: sealedckpt.SymmetricKey) -> None:
    buf = io.BytesIO()
    sealedckpt.save({"w": torch.ones(2)}, buf, key=key, metadata={"model": "tiny", "version": "3"})
    info = sealedckpt.inspect(io.BytesIO(buf.getvalue()))
    assert info.metadata == {"model": "tiny", "version": "3"}
    assert info.key_slots == [{"type": "symmetric", "key_id": key.key_id}]
    raw = bytearray(buf.getvalue())
    i = raw.index(b"tiny")
    raw[i] ^= 0x01
    with pytest.raises(sealedckpt.IntegrityError):
        sealedckpt.load(io.BytesIO(bytes(raw)), key=key)

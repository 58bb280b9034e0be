"""CheckpointManager: step files, retention, fallback loads, background saves."""

from __future__ import annotations

import enum
import os
import threading
import time
import warnings
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

import sealedckpt
from sealedckpt.api import manager as mgr_mod


def names(d: Path) -> list[str]:
    return sorted(os.listdir(d))


def test_files_metadata_and_latest(tmp_path: Path, key: sealedckpt.SymmetricKey) -> None:
    m = sealedckpt.CheckpointManager(tmp_path, key=key, metadata={"run": "r1"})
    assert m.latest() is None and m.steps() == []
    with pytest.raises(sealedckpt.NoCheckpointError):
        m.load()
    for s in (5, 1234, 99):
        m.save(s, {"s": s, "w": torch.full((3,), float(s))})
    assert names(tmp_path) == ["step-000000000005.sealed", "step-000000000099.sealed", "step-000000001234.sealed"]
    assert m.steps() == [5, 99, 1234] and m.latest() == 1234
    assert sealedckpt.inspect(tmp_path / "step-000000001234.sealed").metadata == {"run": "r1", "step": "1234"}
    assert m.load()["s"] == 1234 and m.loaded_step == 1234
    assert m.load(99)["w"].tolist() == [99.0, 99.0, 99.0]
    with pytest.raises(sealedckpt.NoCheckpointError, match="step 7"):
        m.load(7)


def test_bad_arguments(tmp_path: Path, key: sealedckpt.SymmetricKey) -> None:
    with pytest.raises(sealedckpt.InvalidArgumentError):
        sealedckpt.CheckpointManager(tmp_path, key=key, keep_last=0)
    with pytest.raises(sealedckpt.InvalidArgumentError):
        sealedckpt.CheckpointManager(tmp_path, key=key, keep_every=0)
    with pytest.raises(sealedckpt.InvalidArgumentError, match="'step'"):
        sealedckpt.CheckpointManager(tmp_path, key=key, metadata={"step": "1"})
    m = sealedckpt.CheckpointManager(tmp_path, key=key)
    for bad in (-1, 10**12, 1.0, True):
        with pytest.raises(sealedckpt.InvalidArgumentError):
            m.save(bad, {})  # type: ignore[arg-type]
    m.close()
    with pytest.raises(sealedckpt.InvalidArgumentError, match="closed"):
        m.save(1, {})
    assert names(tmp_path) == []


def test_retention_keep_last_and_keep_every(tmp_path: Path, key: sealedckpt.SymmetricKey) -> None:
    m = sealedckpt.CheckpointManager(tmp_path, key=key, keep_last=2, keep_every=3)
    for s in range(1, 11):
        m.save(s, {"s": s})
    assert m.steps() == [3, 6, 9, 10]
    m.save(4, {"s": 4})  # an older step just saved is never deleted at once
    assert m.steps() == [3, 4, 6, 9, 10]


def test_no_deletion_when_the_new_save_fails(
    tmp_path: Path, key: sealedckpt.SymmetricKey, monkeypatch: pytest.MonkeyPatch
) -> None:
    m = sealedckpt.CheckpointManager(tmp_path, key=key, keep_last=1)
    m.save(1, {"s": 1})
    before = (tmp_path / "step-000000000001.sealed").read_bytes()
    real = mgr_mod.checkpoint.save

    def failing(obj: Any, f: Any, **kw: Any) -> None:
        real({"huge": torch.zeros(10)}, f, **kw)
        raise OSError("disk full")

    monkeypatch.setattr(mgr_mod.checkpoint, "save", failing)
    with pytest.raises(OSError, match="disk full"):
        m.save(2, {"s": 2})
    assert (tmp_path / "step-000000000001.sealed").read_bytes() == before


def test_foreign_files_are_skipped_with_a_warning(tmp_path: Path, key: sealedckpt.SymmetricKey) -> None:
    for n in (
        "notes.txt",
        "step-12.sealed",
        "step-000000000003.sealed.bak",
        ".step-000000000004.sealed.0123456789ab.tmp",
    ):
        (tmp_path / n).write_bytes(b"junk")
    with pytest.warns(sealedckpt.SealedCkptWarning) as rec:
        m = sealedckpt.CheckpointManager(tmp_path, key=key, keep_last=1)
        assert m.steps() == []
    assert len(rec) == 3 and not any(".tmp" in str(w.message) for w in rec)  # a young temp: a save in flight
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # warned once per name
        m.save(1, {"s": 1})
        m.save(2, {"s": 2})
        assert m.steps() == [2]
    assert ".step-000000000004.sealed.0123456789ab.tmp" in names(tmp_path)  # young: left alone
    assert "notes.txt" in names(tmp_path) and "step-12.sealed" in names(tmp_path)


def test_stale_temp_files_are_removed_by_the_next_manager(tmp_path: Path, key: sealedckpt.SymmetricKey) -> None:
    old = tmp_path / ".step-000000000004.sealed.0123456789ab.tmp"
    young = tmp_path / ".step-000000000005.sealed.ba9876543210.tmp"
    other = tmp_path / ".other.0123456789ab.tmp"
    for p in (old, young, other):
        p.write_bytes(b"partial")
    t = time.time() - mgr_mod.STALE_TEMP_SECONDS - 5
    os.utime(old, (t, t))
    os.utime(other, (t, t))
    with pytest.warns(sealedckpt.SealedCkptWarning) as rec:
        m = sealedckpt.CheckpointManager(tmp_path, key=key)
        assert m.steps() == []
    assert [str(w.message).rpartition("/")[2] for w in rec] == [
        ".other.0123456789ab.tmp: not a checkpoint of this manager; skipped"
    ]
    assert names(tmp_path) == [".other.0123456789ab.tmp", ".step-000000000005.sealed.ba9876543210.tmp"]
    os.utime(young, (t, t))  # the young one goes stale later: warned, removed by the next manager
    with pytest.warns(sealedckpt.SealedCkptWarning, match="stale temp file"):
        assert m.steps() == []
    sealedckpt.CheckpointManager(tmp_path, key=key)
    assert names(tmp_path) == [".other.0123456789ab.tmp"]


def _corrupt(p: Path) -> None:
    data = bytearray(p.read_bytes())
    data[len(data) // 2] ^= 1
    p.write_bytes(bytes(data))


def test_corrupt_latest_is_an_error_unless_fallback(tmp_path: Path, key: sealedckpt.SymmetricKey) -> None:
    m = sealedckpt.CheckpointManager(tmp_path, key=key, keep_last=5)
    for s in (1, 2, 3):
        m.save(s, {"s": s, "w": torch.arange(50_000)})
    _corrupt(tmp_path / "step-000000000003.sealed")
    (tmp_path / "step-000000000002.sealed").write_bytes(b"not a checkpoint")
    with pytest.raises(sealedckpt.IntegrityError) as ei:
        m.load()
    assert "checkpoint step 3" in "".join(ei.value.__notes__)
    with pytest.warns(sealedckpt.SealedCkptWarning) as rec:
        out = m.load(fallback=True)
    assert out["s"] == 1 and m.loaded_step == 1
    assert [(s, type(e)) for s, e in m.skipped] == [(3, sealedckpt.IntegrityError), (2, sealedckpt.UnsafePayloadError)]
    assert [str(w.message).split(":")[0] for w in rec] == ["skipped checkpoint step 3", "skipped checkpoint step 2"]
    with pytest.warns(sealedckpt.SealedCkptWarning):
        assert m.load(2, fallback=True)["s"] == 1 and [s for s, _ in m.skipped] == [2]
    _corrupt(tmp_path / "step-000000000001.sealed")
    with pytest.warns(sealedckpt.SealedCkptWarning), pytest.raises(sealedckpt.IntegrityError):
        m.load(fallback=True)  # nothing opens: the newest error


def test_wrong_key_is_a_typed_error(tmp_path: Path, key: sealedckpt.SymmetricKey) -> None:
    sealedckpt.CheckpointManager(tmp_path, key=key).save(1, {"s": 1})
    other = sealedckpt.CheckpointManager(tmp_path, key=sealedckpt.SymmetricKey.generate())
    with pytest.raises(sealedckpt.DecryptionError):
        other.load()


def test_signed_checkpoints_and_trusted_signers(
    tmp_path: Path, key: sealedckpt.SymmetricKey, signer: sealedckpt.SigningKey
) -> None:
    m = sealedckpt.CheckpointManager(tmp_path, key=key, sign_with=signer)
    m.save(1, {"s": 1})
    assert m.load(trusted_signers=[signer.public])["s"] == 1
    with pytest.raises(sealedckpt.SignatureError):
        m.load(trusted_signers=[sealedckpt.SigningKey.generate().public])


# -- background saves ------------------------------------------------------------------------


def test_background_snapshot_is_isolated_from_later_mutation(tmp_path: Path, key: sealedckpt.SymmetricKey) -> None:
    model = torch.nn.Linear(4, 3)
    w = torch.randn(1000)
    cfg = {"lr": [0.1], "arr": np.arange(4)}
    state = {"w": w, "view": w[10:20], "cfg": cfg, "model": model.state_dict(), "p": torch.nn.Parameter(torch.ones(2))}
    expect_w, expect_model = w.clone(), {k: v.clone() for k, v in model.state_dict().items()}
    with sealedckpt.CheckpointManager(tmp_path, key=key, async_save=True) as m:
        m.save(1, state)
        w.add_(1)
        with torch.no_grad():
            model.weight.mul_(0)
        cfg["lr"].append(0.2)
        cfg["arr"][0] = 99
    out = m.load()
    assert torch.equal(out["w"], expect_w) and torch.equal(out["view"], expect_w[10:20])
    assert out["view"].untyped_storage().data_ptr() == out["w"].untyped_storage().data_ptr()
    assert out["cfg"]["lr"] == [0.1] and out["cfg"]["arr"].tolist() == [0, 1, 2, 3]
    assert type(out["model"]) is OrderedDict and out["model"]._metadata == model.state_dict()._metadata
    assert all(torch.equal(out["model"][k], v) for k, v in expect_model.items())
    assert type(out["p"]) is torch.nn.Parameter and out["p"].requires_grad


def test_background_buffers_are_reused_and_bounded(tmp_path: Path, key: sealedckpt.SymmetricKey) -> None:
    a, b = torch.zeros(1000), torch.zeros(10, dtype=torch.int64)
    m = sealedckpt.CheckpointManager(tmp_path, key=key, async_save=True, keep_last=10)
    assert m.snapshot_bytes == 0
    m.save(1, {"a": a, "b": b, "a2": a})
    assert m._snap is not None
    ptrs = {t.data_ptr() for bufs in m._snap._pool.values() for t in bufs}
    for s in range(2, 5):
        a.fill_(s)
        m.save(s, {"a": a, "b": b, "a2": a})
        assert m.snapshot_bytes == 4000 + 80
        assert {t.data_ptr() for bufs in m._snap._pool.values() for t in bufs} == ptrs
    m.save(5, {"c": torch.ones(3)})  # other shapes: the old buffers are released
    m.wait()
    assert m.snapshot_bytes == 12
    assert [m.load(s)["a"][0].item() for s in (2, 3, 4)] == [2.0, 3.0, 4.0]
    assert m.load(5)["c"].tolist() == [1.0, 1.0, 1.0]


def test_background_error_surfaces_once(
    tmp_path: Path, key: sealedckpt.SymmetricKey, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = mgr_mod.checkpoint.save

    def flaky(obj: Any, f: Any, **kw: Any) -> None:
        if obj["s"] == 2:
            raise OSError("no space left")
        real(obj, f, **kw)

    monkeypatch.setattr(mgr_mod.checkpoint, "save", flaky)
    m = sealedckpt.CheckpointManager(tmp_path, key=key, async_save=True)
    m.save(1, {"s": 1})
    m.save(2, {"s": 2})  # returns; fails in the background
    with pytest.raises(OSError, match="no space left"):
        m.save(3, {"s": 3})
    m.save(3, {"s": 3})
    m.save(2, {"s": 2})
    with pytest.raises(OSError, match="no space left"):
        m.wait()
    m.wait()
    m.save(2, {"s": 2})
    with pytest.raises(OSError, match="no space left"):
        m.close()
    assert m.steps() == [1, 3]
    m2 = sealedckpt.CheckpointManager(tmp_path, key=key, async_save=True)
    with pytest.raises(ZeroDivisionError) as ei, m2:
        m2.save(2, {"s": 2})
        _ = 1 / 0
    assert "background checkpoint save failed: OSError: no space left" in "".join(ei.value.__notes__)


def test_one_background_save_at_a_time(
    tmp_path: Path, key: sealedckpt.SymmetricKey, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = mgr_mod.checkpoint.save
    active, peak, lock = [0], [0], threading.Lock()

    def slow(obj: Any, f: Any, **kw: Any) -> None:
        with lock:
            active[0] += 1
            peak[0] = max(peak[0], active[0])
        time.sleep(0.05)
        real(obj, f, **kw)
        with lock:
            active[0] -= 1

    monkeypatch.setattr(mgr_mod.checkpoint, "save", slow)
    with sealedckpt.CheckpointManager(tmp_path, key=key, async_save=True, keep_last=100) as m:
        for s in range(6):
            m.save(s, {"s": s})
    assert peak[0] == 1 and m.steps() == list(range(6))


def test_background_save_refuses_unstorable_objects_at_once(tmp_path: Path, key: sealedckpt.SymmetricKey) -> None:
    m = sealedckpt.CheckpointManager(tmp_path, key=key, async_save=True)
    with pytest.raises(sealedckpt.UnsupportedTypeError, match=r"opt\.fn"):
        m.save(1, {"opt": {"fn": print}})
    loop: list[Any] = []
    loop.append(loop)
    with pytest.raises(sealedckpt.UnsupportedTypeError, match="cycle"):
        m.save(1, {"x": loop})
    m.close()
    assert names(tmp_path) == []


def test_background_snapshot_keeps_dtypes_views_and_empty_tensors(tmp_path: Path, key: sealedckpt.SymmetricKey) -> None:
    base = torch.arange(24, dtype=torch.float32).reshape(4, 6)
    state = {
        "t": base.t(),  # non-contiguous view
        "col": base[:, 2],
        "bf16": torch.arange(5).to(torch.bfloat16),
        "mask": torch.tensor([True, False]),
        "empty": torch.zeros(0, 3),
        "neg": torch.arange(3.0).neg().conj(),
        "i64": torch.tensor(2**40),
    }
    expect = {k: v.clone() for k, v in state.items()}
    with sealedckpt.CheckpointManager(tmp_path, key=key, async_save=True) as m:
        m.save(1, state)
        base.zero_()
    out = m.load()
    for k, v in expect.items():
        assert out[k].dtype == v.dtype and out[k].shape == v.shape and torch.equal(out[k], v), k
    assert (
        out["t"].stride() == (1, 6) and out["col"].untyped_storage().data_ptr() == out["t"].untyped_storage().data_ptr()
    )


class _Mode(enum.Enum):
    TRAIN = 1


def test_background_save_takes_every_storable_type(tmp_path: Path, key: sealedckpt.SymmetricKey) -> None:
    """What a synchronous save stores, a background save stores too, snapshotted against mutation."""
    import argparse
    import dataclasses
    import datetime
    import decimal
    import types
    import uuid

    from helpers import assert_same

    class Local(enum.Enum):
        A = 1

    with pytest.raises(sealedckpt.UnsupportedTypeError, match="defined inside a function"):
        sealedckpt.save({"m": Local.A}, tmp_path / "local.sealed", key=key)  # would never load

    @dataclasses.dataclass
    class Cfg:
        lr: float
        w: torch.Tensor

    sealedckpt.register_dataclass(Cfg)
    try:
        obj = {
            "args": argparse.Namespace(lr=0.1, tags={"a"}), "ns": types.SimpleNamespace(x=[1, 2]),
            "when": datetime.datetime(2026, 12, 1, tzinfo=datetime.timezone.utc), "dt": datetime.timedelta(3),
            "d": decimal.Decimal("1.10"), "u": uuid.UUID(int=5), "s": {1, 2}, "f": frozenset({"x"}),
            "c": 1 + 2j, "p": Path("runs/x"), "mode": _Mode.TRAIN, "cfg": Cfg(0.5, torch.ones(2)),
        }  # fmt: skip
        want = {**obj, "args": argparse.Namespace(lr=0.1, tags={"a"}), "ns": types.SimpleNamespace(x=[1, 2]),
                "s": {1, 2}, "cfg": Cfg(0.5, torch.ones(2))}  # fmt: skip
        with sealedckpt.CheckpointManager(tmp_path, key=key, async_save=True) as m:
            m.save(1, obj)
            obj["args"].tags.add("late")  # mutations after save() must not reach step 1
            obj["ns"].x.append(3)
            obj["s"].add(3)
            obj["cfg"].w.add_(1)
            m.wait()
            assert_same(m.load(1), want)
        with sealedckpt.CheckpointManager(tmp_path, key=key, async_save=True) as m:

            @dataclasses.dataclass
            class Unregistered:
                a: int

            with pytest.raises(sealedckpt.UnsupportedTypeError, match="register"):
                m.save(2, {"u": Unregistered(1)})  # refused by save() itself, not later
    finally:
        sealedckpt.unregister_dataclass(Cfg)

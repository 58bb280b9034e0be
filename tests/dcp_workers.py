"""Process-group workers for tests/test_dcp_ranks.py (run under torch.multiprocessing spawn)."""

from __future__ import annotations

import contextlib
import datetime
import json
import os
import pickle
import shutil
import traceback
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from torch import nn
from torch.distributed.checkpoint.api import CheckpointException
from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict

import sealedckpt
from sealedckpt.dcp import SealedStorageReader, SealedStorageWriter

KEY = sealedckpt.SymmetricKey(b"\x11" * 32)
OTHER_KEY = sealedckpt.SymmetricKey(b"\x22" * 32)
SIGNER = sealedckpt.SigningKey(b"\x33" * 32)


class NoPickleReader(SealedStorageReader):
    """The sealed reader with pickle and torch.load raising while it reads storage (DCP's own
    in-memory plan exchange between ranks, which pickles, runs outside these calls)."""

    def read_metadata(self, *args: Any, **kwargs: Any) -> Any:
        with _no_unpickling():
            return super().read_metadata(*args, **kwargs)

    def read_data(self, plan: Any, planner: Any) -> Any:
        with _no_unpickling():
            return super().read_data(plan, planner)


@contextlib.contextmanager
def _no_unpickling() -> Iterator[None]:
    def refuse(*a: object, **k: object) -> Any:
        raise AssertionError("unpickling while reading storage")

    saved = [(m, n, getattr(m, n)) for m in (pickle, torch, torch.serialization) for n in ("load", "loads")
             if hasattr(m, n)]  # fmt: skip
    saved.append((pickle, "Unpickler", pickle.Unpickler))
    try:
        for m, n, _ in saved:
            setattr(m, n, refuse)
        yield
    finally:
        for m, n, f in saved:
            setattr(m, n, f)


def make_model(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 4))


def batch(step: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(100 + step)
    return torch.randn(6, 8, generator=g)


def train_step(model: nn.Module, opt: torch.optim.Optimizer, step: int) -> None:
    from torch.distributed.tensor import DTensor, Replicate

    opt.zero_grad()
    x = batch(step)
    first = next(model.parameters())
    if isinstance(first, DTensor):
        x = DTensor.from_local(x, first.device_mesh, [Replicate()])
    out = model(x)
    loss = out.float().pow(2).mean()
    if isinstance(loss, DTensor):
        loss = loss.full_tensor()
    loss.backward()
    opt.step()


def shard(model: nn.Module) -> nn.Module:
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.tensor import Shard, distribute_tensor

    mesh = init_device_mesh("cpu", (dist.get_world_size(),))
    for mod in model.modules():
        for name, p in list(mod.named_parameters(recurse=False)):
            mod.register_parameter(name, nn.Parameter(distribute_tensor(p.detach(), mesh, [Shard(0)])))
    return model


def full(sd: dict[str, Any]) -> dict[str, torch.Tensor]:
    from torch.distributed.tensor import DTensor

    out = {}
    for k, v in sd.items():
        if isinstance(v, DTensor):
            v = v.full_tensor()
        out[k] = v.detach().clone()
    return out


def sharded_model_and_opt(seed: int) -> tuple[nn.Module, torch.optim.Optimizer]:
    model = shard(make_model(seed))
    return model, torch.optim.Adam(model.parameters(), lr=0.01, foreach=False)


def _expect_sealed_failure(fn: Any) -> str:
    """Run ``fn``; it must fail with a SealedCkptError on this rank (no hang); return its class name."""
    try:
        fn()
    except sealedckpt.SealedCkptError as exc:
        return type(exc).__name__
    except CheckpointException as exc:
        errs = [e for e, _ in exc.failures.values()]
        assert errs and all(isinstance(e, sealedckpt.SealedCkptError) for e in errs), exc
        return "CheckpointException:" + type(errs[0]).__name__
    raise AssertionError("no error")


def _scenarios(rank: int, root: Path) -> dict[str, Any]:  # long: one spawn runs every multi-rank check
    res: dict[str, Any] = {}
    # the uninterrupted run: two steps
    ref, ref_opt = sharded_model_and_opt(0)
    train_step(ref, ref_opt, 0)
    train_step(ref, ref_opt, 1)
    # the interrupted run: one step, sealed save (2 ranks), a fresh job loads (2 ranks), one more step
    model, opt = sharded_model_and_opt(0)
    train_step(model, opt, 0)
    msd, osd = get_state_dict(model, opt)
    state = {"model": msd, "optim": osd, "extra": {"epoch": 7, "tag": "run-1", "sizes": (1, 2)}}
    sealedckpt.dcp.save(state, root / "sharded", key=KEY, sign_with=SIGNER)
    saved = full(msd)  # collective: every rank gathers
    if rank == 0:
        sealedckpt.save({"model": saved}, root / "reference.sealed", key=KEY)
    model2, opt2 = sharded_model_and_opt(1)
    train_step(model2, opt2, 5)  # different state, fully overwritten by the load
    msd2, osd2 = get_state_dict(model2, opt2)
    state2 = {"model": msd2, "optim": osd2, "extra": {"epoch": 0, "tag": "", "sizes": ()}}
    dcp.load(state2, storage_reader=NoPickleReader(root / "sharded", key=KEY, trusted_signers=[SIGNER.public]))
    set_state_dict(model2, opt2, model_state_dict=state2["model"], optim_state_dict=state2["optim"])
    res["extra"] = [state2["extra"]["epoch"], state2["extra"]["tag"], list(state2["extra"]["sizes"])]
    train_step(model2, opt2, 1)
    a, b = full(ref.state_dict()), full(model2.state_dict())
    res["resumed_equal"] = all(torch.equal(a[k], b[k]) for k in a)
    # an unsharded model saved by both ranks (DCP writes each replicated tensor once)
    plain = make_model(3)
    dcp.save(
        {"model": plain.state_dict()}, storage_writer=SealedStorageWriter(root / "plain", key=KEY, sign_with=SIGNER)
    )
    # async save with the sealed writer
    fut = dcp.async_save({"model": msd}, storage_writer=SealedStorageWriter(root / "async", key=KEY, sign_with=SIGNER))
    fut.result()
    msd3, _ = get_state_dict(*sharded_model_and_opt(2))
    dcp.load({"model": msd3}, storage_reader=SealedStorageReader(root / "async", key=KEY))
    got = full(msd3)
    res["async_equal"] = all(torch.equal(saved[k], got[k]) for k in msd)
    # failures: every rank must fail with a SealedCkptError, none may hang
    dist.barrier()
    if rank == 0:
        for name in ("bad_data", "bad_meta"):
            shutil.copytree(root / "sharded", root / name)
        _flip(root / "bad_data" / "__1_0.sealed")
        _flip(root / "bad_meta" / ".metadata")
    dist.barrier()
    fresh = {"model": get_state_dict(*sharded_model_and_opt(4))[0]}
    res["wrong_key"] = _expect_sealed_failure(lambda: sealedckpt.dcp.load(fresh, root / "sharded", key=OTHER_KEY))
    res["bad_data"] = _expect_sealed_failure(lambda: sealedckpt.dcp.load(fresh, root / "bad_data", key=KEY))
    res["bad_meta"] = _expect_sealed_failure(lambda: sealedckpt.dcp.load(fresh, root / "bad_meta", key=KEY))
    res["plain_dcp_bad_data"] = _expect_sealed_failure(
        lambda: dcp.load(fresh, storage_reader=SealedStorageReader(root / "bad_data", key=KEY))
    )
    return res


def _flip(path: Path) -> None:
    """Flip one byte in the middle of the file's chunk area."""
    raw = bytearray(path.read_bytes())
    raw[len(raw) // 2] ^= 0x01
    path.write_bytes(bytes(raw))


def run(rank: int, world: int, root: str, port: int) -> None:
    os.environ["MASTER_ADDR"] = "127.0.0.1"
    os.environ["MASTER_PORT"] = str(port)
    dist.init_process_group("gloo", rank=rank, world_size=world, timeout=datetime.timedelta(seconds=60))
    out = Path(root) / f"result.{rank}.json"
    try:
        res = _scenarios(rank, Path(root))
    except BaseException:
        res = {"error": traceback.format_exc()}
    finally:
        dist.destroy_process_group()
    out.write_text(json.dumps(res))

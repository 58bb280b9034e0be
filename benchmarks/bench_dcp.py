"""Sealed DCP vs DCP's own FileSystemWriter/FileSystemReader: 2 gloo ranks, ~1 GB model.

Each round saves and loads the same state with both storages, alternating which goes first;
medians and sealed/plain throughput ratios (plain time / sealed time: >= 0.8 is the target).
Run: PYTHONPATH=src python benchmarks/bench_dcp.py [--mb 1024] [--rounds 5] [--out DIR]
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import shutil
import socket
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
import torch.multiprocessing as mp

import sealedckpt
from sealedckpt.dcp import SealedStorageReader, SealedStorageWriter

KEY = sealedckpt.SymmetricKey(b"\x42" * 32)  # benchmark key, not a secret
SIGNER = sealedckpt.SigningKey(b"\x43" * 32)


def _state(mb: int, rank: int) -> dict[str, torch.Tensor]:
    """This rank's half of a ~``mb`` MB model: 64 float32 tensors (each rank owns half)."""
    n_tensors = 64
    per = mb * (1 << 20) // 4 // n_tensors // 2
    g = torch.Generator().manual_seed(rank)
    return {f"rank{rank}.layer{i}.weight": torch.randn(per, generator=g) for i in range(n_tensors)}


def _timed(fn: Any) -> float:
    dist.barrier()
    t = time.perf_counter()
    fn()
    dist.barrier()
    return time.perf_counter() - t


def _worker(rank: int, world: int, port: int, mb: int, rounds: int, tmp: str, out: str) -> None:
    os.environ["MASTER_ADDR"], os.environ["MASTER_PORT"] = "127.0.0.1", str(port)
    dist.init_process_group("gloo", rank=rank, world_size=world, timeout=datetime.timedelta(seconds=600))
    state = _state(mb, rank)
    target = {k: torch.empty_like(v) for k, v in state.items()}
    times: dict[str, list[float]] = {"plain_save": [], "sealed_save": [], "plain_load": [], "sealed_load": []}
    base = Path(tmp)
    for r in range(rounds):
        order = ["plain", "sealed"] if r % 2 == 0 else ["sealed", "plain"]
        for kind in order:
            d = base / kind
            if rank == 0 and d.exists():
                shutil.rmtree(d)
            dist.barrier()
            if kind == "plain":
                w: Any = dcp.FileSystemWriter(d)
                rd: Any = dcp.FileSystemReader(d)
            else:
                w = SealedStorageWriter(d, key=KEY, sign_with=SIGNER)
                rd = SealedStorageReader(d, key=KEY, trusted_signers=[SIGNER.public])
            times[f"{kind}_save"].append(_timed(lambda w=w: dcp.save(state, storage_writer=w)))
            for t in target.values():
                t.zero_()  # so that the check below sees what this load wrote
            times[f"{kind}_load"].append(_timed(lambda rd=rd: dcp.load(target, storage_reader=rd)))
            assert all(torch.equal(target[k], state[k]) for k in state)
    if rank == 0:
        med = {k: statistics.median(v) for k, v in times.items()}
        res = {
            "mb_total": mb, "ranks": world, "rounds": rounds, "cpus": os.cpu_count(), "torch": torch.__version__,
            "times_s": times, "median_s": med,
            "save_ratio": med["plain_save"] / med["sealed_save"], "load_ratio": med["plain_load"] / med["sealed_load"],
            "dir_bytes": {k: sum(p.stat().st_size for p in (base / k).iterdir()) for k in ("plain", "sealed")},
        }  # fmt: skip
        Path(out).write_text(json.dumps(res, indent=2))
        print(json.dumps({k: res[k] for k in ("median_s", "save_ratio", "load_ratio", "dir_bytes")}, indent=2))
    dist.destroy_process_group()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--mb", type=int, default=1024)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "dcp" / "bench_dcp.json"))
    args = ap.parse_args()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    tmp = tempfile.mkdtemp(prefix="bench-dcp-", dir=os.environ.get("BENCH_DIR"))
    try:
        mp.start_processes(_worker, args=(2, port, args.mb, args.rounds, tmp, args.out), nprocs=2, start_method="spawn")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()

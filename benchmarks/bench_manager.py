"""CheckpointManager background saves: what the training loop pays, in one run.

    .venv/bin/python benchmarks/bench_manager.py [--size-gb 1.0] [--runs 5] [--every 100] [--dir /tmp]

Prints medians of ``--runs`` runs and three ratios, each with its target:

1. blocking: how long ``save()`` of a manager with ``async_save=True`` holds the training
   loop (the snapshot into reused host buffers), against ``[t.clone() for t in tensors]``
   of the same set (~``--size-gb`` GB of fp32 in 64 MiB tensors); target <= 1.5x.
2. completion: ``save()`` until ``wait()`` returns (the file durable on disk), against a
   synchronous ``sealedckpt.save`` of the same set to the same directory; target <= 1.2x.
3. throughput: steps/s of a small MLP training loop (Adam) checkpointing its whole state
   every ``--every`` steps with ``async_save=True`` (the last save's completion included),
   against the same loop without checkpoints, run in back-to-back pairs; the loss is
   1 - the median per-pair ratio; target <= 5%.

Each measured operation runs once untimed first (buffers allocated, page cache warm).
"""

from __future__ import annotations

import argparse
import gc
import os
import statistics
import tempfile
import time
from collections.abc import Callable

import torch

import sealedckpt

KEY = sealedckpt.SymmetricKey(bytes(range(32)))


def median_time(fn: Callable[[], object], runs: int, before: Callable[[], object] | None = None) -> float:
    fn()  # untimed
    times = []
    for _ in range(runs):
        if before is not None:
            before()
        gc.collect()
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def tensors(size_gb: float) -> dict[str, torch.Tensor]:
    per = 16 << 20  # 16 Mi fp32 = 64 MiB each
    n = max(1, round(size_gb * 1e9 / (per * 4)))
    return {f"layer{i}.weight": torch.randn(per) for i in range(n)}


def bench_blocking_and_completion(sd: dict[str, torch.Tensor], directory: str, runs: int) -> dict[str, float]:
    mgr = sealedckpt.CheckpointManager(os.path.join(directory, "bg"), key=KEY, keep_last=1, async_save=True)
    step = [0]

    def bg_save() -> None:
        step[0] += 1
        mgr.save(step[0], sd)

    def bg_complete() -> None:
        bg_save()
        mgr.wait()

    clone = median_time(lambda: [t.clone() for t in sd.values()], runs)
    blocking = median_time(bg_save, runs, before=mgr.wait)
    complete = median_time(bg_complete, runs, before=mgr.wait)
    path = os.path.join(directory, "sync.sealed")
    sync = median_time(lambda: sealedckpt.save(sd, path, key=KEY), runs)
    mgr.close()
    return {"clone": clone, "blocking": blocking, "complete": complete, "sync": sync}


def loop_rate(steps: int, every: int | None, directory: str) -> float:
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(512, 1024), torch.nn.ReLU(), torch.nn.Linear(1024, 512))
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    x = torch.randn(64, 512)
    mgr = sealedckpt.CheckpointManager(directory, key=KEY, keep_last=2, async_save=True) if every else None
    t = time.perf_counter()
    for step in range(1, steps + 1):
        loss = model(x).square().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        if mgr is not None and every and step % every == 0:
            mgr.save(step, {"model": model.state_dict(), "optimizer": opt.state_dict(), "step": step})
    if mgr is not None:
        mgr.close()  # the last save counts too
    return steps / (time.perf_counter() - t)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size-gb", type=float, default=1.0)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--every", type=int, default=100, help="checkpoint every N steps in the loop benchmark")
    ap.add_argument("--steps", type=int, default=400, help="steps per loop run")
    ap.add_argument("--loop-runs", type=int, default=9, help="pairs of loop runs (plain, checkpointing)")
    ap.add_argument("--threads", type=int, default=0, help="torch threads in the loop (0: torch's default)")
    ap.add_argument("--loop-only", action="store_true", help="only the training-loop measurement")
    ap.add_argument("--dir", default=None, help="where files go (default: a temp dir under /tmp)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(dir=args.dir) as d:
        r: dict[str, float] = {}
        if not args.loop_only:
            sd = tensors(args.size_gb)
            gb = sum(t.nbytes for t in sd.values()) / 1e9
            print(f"{len(sd)} tensors, {gb:.2f} GB fp32; {args.runs} runs; torch threads {torch.get_num_threads()}")
            r = bench_blocking_and_completion(sd, d, args.runs)
            del sd
            gc.collect()
            print(f"clone()                       {r['clone'] * 1e3:9.1f} ms")
            print(f"async save() blocks           {r['blocking'] * 1e3:9.1f} ms")
            print(f"async save() until durable    {r['complete'] * 1e3:9.1f} ms")
            print(f"sealedckpt.save (sync)        {r['sync'] * 1e3:9.1f} ms")
        if args.threads:
            torch.set_num_threads(args.threads)
        loop_rate(50, None, d)  # warm-up
        plain, ckpt, ratios = [], [], []
        for i in range(args.loop_runs):  # pairs back to back, so load from other processes hits both alike
            plain.append(loop_rate(args.steps, None, d))
            ckpt.append(loop_rate(args.steps, args.every, os.path.join(d, f"loop{i}")))
            ratios.append(ckpt[-1] / plain[-1])
        last = sealedckpt.load(os.path.join(d, "loop0", f"step-{args.steps:012d}.sealed"), key=KEY)
        state_mb = sum(t.nbytes for t in last["model"].values()) * 3 / 1e6  # model + Adam's two moments
        shown = ", ".join(f"{x:.3f}" for x in ratios)
        print(
            f"loop: median {statistics.median(plain):.1f} steps/s plain, {statistics.median(ckpt):.1f} steps/s with "
            f"a ~{state_mb:.0f} MB checkpoint every {args.every} steps ({args.steps} steps per run, "
            f"{args.loop_runs} pairs, torch threads {torch.get_num_threads()}; per-pair ratios {shown})"
        )
        loss = 1 - statistics.median(ratios)
        if r:
            blocking, complete = r["blocking"] / r["clone"], r["complete"] / r["sync"]
            print(f"ratio blocking/clone   {blocking:5.2f}x  (target <= 1.5x)  {'ok' if blocking <= 1.5 else 'MISSED'}")
            print(f"ratio complete/sync    {complete:5.2f}x  (target <= 1.2x)  {'ok' if complete <= 1.2 else 'MISSED'}")
        verdict = "ok" if loss <= 0.05 else "MISSED"
        print(f"throughput loss        {loss * 100:5.1f}%  (target <= 5%, N={args.every}; median per-pair)  {verdict}")


if __name__ == "__main__":
    main()

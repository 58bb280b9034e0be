"""GPU load check: sealedckpt.load(map_location="cuda") against safetensors and torch.load.

    .venv/bin/python benchmarks/bench_gpu.py                 # on a machine with CUDA
    .venv/bin/python benchmarks/bench_gpu.py --device cpu    # the same flow on CPU (smoke test)

One prepared script for a session that is lent an accelerator: it builds the ~1 GB fp32
LLM-like set of bench_save_load.py, writes it with safetensors, torch.save and sealedckpt (a
random symmetric key), then times, median of --runs after one untimed warm-up each:

- ``safetensors.torch.load_file(path, device=DEV)``
- ``torch.load(path, map_location=DEV, weights_only=True)``
- ``sealedckpt.load(path, key=key, map_location=DEV)`` (decrypted through two pinned staging
  windows, each window's host-to-device copy overlapping the next window's decryption)

Each time ends with ``torch.cuda.synchronize()``. Every loaded tensor is compared with the
original (bitwise, after ``.cpu()``) once, outside the clock, and peak device memory of the
sealed load is reported. It prints GB/s (logical bytes / time, GB = 1e9 B) and ratios.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from bench_save_load import build_llm

import sealedckpt


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], Any], device: torch.device, runs: int) -> tuple[float, Any]:
    out = fn()  # warm-up: CUDA context, allocator pools, page cache
    sync(device)
    times = []
    for _ in range(runs):
        del out
        sync(device)
        start = time.perf_counter()
        out = fn()
        sync(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times), out


def check_equal(name: str, got: dict[str, torch.Tensor], want: dict[str, torch.Tensor], device: torch.device) -> None:
    if set(got) != set(want):
        raise SystemExit(f"{name}: loaded names differ from the saved ones")
    for k, t in want.items():
        g = got[k]
        if g.device.type != device.type or not torch.equal(g.cpu(), t):
            raise SystemExit(f"{name}: tensor {k} differs (device {g.device})")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="cuda", help="target device (default cuda; cpu for a smoke test)")
    ap.add_argument("--size-gb", type=float, default=1.0)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--dir", default=None, help="where the temporary files go (default: the system temp dir)")
    args = ap.parse_args()
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("bench_gpu: no CUDA device here; nothing measured (use --device cpu for a smoke run)")
        return 2
    sd = build_llm(args.size_gb, torch.float32)
    nbytes = sum(t.numel() * t.element_size() for t in sd.values())
    key = sealedckpt.SymmetricKey.generate()
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    print(f"device {device} ({name}); torch {torch.__version__}; {len(sd)} tensors, {nbytes:,} B")
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        st, pt, sealed = Path(tmp, "m.safetensors"), Path(tmp, "m.pt"), Path(tmp, "m.sealed")
        save_file(sd, str(st))
        torch.save(sd, pt)
        sealedckpt.save(sd, sealed, key=key)
        methods: dict[str, Callable[[], Any]] = {
            "safetensors.load_file": lambda: load_file(str(st), device=str(device)),
            "torch.load": lambda: torch.load(pt, map_location=device, weights_only=True),
            "sealed.load": lambda: sealedckpt.load(sealed, key=key, map_location=device),
        }
        medians: dict[str, float] = {}
        for label, fn in methods.items():
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
            t, out = timed(fn, device, args.runs)
            check_equal(label, out, sd, device)
            peak = torch.cuda.max_memory_allocated(device) if device.type == "cuda" else None
            del out
            medians[label] = t
            extra = f"  peak device memory {peak / 2**20:,.0f} MiB" if peak is not None else ""
            print(f"  {label:24s} {t:8.4f} s  {nbytes / t / 1e9:6.2f} GB/s{extra}")
    for peer in ("safetensors.load_file", "torch.load"):
        print(f"  sealed.load / {peer} = {medians[peer] / medians['sealed.load']:.2f}x (above 1: sealed is faster)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

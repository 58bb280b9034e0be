"""Content-hash throughput: why the format's chunk digests are BLAKE3 and not SHA-256.

    .venv/bin/python benchmarks/bench_hash.py [--mib 1024] [--runs 5]

Hashes the same random buffer in 4 MiB chunks (the format's chunk size) with hashlib's SHA-256
(OpenSSL; SHA-NI where the CPU has it) and with the ``blake3`` package, on one thread and on two
(both release the GIL), and prints the median GB/s of each and the ratio. A trusted-signer load
hashes every ciphertext byte, in the same worker threads that decrypt.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import platform
import statistics
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import blake3

CHUNK = 4 << 20


def _sha256(b: memoryview) -> bytes:
    return hashlib.sha256(b).digest()


def _blake3(b: memoryview) -> bytes:
    return blake3.blake3(b).digest()


def timed(fn: Callable[[memoryview], bytes], data: memoryview, threads: int, runs: int) -> float:
    chunks = [data[i : i + CHUNK] for i in range(0, len(data), CHUNK)]
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        if threads == 1:
            for c in chunks:
                fn(c)
        else:
            with ThreadPoolExecutor(threads) as pool:
                list(pool.map(fn, chunks))
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--mib", type=int, default=1024, help="buffer size in MiB (default 1024)")
    ap.add_argument("--runs", type=int, default=5, help="runs per figure; the median is printed")
    args = ap.parse_args()
    data = memoryview(os.urandom(args.mib << 20))
    flags = ""
    if os.path.exists("/proc/cpuinfo"):
        with open("/proc/cpuinfo") as f:
            words = set(f.read().split())
        flags = " ".join(x for x in ("sha_ni", "avx2", "avx512f", "vaes") if x in words)
    print(f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, flags: {flags or '?'}")
    print(f"blake3 {blake3.__version__}, {hashlib.sha256().name} via OpenSSL; {args.mib} MiB in 4 MiB chunks")
    gbs: dict[tuple[str, int], float] = {}
    for name, fn in (("sha256", _sha256), ("blake3", _blake3)):
        for threads in (1, 2):
            t = timed(fn, data, threads, args.runs)
            gbs[name, threads] = len(data) / t / 1e9
            print(f"  {name:7s} {threads} thread{'s' if threads > 1 else ' '}  {gbs[name, threads]:6.2f} GB/s")
    for threads in (1, 2):
        print(f"  blake3 / sha256, {threads} thread(s): {gbs['blake3', threads] / gbs['sha256', threads]:.2f}x")


if __name__ == "__main__":
    main()

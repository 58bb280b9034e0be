"""What a verified (signed, every chunk hashed) load costs against an unverified one, and where
the time goes.

    .venv/bin/python benchmarks/bench_verified_load.py [--gb 1] [--runs 7]

Writes a random fp32 checkpoint of ``--gb`` GB twice (unsigned; signed), then prints the median
(and every run) of, alternating the two within each round:

* ``warm``: ``sealedckpt.load`` in this process, after one untimed load of each;
* ``fresh``: the same in a new child process per run (first-touch page faults included);
* ``parts``: the passes a load is made of, each on two threads over the signed file's chunks:
  read into a reused scratch buffer; read + BLAKE3; read + AES-GCM into prefaulted memory;
  read + BLAKE3 + AES-GCM into prefaulted memory; first writes to fresh pages (``torch.empty`` +
  ``fill_``).
"""

from __future__ import annotations

import argparse
import io
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

CHILD = """
import sys, time
import sealedckpt
from sealedckpt.crypto import textkeys
key = textkeys.secret_from_text(sys.argv[2])
trusted = [textkeys.verify_key_from_text(sys.argv[3])] if sys.argv[3] != "-" else None
t = time.perf_counter()
sealedckpt.load(sys.argv[1], key=key, trusted_signers=trusted)
print(time.perf_counter() - t)
"""


def _fmt(name: str, ts: list[float]) -> str:
    return f"{name:34} median {statistics.median(ts):.3f} s  runs: {' '.join(f'{t:.3f}' for t in ts)}"


def parts(path: Path, key: object, runs: int) -> dict[str, list[float]]:
    """Each pass of a load on two threads over the file's chunks (see the module docstring)."""
    import torch

    from sealedckpt import container, crypto

    with open(path, "rb") as fh:
        data = fh.read()
    reader = container.open_sealed(io.BytesIO(data), [key])  # type: ignore[list-item]
    stream, c = reader._stream, reader.content
    dest = torch.ones(c.payload_len, dtype=torch.uint8).numpy().data.cast("B")
    local = threading.local()

    def buf() -> memoryview:
        if getattr(local, "b", None) is None:
            local.b = stream.scratch()
        return local.b  # type: ignore[no-any-return]

    def job(h: bool, d: bool) -> Callable[[int], None]:
        def f(i: int) -> None:
            ct = stream.read(i, buf())
            if h:
                crypto.content_hash(ct)
            if d:
                stream.decrypt(i, ct, dest[c.chunk_start(i) :])

        return f

    passes = {
        "read": job(False, False),
        "read+hash": job(True, False),
        "read+decrypt (prefaulted)": job(False, True),
        "read+hash+decrypt (prefaulted)": job(True, True),
    }
    out: dict[str, list[float]] = {}
    for _ in range(runs):
        for name, fn in passes.items():
            t = time.perf_counter()
            with ThreadPoolExecutor(2) as pool:
                list(pool.map(fn, range(c.n_chunks)))
            out.setdefault(name, []).append(time.perf_counter() - t)
        t = time.perf_counter()
        torch.empty(c.payload_len, dtype=torch.uint8).fill_(1)  # one thread
        out.setdefault("first touch, 1 thread (fill_)", []).append(time.perf_counter() - t)
    return out


def main() -> None:
    import torch

    import sealedckpt
    from sealedckpt.crypto import textkeys

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--gb", type=float, default=1.0)
    ap.add_argument("--runs", type=int, default=7)
    ap.add_argument("--fresh-runs", type=int, default=5)
    args = ap.parse_args()
    key, signer = sealedckpt.SymmetricKey.generate(), sealedckpt.SigningKey.generate()
    pub = textkeys.verify_key_to_text(signer.public)
    sd = {f"layer.{i}.w": torch.randn(int(args.gb * 1e9) // 4 // 64) for i in range(64)}
    with tempfile.TemporaryDirectory(dir=os.environ.get("BENCH_DIR")) as tmp:
        plain, signed = Path(tmp) / "plain.sealed", Path(tmp) / "signed.sealed"
        sealedckpt.save(sd, plain, key=key)
        sealedckpt.save(sd, signed, key=key, sign_with=signer)
        del sd
        cases = {"load (unsigned)": (plain, None), "load+verify (signed, trusted)": (signed, [signer.public])}
        warm: dict[str, list[float]] = {}
        for path, trusted in cases.values():
            sealedckpt.load(path, key=key, trusted_signers=trusted)
        for _ in range(args.runs):
            for name, (path, trusted) in cases.items():
                t = time.perf_counter()
                obj = sealedckpt.load(path, key=key, trusted_signers=trusted)
                warm.setdefault(name, []).append(time.perf_counter() - t)
                del obj
        fresh: dict[str, list[float]] = {}
        for _ in range(args.fresh_runs):
            for name, (path, trusted) in cases.items():
                argv = [str(path), textkeys.secret_to_text(key), pub if trusted else "-"]
                r = subprocess.run([sys.executable, "-c", CHILD, *argv], check=True, capture_output=True)
                fresh.setdefault(name, []).append(float(r.stdout.decode().split()[-1]))
        for label, res in (("warm", warm), ("fresh", fresh)):
            print(f"-- {label}")
            for name, ts in res.items():
                print(_fmt(name, ts))
            ratio = statistics.median(res["load+verify (signed, trusted)"]) / statistics.median(res["load (unsigned)"])
            print(f"   verified / unverified = {ratio:.2f}x")
        print("-- parts (2 threads unless said)")
        for name, ts in parts(signed, key, args.runs).items():
            print(_fmt(name, ts))


if __name__ == "__main__":
    main()

"""Keyless verification throughput, two source trees interleaved in the same run.

    .venv/bin/python benchmarks/bench_verify.py --old /tmp/old/src --new src [--gb 1] [--runs 5]

Writes one signed ~1 GB sealed file and a sealed directory of four ~256 MB shards (signed
manifest), then times, in a fresh child process per figure (page cache warm after the first),
``sealedckpt.verify(path, trusted_signers=...)`` and ``verify_dir(d, trusted_signers=...)`` with
each tree's ``src`` on ``PYTHONPATH``, alternating old and new. Prints every run and the medians.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CHILD = """
import sys, time
import sealedckpt
from sealedckpt.crypto import textkeys
from sealedckpt.release import directory
what, path, pub = sys.argv[1], sys.argv[2], sys.argv[3]
vk = textkeys.verify_key_from_text(pub)
t = time.perf_counter()
if what == "verify":
    sealedckpt.verify(path, trusted_signers=[vk])
else:
    directory.verify_dir(path, trusted_signers=[vk])
print(time.perf_counter() - t)
"""


def prepare(work: Path, gb: float) -> str:
    import safetensors.torch as st
    import torch

    import sealedckpt
    from sealedckpt.crypto import textkeys
    from sealedckpt.release import directory

    key, signer = sealedckpt.SymmetricKey.generate(), sealedckpt.SigningKey.generate()
    n = int(gb * 1e9) // 4
    sealedckpt.save({"w": torch.randn(n)}, work / "one.sealed", key=key, sign_with=signer)
    src = work / "shards"
    src.mkdir()
    for s in range(4):
        st.save_file({f"w{s}": torch.randn(n // 4)}, str(src / f"model-{s:05d}-of-00004.safetensors"))
    directory.seal_dir(src, work / "dir", keys=[key], signers=[signer])
    return textkeys.verify_key_to_text(signer.public)


def child(tree: str, what: str, path: Path, pub: str) -> float:
    env = dict(os.environ, PYTHONPATH=str(Path(tree).resolve()))
    out = subprocess.run([sys.executable, "-c", CHILD, what, str(path), pub], env=env, check=True, capture_output=True)
    return float(out.stdout.decode().split()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--old", required=True, help="the old tree's src directory")
    ap.add_argument("--new", required=True, help="the new tree's src directory")
    ap.add_argument("--gb", type=float, default=1.0)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--json", help="write the raw times here")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(dir=os.environ.get("BENCH_DIR")) as tmp:
        work = Path(tmp)
        pub = prepare(work, args.gb)
        size = (work / "one.sealed").stat().st_size
        dsize = sum(p.stat().st_size for p in (work / "dir").iterdir())
        times: dict[str, list[float]] = {}
        for what, path in (("verify", work / "one.sealed"), ("verify_dir", work / "dir")):
            child(args.new, what, path, pub)  # untimed: page cache warm
            for _ in range(args.runs):
                for label, tree in (("old", args.old), ("new", args.new)):
                    times.setdefault(f"{what} {label}", []).append(child(tree, what, path, pub))
                    time.sleep(0.2)
        for name, ts in times.items():
            nbytes = size if name.startswith("verify ") else dsize
            med = statistics.median(ts)
            runs = " ".join(f"{t:.3f}" for t in ts)
            print(f"{name:16} median {med:.3f} s  {nbytes / med / 1e9:5.2f} GB/s  runs: {runs}")
        for what in ("verify", "verify_dir"):
            old, new = statistics.median(times[f"{what} old"]), statistics.median(times[f"{what} new"])
            print(f"{what}: old/new = {old / new:.2f}x")
        if args.json:
            Path(args.json).write_text(json.dumps({"file_bytes": size, "dir_bytes": dsize, "times": times}, indent=1))


if __name__ == "__main__":
    main()

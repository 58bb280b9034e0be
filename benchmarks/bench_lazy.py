"""Lazy reads of one tensor: sealedckpt.open(...)[name] against safetensors, across source trees.

    .venv/bin/python benchmarks/bench_lazy.py [--size-gb 0.52] [--rounds 5] [--warm-reads 15]
    .venv/bin/python benchmarks/bench_lazy.py --trees old=/tmp/old/src,new=src

Builds the fp32 LLM-like state dict of ``bench_save_load.py`` (``--size-gb``), writes it as a
safetensors file, then seals it once per tree (``label=SRC_DIR``, optionally ``:CHUNK_LOG2`` to
seal with another chunk size), each tree in its own interpreter with ``PYTHONPATH=SRC_DIR``. The
tensor read is the one ``bench_save_load.pick_lazy_tensor`` picks (closest to 4 MiB, middle one).
Each round runs, for every tree and for safetensors, interleaved:

* ``warm``: one interpreter opens the file and reads the tensor ``--warm-reads`` times after one
  untimed read (page cache and allocator warm); the round's figure is the median read;
* ``fresh``: one new interpreter per read, imports done before the clock starts (including the
  modules ``sealedckpt.open`` imports on first use, as ``bench_save_load.py`` does).

A read is ``open(path, key=...)`` + ``[name]`` + close (safetensors: ``safe_open`` +
``get_tensor`` + ``clone``, as its result would otherwise be a view of a mapping). It also counts,
once per tree, the bytes passed to AES-GCM ``decrypt_into`` and the bytes read from the file.
Prints medians over rounds, each round, and each tree's ratio to safetensors (its time /
sealed time: above 1 means sealedckpt is faster).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

CHILD = r"""
import json, sys, time, io
mode, path, name, arg = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4]
import torch
if mode.startswith("st"):
    from safetensors import safe_open
    def read():
        with safe_open(path, "pt") as f:
            return f.get_tensor(name).clone()
else:
    import sealedckpt
    import sealedckpt.payload.codec, sealedckpt.payload.lazy  # imported on first use; not timed
    from sealedckpt.crypto import textkeys
    key = textkeys.secret_from_text(arg)
    def read():
        with sealedckpt.open(path, key=key) as f:
            return f[name]
if mode.endswith("warm"):
    n = int(sys.argv[5])
    read()
    ts = []
    for _ in range(n):
        t = time.perf_counter(); x = read(); ts.append(time.perf_counter() - t); del x
    print(json.dumps(ts))
elif mode.endswith("fresh"):
    t = time.perf_counter(); x = read(); print(json.dumps([time.perf_counter() - t]))
elif mode == "save":
    from safetensors.torch import load_file
    sd = load_file(sys.argv[5])
    if len(sys.argv) > 6:  # seal with another chunk size (the default, whichever way the tree sets it)
        from sealedckpt.container import format as fmt, writer
        if hasattr(fmt, "default_chunk_log2"):
            fmt.DEFAULT_CHUNK_LOG2 = int(sys.argv[6])
        else:
            writer.seal.__kwdefaults__["chunk_log2"] = int(sys.argv[6])
    sealedckpt.save(sd, path, key=key)
    print(json.dumps([]))
elif mode == "count":
    from sealedckpt.crypto import ChunkCipher
    seen = {"decrypted": 0, "decrypt_calls": 0, "file_read": 0}
    orig = ChunkCipher.decrypt_into
    def counting(self, index, final, ct, out):
        seen["decrypted"] += len(out); seen["decrypt_calls"] += 1
        return orig(self, index, final, ct, out)
    ChunkCipher.decrypt_into = counting
    class Counting(io.RawIOBase):
        def __init__(self, p): super().__init__(); self._f = open(p, "rb", buffering=0)
        def readable(self): return True
        def seekable(self): return True
        def seek(self, o, w=0): return self._f.seek(o, w)
        def tell(self): return self._f.tell()
        def readinto(self, b):
            k = self._f.readinto(b) or 0; seen["file_read"] += k; return k
        def close(self): self._f.close(); super().close()
    with Counting(path) as raw, sealedckpt.open(raw, key=key) as f:
        t = f[name]
    info = sealedckpt.inspect(path)
    seen.update(tensor=t.numel() * t.element_size(), chunk_size=info.chunk_size, file_size=info.file_size)
    print(json.dumps(seen))
"""


def child(tree: str | None, *argv: str) -> object:
    env = dict(os.environ)
    if tree is not None:
        env["PYTHONPATH"] = tree
    r = subprocess.run([sys.executable, "-c", CHILD, *argv], env=env, capture_output=True, text=True, check=False)
    if r.returncode != 0:
        raise SystemExit(f"child {argv[0]} ({tree}) failed:\n{r.stderr}")
    return json.loads(r.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size-gb", type=float, default=0.52)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--warm-reads", type=int, default=15)
    ap.add_argument("--trees", default=f"this={REPO / 'src'}", help="label=SRC_DIR[:CHUNK_LOG2],...")
    ap.add_argument("--dir", default=None)
    args = ap.parse_args()
    sys.path.insert(0, str(REPO / "benchmarks"))
    import bench_save_load as bsl
    import safetensors.torch
    import torch

    trees: dict[str, tuple[str, str | None]] = {}
    for item in args.trees.split(","):
        label, _, rest = item.partition("=")
        src, _, log2 = rest.partition(":")
        trees[label] = (str(Path(src).resolve()), log2 or None)
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        sd = bsl.build_llm(args.size_gb, torch.float32)
        name = bsl.pick_lazy_tensor(sd)
        total = sum(t.numel() * t.element_size() for t in sd.values())
        st_path = str(Path(tmp) / "plain.safetensors")
        safetensors.torch.save_file(sd, st_path)
        del sd
        sys.path.insert(0, str(REPO / "src"))
        import sealedckpt
        from sealedckpt.crypto import textkeys

        key_text = textkeys.secret_to_text(sealedckpt.SymmetricKey.generate())
        paths = {}
        for label, (src, log2) in trees.items():
            paths[label] = str(Path(tmp) / f"{label}.sealed")
            child(src, "save", paths[label], name, key_text, st_path, *([log2] if log2 else []))
        print(f"{len(paths)} sealed files of {total:,} tensor bytes; lazy read of {name!r}")
        for label, (src, _) in trees.items():
            print(f"  {label:10} bytes: {child(src, 'count', paths[label], name, key_text)}")
        res: dict[tuple[str, str], list[float]] = {}
        for _ in range(args.rounds):
            for label in [*trees, "safetensors"]:
                src = trees[label][0] if label in trees else None
                path = paths.get(label, st_path)
                mode = "" if label in trees else "st"
                warm = child(src, mode + "warm", path, name, key_text, str(args.warm_reads))
                res.setdefault((label, "warm"), []).append(statistics.median(warm))  # type: ignore[arg-type]
                fresh = child(src, mode + "fresh", path, name, key_text)
                res.setdefault((label, "fresh"), []).append(fresh[0])  # type: ignore[index]
        for mode in ("warm", "fresh"):
            print(f"-- {mode} (ms; median over rounds, then each round)")
            st = statistics.median(res[("safetensors", mode)])
            for label in [*trees, "safetensors"]:
                ts = res[(label, mode)]
                med = statistics.median(ts)
                rounds = " ".join(f"{t * 1e3:.2f}" for t in ts)
                print(f"  {label:12} {med * 1e3:7.2f}   safetensors/this {st / med:5.2f}x   rounds: {rounds}")


if __name__ == "__main__":
    main()

"""sealedckpt against its closest peers, CryptoTensors and OpenSSF model signing, in one run.

    .venv/bin/python benchmarks/bench_peers.py                      # ~0.53 GB fp32, warm+fresh+cold
    .venv/bin/python benchmarks/bench_peers.py --size-gb 0.05 --runs 2 --fresh-runs 1   # smoke
    .venv/bin/python benchmarks/bench_peers.py --modes warm --lazy-bytes --json out.json

Operations (bench_save_load.py's LLM-like fp32 set; every tool reads and writes the same tensors):

* save: ``sealedckpt.save(key=, sign_with=)`` (atomic, fsync) vs CryptoTensors ``save_file``
  with an AES-256-GCM key and an Ed25519 signing key, then fsync;
* load by a key holder: ``sealedckpt.load`` of an unsigned file (no signer policy), and of a signed
  file with ``trusted_signers`` (every chunk hashed), vs CryptoTensors ``safe_open`` with the
  decryption key and the signer's public key, every tensor read (decrypt + header signature);
* lazy read of the tensor closest to 4 MiB: ``sealedckpt.open(...)[name]`` (unsigned file; and
  signed file with ``trusted_signers``) vs CryptoTensors ``safe_open(...).get_tensor(name)`` and
  ``safetensors.safe_open(...).get_tensor(name).clone()`` on the plain file;
* keyless verify, with a trusted key: ``sealedckpt.verify`` of the signed file and
  ``sealedckpt.verify_dir`` of the sealed HF-style directory (4 shards, index, config) vs
  model-signing ``verify`` (P-256 key, file serialization, BLAKE3 or SHA-256) of a directory
  holding the plain file, and of the plain HF-style directory.

Modes: ``warm`` (this process, page cache warm; each timed run follows one untimed run of the same
method), ``fresh`` (a new interpreter per run, modules imported before the clock, page cache warm:
the definition docs/PERFORMANCE.md uses) and ``cold`` (as fresh, and the child first evicts the
files it reads from the page cache with posix_fadvise(DONTNEED) and checks with mincore how much
stayed resident; saves are not run cold). Rounds are interleaved: round r runs every method once.
Ratios are ``peer time / sealedckpt time`` (above 1: sealedckpt is faster), medians, same run.

``--lazy-bytes`` counts, in this process (untimed), the bytes sealedckpt decrypts and hashes for
the lazy read, by wrapping ``ChunkCipher.decrypt_into`` and ``crypto.content_hash`` here (not in
src): target "tensor + one chunk + payload header".
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import peers_lib as pl

MARK = "PEERS_CHILD "


@dataclass
class Ctx:
    keys: pl.Keys
    ws: pl.Workspace
    name: str  # the lazy read's tensor
    sd: pl.StateDict | None = None


@dataclass
class Method:
    name: str
    op: str  # save | load | lazy | verify
    reads: Callable[[pl.Workspace], Path]  # what it reads (for cold runs and GB/s)
    run: Callable[[Ctx], object]


def _out(ws: pl.Workspace, name: str) -> Path:
    return ws.out / name


METHODS = [
    Method("sealed.save+sign", "save", lambda w: w.signed,
           lambda c: pl.sealed_save(c.keys, c.sd or {}, _out(c.ws, "s.sealed"))),
    Method("ct.save(enc+sign)", "save", lambda w: w.ct, lambda c: pl.ct_save(c.keys, c.sd or {}, _out(c.ws, "c.ct"))),
    Method("sealed.load", "load", lambda w: w.unsigned, lambda c: pl.sealed_load(c.keys, c.ws.unsigned)),
    Method("sealed.load+trusted", "load", lambda w: w.signed,
           lambda c: pl.sealed_load(c.keys, c.ws.signed, trusted=True)),
    Method("ct.load(dec+verify)", "load", lambda w: w.ct, lambda c: pl.ct_load(c.keys, c.ws.ct)),
    Method("sealed.open[t]", "lazy", lambda w: w.unsigned, lambda c: pl.sealed_lazy(c.keys, c.ws.unsigned, c.name)),
    Method("sealed.open[t]+trusted", "lazy", lambda w: w.signed,
           lambda c: pl.sealed_lazy(c.keys, c.ws.signed, c.name, trusted=True)),
    Method("ct.safe_open[t]", "lazy", lambda w: w.ct, lambda c: pl.ct_lazy(c.keys, c.ws.ct, c.name)),
    Method("st.safe_open[t]+clone", "lazy", lambda w: w.plain, lambda c: pl.st_lazy(c.ws.plain, c.name)),
    Method("sealed.verify(file)", "verify", lambda w: w.signed, lambda c: pl.sealed_verify(c.keys, c.ws.signed)),
    Method("ms.verify(file,blake3)", "verify", lambda w: w.one,
           lambda c: pl.ms_verify(c.keys, c.ws.one, c.ws.ms_sig("one", "blake3"), "blake3")),
    Method("ms.verify(file,sha256)", "verify", lambda w: w.one,
           lambda c: pl.ms_verify(c.keys, c.ws.one, c.ws.ms_sig("one", "sha256"), "sha256")),
    Method("sealed.verify_dir", "verify", lambda w: w.hf_sealed,
           lambda c: pl.sealed_verify_dir(c.keys, c.ws.hf_sealed)),
    Method("ms.verify(dir,blake3)", "verify", lambda w: w.hf,
           lambda c: pl.ms_verify(c.keys, c.ws.hf, c.ws.ms_sig("hf", "blake3"), "blake3")),
    Method("ms.verify(dir,sha256)", "verify", lambda w: w.hf,
           lambda c: pl.ms_verify(c.keys, c.ws.hf, c.ws.ms_sig("hf", "sha256"), "sha256")),
]  # fmt: skip
BY_NAME = {m.name: m for m in METHODS}

# (row, peer method, sealed method, target ratio or None)
RATIOS = [
    ("save (key + sign, fsync) vs CryptoTensors enc+sign", "ct.save(enc+sign)", "sealed.save+sign", None),
    ("load, key holder, no signer policy vs CryptoTensors decrypt+verify", "ct.load(dec+verify)", "sealed.load", None),
    ("load with trusted_signers vs CryptoTensors decrypt+verify", "ct.load(dec+verify)", "sealed.load+trusted", 1.0),
    ("lazy read 4 MiB vs CryptoTensors safe_open", "ct.safe_open[t]", "sealed.open[t]", 1.0),
    ("lazy read 4 MiB vs safetensors safe_open + clone", "st.safe_open[t]+clone", "sealed.open[t]", 0.5),
    ("lazy read 4 MiB, signed + trusted_signers, vs CryptoTensors safe_open", "ct.safe_open[t]",
     "sealed.open[t]+trusted", None),
    ("keyless verify of a file vs model-signing BLAKE3", "ms.verify(file,blake3)", "sealed.verify(file)", 1.0),
    ("keyless verify of a file vs model-signing SHA-256", "ms.verify(file,sha256)", "sealed.verify(file)", None),
    ("keyless verify of an HF-style dir vs model-signing BLAKE3", "ms.verify(dir,blake3)", "sealed.verify_dir", 1.0),
    ("keyless verify of an HF-style dir vs model-signing SHA-256", "ms.verify(dir,sha256)", "sealed.verify_dir", None),
]  # fmt: skip


# --------------------------------------------------------------------------- page cache


def evict(paths: list[Path]) -> float:
    """Drop the files' clean pages from the page cache; return the fraction still resident."""
    for p in paths:
        fd = os.open(p, os.O_RDONLY)
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)
    total = sum(p.stat().st_size for p in paths)
    return sum(resident_bytes(p) for p in paths) / max(total, 1)


def resident_bytes(path: Path) -> int:
    """Bytes of ``path`` in the page cache (mincore over a read-only mapping)."""
    import ctypes
    import mmap

    import numpy as np

    size = path.stat().st_size
    if size == 0:
        return 0
    libc = ctypes.CDLL(None, use_errno=True)
    pages = (size + mmap.PAGESIZE - 1) // mmap.PAGESIZE
    vec = (ctypes.c_ubyte * pages)()
    with open(path, "rb") as f, mmap.mmap(f.fileno(), size, prot=mmap.PROT_READ) as m:
        arr = np.frombuffer(m, dtype=np.uint8)
        rc = libc.mincore(ctypes.c_void_p(arr.ctypes.data), ctypes.c_size_t(size), vec)
        del arr
    if rc != 0:
        return -1
    return min(size, sum(v & 1 for v in vec) * mmap.PAGESIZE)


def warm_read(paths: list[Path]) -> None:
    buf = bytearray(8 << 20)
    for p in paths:
        with open(p, "rb", buffering=0) as f:
            while f.readinto(buf):
                pass


# --------------------------------------------------------------------------- running


def timed(m: Method, ctx: Ctx) -> float:
    if m.op == "save":
        for p in ctx.ws.out.iterdir():
            p.unlink()
    gc.collect()
    t = time.perf_counter()
    out = m.run(ctx)
    dt = time.perf_counter() - t
    del out
    gc.collect()
    return dt


def run_warm(methods: list[Method], ctx: Ctx, runs: int, say: Callable[[str], None]) -> dict[str, list[float]]:
    times: dict[str, list[float]] = {m.name: [] for m in methods}
    warm_read([f for m in methods if m.op != "save" for f in pl.files_read(ctx.ws, m.reads(ctx.ws))])
    for r in range(runs):
        for m in methods:
            timed(m, ctx)  # untimed: the method starts from its own freed memory
            times[m.name].append(timed(m, ctx))
        say(f"   warm round {r + 1}/{runs} done")
    return times


def run_child(m: Method, ws: pl.Workspace, name: str, cold: bool) -> dict[str, Any]:
    spec = json.dumps({"method": m.name, "root": str(ws.root), "name": name, "cold": cold})
    proc = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--child", spec],
                          capture_output=True, text=True, timeout=600, check=False)  # fmt: skip
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith(MARK)]
    if proc.returncode or not lines:
        raise RuntimeError(f"{m.name} child exit {proc.returncode}: {proc.stderr.strip()[-800:]}")
    return json.loads(lines[-1][len(MARK) :])  # type: ignore[no-any-return]


def run_fresh(
    methods: list[Method], ws: pl.Workspace, name: str, runs: int, cold: bool, say: Callable[[str], None]
) -> tuple[dict[str, list[float]], dict[str, list[float]]]:
    """Returns (times, resident fraction at the clock's start, cold runs only)."""
    todo = [m for m in methods if not (cold and m.op == "save")]
    times: dict[str, list[float]] = {m.name: [] for m in todo}
    resident: dict[str, list[float]] = {m.name: [] for m in todo}
    if not cold:
        warm_read([f for m in todo if m.op != "save" for f in pl.files_read(ws, m.reads(ws))])
    for r in range(runs):
        for m in todo:
            rep = run_child(m, ws, name, cold)
            times[m.name].append(rep["time_s"])
            if rep.get("resident") is not None:
                resident[m.name].append(rep["resident"])
        say(f"   {'cold' if cold else 'fresh'} round {r + 1}/{runs} done")
    return times, resident


def child_main(spec_json: str) -> int:
    from bench_save_load import read_raw

    spec = json.loads(spec_json)
    ws = pl.Workspace(Path(spec["root"]))
    for mod in ("cryptotensors", "cryptotensors.torch", "model_signing.verifying", "model_signing.hashing",
                "sealedckpt.payload.codec", "sealedckpt.payload.lazy", "sealedckpt.stores.trust"):  # fmt: skip
        __import__(mod)
    keys = pl.Keys.load(ws.keys)
    m = BY_NAME[spec["method"]]
    ctx = Ctx(keys, ws, spec["name"], read_raw(ws.raw) if m.op == "save" else None)
    if m.op == "save":
        for p in ws.out.iterdir():
            p.unlink()
    resident = evict(pl.files_read(ws, m.reads(ws))) if spec["cold"] else None
    gc.collect()
    t = time.perf_counter()
    out = m.run(ctx)
    dt = time.perf_counter() - t
    del out
    print(MARK + json.dumps({"time_s": dt, "resident": resident}), flush=True)
    return 0


# --------------------------------------------------------------------------- lazy bytes


def lazy_bytes(ctx: Ctx, trusted: bool) -> dict[str, Any]:
    """Untimed: bytes sealedckpt decrypts (and hashes) for one lazy read, by wrapping its primitives."""
    import torch

    from sealedckpt import crypto
    from sealedckpt.crypto.primitives import ChunkCipher

    count = {"decrypted": 0, "decrypt_calls": 0, "hashed": 0, "hash_calls": 0, "payload_header": None}
    orig_dec, orig_hash = ChunkCipher.decrypt_into, crypto.content_hash

    def dec(self: Any, index: int, final: bool, ct: Any, out: Any) -> bool:
        ok = orig_dec(self, index, final, ct, out)
        count["decrypted"] += len(out)
        count["decrypt_calls"] += 1
        if index == 0 and ok and len(out) >= 8:
            count["payload_header"] = 8 + int.from_bytes(bytes(out[:8]), "little")
        return ok

    def hsh(data: Any) -> Any:
        count["hashed"] += len(data)
        count["hash_calls"] += 1
        return orig_hash(data)

    ChunkCipher.decrypt_into = dec  # type: ignore[method-assign]
    crypto.content_hash = hsh
    try:
        t = pl.sealed_lazy(ctx.keys, ctx.ws.signed if trusted else ctx.ws.unsigned, ctx.name, trusted=trusted)
    finally:
        ChunkCipher.decrypt_into = orig_dec  # type: ignore[method-assign]
        crypto.content_hash = orig_hash
    assert ctx.sd is not None
    if not torch.equal(t, ctx.sd[ctx.name]):
        raise AssertionError("the lazy read returned other values than were saved")
    info = sealedckpt_info(ctx.ws.signed if trusted else ctx.ws.unsigned)
    tensor = t.numel() * t.element_size()
    budget = tensor + info["chunk_size"] + (count["payload_header"] or 0)
    return {**count, "tensor": tensor, **info, "target": budget, "met": bool(count["decrypt_calls"])
            and count["decrypted"] <= budget}  # fmt: skip


def sealedckpt_info(path: Path) -> dict[str, int]:
    import sealedckpt

    pub = sealedckpt.inspect(path)
    return {"chunk_size": pub.chunk_size, "payload_len": pub.payload_len, "file_size": pub.file_size}


def print_lazy_bytes(label: str, b: dict[str, Any]) -> None:
    if not b["decrypt_calls"]:
        print(f"   {label}: could not count (ChunkCipher.decrypt_into was never called: the primitive changed)")
        return
    ph = b["payload_header"]
    print(f"   {label}: decrypted {b['decrypted']:,} B in {b['decrypt_calls']} calls, hashed {b['hashed']:,} B "
          f"in {b['hash_calls']}; tensor {b['tensor']:,} B, chunk {b['chunk_size']:,} B, payload header "
          f"{ph if ph is None else f'{ph:,}'} B -> target <= {b['target']:,} B: {'met' if b['met'] else 'MISSED'} "
          f"({b['decrypted'] / b['tensor']:.2f}x the tensor)")  # fmt: skip


# --------------------------------------------------------------------------- report


def report(results: dict[str, dict[str, list[float]]], sizes: dict[str, int]) -> list[str]:
    out = []
    for mode, times in results.items():
        out.append(f"-- {mode}: medians (s), GB/s of the bytes read or written, every run")
        for name, ts in times.items():
            if not ts:
                continue
            med = statistics.median(ts)
            out.append(f"   {name:26} {med:8.4f} s {sizes[name] / med / 1e9:7.2f} GB/s  runs: "
                       + " ".join(f"{t:.4f}" for t in ts))  # fmt: skip
    out.append("-- ratios: peer time / sealedckpt time (above 1: sealedckpt is faster)")
    modes = list(results)
    out.append(f"   {'operation':72} " + " ".join(f"{m:>7}" for m in modes) + "  target")
    for row, peer, sealed, target in RATIOS:
        cells = []
        for mode in modes:
            p, s = results[mode].get(peer), results[mode].get(sealed)
            cells.append(f"{statistics.median(p) / statistics.median(s):6.2f}x" if p and s else "      -")
        tgt = f">= {target:.2f}x" if target else ""
        out.append(f"   {row:72} " + " ".join(cells) + f"  {tgt}")
    cells = []
    for mode in modes:
        v, u = results[mode].get("sealed.load+trusted"), results[mode].get("sealed.load")
        cells.append(f"{statistics.median(v) / statistics.median(u):6.2f}x" if v and u else "      -")
    out.append(f"   {'sealed verified load / unverified load (not a peer ratio)':72} " + " ".join(cells) + "  <= 1.25x")
    return out


def parse_args(argv: list[str]) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size-gb", "--scale", dest="size_gb", type=float, default=0.52,
                    help="fp32 LLM-like set size (default 0.52: 83 tensors, 530,657,280 B)")  # fmt: skip
    ap.add_argument("--runs", type=int, default=7, help="warm rounds")
    ap.add_argument("--fresh-runs", type=int, default=5, help="fresh rounds")
    ap.add_argument("--cold-runs", type=int, default=None, help="cold rounds (default: --fresh-runs)")
    ap.add_argument("--modes", default="warm,fresh,cold")
    ap.add_argument("--methods", default="", help="comma-separated subset of: " + ", ".join(BY_NAME))
    ap.add_argument("--lazy-bytes", action="store_true", help="count the bytes a lazy read decrypts and hashes")
    ap.add_argument("--dir", default=os.environ.get("BENCH_DIR"), help="temporary files go here")
    ap.add_argument("--json", help="write every raw figure here")
    return ap.parse_args(argv)


def versions() -> dict[str, str]:
    from importlib.metadata import version

    out = {"python": platform.python_version(), "platform": platform.platform(), "cores": str(os.cpu_count())}
    for dist in ("torch", "safetensors", "cryptography", "blake3", "cryptotensors", "model-signing"):
        try:
            out[dist] = version(dist)
        except Exception as exc:
            out[dist] = f"? ({type(exc).__name__})"
    out["sealedckpt"] = str(Path(__import__("sealedckpt").__file__).parent)
    return out


def main(argv: list[str]) -> int:
    if argv[:1] == ["--child"]:
        return child_main(argv[1])
    args = parse_args(argv)
    names = re.split(r",(?![^()]*\))", args.methods) if args.methods else []  # a name may hold commas
    methods = [BY_NAME[n] for n in names] if names else METHODS
    modes = [m for m in args.modes.split(",") if m]
    say = lambda s: print(s, flush=True)  # noqa: E731
    for k, v in versions().items():
        say(f"   {k:14} {v}")
    say(
        f"   size_gb={args.size_gb} runs={args.runs} fresh_runs={args.fresh_runs} cold_runs={args.cold_runs} "
        f"modes={','.join(modes)}"
    )
    with tempfile.TemporaryDirectory(prefix="peers-", dir=args.dir) as tmp:
        ws = pl.Workspace(Path(tmp))
        keys = pl.Keys.generate(ws.root)
        sd = pl.llm_state_dict(args.size_gb)
        name = pl.pick_lazy_tensor(sd)
        nbytes = sum(t.numel() * t.element_size() for t in sd.values())
        say(f"   data: {len(sd)} fp32 tensors, {nbytes:,} B; lazy read: {name} "
            f"({sd[name].numel() * 4:,} B)")  # fmt: skip
        pl.prepare(ws, sd, keys, say)
        sizes = {m.name: nbytes if m.op in ("save", "load") else sd[name].numel() * 4 if m.op == "lazy"
                 else sum(p.stat().st_size for p in pl.files_read(ws, m.reads(ws))) for m in methods}  # fmt: skip
        ctx = Ctx(keys, ws, name, sd)
        extra: dict[str, Any] = {}
        if args.lazy_bytes:
            say("-- lazy read: bytes sealedckpt decrypts and hashes (untimed, primitives wrapped in this process)")
            for label, trusted in (("unsigned file", False), ("signed file, trusted_signers", True)):
                extra[label] = lazy_bytes(ctx, trusted)
                print_lazy_bytes(label, extra[label])
        results: dict[str, dict[str, list[float]]] = {}
        resident: dict[str, list[float]] = {}
        for mode in modes:
            say(f"-- running {mode}")
            if mode == "warm":
                results[mode] = run_warm(methods, ctx, args.runs, say)
            else:
                if ctx.sd is not None and "warm" not in modes[modes.index(mode) + 1 :]:
                    ctx.sd = None  # children read the raw dump; free this copy
                    del sd
                    gc.collect()
                cold = mode == "cold"
                n = args.cold_runs if cold and args.cold_runs is not None else args.fresh_runs
                results[mode], res = run_fresh(methods, ws, name, n, cold, say)
                if mode == "cold":
                    resident = res
        for line in report(results, sizes):
            say(line)
        if resident:
            worst = max((max(v) for v in resident.values() if v), default=0.0)
            say(f"   cold runs: at most {worst:.1%} of a read file was still in the page cache at the clock's start")
        if args.json:
            Path(args.json).write_text(json.dumps({"versions": versions(), "args": vars(args), "sizes": sizes,
                                                   "results": results, "resident": resident, "lazy_bytes": extra},
                                                  indent=1))  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

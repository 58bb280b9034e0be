"""Sealed ``from_pretrained`` against transformers' own, on the same model in one run.

    .venv/bin/python benchmarks/bench_hf.py [--layers 5] [--runs 5] [--fresh-runs 3] [--dir /tmp]

Builds a Llama model from a tiny config scaled to ~0.5 GB fp32 (random weights, no download),
writes it twice: ``model.save_pretrained`` (plaintext, 2 shards) and
``sealedckpt.hf.save_pretrained`` (sealed, signed, the same shards). Then times, alternating
the methods within each round (median and every run):

* ``transformers``: ``AutoModelForCausalLM.from_pretrained(plain_dir)``. transformers maps the
  safetensors files: the weights are not read until first used, so this row times no I/O;
* ``transformers+touch``: the same, then one read of every 4 KiB page of every parameter (what
  the first forward pass does): the time to a model whose weights are in memory;
* ``transformers(no-mmap)``: ``from_pretrained(plain_dir, disable_mmap=True)``: transformers
  reads every file into memory (as it does on network mounts): a load that materializes the
  weights in private memory, as a decrypting load must;
* ``sealed``: ``sealedckpt.hf.from_pretrained(AutoModelForCausalLM, sealed_dir, key=...)``
  (every chunk authenticated, every file checked against the manifest), and ``sealed+touch``;
* ``sealed+trusted``: the same with ``trusted_signers=`` (the manifest signature checked);
* ``read-bound``: reading the sealed files into fresh memory (no decryption, no model).

``warm``: in this process, after one untimed run of each; ``fresh``: a new interpreter per run
(imports before the clock starts). Ratios are ``transformers time / sealed time`` (>= 1: sealed
is as fast). Raw output: print, and ``--json``.
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
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")

METHODS = [
    "transformers",
    "transformers+touch",
    "transformers(no-mmap)",
    "sealed",
    "sealed+touch",
    "sealed+trusted",
    "read-bound",
]

CHILD = """
import os, sys, time
os.environ["HF_HUB_OFFLINE"] = "1"; os.environ["TRANSFORMERS_VERBOSITY"] = "error"
os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] = "1"
sys.path.insert(0, sys.argv[1])
import bench_hf
bench_hf.quiet()
ctx = bench_hf.Context.from_argv(sys.argv[3:])
fn = bench_hf.method(sys.argv[2], ctx)
t = time.perf_counter(); fn(); print(time.perf_counter() - t)
"""


def quiet() -> None:
    import transformers

    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()


class Context:
    def __init__(self, plain: str, sealed: str, key_text: str, vk_text: str) -> None:
        from sealedckpt.crypto import textkeys

        self.plain, self.sealed, self.key_text, self.vk_text = plain, sealed, key_text, vk_text
        self.key = textkeys.secret_from_text(key_text)
        self.vk = textkeys.verify_key_from_text(vk_text)

    @classmethod
    def from_argv(cls, argv: list[str]) -> Context:
        return cls(argv[0], argv[1], os.environ["BENCH_HF_KEY"], argv[2])  # the key never in argv

    def argv(self) -> list[str]:
        return [self.plain, self.sealed, self.vk_text]


def touch(model: Any) -> None:
    """Read one element of every 4 KiB page of every parameter (faults a mapped file in)."""
    import torch

    total = 0.0
    with torch.no_grad():
        for p in model.parameters():
            flat = p.detach().reshape(-1)
            step = max(1, 4096 // flat.element_size())
            total += float(flat[::step].sum())


def method(name: str, ctx: Context) -> Any:
    from transformers import AutoModelForCausalLM

    from sealedckpt import hf

    def transformers_load() -> Any:
        return AutoModelForCausalLM.from_pretrained(ctx.plain)

    def sealed_load(trusted: bool = False) -> Any:
        kw: dict[str, Any] = {"trusted_signers": [ctx.vk]} if trusted else {}
        return hf.from_pretrained(AutoModelForCausalLM, ctx.sealed, key=ctx.key, **kw)

    def read_bound() -> None:
        for f in sorted(Path(ctx.sealed).iterdir()):
            size = f.stat().st_size
            buf = bytearray(size)
            with open(f, "rb", buffering=0) as fh:
                fh.readinto(buf)

    table = {
        "transformers": transformers_load,
        "transformers+touch": lambda: touch(transformers_load()),
        "transformers(no-mmap)": lambda: AutoModelForCausalLM.from_pretrained(ctx.plain, disable_mmap=True),
        "sealed": sealed_load,
        "sealed+touch": lambda: touch(sealed_load()),
        "sealed+trusted": lambda: sealed_load(True),
        "read-bound": read_bound,
    }
    return table[name]


def build(root: Path, layers: int) -> tuple[Context, int]:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from sealedckpt import hf
    from sealedckpt.crypto import SigningKey, SymmetricKey, textkeys

    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=32000, hidden_size=1024, intermediate_size=2816, num_hidden_layers=layers,
                      num_attention_heads=16, num_key_value_heads=16, tie_word_embeddings=False)  # fmt: skip
    model = LlamaForCausalLM(cfg)
    nbytes = sum(p.numel() * p.element_size() for p in model.parameters())
    key, signer = SymmetricKey.generate(), SigningKey.generate()
    model.save_pretrained(root / "plain", max_shard_size="300MB")
    hf.save_pretrained(model, root / "sealed", key=key, sign_with=signer, max_shard_size="300MB")
    ctx = Context(str(root / "plain"), str(root / "sealed"), textkeys.secret_to_text(key),
                  textkeys.verify_key_to_text(signer.public))  # fmt: skip
    return ctx, nbytes


def _fresh(name: str, ctx: Context) -> float:
    here = str(Path(__file__).resolve().parent)
    env = {**os.environ, "BENCH_HF_KEY": ctx.key_text}
    out = subprocess.run([sys.executable, "-c", CHILD, here, name, *ctx.argv()], check=True, capture_output=True,
                         text=True, env=env)  # fmt: skip
    return float(out.stdout.strip().splitlines()[-1])


def _warm(name: str, ctx: Context) -> float:
    import gc

    fn = method(name, ctx)
    gc.collect()
    t = time.perf_counter()
    fn()
    dt = time.perf_counter() - t
    gc.collect()
    return dt


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--layers", type=int, default=5)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--fresh-runs", type=int, default=3)
    ap.add_argument("--dir", default=None)
    ap.add_argument("--json", default=None)
    a = ap.parse_args()
    quiet()
    with tempfile.TemporaryDirectory(dir=a.dir) as tmp:
        ctx, nbytes = build(Path(tmp), a.layers)
        print(f"model: Llama, {a.layers} layers, {nbytes:,} B of fp32 parameters; torch threads "
              f"{__import__('torch').get_num_threads()}, cpus {os.cpu_count()}")  # fmt: skip
        res: dict[str, dict[str, list[float]]] = {"warm": {m: [] for m in METHODS}, "fresh": {m: [] for m in METHODS}}
        for m in METHODS:
            _warm(m, ctx)  # untimed
        for _ in range(a.runs):
            for m in METHODS:
                res["warm"][m].append(_warm(m, ctx))
        for _ in range(a.fresh_runs):
            for m in METHODS:
                res["fresh"][m].append(_fresh(m, ctx))
    report(res, nbytes)
    if a.json:
        Path(a.json).write_text(json.dumps({"bytes": nbytes, "layers": a.layers, "results": res}, indent=1))


def report(res: dict[str, dict[str, list[float]]], nbytes: int) -> None:
    for mode, table in res.items():
        if not any(table.values()):
            continue
        print(f"\n{mode}")
        med = {m: statistics.median(ts) for m, ts in table.items() if ts}
        for m, ts in table.items():
            if ts:
                print(f"  {m:20} median {med[m]:.3f} s  {nbytes / med[m] / 1e9:6.2f} GB/s  runs: "
                      + " ".join(f"{t:.3f}" for t in ts))  # fmt: skip
        print(f"  ratio transformers/sealed                 {med['transformers'] / med['sealed']:.2f}x")
        print(f"  ratio transformers+touch/sealed+touch     {med['transformers+touch'] / med['sealed+touch']:.2f}x")
        print(f"  ratio transformers+touch/sealed+trusted   {med['transformers+touch'] / med['sealed+trusted']:.2f}x")
        print(f"  ratio transformers(no-mmap)/sealed        {med['transformers(no-mmap)'] / med['sealed']:.2f}x")
        print(f"  ratio read-bound/sealed                   {med['read-bound'] / med['sealed']:.2f}x")


if __name__ == "__main__":
    main()

"""S3 over loopback (moto's ThreadedMotoServer, s3fs): sealed save/load vs a plain s3fs put/get.

    .venv/bin/python benchmarks/bench_s3.py [--mib 128] [--runs 5] [--out benchmarks/results/s3/run1]

One moto server on 127.0.0.1 (random port), one bucket. A checkpoint of ``--mib`` MiB of fp32
tensors (4 MiB each) is sealed with a random symmetric key. Each round, interleaved:

- ``sealedckpt.save(obj, "s3://...")`` (seal + upload: one PUT or background multipart parts)
- ``s3fs.pipe_file(path, data)`` of the same number of bytes (the sealed file's bytes, from memory)
- ``sealedckpt.load("s3://...")`` (ranged GETs of every chunk, decrypt, build the tensors)
- ``s3fs.cat_file(path)`` of the same object (one whole GET into memory)

Medians of ``--runs`` rounds after one warm-up round; ratios are peer time / sealed time
(>= 1.0: sealed is as fast). Then a lazy read: ``sealedckpt.open(...).get_tensor(one)`` on a
larger object of 256 KiB tensors, counting the object bytes s3fs received (its ``_cat_file``).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import secrets
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

import sealedckpt
from sealedckpt import _remote


def _server() -> tuple[Any, str]:
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    srv = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    srv.start()
    host, port = srv.get_host_and_port()
    os.environ.update(AWS_ACCESS_KEY_ID="bench", AWS_SECRET_ACCESS_KEY="bench", AWS_DEFAULT_REGION="us-east-1")
    os.environ["AWS_ENDPOINT_URL"] = f"http://{host}:{port}"
    return srv, os.environ["AWS_ENDPOINT_URL"]


def _timed(fn: Callable[[], object]) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def round_trip(fs: Any, bucket: str, mib: int, runs: int) -> dict[str, Any]:
    key = sealedckpt.SymmetricKey.generate()
    g = torch.Generator().manual_seed(0)
    obj = {f"t{i:03d}": torch.randn(1 << 20, generator=g) for i in range(mib // 4)}
    url, peer = f"s3://{bucket}/sealed.sealed", f"{bucket}/plain.bin"
    sealedckpt.save(obj, url, key=key)
    data = fs.cat_file(url[5:])
    times: dict[str, list[float]] = {"sealed_save": [], "s3fs_put": [], "sealed_load": [], "s3fs_get": []}
    for r in range(runs + 1):
        row = {
            "sealed_save": _timed(lambda: sealedckpt.save(obj, url, key=key)),
            "s3fs_put": _timed(lambda: fs.pipe_file(peer, data)),
            "sealed_load": _timed(lambda: sealedckpt.load(url, key=key)),
            "s3fs_get": _timed(lambda: fs.cat_file(peer)),
        }
        print(f"round {r}{' (warm-up)' if r == 0 else ''}: " + ", ".join(f"{k} {v:.3f}s" for k, v in row.items()))
        if r:
            for k, v in row.items():
                times[k].append(v)
    loaded = sealedckpt.load(url, key=key)
    assert all(torch.equal(loaded[n], obj[n]) for n in obj)
    med = {k: statistics.median(v) for k, v in times.items()}
    return {
        "bytes": len(data),
        "runs": times,
        "median_s": med,
        "save_ratio": med["s3fs_put"] / med["sealed_save"],
        "load_ratio": med["s3fs_get"] / med["sealed_load"],
    }


def lazy_read(fs: Any, bucket: str) -> dict[str, Any]:
    import s3fs

    key = sealedckpt.SymmetricKey.generate()
    obj = {f"layer{i:03d}.weight": torch.full((256, 256), float(i)) for i in range(800)}  # 200 MiB
    url = f"s3://{bucket}/lazy.sealed"
    sealedckpt.save(obj, url, key=key)
    size = _remote.size(url)
    served = {"bytes": 0, "requests": 0}
    original = s3fs.S3FileSystem._cat_file

    async def counting(self: Any, path: str, *args: Any, **kwargs: Any) -> bytes:
        out: bytes = await original(self, path, *args, **kwargs)
        served["bytes"] += len(out)
        served["requests"] += 1
        return out

    s3fs.S3FileSystem._cat_file = counting  # type: ignore[method-assign]
    s3fs.S3FileSystem.clear_instance_cache()
    try:
        t = time.perf_counter()
        with sealedckpt.open(url, key=key) as f:
            tensor = f.get_tensor("layer401.weight")
        took = time.perf_counter() - t
    finally:
        s3fs.S3FileSystem._cat_file = original  # type: ignore[method-assign]
        s3fs.S3FileSystem.clear_instance_cache()
    assert torch.equal(tensor, obj["layer401.weight"])
    return {"object_bytes": size, "served_bytes": served["bytes"], "requests": served["requests"],
            "percent": 100 * served["bytes"] / size, "seconds": took}  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--mib", type=int, default=128)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--out", default=None, help="write OUT.json (raw times) and OUT.txt (this output)")
    args = ap.parse_args()
    srv, endpoint = _server()
    try:
        import s3fs

        fs = s3fs.S3FileSystem()
        bucket = f"bench-{secrets.token_hex(4)}"
        fs.mkdir(bucket)
        print(f"moto on {endpoint}; torch {torch.__version__}, s3fs {s3fs.__version__}, {os.cpu_count()} CPUs")
        rt = round_trip(fs, bucket, args.mib, args.runs)
        mb = rt["bytes"] / 1e6
        for k, v in rt["median_s"].items():
            print(f"{k:12s} median {v:.3f}s  {mb / v:7.1f} MB/s")
        print(f"save: s3fs put / sealed save = {rt['save_ratio']:.2f}x (>= 0.8 required)")
        print(f"load: s3fs get / sealed load = {rt['load_ratio']:.2f}x (>= 0.8 required)")
        lz = lazy_read(fs, bucket)
        print(f"lazy one-tensor read: {lz['served_bytes']:,} of {lz['object_bytes']:,} bytes "
              f"({lz['percent']:.2f}% of the object, {lz['requests']} ranged GETs, {lz['seconds']:.3f}s)")  # fmt: skip
        if args.out:
            Path(args.out).parent.mkdir(parents=True, exist_ok=True)
            Path(args.out + ".json").write_text(json.dumps({"round_trip": rt, "lazy": lz}, indent=1))
    finally:
        srv.stop()


if __name__ == "__main__":
    main()

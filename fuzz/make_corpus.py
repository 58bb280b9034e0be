"""Regenerate the seed corpus under ``fuzz/corpus/<target>/`` (valid inputs sealed with the fixed
keys of ``targets.py``). Run by hand: ``python fuzz/make_corpus.py``; the result is committed.
Sealing draws fresh salts and nonces, so the bytes differ from run to run; the shapes do not.
"""

from __future__ import annotations

import io
import json
import shutil
import struct
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np
import targets
import torch
from targets import MANIFEST, SIGNATURES, TARGETS, corpus_dir, isolated_env, save_fixtures, world

import sealedckpt
from sealedckpt.payload.codec import plan_payload
from sealedckpt.stores import audit
from sealedckpt.stores.trust import TrustStore

OBJECTS: list[Any] = [
    {"w": torch.arange(6, dtype=torch.float32)},
    {"model": {"a": torch.ones(2, 3, dtype=torch.float16), "b": torch.zeros(0)}, "step": 7, "lr": 1e-3},
    [1, "two", (3.0, None, True), b"bytes", torch.int64, torch.Size([2, 3])],
    {"view": torch.arange(10)[2:8:2], "t": torch.arange(12).reshape(3, 4).t(), "np": np.arange(4, dtype=np.int16)},
    {"bf16": torch.randn(4, dtype=torch.bfloat16), "bool": torch.tensor([True, False]), "s": np.float32(1.5)},
]


def _slots_section(blob: bytes) -> bytes:
    (content_len,) = struct.unpack_from("<I", blob, 12)
    pos = 16 + content_len
    (slots_len,) = struct.unpack_from("<I", blob, pos)
    return blob[pos + 4 : pos + 4 + slots_len]


def _sealed_files() -> list[bytes]:
    w = world()
    other_signer = sealedckpt.SigningKey(bytes([8]) * 32)
    out = [w.sealed]
    cases: list[tuple[Any, Any, list[sealedckpt.SigningKey], dict[str, str] | None]] = [
        (OBJECTS[0], w.sym, [], None),
        (OBJECTS[1], [w.sym, w.recipient.public], [w.signer, other_signer], {"model": "m", "version": "3"}),
        (OBJECTS[2], w.passphrase, [w.signer], None),
        (OBJECTS[3], w.recipient.public, [], {"k": "v"}),
    ]
    for obj, key, signers, meta in cases:
        buf = io.BytesIO()
        sealedckpt.save(obj, buf, key=key, sign_with=signers, metadata=meta)
        out.append(buf.getvalue())
    return out


def _audit_logs(tmp: Path) -> list[bytes]:
    w = world()
    logs = []
    for name, key in (("unsigned", None), ("signed", w.signer)):
        p = tmp / f"{name}.jsonl"
        for op in ("save", "load", "verify"):
            audit.record(op, log=p, path=f"/x/{op}.sealed", digest="root:" + "ab" * 32, key_ids=["k1"],
                         outcome="ok", detail={"n": "1"}, signing_key=key)  # fmt: skip
        logs.append(p.read_bytes())
    return logs


def _trust_stores(tmp: Path) -> list[bytes]:
    out = []
    home = tmp / "corpus-trust-home"
    home.mkdir(mode=0o700)
    store = TrustStore(home)
    store.add("alice", sealedckpt.SigningKey(bytes([1]) * 32).public)
    out.append(store.path.read_bytes())
    store.add("bob", sealedckpt.SigningKey(bytes([2]) * 32).public, roles=["auditor"], scope=["llama-*", "mistral-?"],
              expires=1_900_000_000)  # fmt: skip
    store.set_rule("llama-*", {"publisher": 1, "auditor": 1})
    store.revoke("alice")
    out.append(store.path.read_bytes())
    out.append(json.dumps({"version": 1, "keys": [], "rules": [], "clock_skew": 300}).encode())
    return out


def main() -> None:
    targets._world = targets._build_world(fresh=True)
    w = world()
    save_fixtures(w)
    seeds: dict[str, list[bytes]] = {}
    files = _sealed_files()
    seeds["container"] = files
    seeds["slots"] = [_slots_section(b) for b in files]
    payloads = []
    for obj in OBJECTS:
        plan = plan_payload(obj)
        payloads.append(b"".join(bytes(s) for s in plan.segments()))
    seeds["payload"] = payloads
    seeds["manifest"] = [(w.plain_dir / MANIFEST).read_bytes()]
    seeds["dir_signatures"] = [(w.signed_dir / SIGNATURES).read_bytes()]
    with isolated_env(w.home):
        seeds["audit"] = _audit_logs(w.tmp)
        seeds["trust"] = _trust_stores(w.tmp)
    assert set(seeds) == set(TARGETS)
    for name, items in seeds.items():
        d = corpus_dir(name)
        shutil.rmtree(d, ignore_errors=True)
        d.mkdir(parents=True)
        for i, data in enumerate(items):
            (d / f"seed-{i:02d}").write_bytes(data)
        print(f"{name}: {len(items)} seeds, {sum(map(len, items))} bytes")


if __name__ == "__main__":
    main()

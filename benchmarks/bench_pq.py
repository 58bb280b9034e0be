"""Post-quantum cost: slot open time, signature sign/verify time, and added bytes per recipient/signature.

    .venv/bin/python benchmarks/bench_pq.py [--rounds 7] [--reps 200]

Interleaves the classical and post-quantum variant of each operation in every round (so machine
noise hits both alike) and prints per-operation medians over the rounds and the PQ/classical ratio:

* slot open: ``open_slots`` on one X25519 slot vs one ML-KEM-768 + X25519 (X-Wing) slot, the
  recipient's key already loaded (what ``load`` pays per recipient slot it tries);
* slot wrap: the same for sealing;
* sign / verify: Ed25519 (``SigningKey``) vs Ed25519 + ML-DSA-65 (``CompositeSigningKey``) over a
  root-sized message, as a trailer entry signs it;
* whole-file ``verify`` (keyless) of a small signed file, Ed25519 vs composite;
* sizes: slot bodies and trailer entries, and a whole small file sealed both ways.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import statistics
import time
from collections.abc import Callable

import cryptography
import torch

import sealedckpt
from sealedckpt.container.slots import make_slots, open_slots
from sealedckpt.crypto import pq

DEK = os.urandom(32)
SALT = os.urandom(32)


def per_op(fn: Callable[[], object], reps: int) -> float:
    start = time.perf_counter()
    for _ in range(reps):
        fn()
    return (time.perf_counter() - start) / reps


def small_file(key: object, signer: object) -> bytes:
    buf = io.BytesIO()
    sealedckpt.save({"w": torch.zeros(16)}, buf, key=key, sign_with=signer)  # type: ignore[arg-type]
    return buf.getvalue()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--reps", type=int, default=200)
    ap.add_argument("--json", help="also write the raw per-round times here")
    args = ap.parse_args()

    x, q = sealedckpt.RecipientKey.generate(), sealedckpt.PQRecipientKey.generate()
    (xslot,) = make_slots(DEK, SALT, [x.public])
    (qslot,) = make_slots(DEK, SALT, [q.public])
    e, c = sealedckpt.SigningKey.generate(), sealedckpt.CompositeSigningKey.generate()
    msg = b"\x00" * (len(b"sealedckpt/v1 signature\x00") + 32 + 8 + 32)
    esig, csig = e.sign(msg), c.sign(msg)
    sym = sealedckpt.SymmetricKey.generate()
    efile, cfile = small_file(sym, e), small_file(sym, c)

    ops: dict[str, Callable[[], object]] = {
        "slot_open_x25519": lambda: open_slots([xslot], SALT, [x]),
        "slot_open_xwing": lambda: open_slots([qslot], SALT, [q]),
        "slot_wrap_x25519": lambda: make_slots(DEK, SALT, [x.public]),
        "slot_wrap_xwing": lambda: make_slots(DEK, SALT, [q.public]),
        "sign_ed25519": lambda: e.sign(msg),
        "sign_composite": lambda: c.sign(msg),
        "verify_ed25519": lambda: e.public.verify(esig, msg),
        "verify_composite": lambda: c.public.verify(csig, msg),
        "verify_file_ed25519": lambda: sealedckpt.verify(io.BytesIO(efile)),
        "verify_file_composite": lambda: sealedckpt.verify(io.BytesIO(cfile)),
    }
    raw: dict[str, list[float]] = {k: [] for k in ops}
    for _ in range(args.rounds):
        for name, fn in ops.items():  # interleaved: every round runs every op
            raw[name].append(per_op(fn, args.reps))
    med = {k: statistics.median(v) for k, v in raw.items()}

    print(f"# bench_pq  {platform.platform()}  python {platform.python_version()}  cryptography "
          f"{cryptography.__version__}  cpus {os.cpu_count()}  rounds {args.rounds} x {args.reps} reps")  # fmt: skip
    print(f"{'operation':<24} {'median µs':>10}")
    for k, v in med.items():
        print(f"{k:<24} {v * 1e6:>10.1f}")
    for a, b in (("slot_open_x25519", "slot_open_xwing"), ("slot_wrap_x25519", "slot_wrap_xwing"),
                 ("sign_ed25519", "sign_composite"), ("verify_ed25519", "verify_composite"),
                 ("verify_file_ed25519", "verify_file_composite")):  # fmt: skip
        print(f"ratio {b} / {a}: x{med[b] / med[a]:.1f}")
    sizes = {
        "slot_body_x25519": len(xslot.body),
        "slot_body_xwing": len(qslot.body),
        # a trailer entry: alg u8, three u16 lengths, public key, statement (not counted here), signature
        "sig_entry_ed25519_without_statement": 7 + pq.ED25519_PUB_SIZE + pq.ED25519_SIG_SIZE,
        "sig_entry_composite_without_statement": 7 + pq.COMPOSITE_PUB_SIZE + pq.COMPOSITE_SIG_SIZE,
        "file_signed_ed25519": len(efile),
        "file_signed_composite": len(cfile),
        "public_key_text_xwing": len(sealedckpt.crypto.textkeys.public_to_text(q.public)),
        "public_key_text_composite": len(sealedckpt.crypto.textkeys.public_to_text(c.public)),
    }
    for k, n in sizes.items():
        print(f"size {k:<28} {n:>6} B")
    print(f"added per recipient (slot header 3 B + body): +{len(qslot.body) - len(xslot.body)} B vs X25519")
    extra = sizes["sig_entry_composite_without_statement"] - sizes["sig_entry_ed25519_without_statement"]
    print(f"added per signature: +{extra} B vs Ed25519")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump({"raw_seconds": raw, "median_seconds": med, "sizes": sizes}, f, indent=1)


if __name__ == "__main__":
    main()

"""End-to-end demo: train, seal a checkpoint every 100 epochs, "crash", resume, predict.

The model is the small MLP that fits y = sin(x) on [-pi, pi] from the classic PyTorch
tutorial, trained for 1000 epochs. Checkpoints are whole training states (model, optimizer,
epoch, RNG), sealed with a symmetric key and signed by a ``sealedckpt.CheckpointManager`` in
the background (``async_save=True``), which keeps the last 3 and every 500th. Resuming loads
``latest()`` under a trusted-signer policy and ends bit-for-bit where an uninterrupted run ends.
"""

from __future__ import annotations

import argparse
import math
import os
import random
import time
from pathlib import Path

import numpy as np
import torch

import sealedckpt

EPOCHS = 1000
EVERY = 100


def make_model() -> torch.nn.Module:
    return torch.nn.Sequential(
        torch.nn.Linear(1, 64), torch.nn.Tanh(), torch.nn.Linear(64, 64), torch.nn.Tanh(), torch.nn.Linear(64, 1)
    )


def data() -> tuple[torch.Tensor, torch.Tensor]:
    x = torch.linspace(-math.pi, math.pi, 2000).unsqueeze(1)
    return x, torch.sin(x)


def train(model: torch.nn.Module, opt: torch.optim.Optimizer, start: int, stop: int, on_epoch: object = None) -> float:
    x, y = data()
    loss = torch.tensor(0.0)
    for epoch in range(start, stop):
        idx = torch.randint(0, len(x), (256,))  # uses the torch RNG, so resuming must restore it
        loss = torch.nn.functional.mse_loss(model(x[idx]), y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
        if callable(on_epoch):
            on_epoch(epoch + 1, loss.item())
    return loss.item()


def checkpoint(model: torch.nn.Module, opt: torch.optim.Optimizer, epoch: int) -> dict[str, object]:
    return {
        "model": model.state_dict(),
        "optimizer": opt.state_dict(),
        "epoch": epoch,
        "rng": torch.get_rng_state(),
        "py_rng": random.getstate(),
        "np_rng": np.random.get_state(),
    }


def keystore_keys(home: Path) -> tuple[str, sealedckpt.SigningKey]:
    """A default data key and a signing key in the embedded file keystore under ``home``."""
    os.environ.setdefault("SEALEDCKPT_HOME", str(home))
    os.environ.setdefault("SEALEDCKPT_KEYSTORE", "file")  # the embedded keystore, even where a keyring exists
    ks = sealedckpt.Keystore()
    data = ks.default("symmetric") or ks.generate("symmetric", "demo-data", default=True)
    signing = ks.default("signing") or ks.generate("signing", "demo-signer", default=True)
    signer = ks.secret(signing)
    assert isinstance(signer, sealedckpt.SigningKey)
    return data.id, signer


def manager(ckpt_dir: Path, signer: sealedckpt.SigningKey) -> sealedckpt.CheckpointManager:
    # key=None: the keystore's default data key seals; loading finds the key the file names.
    return sealedckpt.CheckpointManager(
        ckpt_dir, sign_with=signer, metadata={"run": "sin-mlp"}, keep_last=3, keep_every=500, async_save=True
    )


def resume(
    mgr: sealedckpt.CheckpointManager, signer: sealedckpt.SigningKey
) -> tuple[torch.nn.Module, torch.optim.Optimizer, int]:
    """A fresh model and optimizer restored from the newest checkpoint, which must be signed by ``signer``."""
    ck = mgr.load(trusted_signers=[signer.public], map_location="cpu")
    torch.manual_seed(1234)  # whatever the new process would do; the checkpoint restores the RNG
    model = make_model()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    model.load_state_dict(ck["model"])
    opt.load_state_dict(ck["optimizer"])
    torch.set_rng_state(ck["rng"])
    random.setstate(ck["py_rng"])
    np.random.set_state(ck["np_rng"])
    return model, opt, ck["epoch"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--dir", type=Path, default=Path("demo-run"), help="where checkpoints and keys go")
    ap.add_argument("--crash-at", type=int, default=650, help="epoch after which the first run 'crashes'")
    args = ap.parse_args()
    run_dir: Path = args.dir
    ckpt_dir = run_dir / "checkpoints"
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    for old in ckpt_dir.glob("*.sealed"):
        old.unlink()
    key_id, signer = keystore_keys(run_dir / "keystore")
    print(f"keystore {os.environ['SEALEDCKPT_HOME']}: default data key {key_id}, signing key {signer.key_id}")

    # Reference: one uninterrupted run.
    torch.manual_seed(0)
    ref_model = make_model()
    ref_loss = train(ref_model, torch.optim.Adam(ref_model.parameters(), lr=1e-2), 0, EPOCHS)

    # Run 1: checkpoint every EVERY epochs in the background, then "crash".
    torch.manual_seed(0)
    model = make_model()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    mgr = manager(ckpt_dir, signer)

    def save_every(epoch: int, loss: float) -> None:
        if epoch % EVERY == 0:
            t = time.perf_counter()
            mgr.save(epoch, checkpoint(model, opt, epoch))  # snapshot now; seal and write in the background
            print(f"epoch {epoch:4d}  loss {loss:.6f}  checkpoint {epoch} ({(time.perf_counter() - t) * 1e3:.1f} ms)")

    train(model, opt, 0, args.crash_at, save_every)
    mgr.wait()  # a real crash could lose the save in flight (its temp file never becomes a step)
    print(f"-- simulated crash after epoch {args.crash_at} --")
    del model, opt, mgr

    # Run 2: a fresh process would do this: resume from the newest checkpoint, signature required.
    mgr = manager(ckpt_dir, signer)
    latest = mgr.latest()
    assert latest is not None
    info = sealedckpt.inspect(mgr.path(latest))
    print(f"latest: step {latest}  public metadata {info.metadata}  signers {[s['key_id'] for s in info.signatures]}")
    model, opt, epoch = resume(mgr, signer)
    print(f"resumed at epoch {epoch}")
    with mgr:  # close(): waits for the last background save and raises its error, if any
        final = train(model, opt, epoch, EPOCHS, save_every)
    print(f"kept checkpoints: steps {mgr.steps()}")

    identical = all(
        torch.equal(a, b) for a, b in zip(model.state_dict().values(), ref_model.state_dict().values(), strict=True)
    )
    print(f"final loss {final:.6f}; uninterrupted run {ref_loss:.6f}; weights bit-identical: {identical}")
    with torch.no_grad():
        for xv in (-math.pi / 2, 0.0, 1.0, math.pi / 2):
            print(f"predict sin({xv:+.4f}) = {model(torch.tensor([[xv]])).item():+.4f}  (true {math.sin(xv):+.4f})")
    if not identical:
        raise SystemExit("resume was not bit-identical")


if __name__ == "__main__":
    main()

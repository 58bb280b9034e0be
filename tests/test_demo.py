"""The README's main job runs end to end: train 1000 epochs with a CheckpointManager saving every 100 in the
background, crash, resume from latest(), end bit-identically."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

DEMO = Path(__file__).resolve().parent.parent / "examples" / "train_demo.py"


@pytest.mark.slow
def test_demo_resumes_bit_identically(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SEALEDCKPT_")}
    r = subprocess.run(
        [sys.executable, str(DEMO), "--dir", str(tmp_path / "run")],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert r.returncode == 0, r.stderr
    assert "weights bit-identical: True" in r.stdout
    assert sorted(p.name for p in (tmp_path / "run" / "checkpoints").iterdir()) == [
        f"step-{e:012d}.sealed"
        for e in (500, 800, 900, 1000)  # keep_last=3, keep_every=500
    ]
    assert (
        "-- simulated crash after epoch 650 --\nlatest: step 600  public metadata {'run': 'sin-mlp', 'step': '600'}"
        in (r.stdout)
    )
    assert "resumed at epoch 600\n" in r.stdout and "kept checkpoints: steps [500, 800, 900, 1000]" in r.stdout
    keystore = tmp_path / "run" / "keystore"
    assert (keystore / "registry.json").exists() and oct((keystore / "keys").stat().st_mode & 0o777) == "0o700"
    (pred,) = re.findall(r"predict sin\(\+1\.5708\) = ([-+][0-9.]+)", r.stdout)
    assert abs(float(pred) - 1.0) < 0.01

"""The README's main job runs end to end: train, seal every 100 epochs, crash, resume bit-identically."""

from __future__ import annotations

import os
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
        f"epoch-{e:05d}.sealed" for e in (100, 200, 300, 400, 500)
    ]
    keystore = tmp_path / "run" / "keystore"
    assert (keystore / "registry.json").exists() and oct((keystore / "keys").stat().st_mode & 0o777) == "0o700"
    assert "predict sin(+1.5708) = +1.00" in r.stdout

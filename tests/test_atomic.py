"""A checkpoint path holds either the old file or the complete new one."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

import sealedckpt
from sealedckpt import _fs as atomic
from sealedckpt.payload import encode


def test_exception_mid_save_keeps_old_file_and_leaves_no_temp(
    tmp_path: Path, key: sealedckpt.SymmetricKey, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "ckpt.sealed"
    sealedckpt.save({"v": 1}, path, key=key)
    before = path.read_bytes()

    real = encode.PayloadPlan.segments

    def failing(self: encode.PayloadPlan) -> Iterator[memoryview]:
        it = real(self)
        yield next(it)
        yield next(it)
        raise OSError("disk on fire")

    monkeypatch.setattr(encode.PayloadPlan, "segments", failing)
    with pytest.raises(OSError, match="disk on fire"):
        sealedckpt.save({"v": 2, "w": torch.randn(3_000_000)}, path, key=key)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt.sealed"]
    assert sealedckpt.load(path, key=key) == {"v": 1}


def test_unstorable_object_does_not_touch_the_file(tmp_path: Path, key: sealedckpt.SymmetricKey) -> None:
    path = tmp_path / "ckpt.sealed"
    sealedckpt.save({"v": 1}, path, key=key)
    before = path.read_bytes()
    with pytest.raises(sealedckpt.UnsupportedTypeError):
        sealedckpt.save({"v": object()}, path, key=key)
    assert path.read_bytes() == before and len(list(tmp_path.iterdir())) == 1


def test_killed_writer_leaves_old_or_new_file(tmp_path: Path, key: sealedckpt.SymmetricKey) -> None:
    path = tmp_path / "ckpt.sealed"
    sealedckpt.save({"gen": -1}, path, key=key)
    child = textwrap.dedent(
        f"""
        import sys, torch, sealedckpt
        k = sealedckpt.SymmetricKey.from_bytes(bytes.fromhex({key.to_bytes().hex()!r}))
        w = torch.randn(25_000_000)
        print("ready", flush=True)
        gen = 0
        while True:
            sealedckpt.save({{"gen": gen, "w": w}}, {str(path)!r}, key=k)
            gen += 1
        """
    )
    proc = subprocess.Popen([sys.executable, "-c", child], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "ready"
    time.sleep(0.8)  # somewhere inside a 100 MB write
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    out = sealedckpt.load(path, key=key)
    assert isinstance(out["gen"], int) and out["gen"] >= -1
    if out["gen"] >= 0:
        assert out["w"].shape == (25_000_000,)
    leftovers = sorted(p.name for p in tmp_path.iterdir() if p.name != "ckpt.sealed")
    if atomic.tmpfile_supported(str(tmp_path)):
        assert leftovers == []
    else:  # a named temp file can survive SIGKILL; it is hidden and never the target
        assert all(n.startswith(".ckpt.sealed.") and n.endswith(".tmp") for n in leftovers), leftovers


def test_new_file_mode_follows_umask(tmp_path: Path, key: sealedckpt.SymmetricKey) -> None:
    old = os.umask(0o027)
    try:
        sealedckpt.save({"v": 1}, tmp_path / "a.sealed", key=key)
    finally:
        os.umask(old)
    assert (tmp_path / "a.sealed").stat().st_mode & 0o777 == 0o640

"""CheckpointManager across processes: kill -9 during saves, and a reader polling a live writer."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest
import torch

import sealedckpt
from sealedckpt.api import manager as mgr_mod

KEY = sealedckpt.SymmetricKey(bytes(range(32)))
N = 400_000  # 1.6 MB per tensor: most of a save's time is spent writing

# Imports torch once, then forks one saver per line read (a fresh interpreter per trial would
# spend most of the time importing torch). The zygote itself runs no torch op before forking.
_ZYGOTE = f"""
import os, sys
import torch, sealedckpt
from sealedckpt import _fs
KEY = sealedckpt.SymmetricKey(bytes(range(32)))

def saver(directory, named):
    if named:
        _fs.tmpfile_supported = lambda d: False
    m = sealedckpt.CheckpointManager(directory, key=KEY, keep_last=2, metadata={{"trial": "x"}})
    step = (m.latest() or 0) + 1
    while True:
        m.save(step, state(step))
        step += 1

def state(v):
    return {{"v": v, "a": torch.full(({N},), float(v)), "b": {{"c": torch.full((7, 3), v)}}, "tag": str(v)}}

for line in sys.stdin:
    directory, named = line.split()
    pid = os.fork()
    if pid == 0:
        try:
            saver(directory, named == "1")
        finally:
            os._exit(3)
    print(pid, flush=True)
    _, status = os.waitpid(pid, 0)
    print(status, flush=True)
"""


def check(out: Any, step: int) -> None:
    assert out["v"] == step and out["tag"] == str(step)
    assert out["a"].shape == (N,) and bool((out["a"] == float(step)).all())
    assert bool((out["b"]["c"] == step).all())


def test_kill_9_during_saves_leaves_the_newest_complete_checkpoint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """20 kills at random moments (half with named temp files instead of O_TMPFILE)."""
    monkeypatch.setattr(mgr_mod, "STALE_TEMP_SECONDS", 0.0)  # the saver is dead: its temps are stale
    zygote = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(_ZYGOTE)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    assert zygote.stdin is not None and zygote.stdout is not None
    rng = random.Random(1234)
    directory = tmp_path / "ckpt"
    previous, temps_seen, t0 = 0, 0, time.monotonic()
    try:
        for trial in range(20):
            zygote.stdin.write(f"{directory} {trial % 2}\n")
            zygote.stdin.flush()
            pid = int(zygote.stdout.readline())
            time.sleep(rng.uniform(0.05, 0.4))
            os.kill(pid, signal.SIGKILL)
            assert int(zygote.stdout.readline()) == signal.SIGKILL  # killed, not exited
            listing = os.listdir(directory) if directory.exists() else []
            temps = [n for n in listing if n.startswith(".")]
            temps_seen += bool(temps)
            assert all(mgr_mod._TEMP.fullmatch(n) for n in temps), temps
            m = sealedckpt.CheckpointManager(directory, key=KEY)
            assert not [n for n in os.listdir(directory) if n.startswith(".")]  # cleaned up
            steps = m.steps()
            assert [n for n in os.listdir(directory)] and sorted(os.listdir(directory)) == [
                mgr_mod.step_name(s) for s in steps
            ]
            latest = m.latest()
            assert latest is not None and latest >= previous and len(steps) <= 3  # keep_last=2, +1 mid-retention
            for s in steps:
                check(m.load(s), s)
            check(m.load(), latest)
            assert sealedckpt.inspect(m.path(latest)).metadata == {"trial": "x", "step": str(latest)}
            previous = latest
    finally:
        zygote.kill()
        zygote.wait()
    assert previous > 20  # the savers made progress
    assert temps_seen >= 1  # some kills landed mid-write (named temp files left behind)
    assert time.monotonic() - t0 < 60


_WRITER = f"""
import sys, torch, sealedckpt
KEY = sealedckpt.SymmetricKey(bytes(range(32)))
m = sealedckpt.CheckpointManager(sys.argv[1], key=KEY, keep_last=2, async_save=len(sys.argv) > 2)
print("ready", flush=True)
for step in range(1, 61):
    m.save(step, {{"v": step, "a": torch.full(({N},), float(step)), "b": {{"c": torch.full((7, 3), step)}},
                  "tag": str(step)}})
m.close()
"""


@pytest.mark.parametrize("async_save", [False, True], ids=["sync", "async"])
def test_a_reader_never_sees_a_partial_checkpoint(tmp_path: Path, async_save: bool) -> None:
    writer = subprocess.Popen(
        [sys.executable, "-c", _WRITER, str(tmp_path), *(["async"] if async_save else [])],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert writer.stdout is not None and writer.stdout.readline() == "ready\n"
    reader = sealedckpt.CheckpointManager(tmp_path, key=KEY)
    seen: list[int] = []
    while writer.poll() is None:
        if reader.latest() is None:
            continue
        out = reader.load()
        assert reader.loaded_step is not None
        check(out, reader.loaded_step)
        seen.append(reader.loaded_step)
    assert writer.returncode == 0
    assert reader.latest() == 60 and reader.steps() == [59, 60]
    check(reader.load(), 60)
    assert len(set(seen)) >= 5 and seen == sorted(seen)  # many distinct steps, never going back
    torch.testing.assert_close(reader.load(59)["a"], torch.full((N,), 59.0))

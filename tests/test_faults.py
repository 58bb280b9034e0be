"""Fault injection: a full disk during save, concurrent savers, and a file replaced while loading.

Disk full surfaces as the ``OSError`` itself (errno ENOSPC), not wrapped in a SealedCkptError:
it is an environmental I/O failure, not a malformed or forged file, and callers that retry or
free space key on ``errno`` (``except OSError`` must keep working). The path keeps its previous
complete file and no temp file is left behind.
"""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

import sealedckpt
from sealedckpt import _fs

KEY = sealedckpt.SymmetricKey(bytes(range(32)))


def _entries(d: Path) -> list[str]:
    return sorted(p.name for p in d.iterdir())


class _FullDisk:
    """A writable file whose writes fail with ENOSPC once ``budget`` bytes were written."""

    def __init__(self, f: Any, budget: int) -> None:
        self._f = f
        self._left = budget

    def write(self, data: Any) -> int:
        n = memoryview(data).nbytes
        if n > self._left:
            if self._left:
                self._f.write(memoryview(data).cast("B")[: self._left])
                self._left = 0
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        self._left -= n
        return int(self._f.write(data))

    def __getattr__(self, name: str) -> Any:
        return getattr(self._f, name)

    def __enter__(self) -> _FullDisk:
        return self

    def __exit__(self, *exc: object) -> None:
        self._f.close()


@pytest.fixture(params=[True, False], ids=["o_tmpfile", "named_temp"])
def temp_kind(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> bool:
    """Both ways ``atomic_write`` stages a file: an unnamed O_TMPFILE, or a hidden named temp."""
    if not request.param:
        monkeypatch.setattr(_fs, "tmpfile_supported", lambda directory: False)
    return bool(request.param)


def _fill_after(monkeypatch: pytest.MonkeyPatch, budget: int) -> None:
    real = os.fdopen

    def fdopen(fd: int, *args: Any, **kwargs: Any) -> Any:
        return _FullDisk(real(fd, *args, **kwargs), budget)

    monkeypatch.setattr(os, "fdopen", fdopen)


@pytest.mark.parametrize("budget", [0, 100, 300_000])
def test_enospc_during_save_keeps_the_old_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, temp_kind: bool, budget: int
) -> None:
    """ENOSPC at the first byte, inside the header, and inside the chunks."""
    path = tmp_path / "ckpt.sealed"
    sealedckpt.save({"v": 1, "w": torch.ones(4)}, path, key=KEY)
    before = path.read_bytes()
    _fill_after(monkeypatch, budget)
    with pytest.raises(OSError) as info:
        sealedckpt.save({"v": 2, "w": torch.zeros(200_000)}, path, key=KEY)
    monkeypatch.undo()
    assert info.value.errno == errno.ENOSPC
    assert not isinstance(info.value, sealedckpt.SealedCkptError)
    assert path.read_bytes() == before
    assert _entries(tmp_path) == ["ckpt.sealed"]
    out = sealedckpt.load(path, key=KEY)
    assert out["v"] == 1 and torch.equal(out["w"], torch.ones(4))


def test_enospc_on_fsync_keeps_the_old_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, temp_kind: bool) -> None:
    """Delayed allocation: every write succeeds, the fsync before the rename reports ENOSPC."""
    path = tmp_path / "ckpt.sealed"
    sealedckpt.save({"v": 1}, path, key=KEY)
    before = path.read_bytes()

    def fsync(fd: int) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "fsync", fsync)
    with pytest.raises(OSError) as info:
        sealedckpt.save({"v": 2}, path, key=KEY)
    monkeypatch.undo()
    assert info.value.errno == errno.ENOSPC
    assert path.read_bytes() == before and _entries(tmp_path) == ["ckpt.sealed"]
    assert sealedckpt.load(path, key=KEY) == {"v": 1}


def test_enospc_during_sign_keeps_the_file_verifiable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``sign`` rewrites the file in place through the same staging: a full disk changes nothing."""
    first, second = sealedckpt.SigningKey(bytes([1]) * 32), sealedckpt.SigningKey(bytes([2]) * 32)
    path = tmp_path / "ckpt.sealed"
    sealedckpt.save({"v": 1}, path, key=KEY, sign_with=first)
    before = path.read_bytes()
    _fill_after(monkeypatch, 50)
    with pytest.raises(OSError) as info:
        sealedckpt.sign(path, second)
    monkeypatch.undo()
    assert info.value.errno == errno.ENOSPC
    assert path.read_bytes() == before and _entries(tmp_path) == ["ckpt.sealed"]
    res = sealedckpt.verify(path, trusted_signers=first.public)
    assert [s.public_key.to_bytes() for s in res.signers] == [first.public.to_bytes()]


@pytest.fixture
def small_tmpfs(tmp_path: Path) -> Iterator[Path]:
    """A 1 MiB tmpfs mounted under ``tmp_path`` (skipped where mounting is not permitted)."""
    mnt = tmp_path / "tmpfs"
    mnt.mkdir()
    if sys.platform != "linux" or shutil.which("mount") is None:
        pytest.skip("needs Linux mount(8)")
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=1m,mode=0700", "tmpfs", str(mnt)], capture_output=True, text=True
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip() or done.returncode}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False, capture_output=True)


def test_real_full_tmpfs(small_tmpfs: Path) -> None:
    """A save larger than the filesystem: ENOSPC, old file intact, space given back (a small save works)."""
    path = small_tmpfs / "ckpt.sealed"
    sealedckpt.save({"v": 1, "w": torch.ones(1000)}, path, key=KEY)
    before = path.read_bytes()
    with pytest.raises(OSError) as info:
        sealedckpt.save({"v": 2, "w": torch.randn(400_000)}, path, key=KEY)  # 1.6 MB > 1 MiB
    assert info.value.errno == errno.ENOSPC
    assert path.read_bytes() == before and _entries(small_tmpfs) == ["ckpt.sealed"]
    assert sealedckpt.load(path, key=KEY)["v"] == 1
    sealedckpt.save({"v": 3, "w": torch.ones(1000)}, path, key=KEY)  # the failed temp freed its blocks
    assert sealedckpt.load(path, key=KEY)["v"] == 3


# --- several processes -----------------------------------------------------------------------

_PRELUDE = """
import os, sys, time, torch, sealedckpt
from sealedckpt import _fs
KEY = sealedckpt.SymmetricKey(bytes(range(32)))
if os.environ.get("FAULT_NAMED_TEMP") == "1":
    _fs.tmpfile_supported = lambda directory: False
def version(v, n=20_000):
    # every tensor carries v, so a file mixing two versions is detected
    return {"version": v, "a": torch.full((n,), float(v)), "b": {"c": torch.full((7, 3), v, dtype=torch.int64)},
            "tag": str(v)}
"""


def _spawn(tmp_path: Path, body: str, *args: str, named_temp: bool = False) -> subprocess.Popen[str]:
    script = tmp_path / "child.py"
    if not script.exists():
        script.write_text(textwrap.dedent(_PRELUDE) + textwrap.dedent(body))
    env = dict(os.environ, FAULT_NAMED_TEMP="1" if named_temp else "0")
    return subprocess.Popen([sys.executable, str(script), *args], stdout=subprocess.PIPE, text=True, env=env)


def _check_version(out: Any) -> int:
    """The version a loaded checkpoint holds, after checking that every part agrees on it."""
    v = out["version"]
    assert isinstance(v, int)
    assert out["tag"] == str(v)
    assert out["a"].shape == (20_000,) and bool((out["a"] == float(v)).all())
    assert out["b"]["c"].shape == (7, 3) and bool((out["b"]["c"] == v).all())
    return v


@pytest.mark.parametrize("named_temp", [False, True], ids=["o_tmpfile", "named_temp"])
def test_concurrent_savers_leave_one_complete_file(tmp_path: Path, named_temp: bool) -> None:
    """4 processes x 6 saves of distinct versions to one path, started together."""
    work = tmp_path / "out"
    work.mkdir()
    path = work / "ckpt.sealed"
    go = tmp_path / "go"
    body = """
    writer, path, go = int(sys.argv[1]), sys.argv[2], sys.argv[3]
    print("ready", flush=True)
    while not os.path.exists(go):
        time.sleep(0.005)
    for i in range(6):
        sealedckpt.save(version(writer * 100 + i), path, key=KEY)
    print("done", flush=True)
    """
    procs = [_spawn(tmp_path, body, str(w), str(path), str(go), named_temp=named_temp) for w in range(4)]
    for p in procs:
        assert p.stdout is not None and p.stdout.readline().strip() == "ready"
    go.touch()
    for p in procs:
        out, _ = p.communicate(timeout=120)
        assert p.returncode == 0 and out.strip() == "done"
    assert _entries(work) == ["ckpt.sealed"]
    v = _check_version(sealedckpt.load(path, key=KEY))
    assert v // 100 in range(4) and v % 100 in range(6)


@pytest.mark.parametrize("named_temp", [False, True], ids=["o_tmpfile", "named_temp"])
def test_load_while_the_file_is_replaced_sees_one_version(tmp_path: Path, named_temp: bool) -> None:
    """A writer process saves version after version to the path while this process loads it
    (eagerly, and lazily tensor by tensor): each load is one complete version, or a SealedCkptError."""
    path = tmp_path / "ckpt.sealed"
    sealedckpt.save(
        {"version": 0, "a": torch.zeros(20_000), "b": {"c": torch.zeros(7, 3, dtype=torch.int64)}, "tag": "0"},
        path,
        key=KEY,
    )
    stop = tmp_path / "stop"
    body = """
    path, stop = sys.argv[1], sys.argv[2]
    print("ready", flush=True)
    v = 1
    while not os.path.exists(stop):
        sealedckpt.save(version(v), path, key=KEY)
        v += 1
    print(v, flush=True)
    """
    writer = _spawn(tmp_path, body, str(path), str(stop), named_temp=named_temp)
    assert writer.stdout is not None and writer.stdout.readline().strip() == "ready"
    seen: set[int] = set()
    refused = 0
    loads = 0
    t_end = time.monotonic() + 30
    try:
        while time.monotonic() < t_end and (len(seen) < 8 or loads < 40):
            loads += 1
            try:
                seen.add(_check_version(sealedckpt.load(path, key=KEY)))
                with sealedckpt.open(path, key=KEY) as f:  # lazy: pieces read at different times
                    names = set(f.keys())
                    a = f.get_tensor("a") if "a" in names else None
                    time.sleep(0.002)
                    c = f.get_tensor("b.c") if "b.c" in names else None
                if a is not None and c is not None:
                    assert bool((a == a[0]).all()) and bool((c == int(a[0].item())).all())
            except sealedckpt.SealedCkptError:
                refused += 1
    finally:
        stop.touch()
        out, _ = writer.communicate(timeout=60)
    assert writer.returncode == 0
    written = int(out.strip())
    assert len(seen) >= 2, f"the writer never replaced the file during {loads} loads"
    assert seen <= set(range(written)) | {0}
    assert refused == 0, f"{refused} of {loads} loads refused a file that was only ever replaced atomically"
    assert _entries(tmp_path) == sorted(["ckpt.sealed", "child.py", "stop"])

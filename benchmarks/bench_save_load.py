"""Save/load benchmark: sealedckpt against torch.save/torch.load, safetensors and tensorizer.

One command runs every method on the same data sets and prints, per data set and method,
the median time of N runs, GB/s (logical tensor bytes / time, GB = 1e9 B), the peak RSS
growth measured in fresh processes, and sealedckpt's speed ratio to each peer
(ratio = peer_time / sealed_time, so 1.8x means sealedckpt is 1.8 times as fast).

    .venv/bin/python benchmarks/bench_save_load.py                # fp32, bf16, small; warm+fresh
    .venv/bin/python benchmarks/bench_save_load.py --quick        # smoke run (~40-70 s)
    .venv/bin/python benchmarks/bench_save_load.py --sets fp32 --mode fresh --json out.json
    .venv/bin/python benchmarks/bench_save_load.py --scaling 0.1,1,4   # sealed save/load vs size

A method is one small function registered in ``build_methods``: a save is
``(state_dict, path) -> None`` and a load is ``(path) -> loaded object``; adding a peer
is one function plus one ``Method(...)`` line. tensorizer (optional: skipped, with the
reason printed, when it cannot be imported) is timed plain and encrypted.

Besides the full loads, each large set (fp32, bf16) times a lazy read: sealedckpt.open(...)
then get_tensor() of the one tensor closest to 4 MiB, with the bytes it reads from the file.
--scaling replaces the per-set tables with sealed.save / sealed.load / the readinto bound on
fp32 sets of several sizes, to check that GB/s does not depend on the size.

Settings:
  warm   all runs in this process; the file is read once (untimed) first so the page
         cache is warm, and each method runs once untimed before its timed runs (so each
         starts from its own freed memory, not the previous method's); results are dropped
         and gc.collect() runs between runs.
  fresh  each timed run in a new interpreter (same sys.executable) which imports torch,
         safetensors, numpy and sealedckpt and prepares its input before the clock
         starts, then times only the operation and reports its peak RSS growth:
         VmHWM after the operation minus VmRSS just before it (the high-water mark is
         reset through /proc/self/clear_refs when the kernel allows it). For loads the
         baseline is the RSS after imports; for saves it also includes the input
         state_dict, read from a raw dump without any overshoot.
         Every fresh run costs ~1.3 s of `import torch` on top, so --quick does
         1 fresh run per method (--fresh-runs overrides).
Peak RSS comes only from fresh runs; "RSS/ckpt" divides it by the size of the file
the method reads (loads) or writes (saves).
"""

from __future__ import annotations

import argparse
import base64
import gc
import importlib
import importlib.util
import io
import json
import os
import pickle
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import cryptography
import numpy as np
import safetensors
import safetensors.torch
import torch

REPO = Path(__file__).resolve().parents[1]
SEED = 20240611
CHILD_MARKER = "BENCH_CHILD_RESULT "
SEALED_SUFFIX = ".sealed"
# Peak RSS targets (issue 5): load <= 1.1x checkpoint + 64 MiB; save <= checkpoint + 128 MiB.
RSS_TARGETS = {"load": (1.1, 64 << 20), "save": (1.0, 128 << 20)}

StateDict = dict[str, torch.Tensor]
SaveFn = Callable[[StateDict, Path], None]
LoadFn = Callable[[Path], object]


# --------------------------------------------------------------------------- sealedckpt


def attempt(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> tuple[Any, str]:
    """Call fn; return (result, "") or (None, "Type: message") whatever it raises.

    sealedckpt is being written while this benchmark runs against it, and any method may
    fail in any way: one failing method is reported, never allowed to stop the others.
    """
    try:
        return fn(*args, **kwargs), ""
    except Exception as exc:
        return None, f"{type(exc).__name__}: {exc}"[:500]


def import_sealed() -> tuple[ModuleType | None, str]:
    """Import sealedckpt, falling back to <repo>/src; return (module or None, note)."""
    if importlib.util.find_spec("sealedckpt") is None:
        sys.path.insert(0, str(REPO / "src"))
    mod, error = attempt(importlib.import_module, "sealedckpt")
    if mod is None:  # not written yet, or half-written: that must not stop the peers
        return None, error
    missing = [a for a in ("save", "load", "SymmetricKey", "SigningKey") if not hasattr(mod, a)]
    if missing:
        where = mod.__file__ or ", ".join(getattr(mod, "__path__", [])) or "?"
        return None, f"sealedckpt at {where} is incomplete: no {', '.join(missing)}"
    return mod, f"sealedckpt {getattr(mod, '__version__', '?')} from {mod.__file__}"


SEALED, SEALED_NOTE = import_sealed()


def import_tensorizer() -> tuple[ModuleType | None, str]:
    """Import tensorizer (an optional peer); return (module or None, note).

    Not imported at module level: it costs ~0.2 s, which every fresh child would pay.
    """
    mod, error = attempt(importlib.import_module, "tensorizer")
    if mod is None:
        return None, error
    return mod, f"tensorizer {getattr(mod, '__version__', '?')}"


def write_secret(path: Path, data: bytes) -> Path:
    """Write data to a new 0600 file (keys for child processes)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    return path


@dataclass
class Keys:
    """The symmetric key and signing key every sealed method in one run uses."""

    key: Any
    signer: Any


# Fresh-process runs must load files sealed by this process, so the keys have to reach
# the child. sealedckpt's key export API may not be settled yet: try the usual method
# names, verify each candidate by a real save/load round trip, and fall back to pickle
# (our own keys, in a 0600 file in our own temp dir). Replace with the real API later.
_EXPORTERS: list[tuple[str, Callable[[Any], object]]] = [
    ("to_bytes", lambda k: k.to_bytes()),
    ("bytes", lambda k: bytes(k)),
    ("export", lambda k: k.export()),
    ("to_str", lambda k: k.to_str()),
    ("encode", lambda k: k.encode()),
    ("serialize", lambda k: k.serialize()),
]
_IMPORTERS = ["from_bytes", "from_str", "load", "loads", "import_", "decode", "deserialize", "parse"]


def _import_key(cls: type, how: dict[str, str]) -> Any:
    raw: bytes = base64.b64decode(how["data"])
    if how["via"] == "pickle":
        return pickle.loads(raw)  # our own key, written by this script
    value: bytes | str = raw.decode() if how["type"] == "str" else raw
    if how["importer"] == "__init__":
        return cls(value)
    return getattr(cls, how["importer"])(value)


def _encode(via: str, importer: str, value: object) -> dict[str, str] | None:
    if isinstance(value, str):
        return {"via": via, "importer": importer, "type": "str", "data": base64.b64encode(value.encode()).decode()}
    if isinstance(value, (bytes, bytearray, memoryview)):
        return {"via": via, "importer": importer, "type": "bytes", "data": base64.b64encode(bytes(value)).decode()}
    return None


def _candidates(key: Any) -> Iterator[dict[str, str]]:
    for via, export in _EXPORTERS:
        value, error = attempt(export, key)
        if error:
            continue
        for importer in [*_IMPORTERS, "__init__"]:
            if importer == "__init__" or hasattr(type(key), importer):
                how = _encode(via, importer, value)
                if how is not None:
                    yield how
    pickled, error = attempt(pickle.dumps, key)
    if not error:
        yield {"via": "pickle", "importer": "", "type": "bytes", "data": base64.b64encode(pickled).decode()}


def _tiny_roundtrip(work: Path, save_kw: dict[str, Any], load_kw: dict[str, Any]) -> bool:
    assert SEALED is not None
    path = work / f"keycheck{SEALED_SUFFIX}"
    x = torch.arange(8, dtype=torch.float32)
    _, error = attempt(SEALED.save, {"x": x}, str(path), **save_kw)
    out, error = (None, error) if error else attempt(SEALED.load, str(path), **load_kw)
    path.unlink(missing_ok=True)
    if error or not isinstance(out, dict) or not isinstance(out.get("x"), torch.Tensor):
        return False
    return bool(torch.equal(out["x"], x))


def export_keys(keys: Keys, work: Path) -> tuple[Path | None, str]:
    """Write keys for child processes; return (file or None, how/why-not)."""
    sym_how = sig_how = None
    for how in _candidates(keys.key):
        k2, error = attempt(_import_key, type(keys.key), how)
        if error:
            continue
        if _tiny_roundtrip(work, {"key": keys.key}, {"key": k2}):
            sym_how = how
            break
    for how in _candidates(keys.signer):
        pub, error = attempt(lambda h=how: _import_key(type(keys.signer), h).public)
        if error:
            continue
        if _tiny_roundtrip(
            work, {"key": keys.key, "sign_with": keys.signer}, {"key": keys.key, "trusted_signers": [pub]}
        ):
            sig_how = how
            break
    if sym_how is None or sig_how is None:
        return None, "could not pass keys to a child process (no export API that round-trips)"
    path = work / "keys.json"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump({"key": sym_how, "signer": sig_how}, f)
    return path, (f"keys passed via {sym_how['via']}/{sym_how['importer']} and {sig_how['via']}/{sig_how['importer']}")


def read_keys(path: Path) -> Keys:
    assert SEALED is not None
    spec = json.loads(path.read_text())
    return Keys(
        key=_import_key(SEALED.SymmetricKey, spec["key"]), signer=_import_key(SEALED.SigningKey, spec["signer"])
    )


# --------------------------------------------------------------------------- methods


@dataclass(frozen=True)
class Method:
    name: str
    op: str  # "save" or "load"
    fn: Callable[..., object]  # save: (state_dict, path) -> None; load: (path) -> object
    suffix: str = ""  # saves: file suffix
    reads: str = ""  # loads: name of the save method whose file is read
    sealed: bool = False  # a sealedckpt method (ratios are computed for these)
    bound: bool = False  # the physical bound (a yardstick, not a peer that loads tensors)


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def save_torch(sd: StateDict, path: Path) -> None:
    torch.save(sd, path)
    _fsync(path)


def save_safetensors(sd: StateDict, path: Path) -> None:
    safetensors.torch.save_file(sd, str(path))
    _fsync(path)


def load_torch(path: Path) -> object:
    return torch.load(path, weights_only=True)


def load_safetensors(path: Path) -> object:
    mapped = safetensors.torch.load_file(str(path))
    out = {name: t.clone() for name, t in mapped.items()}  # private memory, not the mmap
    del mapped
    return out


def load_readinto(path: Path) -> object:
    """Physical bound: read the whole file into freshly allocated memory."""
    with open(path, "rb", buffering=0) as f:
        n = os.fstat(f.fileno()).st_size
        buf = torch.empty(n, dtype=torch.uint8).numpy()
        view = buf.data
        got = 0
        while got < n:
            r = f.readinto(view[got:])
            if not r:
                raise EOFError(f"{path}: short read at {got} of {n}")
            got += r
    return buf


def tensorizer_methods(tz: ModuleType, tz_key: bytes | None) -> tuple[list[Method], list[Method]]:
    """tensorizer saves and loads, plain and (with tz_key) encrypted.

    Loads use tensorizer's defaults for a CPU target: lazy_load=False (every tensor is read
    in the constructor, each into its own freshly allocated buffer, no mmap), num_readers
    chosen by tensorizer, verify_hash=False (plaid_mode has no effect in 2.x). Encrypted
    files are authenticated chunk by chunk (libsodium) whatever verify_hash says.
    """

    def tz_save(sd: StateDict, path: Path, encryption: Any = None) -> None:
        ser = tz.TensorSerializer(str(path), encryption=encryption)
        try:
            ser.write_state_dict(sd)
        finally:
            attempt(ser.close)  # after a failure: release its file and threads, keep the first error
        _fsync(path)

    def tz_load(path: Path, encryption: Any = None) -> object:
        d = tz.TensorDeserializer(str(path), device="cpu", encryption=encryption)
        try:
            return dict(d.items())  # a plain dict; with lazy_load=True this is what reads
        finally:
            d.close()

    saves = [Method("tensorizer.save", "save", tz_save, suffix=".tensors")]
    loads = [Method("tensorizer.load", "load", tz_load, reads="tensorizer.save")]
    if tz_key is not None:
        key = tz_key
        saves.append(
            Method(
                "tensorizer.save+enc",
                "save",
                lambda sd, path: tz_save(sd, path, tz.EncryptionParams(key)),
                suffix=".enc.tensors",
            )
        )
        loads.append(
            Method(
                "tensorizer.load+dec",
                "load",
                lambda path: tz_load(path, tz.DecryptionParams.from_key(key)),
                reads="tensorizer.save+enc",
            )
        )
    return saves, loads


def build_methods(keys: Keys | None, tz: ModuleType | None = None, tz_key: bytes | None = None) -> list[Method]:
    """Every method, saves first; sealed ones only when sealedckpt and keys are present,
    tensorizer ones only when tz (the imported module) is given."""
    tz_saves, tz_loads = tensorizer_methods(tz, tz_key) if tz is not None else ([], [])
    methods = [
        Method("torch.save", "save", save_torch, suffix=".pt"),
        Method("safetensors.save_file", "save", save_safetensors, suffix=".safetensors"),
        *tz_saves,
    ]
    if SEALED is not None and keys is not None:
        sealed = SEALED

        def save_sealed(sd: StateDict, path: Path) -> None:
            sealed.save(sd, str(path), key=keys.key)  # fsyncs itself

        def save_signed(sd: StateDict, path: Path) -> None:
            sealed.save(sd, str(path), key=keys.key, sign_with=keys.signer)

        methods += [
            Method("sealed.save", "save", save_sealed, suffix=SEALED_SUFFIX, sealed=True),
            Method("sealed.save+sign", "save", save_signed, suffix=SEALED_SUFFIX, sealed=True),
        ]
    methods += [
        Method("torch.load", "load", load_torch, reads="torch.save"),
        Method("safetensors.load_file+clone", "load", load_safetensors, reads="safetensors.save_file"),
        *tz_loads,
    ]
    if SEALED is not None and keys is not None:
        sealed = SEALED

        def load_sealed(path: Path) -> object:
            return sealed.load(str(path), key=keys.key)

        def load_verified(path: Path) -> object:
            return sealed.load(str(path), key=keys.key, trusted_signers=[keys.signer.public])

        methods += [
            Method("sealed.load", "load", load_sealed, reads="sealed.save", sealed=True),
            Method("sealed.load+verify", "load", load_verified, reads="sealed.save+sign", sealed=True),
        ]
    bound_reads = "sealed.save" if SEALED is not None and keys is not None else "safetensors.save_file"
    methods.append(Method("readinto (bound)", "load", load_readinto, reads=bound_reads, bound=True))
    return methods


# --------------------------------------------------------------------------- lazy read

LAZY = "sealed.open+get_tensor"
LAZY_TARGET = 0.05  # a lazy read of one ~4 MiB tensor should take < 5% of a full sealed.load
LAZY_BYTES = 4 << 20


class CountingReader(io.RawIOBase):
    """A seekable raw file without fileno(): sealedckpt then reads through readinto(),
    and every byte it takes from the file is counted."""

    def __init__(self, path: Path) -> None:
        super().__init__()
        self._f = open(path, "rb", buffering=0)  # closed by close()
        self.bytes_read = 0
        self.reads = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        return self._f.seek(offset, whence)

    def tell(self) -> int:
        return self._f.tell()

    def readinto(self, b: Any) -> int:
        n = self._f.readinto(b) or 0
        self.bytes_read += n
        self.reads += 1
        return n

    def close(self) -> None:
        if not self.closed:
            self._f.close()
        super().close()


def pick_lazy_tensor(sd: StateDict) -> str:
    """The tensor whose size is closest to 4 MiB; among equals, the middle one in file order."""
    sizes = {name: t.numel() * t.element_size() for name, t in sd.items()}
    best = min(abs(n - LAZY_BYTES) for n in sizes.values())
    ties = [name for name, n in sizes.items() if abs(n - LAZY_BYTES) == best]
    return ties[len(ties) // 2]


def lazy_method(keys: Keys, name: str) -> Method:
    """sealedckpt.open(path) + get_tensor(name): a load that reads one tensor."""
    assert SEALED is not None
    sealed = SEALED

    def lazy_get(path: Path) -> object:
        with sealed.open(str(path), key=keys.key) as f:
            return f.get_tensor(name)

    return Method(LAZY, "lazy", lazy_get, reads="sealed.save", sealed=True)


def lazy_bytes(keys: Keys, path: Path, name: str, expect: torch.Tensor) -> dict[str, int]:
    """Untimed: the same lazy read through a CountingReader; checks the tensor it returns."""
    assert SEALED is not None
    with CountingReader(path) as raw, SEALED.open(raw, key=keys.key) as f:
        t = f.get_tensor(name)
    if not torch.equal(t, expect):
        raise AssertionError(f"lazy read of {name} returned other values than were saved")
    return {"bytes_read": raw.bytes_read, "reads": raw.reads}


def _rchar() -> int:
    """Bytes this process has passed through read() calls (all files), from /proc/self/io."""
    try:
        with open("/proc/self/io") as f:
            for line in f:
                if line.startswith("rchar:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return -1


# --------------------------------------------------------------------------- data sets

HIDDEN, INTER, VOCAB = 1024, 2816, 32000


def llm_shapes(size_gb: float) -> list[tuple[str, tuple[int, ...]]]:
    """Llama-like names and shapes totalling ~size_gb GB in fp32."""
    target = size_gb * 1e9
    vocab = VOCAB if size_gb >= 1.0 else max(256, round(VOCAB * size_gb))
    layer: list[tuple[str, tuple[int, ...]]] = [
        ("input_layernorm.weight", (HIDDEN,)),
        ("self_attn.q_proj.weight", (HIDDEN, HIDDEN)),
        ("self_attn.k_proj.weight", (HIDDEN, HIDDEN)),
        ("self_attn.v_proj.weight", (HIDDEN, HIDDEN)),
        ("self_attn.o_proj.weight", (HIDDEN, HIDDEN)),
        ("post_attention_layernorm.weight", (HIDDEN,)),
        ("mlp.gate_proj.weight", (INTER, HIDDEN)),
        ("mlp.up_proj.weight", (INTER, HIDDEN)),
        ("mlp.down_proj.weight", (HIDDEN, INTER)),
    ]
    per_layer = 4 * sum(int(np.prod(s)) for _, s in layer)
    fixed = 4 * (vocab * HIDDEN + HIDDEN)
    n_layers = max(1, round((target - fixed) / per_layer))
    shapes: list[tuple[str, tuple[int, ...]]] = [("model.embed_tokens.weight", (vocab, HIDDEN))]
    for i in range(n_layers):
        shapes += [(f"model.layers.{i}.{name}", shape) for name, shape in layer]
    shapes.append(("model.norm.weight", (HIDDEN,)))
    return shapes


def build_llm(size_gb: float, dtype: torch.dtype) -> StateDict:
    g = torch.Generator().manual_seed(SEED)
    sd: StateDict = {}
    for name, shape in llm_shapes(size_gb):
        t = torch.randn(shape, generator=g).mul_(0.02)
        sd[name] = t if dtype == torch.float32 else t.to(dtype)
        del t
    return sd


def build_small(n: int) -> StateDict:
    g = torch.Generator().manual_seed(SEED + 1)
    sizes = torch.randint(64, 513, (n,), generator=g).tolist()
    return {f"model.small.{i}.weight": torch.randn(int(s), generator=g) for i, s in enumerate(sizes)}


def build_dataset(name: str, args: argparse.Namespace) -> StateDict:
    if name == "fp32":
        return build_llm(args.size_gb, torch.float32)
    if name == "bf16":
        return build_llm(args.size_gb, torch.bfloat16)
    if name == "small":
        return build_small(args.small_n)
    raise ValueError(f"unknown data set {name!r}")


def _as_bytes(t: torch.Tensor) -> np.ndarray:
    return t.contiguous().reshape(-1).view(torch.uint8).numpy()


def write_raw(sd: StateDict, path: Path) -> None:
    """Dump tensors as one blob plus an index, for fresh save runs to read back exactly."""
    index = []
    offset = 0
    with open(path, "wb") as f:
        for name, t in sd.items():
            n = t.numel() * t.element_size()
            index.append([name, str(t.dtype).removeprefix("torch."), list(t.shape), offset, n])
            f.write(_as_bytes(t).data)
            offset += n
    path.with_suffix(".index.json").write_text(json.dumps(index))


def read_raw(path: Path) -> StateDict:
    index = json.loads(path.with_suffix(".index.json").read_text())
    sd: StateDict = {}
    with open(path, "rb", buffering=0) as f:
        for name, dtype, shape, _offset, n in index:
            buf = torch.empty(n, dtype=torch.uint8)
            view = buf.numpy().data
            got = 0
            while got < n:
                r = f.readinto(view[got:])
                if not r:
                    raise EOFError(f"{path}: short read for {name}")
                got += r
            sd[name] = buf.view(getattr(torch, dtype)).reshape(shape)
    return sd


# --------------------------------------------------------------------------- measuring


@dataclass
class Result:
    dataset: str
    method: str
    op: str
    mode: str  # "warm" or "fresh"
    times_s: list[float] = field(default_factory=list)
    peak_rss_growth: list[int] = field(default_factory=list)  # bytes, fresh only
    child: list[dict[str, Any]] = field(default_factory=list)  # raw child reports
    error: str | None = None

    @property
    def median(self) -> float | None:
        return statistics.median(self.times_s) if self.times_s and not self.error else None

    @property
    def peak_rss(self) -> int | None:
        return max(self.peak_rss_growth) if self.peak_rss_growth and not self.error else None


def _status_kb(field_name: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field_name + ":"):
                return int(line.split()[1])
    raise KeyError(field_name)


def _reset_hwm() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _warm_read(path: Path) -> None:
    buf = bytearray(8 << 20)
    with open(path, "rb", buffering=0) as f:
        while f.readinto(buf):
            pass


def _unlink(path: Path) -> None:
    path.unlink(missing_ok=True)


def run_warm(m: Method, ds: str, sd: StateDict, files: dict[str, Path], runs: int) -> Result:
    res = Result(ds, m.name, m.op, "warm")
    path = files[m.name] if m.op == "save" else files[m.reads]

    def one_run() -> float:
        if m.op == "save":
            _unlink(path)
        gc.collect()
        t0 = time.perf_counter()
        out = m.fn(sd, path) if m.op == "save" else m.fn(path)
        dt = time.perf_counter() - t0
        del out
        gc.collect()
        return dt

    if m.op != "save":
        _warm_read(path)  # untimed: the page cache holds the file
    # One untimed run first, so that every method's timed runs start from the same state: its own
    # earlier run's memory freed to the allocator (which may hand it out again without page faults)
    # rather than whatever the method before it left behind.
    for i in range(runs + 1):
        dt, res.error = attempt(one_run)
        if res.error:
            break
        if i:
            res.times_s.append(dt)
    res.error = res.error or None
    return res


def run_fresh(
    m: Method,
    ds: str,
    files: dict[str, Path],
    raw: Path | None,
    keys_file: Path | None,
    runs: int,
    timeout: float,
    extra: dict[str, str | None] | None = None,
) -> Result:
    """extra: more for the child's spec ("tz_key": 0600 key file, "tensor": a lazy read's name)."""
    res = Result(ds, m.name, m.op, "fresh")
    path = files[m.name] if m.op == "save" else files[m.reads]
    spec = {
        "method": m.name,
        "path": str(path),
        "raw": str(raw) if raw else None,
        "keys": str(keys_file) if keys_file else None,
        **(extra or {}),
    }
    if m.op != "save":
        _warm_read(path)
    for _ in range(runs):
        if m.op == "save":
            _unlink(path)
        try:
            proc = subprocess.run(
                [sys.executable, str(Path(__file__).resolve()), "--child", json.dumps(spec)],
                capture_output=True,
                text=True,
                timeout=timeout,
                check=False,
            )
        except subprocess.TimeoutExpired:
            res.error = f"child timed out after {timeout:.0f} s"
            return res
        lines = [ln for ln in proc.stdout.splitlines() if ln.startswith(CHILD_MARKER)]
        if proc.returncode != 0 or not lines:
            tail = (proc.stderr.strip().splitlines() or ["(no stderr)"])[-1]
            res.error = f"child exit {proc.returncode}: {tail}"[:500]
            return res
        rep = json.loads(lines[-1][len(CHILD_MARKER) :])
        if rep.get("error"):
            res.error = rep["error"]
            return res
        res.child.append(rep)
        res.times_s.append(rep["time_s"])
        res.peak_rss_growth.append(rep["peak_rss_growth"])
    return res


def child_main(spec_json: str) -> int:
    """One fresh-process run: prepare, time one operation, report time and peak RSS."""
    spec = json.loads(spec_json)
    keys = read_keys(Path(spec["keys"])) if spec["keys"] else None
    if SEALED is not None:  # modules sealedckpt imports on first use, as torch's are imported with torch
        lazy_modules = ("sealedckpt.payload.codec", "sealedckpt.payload.lazy",
                        "sealedckpt.stores.trust", "sealedckpt.stores.audit")  # fmt: skip
        for name in lazy_modules:
            importlib.import_module(name)
    if spec["method"] == LAZY:
        assert keys is not None
        m = lazy_method(keys, spec["tensor"])
    else:
        tz = import_tensorizer()[0] if spec["method"].startswith("tensorizer") else None
        tz_key = Path(spec["tz_key"]).read_bytes() if spec.get("tz_key") else None
        methods = {m.name: m for m in build_methods(keys, tz, tz_key)}
        m = methods[spec["method"]]
    path = Path(spec["path"])
    sd = read_raw(Path(spec["raw"])) if m.op == "save" else None
    gc.collect()
    rss_before = _status_kb("VmRSS") * 1024
    maxrss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    hwm_reset = _reset_hwm()
    args = (sd, path) if m.op == "save" else (path,)
    rchar0 = _rchar()
    t0 = time.perf_counter()
    out, error = attempt(m.fn, *args)
    dt = time.perf_counter() - t0
    rchar1 = _rchar()
    hwm = _status_kb("VmHWM") * 1024
    maxrss_after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    del out
    report = {
        "time_s": dt,
        "rss_before": rss_before,
        "vm_hwm": hwm,
        "hwm_reset": hwm_reset,
        "peak_rss_growth": hwm - rss_before,
        "ru_maxrss_before": maxrss_before,
        "ru_maxrss_after": maxrss_after,
        "rchar": rchar1 - rchar0 if rchar0 >= 0 and rchar1 >= 0 else None,
        "error": error or None,
    }
    print(CHILD_MARKER + json.dumps(report), flush=True)
    return 0


# --------------------------------------------------------------------------- reporting


def machine_facts(work: Path, tz_note: str = "") -> dict[str, Any]:
    def read(path: str) -> str:
        try:
            return Path(path).read_text()
        except OSError:
            return ""

    mem_kb = next((int(ln.split()[1]) for ln in read("/proc/meminfo").splitlines() if ln.startswith("MemTotal:")), 0)
    cpu = next(
        (ln.split(":", 1)[1].strip() for ln in read("/proc/cpuinfo").splitlines() if ln.startswith("model name")),
        platform.processor(),
    )
    disk = shutil.disk_usage(work)
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "cores_usable": len(os.sched_getaffinity(0)),
        "torch_threads": torch.get_num_threads(),
        "ram_gib": round(mem_kb / 2**20, 1),
        "thp": read("/sys/kernel/mm/transparent_hugepage/enabled").strip(),
        "platform": platform.platform(),
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "safetensors": safetensors.__version__,
        "cryptography": cryptography.__version__,
        "numpy": np.__version__,
        "sealedckpt": SEALED_NOTE if SEALED is not None else f"skipped ({SEALED_NOTE})",
        "tensorizer": tz_note,
        "dir": str(work),
        "dir_free_gib": round(disk.free / 2**30, 1),
    }


def _f(x: float | None, fmt: str) -> str:
    """format(x, fmt), or a '-' of the same width when there is no figure."""
    return format(x, fmt) if x is not None else "-".rjust(int(fmt.split(".")[0]))


def _short_error(error: str) -> str:
    """The first line of an error, cut to fit a table row."""
    line = error.strip().splitlines()[0] if error.strip() else "?"
    return line if len(line) <= 70 else line[:67] + "..."


def print_table(
    ds: str, info: dict[str, Any], results: list[Result], methods: list[Method], out: Any = sys.stdout
) -> list[dict[str, Any]]:
    nbytes: int = info["logical_bytes"]
    sizes: dict[str, int] = info["file_bytes"]
    by = {(r.method, r.mode): r for r in results}
    p = print
    p(
        f"\n== {ds}: {info['tensors']:,} tensors, {nbytes:,} B logical "
        f"({nbytes / 1e9:.3f} GB; GB/s below = logical bytes / median time) ==",
        file=out,
    )
    for name, size in sizes.items():
        p(f"   checkpoint {name:<24} {size:>15,} B", file=out)
    head = (
        f"{'op':<5} {'method':<28} {'warm s':>9} {'GB/s':>7} {'fresh s':>9} {'GB/s':>7} "
        f"{'peak RSS MiB':>13} {'RSS/ckpt':>9}"
    )
    p(head, file=out)
    p("-" * len(head), file=out)
    for m in methods:
        w, fr = by.get((m.name, "warm")), by.get((m.name, "fresh"))
        ran = [r for r in (w, fr) if r is not None]
        if ran and all(r.error for r in ran):  # no figure at all: say why in the row itself
            short = _short_error(ran[0].error or "")
            p(f"{m.op:<5} {m.name:<28} failed: {short}", file=out)
            for failed in ran:
                if failed.error != short:
                    p(f"      ! {failed.mode}: {failed.error}", file=out)
            continue
        wt = w.median if w else None
        ft = fr.median if fr else None
        rss = fr.peak_rss if fr else None
        ckpt = sizes.get(m.name if m.op == "save" else m.reads)
        p(
            f"{m.op:<5} {m.name:<28} {_f(wt, '9.4f')} {_f(nbytes / wt / 1e9 if wt else None, '7.2f')} "
            f"{_f(ft, '9.4f')} {_f(nbytes / ft / 1e9 if ft else None, '7.2f')} "
            f"{_f(rss / 2**20 if rss is not None else None, '13.1f')} "
            f"{_f(rss / ckpt if rss is not None and ckpt else None, '8.2f')}"
            f"{'x' if rss is not None and ckpt else ''}",
            file=out,
        )
        for r in (w, fr):
            if r is not None and r.error:
                p(f"      ! {r.mode}: {r.error}", file=out)

    ratios: list[dict[str, Any]] = []
    for s in (m for m in methods if m.sealed):
        for peer in (m for m in methods if m.op == s.op and not m.sealed):
            parts = []
            for mode in ("warm", "fresh"):
                sr, pr = by.get((s.name, mode)), by.get((peer.name, mode))
                st = sr.median if sr else None
                pt = pr.median if pr else None
                if st and pt:
                    ratios.append({"sealed": s.name, "peer": peer.name, "mode": mode, "ratio": pt / st})
                    parts.append(f"{pt / st:.2f}x {mode}")
            if parts:
                p(f"   {s.name} / {peer.name} = {', '.join(parts)}", file=out)
    for s in (m for m in methods if m.sealed):
        fr = by.get((s.name, "fresh"))
        rss = fr.peak_rss if fr else None
        ckpt = sizes.get(s.reads if s.op == "load" else s.name)
        if rss is not None and ckpt:
            mult, extra = RSS_TARGETS[s.op]
            limit = mult * ckpt + extra
            ok = "OK" if rss <= limit else "OVER TARGET"
            p(
                f"   target: {s.name} peak RSS {rss / 2**20:,.1f} MiB <= {mult}x checkpoint + {extra >> 20} MiB"
                f" = {limit / 2**20:,.1f} MiB: {ok}",
                file=out,
            )
    out.flush()
    return ratios


def run_lazy(
    ds: str,
    sd: StateDict,
    files: dict[str, Path],
    keys: Keys,
    keys_file: Path | None,
    modes: list[str],
    args: argparse.Namespace,
) -> tuple[dict[str, Any], list[Result]]:
    """Time open + get_tensor of the tensor closest to 4 MiB; count the bytes it reads."""
    name = pick_lazy_tensor(sd)
    t = sd[name]
    path = files["sealed.save"]
    info: dict[str, Any] = {
        "tensor": name,
        "shape": list(t.shape),
        "dtype": str(t.dtype).removeprefix("torch."),
        "tensor_bytes": t.numel() * t.element_size(),
        "file_bytes": path.stat().st_size,
    }
    counted, error = attempt(lazy_bytes, keys, path, name, t)
    info.update(counted or {"bytes_read": None, "reads": None, "count_error": error})
    m = lazy_method(keys, name)
    results: list[Result] = []
    for mode in modes:
        print(f"   {ds} lazy {LAZY} [{mode}] ...", file=sys.stderr, flush=True)
        if mode == "warm":
            results.append(run_warm(m, ds, sd, files, args.runs))
        elif keys_file is None:
            results.append(Result(ds, m.name, m.op, mode, error="keys cannot reach a child"))
        else:
            extra: dict[str, str | None] = {"tensor": name}
            results.append(run_fresh(m, ds, files, None, keys_file, args.fresh_runs, args.child_timeout, extra))
        gc.collect()
    return info, results


def print_lazy(info: dict[str, Any], lazy: list[Result], results: list[Result], out: Any = sys.stdout) -> None:
    """The lazy-read lines under a set's table; adds the ratios to sealed.load to info."""
    p = print
    full = {r.mode: r.median for r in results if r.method == "sealed.load"}
    p(f"   -- lazy read: {LAZY}, one tensor (target < {LAZY_TARGET:.0%} of sealed.load) --", file=out)
    p(f"   tensor       {info['tensor']} {info['shape']} {info['dtype']}, {info['tensor_bytes']:,} B", file=out)
    info["ratio_to_load"] = {}
    for r in lazy:
        if r.error or r.median is None:
            p(f"   {r.mode:<12} failed: {_short_error(r.error or 'no figure')}", file=out)
            continue
        line = f"   {r.mode:<12} {r.median * 1e3:9.2f} ms"
        t_full = full.get(r.mode)
        if t_full:
            ratio = r.median / t_full
            info["ratio_to_load"][r.mode] = ratio
            ok = "OK" if ratio < LAZY_TARGET else "OVER TARGET"
            line += f" = {ratio:.2%} of sealed.load ({t_full:.4f} s): {ok}"
        else:
            line += " (no sealed.load time to compare with)"
        rchar = [int(c["rchar"]) for c in r.child if c.get("rchar") is not None]
        if rchar:
            line += f"; rchar {statistics.median(rchar):,.0f} B"
        p(line, file=out)
    if info.get("bytes_read") is not None:
        n, size = info["bytes_read"], info["file_bytes"]
        p(
            f"   bytes read   {n:,} B in {info['reads']} reads = {n / info['tensor_bytes']:.2f}x the tensor, "
            f"{n / size:.2%} of the {size:,} B file",
            file=out,
        )
    else:
        p(f"   bytes read   failed: {_short_error(info.get('count_error') or '?')}", file=out)
    out.flush()


SCALING_METHODS = ("sealed.save", "sealed.load", "readinto (bound)")
SCALING_TARGET = 1.2  # GB/s at the largest and smallest size should be within this factor


def _mem_available() -> int:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return -1


def run_scaling(
    sizes: list[float], args: argparse.Namespace, keys: Keys, keys_file: Path | None, work: Path, modes: list[str]
) -> dict[str, Any]:
    """sealed.save, sealed.load and the readinto bound on fp32 LLM-like sets of each size.

    Memory: the set is dropped once the warm saves are done (fresh saves read the raw dump
    in the child), so at most the set, or one loaded copy, plus the set, is alive at once.
    """
    methods = [m for m in build_methods(keys) if m.name in SCALING_METHODS]
    rows: list[dict[str, Any]] = []
    for size in sizes:
        shapes = llm_shapes(size)
        nbytes = 4 * sum(int(np.prod(s)) for _, s in shapes)
        row: dict[str, Any] = {"size_gb": size, "tensors": len(shapes), "logical_bytes": nbytes}
        rows.append(row)
        copies = 2 if "fresh" in modes else 1  # the sealed file, plus the raw dump fresh saves read
        need_disk = copies * nbytes + (256 << 20)
        free = shutil.disk_usage(work).free
        need_ram, avail = 2 * nbytes + (1 << 30), _mem_available()
        if free < need_disk:
            row["skipped"] = f"needs {need_disk / 1e9:.1f} GB free in {work}, has {free / 1e9:.1f} GB"
        elif 0 <= avail < need_ram:
            row["skipped"] = f"needs {need_ram / 1e9:.1f} GB available memory, has {avail / 1e9:.1f} GB"
        if "skipped" in row:
            print(f"!! scaling {size} GB skipped: {row['skipped']}", flush=True)
            continue
        t0 = time.perf_counter()
        sd: StateDict | None = build_llm(size, torch.float32)
        print(f"\n-- scaling {size} GB: built {len(shapes)} tensors, {nbytes:,} B in {time.perf_counter() - t0:.1f} s",
              file=sys.stderr, flush=True)  # fmt: skip
        raw: Path | None = None
        if "fresh" in modes:
            raw = work / f"scale-{size}.raw"
            write_raw(sd or {}, raw)
        files = {"sealed.save": work / f"scale-{size}{SEALED_SUFFIX}"}
        results: list[Result] = []
        for m in methods:
            for mode in modes:
                if m.op == "load" and not files[m.reads].exists():
                    results.append(Result(f"{size}", m.name, m.op, mode, error=f"no {m.reads} file to read"))
                    continue
                if sd is not None and (m.op == "load" or mode == "fresh"):
                    sd = None  # the warm saves are done; nothing else needs the set in this process
                    gc.collect()
                print(f"   scaling {size} GB {m.op} {m.name} [{mode}] ...", file=sys.stderr, flush=True)
                if mode == "warm":
                    r = run_warm(m, f"{size}", sd or {}, files, args.runs)
                elif keys_file is None:
                    r = Result(f"{size}", m.name, m.op, mode, error="keys cannot reach a child")
                else:
                    r = run_fresh(m, f"{size}", files, raw, keys_file, args.fresh_runs, args.child_timeout)
                results.append(r)
                gc.collect()
            if m.op == "save" and files[m.name].exists():
                row["file_bytes"] = files[m.name].stat().st_size
        row["results"] = [asdict(r) | {"median_s": r.median, "peak_rss_bytes": r.peak_rss} for r in results]
        row["gbps"] = {f"{r.method} {r.mode}": nbytes / r.median / 1e9 for r in results if r.median}
        del sd
        gc.collect()
        for path in [*files.values(), *([raw, raw.with_suffix(".index.json")] if raw else [])]:
            _unlink(path)
    return {"sizes": rows, "spread": print_scaling(rows, methods, modes)}


def print_scaling(
    rows: list[dict[str, Any]], methods: list[Method], modes: list[str], out: Any = sys.stdout
) -> list[dict[str, Any]]:
    p = print
    p("\n== scaling: fp32 LLM-like sets; GB/s = logical bytes / median time ==", file=out)
    head = f"{'size GB':>8} {'tensors':>8} {'logical B':>15}  {'op':<5} {'method':<20} "
    head += " ".join(f"{mode + ' s':>9} {'GB/s':>7}" for mode in modes)
    p(head, file=out)
    p("-" * len(head), file=out)
    for row in rows:
        lead = f"{row['size_gb']:>8g} {row['tensors']:>8,} {row['logical_bytes']:>15,}"
        if "skipped" in row:
            p(f"{lead}  skipped: {row['skipped']}", file=out)
            continue
        by = {(r["method"], r["mode"]): r for r in row["results"]}
        for m in methods:
            cells = []
            for mode in modes:
                r = by.get((m.name, mode))
                t = r["median_s"] if r else None
                cells.append(f"{_f(t, '9.4f')} {_f(row['logical_bytes'] / t / 1e9 if t else None, '7.2f')}")
            p(f"{lead}  {m.op:<5} {m.name:<20} {' '.join(cells)}", file=out)
            for mode in modes:
                r = by.get((m.name, mode))
                if r and r["error"]:
                    p(f"      ! {mode}: {r['error']}", file=out)
            lead = " " * len(lead)
    spread = []
    for m in methods:
        for mode in modes:
            gbps = {row["size_gb"]: row["gbps"][k] for row in rows if (k := f"{m.name} {mode}") in row.get("gbps", {})}
            if len(gbps) < 2:
                continue
            hi, lo = max(gbps.values()), min(gbps.values())
            at_hi, at_lo = max(gbps, key=gbps.__getitem__), min(gbps, key=gbps.__getitem__)
            ok = "OK" if hi / lo <= SCALING_TARGET else "OVER TARGET"
            spread.append({"method": m.name, "mode": mode, "max_gbps": hi, "min_gbps": lo, "ratio": hi / lo})
            p(
                f"   {m.name} [{mode}]: max/min GB/s across sizes = {hi / lo:.2f}x "
                f"({hi:.2f} at {at_hi:g} GB, {lo:.2f} at {at_lo:g} GB; target within {SCALING_TARGET}x): {ok}",
                file=out,
            )
    out.flush()
    return spread


# --------------------------------------------------------------------------- main


def parse_args(argv: list[str]) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    ap.add_argument("--runs", type=int, default=None, help="timed runs per method (default 5)")
    ap.add_argument(
        "--fresh-runs", type=int, default=None, help="fresh-process runs per method (default --runs; 1 with --quick)"
    )
    ap.add_argument("--size-gb", type=float, default=None, help="fp32 set size (default 1.0)")
    ap.add_argument("--small-n", type=int, default=None, help="tensors in 'small' (20000)")
    ap.add_argument("--sets", default="fp32,bf16,small", help="comma list of fp32,bf16,small")
    ap.add_argument("--mode", choices=("warm", "fresh", "both"), default="both")
    ap.add_argument("--methods", default="", help="comma list: run only these methods")
    ap.add_argument("--dir", default=None, help="where the temp dir goes (default /tmp)")
    ap.add_argument("--json", default=None, metavar="OUT", help="write all raw figures here")
    ap.add_argument(
        "--scaling",
        default="",
        metavar="GB,GB",
        help="instead of the per-set tables: sealed.save/sealed.load/readinto on fp32 sets of these sizes "
        "(e.g. 0.1,1,4), GB/s per size and max/min across sizes",
    )
    ap.add_argument("--no-tensorizer", action="store_true", help="leave the tensorizer peers out")
    ap.add_argument(
        "--quick",
        action="store_true",
        help="smoke mode: 0.05 GB, 2,000 small tensors, 3 warm runs and "
        "1 fresh run per method (each fresh run pays ~1.3 s of torch import)",
    )
    ap.add_argument("--child-timeout", type=float, default=900.0)
    args = ap.parse_args(argv)
    args.runs = args.runs or (3 if args.quick else 5)
    args.fresh_runs = args.fresh_runs or (1 if args.quick else args.runs)
    args.size_gb = args.size_gb or (0.05 if args.quick else 1.0)
    args.small_n = args.small_n or (2000 if args.quick else 20000)
    try:
        args.scaling_gb = [float(x) for x in args.scaling.split(",") if x.strip()]
    except ValueError:
        ap.error(f"--scaling takes sizes in GB, like 0.1,1,4, not {args.scaling!r}")
    if any(x <= 0 for x in args.scaling_gb):
        ap.error("--scaling sizes must be > 0")
    return args


def main(argv: list[str]) -> int:
    if len(argv) == 2 and argv[0] == "--child":
        return child_main(argv[1])
    args = parse_args(argv)
    sets = [s.strip() for s in args.sets.split(",") if s.strip()]
    modes = ["warm", "fresh"] if args.mode == "both" else [args.mode]
    work = Path(tempfile.mkdtemp(prefix="sealedckpt-bench-", dir=args.dir))
    started = time.perf_counter()
    tz: ModuleType | None = None
    if args.no_tensorizer:
        tz_note = "skipped (--no-tensorizer)"
    elif args.scaling_gb:
        tz_note = "not used by --scaling"
    else:
        tz, tz_note = import_tensorizer()
        tz_note = tz_note if tz is not None else f"skipped ({tz_note})"
    facts = machine_facts(work, tz_note)
    print("== machine ==")
    for k, v in facts.items():
        print(f"   {k:<14} {v}")
    what = (
        f"scaling={','.join(f'{x:g}' for x in args.scaling_gb)} (fp32; per-set tables not run)"
        if args.scaling_gb
        else f"sets={','.join(sets)} size_gb={args.size_gb} small_n={args.small_n}"
    )
    print(f"   runs={args.runs} fresh_runs={args.fresh_runs} modes={','.join(modes)} {what} seed={SEED}")
    if tz is None and not args.scaling_gb:
        print(f"!! tensorizer peers {tz_note}")

    keys: Keys | None = None
    keys_file: Path | None = None
    if SEALED is None:
        print(f"!! sealedckpt skipped: {SEALED_NOTE}")
    else:
        sealed = SEALED
        keys, error = attempt(lambda: Keys(key=sealed.SymmetricKey.generate(), signer=sealed.SigningKey.generate()))
        if error:
            print(f"!! sealedckpt skipped: cannot generate keys: {error}")
        if keys is not None and "fresh" in modes:
            keys_file, note = export_keys(keys, work)
            print(f"   {note}" if keys_file else f"!! sealedckpt fresh runs skipped: {note}")
    tz_key: bytes | None = None
    extra: dict[str, str | None] = {}
    if tz is not None:
        tz_key, error = attempt(lambda: bytes(tz.EncryptionParams.random().key))
        if error:
            print(f"!! tensorizer encryption skipped: {error}")
        elif "fresh" in modes:  # like the sealed keys: a 0600 file in our own temp dir
            extra["tz_key"] = str(write_secret(work / "tensorizer.key", tz_key))
    methods = build_methods(keys, tz, tz_key)
    lazy_wanted = keys is not None and not args.scaling_gb
    if args.methods:
        wanted = {s.strip() for s in args.methods.split(",")}
        lazy_wanted = lazy_wanted and LAZY in wanted
        wanted |= {"sealed.save"} if LAZY in wanted else set()
        methods = [m for m in methods if m.name in wanted or m.name in {w.reads for w in methods if w.name in wanted}]
    report: dict[str, Any] = {"machine": facts, "args": vars(args), "datasets": {}}
    try:
        if args.scaling_gb:
            if keys is None:
                print(f"!! --scaling needs sealedckpt: {SEALED_NOTE}")
            else:
                report["scaling"] = run_scaling(args.scaling_gb, args, keys, keys_file, work, modes)
            sets = []
        for ds in sets:
            t0 = time.perf_counter()
            sd = build_dataset(ds, args)
            info: dict[str, Any] = {
                "tensors": len(sd),
                "logical_bytes": sum(t.numel() * t.element_size() for t in sd.values()),
                "build_s": time.perf_counter() - t0,
                "file_bytes": {},
            }
            print(
                f"\n-- {ds}: built {info['tensors']:,} tensors, {info['logical_bytes']:,} B in {info['build_s']:.1f} s",
                file=sys.stderr,
                flush=True,
            )
            raw: Path | None = None
            if "fresh" in modes:
                raw = work / f"{ds}.raw"
                write_raw(sd, raw)
            files = {m.name: work / f"{ds}-{m.name.replace('+', '_')}{m.suffix}" for m in methods if m.op == "save"}
            results: list[Result] = []
            failed_saves: dict[str, str] = {}
            for m in methods:
                if m.op == "load" and not files[m.reads].exists():
                    why = f" ({m.reads} failed)" if m.reads in failed_saves else ""
                    results.append(Result(ds, m.name, m.op, modes[0], error=f"no {m.reads} file to read{why}"))
                    continue
                for mode in modes:
                    print(f"   {ds} {m.op} {m.name} [{mode}] ...", file=sys.stderr, flush=True)
                    if mode == "warm":
                        r = run_warm(m, ds, sd, files, args.runs)
                    elif m.sealed and keys_file is None:
                        r = Result(ds, m.name, m.op, mode, error="keys cannot reach a child")
                    else:
                        r = run_fresh(m, ds, files, raw, keys_file, args.fresh_runs, args.child_timeout, extra)
                    results.append(r)
                    gc.collect()
                    if m.op == "save" and r.error:
                        failed_saves[m.name] = r.error
                if m.name in failed_saves:  # a half-written file must not be read as if it were whole
                    _unlink(files[m.name])
                if m.op == "save" and files[m.name].exists():
                    info["file_bytes"][m.name] = files[m.name].stat().st_size
            ratios = print_table(ds, info, results, methods)
            report["datasets"][ds] = {
                "info": info,
                "results": [asdict(r) | {"median_s": r.median, "peak_rss_bytes": r.peak_rss} for r in results],
                "ratios": ratios,
            }
            if lazy_wanted and keys is not None and ds in ("fp32", "bf16") and files.get("sealed.save", work).is_file():
                lazy_info, lazy_results = run_lazy(ds, sd, files, keys, keys_file, modes, args)
                print_lazy(lazy_info, lazy_results, results)
                lazy_info["results"] = [asdict(r) | {"median_s": r.median} for r in lazy_results]
                report["datasets"][ds]["lazy"] = lazy_info
            del sd
            gc.collect()
            for path in list(files.values()) + ([raw, raw.with_suffix(".index.json")] if raw else []):
                _unlink(path)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    report["total_s"] = time.perf_counter() - started
    print(f"\n(total {report['total_s']:.1f} s)")
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1))
        print(f"raw figures written to {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

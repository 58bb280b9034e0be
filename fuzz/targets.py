"""Fuzz targets: one ``fuzz_<name>(data: bytes) -> None`` per parser, through stable entry points.

A target returns normally when the input is accepted or refused with a :class:`SealedCkptError`;
anything else propagates and is a finding. :func:`run_one` adds the per-input time bound.
Fixtures (keys, a sealed file, sealed directories, a trust-store home) are built lazily, once
per process, in a private temporary directory, from fixed keys, so runs are repeatable.
"""

from __future__ import annotations

import atexit
import contextlib
import io
import os
import shutil
import signal
import struct
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import sealedckpt
from sealedckpt import SealedCkptError

#: Fixed keys: the committed corpus was sealed with these, so seeds get past the key slots.
SYM_KEY = bytes(range(32))
SIGNING_SEED = bytes([7]) * 32
RECIPIENT_SECRET = bytes([9]) * 32
PASSPHRASE = "fuzz passphrase"
PASSPHRASE_LOG2N = 2  # cheap scrypt, so passphrase-slot seeds stay fast
PASSPHRASE_MAX_LOG2N = 4  # a mutated work factor above this is refused, not computed

MANIFEST = "sealedckpt-manifest.json"  # names from docs/FORMAT.md / release/directory.py
SIGNATURES = "sealedckpt-manifest.sig"


class FuzzFinding(AssertionError):
    """A target raised something other than a SealedCkptError, or ran past its deadline."""


class _Timeout(BaseException):
    """Raised by the interval timer inside a target that runs past its deadline."""


@dataclass
class World:
    """Per-process fixtures shared by the targets."""

    tmp: Path
    sym: sealedckpt.SymmetricKey
    signer: sealedckpt.SigningKey
    recipient: sealedckpt.RecipientKey
    passphrase: sealedckpt.Passphrase
    sealed: bytes  # a signed, symmetric + recipient sealed file (splice base for the slot target)
    plain_dir: Path  # sealed directory without signatures (manifest target)
    signed_dir: Path  # sealed directory with a signature file (signature target)
    home: Path  # SEALEDCKPT_HOME for the in-process CLI (its trust store stays empty)
    trust_home: Path  # a 0700 home whose trust.json the trust target rewrites
    audit_log: Path

    @property
    def load_keys(self) -> list[Any]:
        return [self.sym, self.recipient, self.passphrase]


_world: World | None = None


FIXTURES = Path(__file__).resolve().parent / "fixtures"


def world() -> World:
    """The fixtures, set up on first use: copies of the committed ``fuzz/fixtures`` (the sealed
    file and directories the seeds were made from, so seeds match them), else built afresh."""
    global _world
    if _world is None:
        _world = _build_world(fresh=not (FIXTURES / "sealed.bin").is_file())
    return _world


def _build_world(fresh: bool) -> World:
    tmp = Path(tempfile.mkdtemp(prefix="sealedckpt-fuzz-"))
    atexit.register(shutil.rmtree, tmp, True)
    sym = sealedckpt.SymmetricKey(SYM_KEY)
    signer = sealedckpt.SigningKey(SIGNING_SEED)
    recipient = sealedckpt.RecipientKey(RECIPIENT_SECRET)
    passphrase = sealedckpt.Passphrase(PASSPHRASE, log2n=PASSPHRASE_LOG2N, max_log2n=PASSPHRASE_MAX_LOG2N)
    homes = [tmp / "home", tmp / "trust-home"]
    for h in homes:
        h.mkdir(mode=0o700)
        os.chmod(h, 0o700)
    if fresh:
        import torch

        buf = io.BytesIO()
        sealedckpt.save({"w": torch.arange(6, dtype=torch.float32)}, buf, key=[sym, recipient.public], sign_with=signer)
        sealed = buf.getvalue()
    else:
        sealed = (FIXTURES / "sealed.bin").read_bytes()
    w = World(
        tmp=tmp,
        sym=sym,
        signer=signer,
        recipient=recipient,
        passphrase=passphrase,
        sealed=sealed,
        plain_dir=tmp / "plain-dir",
        signed_dir=tmp / "signed-dir",
        home=homes[0],
        trust_home=homes[1],
        audit_log=tmp / "audit.jsonl",
    )
    for d, s in ((w.plain_dir, None), (w.signed_dir, signer)):
        if fresh:
            with isolated_env(w.home):
                make_sealed_dir(d, sym, s)
        else:
            shutil.copytree(FIXTURES / d.name, d)
    return w


def save_fixtures(w: World) -> None:
    """Commit-ready copies of ``w``'s sealed file and directories under ``fuzz/fixtures``."""
    shutil.rmtree(FIXTURES, ignore_errors=True)
    FIXTURES.mkdir()
    (FIXTURES / "sealed.bin").write_bytes(w.sealed)
    for d in (w.plain_dir, w.signed_dir):
        shutil.copytree(d, FIXTURES / d.name)


def make_sealed_dir(out: Path, key: sealedckpt.SymmetricKey, signer: sealedckpt.SigningKey | None) -> None:
    """A sealed directory (one safetensors shard, an index, a public config) via the CLI-facing code."""
    import torch
    from safetensors.torch import save_file

    from sealedckpt.release import directory as distdir

    src = out.parent / (out.name + "-src")
    src.mkdir()
    save_file({"a": torch.ones(3), "b": torch.zeros(2, dtype=torch.int64)}, str(src / "model.safetensors"))
    (src / "model.safetensors.index.json").write_text(
        '{"metadata": {}, "weight_map": {"a": "model.safetensors", "b": "model.safetensors"}}'
    )
    (src / "config.json").write_text('{"hidden": 3}')
    distdir.seal_dir(src, out, keys=[key], signers=[signer] if signer else [], metadata={"model": "fuzz"})


@contextlib.contextmanager
def isolated_env(home: Path) -> Iterator[None]:
    """Point sealedckpt at ``home`` with auditing off (the in-process CLI would otherwise log)."""
    names = ("SEALEDCKPT_HOME", "SEALEDCKPT_AUDIT", "SEALEDCKPT_KEYSTORE", "SEALEDCKPT_REQUIRE_SIGNATURE")
    saved = {n: os.environ.get(n) for n in names}
    os.environ.update(SEALEDCKPT_HOME=str(home), SEALEDCKPT_AUDIT="0", SEALEDCKPT_KEYSTORE="file")
    os.environ.pop("SEALEDCKPT_REQUIRE_SIGNATURE", None)
    try:
        yield
    finally:
        for n, v in saved.items():
            if v is None:
                os.environ.pop(n, None)
            else:
                os.environ[n] = v


def _write(path: Path, data: bytes, mode: int = 0o600) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        os.write(fd, data)
        os.fchmod(fd, mode)
    finally:
        os.close(fd)


def _cli(argv: list[str]) -> int:
    """Run the CLI in process; its exit code (stdout/stderr discarded)."""
    from sealedckpt.cli import main

    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        try:
            return main(argv)
        except SystemExit as exc:
            return int(exc.code) if isinstance(exc.code, int) else 2


def _refused(fn: Callable[[], object]) -> object:
    """``fn()``'s result, or None when it refused with a SealedCkptError."""
    try:
        return fn()
    except SealedCkptError:
        return None


def _read_all(blob: bytes, w: World) -> None:
    def lazy() -> None:
        with sealedckpt.open(io.BytesIO(blob), key=w.load_keys) as f:
            for name in f.keys():
                f.get_tensor(name)
            f.metadata()

    _refused(lambda: sealedckpt.load(io.BytesIO(blob), key=w.load_keys))
    _refused(lazy)


# --- targets ----------------------------------------------------------------------------------


def fuzz_container(data: bytes) -> None:
    """Whole file: preamble, content header, slots, MAC, chunks, trailer (inspect, verify, load, open)."""
    w = world()
    _refused(lambda: sealedckpt.inspect(io.BytesIO(data)))
    _refused(lambda: sealedckpt.verify(io.BytesIO(data), trusted_signers=w.signer.public))
    _read_all(data, w)


def fuzz_slots(data: bytes) -> None:
    """``data`` replaces the key-slot section of a real sealed file; opened with every key kind."""
    w = world()
    base = w.sealed
    (content_len,) = struct.unpack_from("<I", base, 12)
    pos = 16 + content_len
    (slots_len,) = struct.unpack_from("<I", base, pos)
    blob = base[:pos] + struct.pack("<I", len(data)) + data + base[pos + 4 + slots_len :]
    _refused(lambda: sealedckpt.inspect(io.BytesIO(blob)))
    _refused(lambda: sealedckpt.load(io.BytesIO(blob), key=w.load_keys))
    _refused(lambda: sealedckpt.load(io.BytesIO(blob), key=w.passphrase))


def fuzz_payload(data: bytes) -> None:
    """``data`` is the plaintext payload (safetensors header + structure + tensor bytes), sealed by
    a key holder: the payload and structure parsers behind the encryption."""
    from sealedckpt.container import seal

    w = world()
    out = io.BytesIO()
    seal(out, len(data), [memoryview(data)], keys=[w.sym])
    blob = out.getvalue()
    _refused(lambda: sealedckpt.load(io.BytesIO(blob), key=w.sym))
    _refused(lambda: sealedckpt.load(io.BytesIO(blob), key=w.sym, map_location="meta"))

    def lazy() -> None:
        with sealedckpt.open(io.BytesIO(blob), key=w.sym) as f:
            for name in f.keys():
                f.get_tensor(name)
            f.metadata()

    _refused(lazy)


def fuzz_manifest(data: bytes) -> None:
    """``data`` is the manifest of an unsigned sealed directory (load_dir, CLI verify-dir)."""
    w = world()
    _write(w.plain_dir / MANIFEST, data, 0o644)
    with isolated_env(w.home):
        _refused(lambda: sealedckpt.load_dir(w.plain_dir, key=w.sym))
        _cli(["verify-dir", str(w.plain_dir)])


def fuzz_dir_signatures(data: bytes) -> None:
    """``data`` is the manifest signature file of a signed sealed directory (trusted verify)."""
    from sealedckpt.crypto import textkeys

    w = world()
    _write(w.signed_dir / SIGNATURES, data, 0o644)
    with isolated_env(w.home):
        _refused(lambda: sealedckpt.load_dir(w.signed_dir, key=w.sym, trusted_signers=w.signer.public))
        _cli(["verify-dir", str(w.signed_dir), "--trust", textkeys.verify_key_to_text(w.signer.public)])


def fuzz_audit(data: bytes) -> None:
    """``data`` is an audit log (verify the chain with a trusted key and without; read)."""
    from sealedckpt.stores import audit

    w = world()
    _write(w.audit_log, data)
    _refused(lambda: audit.verify(w.audit_log))
    _refused(lambda: audit.verify(w.audit_log, trusted=[w.signer.public], expect_head="0" * 64))
    _refused(lambda: audit.read(w.audit_log))


def fuzz_trust(data: bytes) -> None:
    """``data`` is ``trust.json`` (0600 in a 0700 home): publishers() and keys()."""
    from sealedckpt.stores.trust import TrustStore

    w = world()
    _write(w.trust_home / "trust.json", data)
    store = TrustStore(w.trust_home)
    _refused(store.publishers)
    _refused(store.keys)
    _refused(store.rules)
    _refused(store.policy)


TARGETS: dict[str, Callable[[bytes], None]] = {
    "container": fuzz_container,
    "slots": fuzz_slots,
    "payload": fuzz_payload,
    "manifest": fuzz_manifest,
    "dir_signatures": fuzz_dir_signatures,
    "audit": fuzz_audit,
    "trust": fuzz_trust,
}


def _on_alarm(signum: int, frame: object) -> None:
    raise _Timeout


def run_one(target: Callable[[bytes], None], data: bytes, deadline_s: float, *, alarm: bool = True) -> None:
    """Run ``target(data)``; raise :class:`FuzzFinding` for any exception that is not a
    SealedCkptError (the original is its ``__cause__``) or when the call exceeds ``deadline_s``.

    With ``alarm`` (main thread only) an interval timer interrupts a call that hangs; without it
    (under libFuzzer, which owns SIGALRM) the elapsed time is checked afterwards.
    """
    use_alarm = alarm and threading.current_thread() is threading.main_thread() and hasattr(signal, "setitimer")
    old: Any = None
    if use_alarm:
        old = signal.signal(signal.SIGALRM, _on_alarm)
        signal.setitimer(signal.ITIMER_REAL, deadline_s)
    start = time.perf_counter()
    try:
        target(data)
    except _Timeout:
        raise FuzzFinding(f"{target.__name__}: input of {len(data)} bytes ran past {deadline_s} s") from None
    except SealedCkptError:
        pass  # the targets already absorb these; a direct raise is as good
    except RecursionError as exc:
        raise FuzzFinding(f"{target.__name__}: RecursionError: {str(exc)[:200]}") from exc
    except Exception as exc:
        raise FuzzFinding(f"{target.__name__}: {type(exc).__name__}: {str(exc)[:200]}") from exc
    finally:
        if use_alarm:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, old)
    elapsed = time.perf_counter() - start
    if elapsed > deadline_s:
        raise FuzzFinding(f"{target.__name__}: input of {len(data)} bytes took {elapsed:.2f} s (> {deadline_s} s)")


def corpus_dir(name: str) -> Path:
    """The committed seed corpus of a target."""
    return Path(__file__).resolve().parent / "corpus" / name


def seeds(name: str) -> list[bytes]:
    """The committed seeds of a target, in file-name order."""
    d = corpus_dir(name)
    return [p.read_bytes() for p in sorted(d.iterdir())] if d.is_dir() else []


def finding_site(exc: BaseException) -> str:
    """``Type@file:line`` of the innermost frame of a finding's cause (to deduplicate findings)."""
    cause = exc.__cause__ or exc
    tb = cause.__traceback__
    site = "?"
    while tb is not None:
        site = f"{Path(tb.tb_frame.f_code.co_filename).name}:{tb.tb_lineno}"
        tb = tb.tb_next
    return f"{type(cause).__name__}@{site}"


if __name__ == "__main__":  # pragma: no cover
    print("\n".join(TARGETS), file=sys.stdout)

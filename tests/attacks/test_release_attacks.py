"""Crafted sealed directories (and release metadata) that must be refused with an exact error.

Each case is a generator that damages a freshly sealed, signed release in one way; every entry
point that reads a release (``verify_dir``, ``load_dir``, ``unseal_dir``) must raise the listed
``SealedCkptError`` subclass, in bounded time and memory, and ``unseal_dir`` must leave no output.
Cases that could hang or exhaust memory on a vulnerable reader run in a child process with a
memory limit and a timeout.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import struct
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import safetensors.torch as st
import torch

import sealedckpt
from sealedckpt import container
from sealedckpt.release import directory as distdir

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from helpers import last_signature, run_cli

MANIFEST, SIG = "sealedckpt-manifest.json", "sealedckpt-manifest.sig"
OPS = ("verify", "load", "unseal")


@dataclass(frozen=True)
class Ctx:
    """A freshly sealed, signed release and the keys that made it."""

    out: Path
    key: sealedckpt.SymmetricKey
    publisher: sealedckpt.SigningKey


def _sig_doc(c: Ctx) -> dict:
    return json.loads((c.out / SIG).read_bytes())


def _write_sig(c: Ctx, doc: object, raw: str | None = None) -> None:
    (c.out / SIG).write_text(raw if raw is not None else json.dumps(doc))


def _statement(subject: str, meta: dict[str, str], signed_at: int) -> bytes:
    """A release statement (FORMAT.md section 8.1), encoded here independently."""
    doc = {"_type": "sealedckpt/statement/v1", "type": "release", "subject": subject, "signed_at": signed_at,
           **{k: meta[k] for k in ("model", "version") if k in meta}}  # fmt: skip
    return json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def _pae(body: bytes) -> bytes:
    t = b"application/vnd.sealedckpt.statement+json"
    return b"DSSEv1 %d %s %d %s" % (len(t), t, len(body), body)


def _signed_at(value: int) -> Callable[[Ctx], None]:
    def build(c: Ctx) -> None:
        manifest = (c.out / MANIFEST).read_bytes()
        body = _statement("sha256:" + hashlib.sha256(manifest).hexdigest(), json.loads(manifest)["metadata"], value)
        b64 = {
            "public_key": c.publisher.public.to_bytes(),
            "statement": body,
            "signature": c.publisher.sign(_pae(body)),
        }
        entry = {"alg": "ed25519", **{k: base64.b64encode(v).decode() for k, v in b64.items()}}
        _write_sig(c, {"version": 1, "signatures": [entry]})

    return build


def _replace(target: str) -> Callable[[Ctx], None]:
    def fifo(c: Ctx) -> None:
        (c.out / target).unlink()
        os.mkfifo(c.out / target)

    return fifo


def _link(target: str, to: str | None) -> Callable[[Ctx], None]:
    def build(c: Ctx) -> None:
        p = c.out / target
        dst = Path(to) if to else c.out.parent / (target + ".copy")
        if to is None:
            dst.write_bytes(p.read_bytes())
        p.unlink()
        p.symlink_to(dst)

    return build


def _sparse_sig(c: Ctx) -> None:
    with open(c.out / SIG, "r+b") as f:
        f.truncate(6 << 30)


def _edit_manifest(edit: Callable[[dict], None]) -> Callable[[Ctx], None]:
    def build(c: Ctx) -> None:
        doc = json.loads((c.out / MANIFEST).read_bytes())
        edit(doc)
        (c.out / MANIFEST).write_text(json.dumps(doc))

    return build


def _nested_empty_dirs(c: Ctx) -> None:
    fd = os.open(c.out, os.O_RDONLY)
    try:
        for _ in range(1100):
            os.mkdir("d", dir_fd=fd)
            nxt = os.open("d", os.O_RDONLY, dir_fd=fd)
            os.close(fd)
            fd = nxt
    finally:
        os.close(fd)


def _resealed_shard(payload: bytes) -> Callable[[Ctx], None]:
    """The publisher (or anyone holding a recipient key) lists a shard holding ``payload``."""

    def build(c: Ctx) -> None:
        name = "model.safetensors.sealed"
        with open(c.out / name, "wb") as f:
            summary = container.seal(f, len(payload), [memoryview(payload)], keys=[c.key],
                                     metadata={"model": "tiny", "version": "2"}, want_root=True)  # fmt: skip
        assert summary.root is not None
        doc = json.loads((c.out / MANIFEST).read_bytes())
        for e in doc["files"]:
            if e["path"] == name:
                e["digest"], e["size"] = "root:" + summary.root.hex(), len(payload)
        (c.out / MANIFEST).write_text(json.dumps(doc))
        (c.out / SIG).unlink()
        distdir.add_dir_signatures(c.out, [c.publisher], kind="release")

    return build


def _foreign_structure_payload() -> bytes:
    buf = Path(os.environ["SC_TMP"]) / "foreign.sealed"
    k = sealedckpt.SymmetricKey.generate()
    sealedckpt.save({"w": torch.ones(2), "step": 1}, buf, key=k)
    with open(buf, "rb") as f:
        reader = container.open_sealed(f, [k])
        out = Path(os.environ["SC_TMP"]) / "foreign.plain"
        with open(out, "wb") as w:
            reader.write_plaintext(w)
    return out.read_bytes()


PICKLE = b"\x80\x04\x95\x15\x00\x00\x00\x00\x00\x00\x00\x8c\x05posix\x94\x8c\x06system\x94\x93\x94."

# name: (generator, error class, message pattern, run in a limited child process)
CASES: dict[str, tuple[Callable[[Ctx], None], type[sealedckpt.SealedCkptError], str, bool]] = {
    "sig_is_fifo": (_replace(SIG), sealedckpt.FormatError, r"not a regular file", True),
    "sig_links_to_dev_zero": (_link(SIG, "/dev/zero"), sealedckpt.FormatError, r"not a regular file", True),
    "sig_sparse_6_gib": (_sparse_sig, sealedckpt.FormatError, r"too large", True),
    "manifest_is_fifo": (_replace(MANIFEST), sealedckpt.FormatError, r"not a regular file", True),
    "manifest_links_to_dev_zero": (_link(MANIFEST, "/dev/zero"), sealedckpt.FormatError, r"not a regular file", True),
    "sig_links_to_valid_copy": (_link(SIG, None), sealedckpt.FormatError, r"not a regular file", False),
    "manifest_links_to_valid_copy": (_link(MANIFEST, None), sealedckpt.FormatError, r"not a regular file", False),
    "sig_duplicate_signer": (
        lambda c: _write_sig(c, {"version": 1, "signatures": _sig_doc(c)["signatures"] * 2}),
        sealedckpt.FormatError,
        r"signs twice",
        False,
    ),
    "sig_entry_extra_field": (
        lambda c: _write_sig(c, {"version": 1, "signatures": [{**_sig_doc(c)["signatures"][0], "x": 1}]}),
        sealedckpt.FormatError,
        r"exactly the fields",
        False,
    ),
    "sig_file_extra_field": (
        lambda c: _write_sig(c, {**_sig_doc(c), "note": "hi"}),
        sealedckpt.FormatError,
        r"exactly the fields",
        False,
    ),
    "sig_duplicate_json_key": (
        lambda c: _write_sig(c, None, '{"version": 1, "version": 1, "signatures": []}'),
        sealedckpt.FormatError,
        r"duplicate key",
        False,
    ),
    "sig_signed_at_2_63_minus_1": (
        _signed_at((1 << 63) - 1),
        sealedckpt.FormatError,
        r"signed_at .* out of range",
        False,
    ),
    "sig_signed_at_2_64_minus_1": (
        _signed_at((1 << 64) - 1),
        sealedckpt.FormatError,
        r"signed_at .* out of range",
        False,
    ),
    "sig_short_signature": (
        lambda c: _write_sig(
            c,
            {
                "version": 1,
                "signatures": [{**_sig_doc(c)["signatures"][0], "signature": base64.b64encode(b"x" * 32).decode()}],
            },
        ),
        sealedckpt.SignatureError,
        r"does not verify",
        False,
    ),
    "manifest_path_is_int": (
        _edit_manifest(lambda d: d["files"][0].update(path=5)),
        sealedckpt.FormatError,
        r"manifest structure",
        False,
    ),
    "manifest_metadata_not_string": (
        _edit_manifest(lambda d: d["metadata"].update(version=9)),
        sealedckpt.FormatError,
        r"strings to strings",
        False,
    ),
    "nested_empty_dirs_1100": (_nested_empty_dirs, sealedckpt.FormatError, r"nested deeper than 64", False),
}
# Key holders only: a shard whose payload is not what seal-dir writes (verify_dir needs no key and
# cannot see inside; the signed manifest lists these bytes, so it passes).
KEYED_CASES: dict[str, tuple[Callable[[Ctx], None], type[sealedckpt.SealedCkptError], str]] = {
    "shard_holds_a_pickle": (_resealed_shard(PICKLE), sealedckpt.FormatError, r"header"),
}


@pytest.fixture
def ctx(tmp_path: Path, key: sealedckpt.SymmetricKey, monkeypatch: pytest.MonkeyPatch) -> Iterator[Ctx]:
    monkeypatch.setenv("SC_TMP", str(tmp_path))
    src = tmp_path / "model"
    src.mkdir()
    st.save_file({"a": torch.arange(4.0)}, str(src / "model.safetensors"))
    (src / "config.json").write_text("{}")
    publisher = sealedckpt.SigningKey.generate()
    out = tmp_path / "sealed"
    distdir.seal_dir(src, out, keys=[key], signers=[publisher], metadata={"model": "tiny", "version": "2"})
    yield Ctx(out, key, publisher)
    _remove_chain(out)


def _remove_chain(root: Path) -> None:
    """Remove a ``d/d/d/...`` chain bottom-up without recursion (pytest's cleanup recurses)."""
    fds = [os.open(root, os.O_RDONLY)]
    try:
        while os.path.isdir(f"/proc/self/fd/{fds[-1]}/d"):
            fds.append(os.open("d", os.O_RDONLY, dir_fd=fds[-1]))
        while len(fds) > 1:
            os.close(fds.pop())
            os.rmdir("d", dir_fd=fds[-1])
    finally:
        for fd in fds:
            os.close(fd)


_CHILD = r"""
import json, resource, sys
resource.setrlimit(resource.RLIMIT_AS, (4 << 30, 4 << 30))
import sealedckpt
op, d, key_hex, pub_hex, dst = sys.argv[1:6]
key = sealedckpt.SymmetricKey.from_bytes(bytes.fromhex(key_hex))
trust = [sealedckpt.VerifyKey.from_bytes(bytes.fromhex(pub_hex))]
try:
    if op == "verify":
        sealedckpt.verify_dir(d, trusted_signers=trust)
    elif op == "load":
        sealedckpt.load_dir(d, key=key, trusted_signers=trust)
    else:
        sealedckpt.unseal_dir(d, dst, key=key, trusted_signers=trust)
    print(json.dumps(["ok", ""]))
except BaseException as exc:
    print(json.dumps([type(exc).__name__, str(exc)]))
"""


def _call(op: str, c: Ctx, dst: Path, child: bool) -> tuple[str, str]:
    """(exception class name, message) of one entry point on the damaged release."""
    if child:
        argv = [op, str(c.out), c.key.to_bytes().hex(), c.publisher.public.to_bytes().hex(), str(dst)]
        r = subprocess.run([sys.executable, "-c", _CHILD, *argv], capture_output=True, text=True, timeout=60)
        name, msg = json.loads(r.stdout.strip().splitlines()[-1])
        return str(name), str(msg)
    try:
        trust = [c.publisher.public]
        if op == "verify":
            sealedckpt.verify_dir(c.out, trusted_signers=trust)
        elif op == "load":
            sealedckpt.load_dir(c.out, key=c.key, trusted_signers=trust)
        else:
            sealedckpt.unseal_dir(c.out, dst, key=c.key, trusted_signers=trust)
    except Exception as exc:
        return type(exc).__name__, str(exc)
    return "ok", ""


@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize("name", sorted(CASES))
def test_release_attack(name: str, op: str, ctx: Ctx, tmp_path: Path) -> None:
    build, error, pattern, child = CASES[name]
    build(ctx)
    dst = tmp_path / "plain"
    cls, msg = _call(op, ctx, dst, child)
    assert cls == error.__name__, (cls, msg)
    assert re.search(pattern, msg), msg
    assert not dst.exists()


@pytest.mark.parametrize("op", ("load", "unseal"))
@pytest.mark.parametrize("name", sorted(KEYED_CASES))
def test_keyed_release_attack(name: str, op: str, ctx: Ctx, tmp_path: Path) -> None:
    build, error, pattern = KEYED_CASES[name]
    build(ctx)
    assert _call("verify", ctx, tmp_path / "x", False) == ("ok", "")
    dst = tmp_path / "plain"
    cls, msg = _call(op, ctx, dst, False)
    assert cls == error.__name__, (cls, msg)
    assert re.search(pattern, msg), msg
    assert not dst.exists() and not [p for p in os.listdir(tmp_path) if p.endswith(".partial")]


def test_unseal_dir_refuses_a_shard_that_is_not_a_plain_state_dict(ctx: Ctx, tmp_path: Path) -> None:
    _resealed_shard(_foreign_structure_payload())(ctx)
    with pytest.raises(sealedckpt.FormatError, match="plain state_dict"):
        sealedckpt.unseal_dir(ctx.out, tmp_path / "plain", key=ctx.key, trusted_signers=[ctx.publisher.public])
    assert not (tmp_path / "plain").exists()


def test_empty_directories_are_ignored(ctx: Ctx) -> None:
    (ctx.out / "a" / "b" / "c").mkdir(parents=True)
    assert len(sealedckpt.verify_dir(ctx.out, trusted_signers=[ctx.publisher.public]).entries) == 2


def test_verify_dir_cli_far_future_signed_at(ctx: Ctx, capsys: pytest.CaptureFixture[str]) -> None:
    _signed_at((1 << 63) - 1)(ctx)
    code, out, err = run_cli(capsys, "verify-dir", str(ctx.out))
    assert code == 3 and "signed_at" in err and "OK" not in out


# --- single files -------------------------------------------------------------------------------------


def _signed_file(tmp_path: Path, key: sealedckpt.SymmetricKey, signer: sealedckpt.SigningKey, version: str,
                 signed_at: int | None = None) -> Path:  # fmt: skip
    p = tmp_path / "f.sealed"
    sealedckpt.save({"w": torch.ones(2)}, p, key=key, metadata={"model": "tiny", "version": version})
    sealedckpt.sign(p, signer, statement="release")
    if signed_at is not None:  # re-sign a statement dated out of range (no signer API makes one)
        data = p.read_bytes()
        at = last_signature(data)
        body = _statement(json.loads(data[at["stmt"] : at["stmt_end"]])["subject"],
                          {"model": "tiny", "version": version}, signed_at)  # fmt: skip
        entry = container.format.SignatureEntry("ed25519", signer.public.to_bytes(), body, signer.sign(_pae(body)))
        p.write_bytes(data[: at["block"]] + struct.pack("<I", len(entry.build())) + entry.build())
    return p


@pytest.mark.parametrize("version", ["\u00b2", "\u0661", "0" * 19, "-1", " 7", ""])
def test_version_is_ascii_digits_only(tmp_path: Path, key: sealedckpt.SymmetricKey, signer: sealedckpt.SigningKey,
                                      version: str) -> None:  # fmt: skip
    p = _signed_file(tmp_path, key, signer, version)
    with pytest.raises(sealedckpt.RollbackError, match="no numeric public 'version'"):
        sealedckpt.verify(p, trusted_signers=[signer.public], min_version=7)
    with pytest.raises(sealedckpt.RollbackError, match="no numeric public 'version'"):
        sealedckpt.load(p, key=key, min_version=7)


def test_api_verify_and_inspect_survive_u64_signed_at(
    tmp_path: Path, key: sealedckpt.SymmetricKey, signer: sealedckpt.SigningKey
) -> None:
    with pytest.raises(sealedckpt.InvalidArgumentError, match="out of range"):
        sealedckpt.sign(_signed_file(tmp_path, key, signer, "1"), sealedckpt.SigningKey.generate(),
                        expires_at=(1 << 64) - 1)  # fmt: skip
    p = _signed_file(tmp_path, key, signer, "1", signed_at=(1 << 64) - 1)
    with pytest.raises(sealedckpt.FormatError, match=r"signed_at .* out of range"):
        sealedckpt.verify(p, trusted_signers=[signer.public])
    (sig,) = sealedckpt.inspect(p).signatures  # listed, unverified, without the unreadable statement
    assert sig["key_id"] == signer.key_id and "signed_at" not in sig


@pytest.mark.parametrize("command", ["verify", "inspect"])
def test_cli_verify_and_inspect_survive_u64_signed_at(
    tmp_path: Path, key: sealedckpt.SymmetricKey, signer: sealedckpt.SigningKey, command: str,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    p = _signed_file(tmp_path, key, signer, "1", signed_at=(1 << 64) - 1)
    try:
        code, out, err = run_cli(capsys, command, str(p))
    except (OverflowError, ValueError, OSError) as exc:
        pytest.fail(f"raw {type(exc).__name__} escaped: {exc}")
    if command == "verify":
        assert code == 3 and "out of range" in err and err.startswith("sealedckpt: error:"), err
    else:
        assert code == 0 and "unreadable statement" in out, err

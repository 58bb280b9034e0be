"""Sealed model directories: every file sealed (or kept public), one signed manifest.

The manifest names every file of the sealed directory with its content digest: for a sealed
file the content root (what file signatures sign: content header plus every chunk digest; it
does not cover key slots, so rewrapping keeps it valid), for a public file its SHA-256. One
signature over the exact manifest bytes covers the whole set, so a renamed, swapped, deleted,
added or edited file is detected (per-file signatures alone miss the first four).
Verification needs no decryption key and no torch.
"""

from __future__ import annotations

import base64
import binascii
import datetime as _dt
import hashlib
import json
import os
import shutil
import string
import struct
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .. import container
from .._fs import atomic_write
from .._json import strict_loads
from ..crypto import SigningKey, VerifyKey, textkeys
from ..errors import FormatError, IntegrityError, InvalidArgumentError, SignatureError
from ..payload import safetensors as payload
from .files import seal_layout

MANIFEST = "sealedckpt-manifest.json"
SIGNATURES = "sealedckpt-manifest.sig"
MANIFEST_VERSION = 1
MAX_MANIFEST = 16 << 20
MAX_FILES = 100_000
BLOB_KEY = "sealedckpt.blob"
_SIG_DOMAIN = b"sealedckpt/v1 manifest\x00"


@dataclass(frozen=True)
class DirEntry:
    """One file of a sealed directory, as its manifest lists it."""

    path: str  # in the sealed directory, POSIX separators
    source: str  # name in the original directory
    kind: str  # "safetensors" | "blob" (sealed) | "public"
    digest: str  # "root:<hex>" for sealed files, "sha256:<hex>" for public ones
    size: int  # bytes of a public file; of a sealed file's plaintext payload


@dataclass(frozen=True)
class DirVerifyResult:
    """A verified manifest: its entries, verified signers, public metadata and SHA-256 (hex)."""

    entries: list[DirEntry]
    signers: list[container.Signer]
    metadata: dict[str, str]
    manifest_sha256: str


def _walk(root: Path) -> list[str]:
    out = []
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        dirnames.sort()
        for name in sorted(filenames):
            p = Path(dirpath) / name
            if p.is_symlink() or not p.is_file():
                raise FormatError(f"{p}: not a regular file (links are not followed)")
            out.append(p.relative_to(root).as_posix())
        for d in dirnames:
            if (Path(dirpath) / d).is_symlink():
                raise FormatError(f"{Path(dirpath) / d}: directory links are not followed")
    return out


def _safe_rel(rel: str) -> str:
    parts = rel.split("/")
    if rel.startswith("/") or any(p in ("", ".", "..") for p in parts) or "\\" in rel:
        raise FormatError(f"unsafe path in manifest: {rel!r}")
    return rel


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 22):
            h.update(block)
    return h.hexdigest()


def _blob_layout(source: str, size: int) -> payload.Layout:
    from ..payload import structure

    meta = {**payload.structure_metadata(structure.state_dict([("blob", "U8", (size,))])), BLOB_KEY: source}
    return payload.build_layout([("blob", "U8", (size,), size)], meta)


def _seal_file(
    src: Path, dst: Path, layout_of: str, keys: Sequence[container.SealKey], metadata: dict[str, str]
) -> tuple[bytes, int]:
    """Seal one file (safetensors re-framed, or any file as a blob): (content root, payload length)."""
    with open(src, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        if layout_of == "safetensors":
            hlen = payload.header_len(f.read(8), size)
            layout = payload.reframe(f.read(hlen), size - 8 - hlen)
            data_start = 8 + hlen
        else:
            layout = _blob_layout(src.name, size)
            data_start = 0
        dst.parent.mkdir(parents=True, exist_ok=True)
        summary = seal_layout(f, layout, data_start, dst, keys=keys, metadata=metadata, want_root=True)
    assert summary.root is not None
    return summary.root, layout.payload_len


def _canonical(doc: dict[str, Any]) -> bytes:
    return (json.dumps(doc, indent=2, sort_keys=True, ensure_ascii=False) + "\n").encode("utf-8")


def _sig_message(pub: bytes, signed_at: int, manifest: bytes) -> bytes:
    return _SIG_DOMAIN + pub + struct.pack("<Q", signed_at) + hashlib.sha256(manifest).digest()


def seal_dir(
    src_dir: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    *,
    keys: Sequence[container.SealKey],
    signers: Sequence[SigningKey] = (),
    keep_public: bool = False,
    metadata: dict[str, str] | None = None,
) -> list[DirEntry]:
    """Seal every ``*.safetensors`` shard of ``src_dir`` (and every other file, unless
    ``keep_public``) into ``out_dir``, and write the (signed) manifest."""
    src, out = Path(src_dir), Path(out_dir)
    if out.exists() and any(out.iterdir()):
        raise FormatError(f"{out} exists and is not empty")
    files = _walk(src)
    if not files:
        raise FormatError(f"{src} holds no files")
    meta = dict(metadata or {})
    entries = []
    for rel in files:
        if rel in (MANIFEST, SIGNATURES):
            raise FormatError(f"{src} already holds a {rel}: is it a sealed directory?")
        kind = "safetensors" if rel.endswith(".safetensors") else ("public" if keep_public else "blob")
        if kind == "public":
            (out / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src / rel, out / rel)
            entries.append(DirEntry(rel, rel, kind, "sha256:" + _sha256_file(out / rel), (out / rel).stat().st_size))
        else:
            root, size = _seal_file(src / rel, out / (rel + ".sealed"), kind, keys, meta)
            entries.append(DirEntry(rel + ".sealed", rel, kind, "root:" + root.hex(), size))
    doc = {
        "version": MANIFEST_VERSION,
        "created": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "metadata": meta,
        "files": [e.__dict__ for e in entries],
    }
    manifest = _canonical(doc)
    with atomic_write(out / MANIFEST) as f:
        f.write(manifest)
    if signers:
        add_dir_signatures(out, signers)
    return entries


def manifest_sha256(d: str | os.PathLike[str]) -> str:
    """The SHA-256 (hex) of a sealed directory's manifest bytes: what its signatures sign."""
    return _sha256_file(Path(d) / MANIFEST)


def _read_signatures(d: Path) -> list[dict[str, Any]]:
    p = d / SIGNATURES
    if not p.exists():
        return []
    raw = p.read_bytes()
    if len(raw) > 1 << 20:
        raise FormatError("manifest signature file too large")
    doc = strict_loads(raw, "manifest signature file")
    sigs = doc.get("signatures") if isinstance(doc, dict) else None
    if (
        not isinstance(doc, dict)
        or doc.get("version") != MANIFEST_VERSION
        or not isinstance(sigs, list)
        or len(sigs) > 16
        or not all(isinstance(s, dict) for s in sigs)
    ):
        raise FormatError("manifest signature file is malformed")
    return [dict(s) for s in sigs]


def add_dir_signatures(d: str | os.PathLike[str], signers: Sequence[SigningKey]) -> None:
    """Sign (or counter-sign) a sealed directory's manifest bytes."""
    d = Path(d)
    manifest = (d / MANIFEST).read_bytes()
    sigs = _read_signatures(d)
    have = {s.get("public_key") for s in sigs}
    signed_at = int(time.time())
    for s in signers:
        text = textkeys.verify_key_to_text(s.public)
        if text in have:
            raise InvalidArgumentError(f"key {s.key_id} has already signed this manifest")
        sig = s.sign(_sig_message(s.public.to_bytes(), signed_at, manifest))
        sigs.append({"public_key": text, "signed_at": signed_at, "signature": base64.b64encode(sig).decode()})
    with atomic_write(d / SIGNATURES) as f:
        f.write(_canonical({"version": MANIFEST_VERSION, "signatures": sigs}))


_ENTRY_FIELDS = frozenset(("path", "source", "kind", "digest", "size"))


def _parse_entry(f: object) -> DirEntry:
    """One manifest ``files`` item, every field checked for its type."""
    if not isinstance(f, dict) or set(f) != _ENTRY_FIELDS:
        raise FormatError("manifest structure is invalid")
    path, source, kind, digest, size = (f[k] for k in ("path", "source", "kind", "digest", "size"))
    if not isinstance(path, str) or not isinstance(source, str):
        raise FormatError("manifest structure is invalid")
    if (
        kind not in ("safetensors", "blob", "public")
        or not isinstance(digest, str)
        or type(size) is not int
        or size < 0
    ):
        raise FormatError(f"manifest entry {path!r} is invalid")
    return DirEntry(path, source, kind, digest, size)


def _parse_manifest(raw: bytes) -> tuple[list[DirEntry], dict[str, str]]:
    doc = payload.strict_json(raw, "manifest")
    if not isinstance(doc, dict) or doc.get("version") != MANIFEST_VERSION:
        raise FormatError("unsupported manifest version")
    files, meta = doc.get("files"), doc.get("metadata", {})
    if not isinstance(files, list) or len(files) > MAX_FILES or not isinstance(meta, dict):
        raise FormatError("manifest structure is invalid")
    entries = [_parse_entry(f) for f in files]
    seen = set()
    for e in entries:
        _safe_rel(e.path)
        if e.path in seen:
            raise FormatError(f"manifest lists {e.path!r} twice")
        seen.add(e.path)
    return entries, {str(k): str(v) for k, v in meta.items()}


def _parse_signature(s: dict[str, Any]) -> tuple[VerifyKey, int, bytes]:
    """One signature entry: (verify key, signing time, signature bytes)."""
    public_key, signed_at, sig = s.get("public_key"), s.get("signed_at"), s.get("signature")
    if not isinstance(public_key, str) or type(signed_at) is not int or not isinstance(sig, str):
        raise FormatError("manifest signature entry is malformed")
    try:
        vk = textkeys.verify_key_from_text(public_key)
    except InvalidArgumentError:
        raise FormatError("manifest signature entry is malformed") from None
    try:
        raw = base64.b64decode(sig, validate=True)
    except binascii.Error:
        raise FormatError("manifest signature entry is malformed") from None
    return vk, signed_at, raw


def verify_dir(
    d: str | os.PathLike[str], *, trusted_signers: Sequence[VerifyKey] | None = None, check_files: bool = True
) -> DirVerifyResult:
    """Check the manifest's signatures and that the directory holds exactly the files it lists,
    each with its listed digest. No decryption key needed."""
    d = Path(d)
    mp = d / MANIFEST
    if not mp.is_file():
        raise FormatError(f"{d} is not a sealed directory (no {MANIFEST})")
    if mp.stat().st_size > MAX_MANIFEST:
        raise FormatError("manifest too large")
    manifest = mp.read_bytes()
    entries, meta = _parse_manifest(manifest)
    signers: list[container.Signer] = []
    trusted_raw = {k.to_bytes() for k in trusted_signers or ()}
    for s in _read_signatures(d):
        vk, signed_at, sig = _parse_signature(s)
        try:
            if not 0 <= signed_at < 1 << 63:
                raise SignatureError("signed_at out of range")
            vk.verify(sig, _sig_message(vk.to_bytes(), signed_at, manifest))
        except SignatureError:
            raise SignatureError(
                f"manifest signature by {vk.key_id} does not verify: manifest or signature altered"
            ) from None
        signers.append(container.Signer(vk, signed_at, vk.to_bytes() in trusted_raw))
    if trusted_signers is not None:
        if not signers:
            raise SignatureError("the manifest is not signed, but a trusted signature is required")
        if not any(s.trusted for s in signers):
            raise SignatureError(f"manifest signed only by untrusted keys ({', '.join(s.key_id for s in signers)})")
    present = set(_walk(d)) - {MANIFEST, SIGNATURES}
    listed = {e.path for e in entries}
    if present - listed:
        raise IntegrityError(f"file(s) not in the manifest: {', '.join(sorted(present - listed))}")
    if listed - present:
        raise IntegrityError(f"file(s) missing: {', '.join(sorted(listed - present))}")
    if check_files:
        for e in entries:
            check_entry(d, e)
    digest = hashlib.sha256(manifest).hexdigest()
    return DirVerifyResult(entries, signers, meta, digest)


def check_entry(d: Path, e: DirEntry) -> None:
    """Raise :class:`IntegrityError` unless the file of ``e`` has the manifest's digest and size."""
    p = d / e.path
    if e.kind == "public":
        if p.stat().st_size != e.size or "sha256:" + _sha256_file(p) != e.digest:
            raise IntegrityError(f"{e.path}: content differs from the manifest")
        return
    with open(p, "rb") as f:
        root, content = container.compute_root(f)
    if "root:" + root.hex() != e.digest or content.payload_len != e.size:
        raise IntegrityError(f"{e.path}: content differs from the manifest (renamed, swapped or edited)")


def expected_root(e: DirEntry) -> bytes:
    """The content root the manifest lists for a sealed entry."""
    if not e.digest.startswith("root:"):
        raise FormatError(f"{e.path}: not a sealed entry")
    hexdigits = e.digest[5:]
    if len(hexdigits) % 2 or any(c not in string.hexdigits for c in hexdigits):
        raise FormatError(f"{e.path}: malformed digest")
    return bytes.fromhex(hexdigits)


def unseal_dir(
    d: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    keys: container.KeySource,
    *,
    trusted_signers: Sequence[VerifyKey] | None = None,
) -> list[str]:
    """Verify, then write the original files (shards as plain safetensors) into ``out_dir``."""
    d, out = Path(d), Path(out_dir)
    res = verify_dir(d, trusted_signers=trusted_signers, check_files=False)
    if out.exists() and any(out.iterdir()):
        raise FormatError(f"{out} exists and is not empty")
    written = []
    for e in res.entries:
        target = out / _safe_rel(e.source)
        target.parent.mkdir(parents=True, exist_ok=True)
        if e.kind == "public":
            check_entry(d, e)
            shutil.copyfile(d / e.path, target)
        else:
            with open(d / e.path, "rb") as f:
                reader = container.open_sealed(f, keys)
                reader.expect_root(expected_root(e))
                with atomic_write(target) as w:
                    if e.kind == "safetensors":
                        reader.write_plaintext(w)
                    else:
                        _write_blob(reader, w)
        written.append(e.source)
    return written


def _write_blob(reader: container.SealedReader, out: Any) -> None:
    """Stream a blob payload's bytes (its single entry, the whole data section) into ``out``."""
    data_start, meta, entries = payload.read_header(reader)
    if BLOB_KEY not in meta or len(entries) != 1 or entries[0].name != "blob":
        raise FormatError("sealed file is not a blob")
    reader.write_plaintext(out, skip=data_start)

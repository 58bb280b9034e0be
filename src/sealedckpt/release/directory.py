"""Sealed model directories: every file sealed (or kept public), one signed manifest.

The manifest names every file of the sealed directory with its content digest: for a sealed
file the content root (what file signatures sign: content header plus every chunk digest; it
does not cover key slots, so rewrapping keeps it valid), for a public file its SHA-256. One
signature over the exact manifest bytes covers the whole set, so a renamed, swapped, deleted,
added or edited file is detected (per-file signatures alone miss the first four).
Verification needs no decryption key and no torch.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import hashlib
import json
import os
import secrets
import shutil
import stat
import string
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .. import container
from .._fs import atomic_write
from ..container import signatures as csig
from ..container import statement
from ..crypto import SigningKey
from ..errors import FormatError, IntegrityError, InvalidArgumentError, SignatureError
from ..payload import safetensors as payload
from . import signatures as sigfile
from ._safeio import open_regular, read_regular
from .files import seal_layout
from .policy import DirReleaseCheck
from .signatures import SIGNATURES

MANIFEST = "sealedckpt-manifest.json"
MANIFEST_VERSION = 1
MAX_MANIFEST = 16 << 20
MAX_FILES = 100_000
MAX_DEPTH = 64
BLOB_KEY = "sealedckpt.blob"


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
    """Every regular file under ``root`` (POSIX relative paths, in ``os.walk`` top-down order
    with sorted names), walked iteratively.

    Links, FIFOs and devices are refused; empty directories hold nothing and are ignored, but
    nesting is capped at ``MAX_DEPTH`` and the entries seen at ``MAX_FILES``."""
    out: list[str] = []
    stack: list[tuple[Path, int]] = [(root, 0)]
    seen = 0
    while stack:
        cur, depth = stack.pop()
        if depth > MAX_DEPTH:
            raise FormatError(f"{cur}: directories nested deeper than {MAX_DEPTH} levels")
        with os.scandir(cur) as it:
            items = sorted(it, key=lambda e: e.name)
        seen += len(items)
        if seen > MAX_FILES:
            raise FormatError(f"{root}: more than {MAX_FILES} entries")
        subdirs = []
        for item in items:
            p = Path(item.path)
            mode = item.stat(follow_symlinks=False).st_mode
            if stat.S_ISDIR(mode):
                subdirs.append((p, depth + 1))
            elif stat.S_ISREG(mode):
                out.append(p.relative_to(root).as_posix())
            else:
                raise FormatError(f"{p}: not a regular file or directory (links are not followed)")
        stack.extend(reversed(subdirs))
    return out


def _safe_rel(rel: str) -> str:
    parts = rel.split("/")
    if rel.startswith("/") or any(p in ("", ".", "..") for p in parts) or "\\" in rel:
        raise FormatError(f"unsafe path in manifest: {rel!r}")
    return rel


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open_regular(path) as f:
        while block := f.read(1 << 22):
            h.update(block)
    return h.hexdigest()


def blob_layout(source: str, size: int) -> payload.Layout:
    """The payload header of a file sealed as a blob (one ``U8`` entry of ``size`` bytes)."""
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
            layout = blob_layout(src.name, size)
            data_start = 0
        dst.parent.mkdir(parents=True, exist_ok=True)
        summary = seal_layout(f, layout, data_start, dst, keys=keys, metadata=metadata, want_root=True)
    assert summary.root is not None
    return summary.root, layout.payload_len


def _canonical(doc: dict[str, Any]) -> bytes:
    return (json.dumps(doc, indent=2, sort_keys=True, ensure_ascii=False) + "\n").encode("utf-8")


def seal_dir(
    src_dir: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    *,
    keys: Sequence[container.SealKey],
    signers: Sequence[SigningKey] = (),
    keep_public: bool = False,
    metadata: dict[str, str] | None = None,
    expires_at: int | None = None,
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
    write_manifest(out, entries, meta, signers, expires_at=expires_at)
    return entries


def write_manifest(
    out: Path,
    entries: Sequence[DirEntry],
    metadata: dict[str, str],
    signers: Sequence[SigningKey] = (),
    *,
    expires_at: int | None = None,
) -> None:
    """Write the manifest listing ``entries`` (and its release signatures, expiring at
    ``expires_at``) into the sealed directory ``out``."""
    doc = {
        "version": MANIFEST_VERSION,
        "created": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "metadata": metadata,
        "files": [e.__dict__ for e in entries],
    }
    with atomic_write(out / MANIFEST) as f:
        f.write(_canonical(doc))
    if signers:
        add_dir_signatures(out, signers, kind=statement.RELEASE, expires_at=expires_at)


def manifest_sha256(d: str | os.PathLike[str]) -> str:
    """The SHA-256 (hex) of a sealed directory's manifest bytes: what its signatures sign."""
    return _sha256_file(Path(d) / MANIFEST)


def add_dir_signatures(
    d: str | os.PathLike[str],
    signers: Sequence[SigningKey],
    *,
    kind: str = statement.COUNTER,
    expires_at: int | None = None,
    now: Callable[[], float] = time.time,
) -> None:
    """Sign a statement of ``kind`` about a sealed directory's manifest bytes (docs/FORMAT.md §13)."""
    d = Path(d)
    manifest = read_manifest(d)
    _, meta = _parse_manifest(manifest)
    sigs = sigfile.read_signatures(d)
    have = {s.public_key for s in sigs}
    subject = "sha256:" + hashlib.sha256(manifest).hexdigest()
    stmt = csig.make_statement(kind, subject, meta, now, expires_at)
    for s in signers:
        if s.public.to_bytes() in have:
            raise InvalidArgumentError(f"key {s.key_id} has already signed this manifest")
        raw, sig = csig.sign_statement(s, stmt)
        sigs.append(sigfile.ManifestSignature(s.alg, s.public.to_bytes(), raw, sig))
    if len(sigs) > sigfile.MAX_SIGNATURES:
        raise InvalidArgumentError(f"a manifest carries at most {sigfile.MAX_SIGNATURES} signatures")
    with atomic_write(d / SIGNATURES) as f:
        f.write(sigfile.dumps(sigs))


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
    if not all(isinstance(k, str) and isinstance(v, str) for k, v in meta.items()):
        raise FormatError("manifest metadata must map strings to strings")
    return entries, dict(meta)


#: The manifest's entries and metadata, parsed strictly (not yet authenticated: verify_dir does that).
parse_manifest = _parse_manifest


def read_manifest(d: Path) -> bytes:
    """The manifest bytes of ``d``: a regular file (no link) of at most ``MAX_MANIFEST`` bytes."""
    mp = d / MANIFEST
    if not mp.exists() and not mp.is_symlink():
        raise FormatError(f"{d} is not a sealed directory (no {MANIFEST})")
    return read_regular(mp, MAX_MANIFEST)


def verify_dir(
    d: str | os.PathLike[str], *, trusted_signers: Sequence[csig.Verifier] | None = None, check_files: bool = True
) -> DirVerifyResult:
    """Check the manifest's signatures and that the directory holds exactly the files it lists,
    each with its listed digest. No decryption key needed."""
    d = Path(d)
    manifest = read_manifest(d)
    entries, meta = _parse_manifest(manifest)
    signers: list[container.Signer] = []
    trusted_raw = {(k.alg, k.to_bytes()) for k in trusted_signers or ()}
    subject = "sha256:" + hashlib.sha256(manifest).hexdigest()
    for i, s in enumerate(sigfile.read_signatures(d)):
        vk, stmt = csig.verify_statement(i, s.alg, s.public_key, s.statement, s.signature)
        csig.check_subject(vk, stmt, subject, meta)
        signers.append(container.Signer(vk, stmt, (s.alg, s.public_key) in trusted_raw))
    if trusted_signers is not None:
        if not signers:
            raise SignatureError("the manifest is not signed, but a trusted signature is required")
        csig.require_trusted_release(signers)
    present = set(_walk(d)) - {MANIFEST, SIGNATURES}
    listed = {e.path for e in entries}
    if present - listed:
        raise IntegrityError(f"file(s) not in the manifest: {', '.join(sorted(present - listed))}")
    if listed - present:
        raise IntegrityError(f"file(s) missing: {', '.join(sorted(listed - present))}")
    if check_files:
        _check_entries(d, entries)
    digest = hashlib.sha256(manifest).hexdigest()
    return DirVerifyResult(entries, signers, meta, digest)


def _check_entries(d: Path, entries: Sequence[DirEntry]) -> None:
    """Raise :class:`IntegrityError` unless every file has the manifest's digest and size.

    Public files are checked first, then the sealed ones, ``_FILES_AT_ONCE`` at a time with all
    their chunks hashed on one pool (every core busy to the end of a batch; memory stays one
    chunk buffer per thread). The failure raised is the first in manifest order among the
    public files, else among the sealed ones."""
    for e in entries:
        if e.kind == "public":
            check_entry(d, e)
    sealed = [e for e in entries if e.kind != "public"]
    for at in range(0, len(sealed), _FILES_AT_ONCE):
        batch = sealed[at : at + _FILES_AT_ONCE]
        with contextlib.ExitStack() as stack:
            files = [stack.enter_context(open_regular(d / e.path)) for e in batch]
            roots = container.compute_roots(files)
        for e, (root, content) in zip(batch, roots, strict=True):
            _check_root(e, root, content)


_FILES_AT_ONCE = 64  # sealed files open at once while a directory is verified


def check_entry(d: Path, e: DirEntry) -> None:
    """Raise :class:`IntegrityError` unless the file of ``e`` has the manifest's digest and size."""
    p = d / e.path
    if e.kind == "public":
        if os.lstat(p).st_size != e.size or "sha256:" + _sha256_file(p) != e.digest:
            raise IntegrityError(f"{e.path}: content differs from the manifest")
        return
    with open_regular(p) as f:
        root, content = container.compute_root(f)
    _check_root(e, root, content)


def _check_root(e: DirEntry, root: bytes, content: container.format.Content) -> None:
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
    trusted_signers: Sequence[csig.Verifier] | None = None,
    release: DirReleaseCheck | None = None,
) -> list[str]:
    """Verify, then write the original files (shards as plain safetensors) into ``out_dir``.

    Everything is written into a hidden staging directory next to ``out_dir`` and renamed into
    place only once every file checked out: on any failure no file appears under ``out_dir``.
    Decrypted files are created 0600 (or stricter, as their sealed file)."""
    d, out = Path(d), Path(out_dir)
    rc = release or DirReleaseCheck()
    res = verify_dir(d, trusted_signers=trusted_signers, check_files=False)
    rc.manifest(res.signers, res.metadata, key_holder=True)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise FormatError(f"{out} exists and is not empty")
    out.parent.mkdir(parents=True, exist_ok=True)
    stage = out.parent / f".{out.name}.{secrets.token_hex(6)}.partial"
    os.mkdir(stage)
    try:
        for e in res.entries:
            _unseal_entry(d, e, stage / _safe_rel(e.source), keys, rc)
        rc.done()
        os.replace(stage, out)
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise
    return [e.source for e in res.entries]


def _unseal_entry(d: Path, e: DirEntry, target: Path, keys: container.KeySource, rc: DirReleaseCheck) -> None:
    """Write one entry's original bytes to ``target``; a sealed payload is checked as ``load`` checks it."""
    target.parent.mkdir(parents=True, exist_ok=True)
    with open_regular(d / e.path) as f:
        if e.kind == "public":
            with atomic_write(target) as w:
                h = hashlib.sha256()
                while block := f.read(1 << 22):
                    h.update(block)
                    w.write(block)
                if w.tell() != e.size or "sha256:" + h.hexdigest() != e.digest:
                    raise IntegrityError(f"{e.path}: content differs from the manifest")
            return
        reader = container.open_sealed(f, keys)
        reader.expect_root(expected_root(e))
        rc.sealed_file(reader.content.metadata)
        data_start = check_payload(reader, e.kind)  # before anything is written
        with atomic_write(target, mode=0o600 & os.fstat(f.fileno()).st_mode) as w:
            reader.write_plaintext(w, skip=0 if e.kind == "safetensors" else data_start)


def check_payload(reader: container.SealedReader, kind: str) -> int:
    """Parse a sealed entry's payload header strictly and require the structure ``seal_dir``
    writes (a flat dict of whole tensors, exactly the header's entries; a blob: one ``U8``
    entry). Returns where the data section starts. Needs no torch."""
    from ..payload import structure

    data_start, meta, entries = payload.read_header(reader)
    reader.release_prefix()
    if meta.get(payload.VERSION_KEY) != payload.STRUCTURE_VERSION or payload.STRUCTURE_KEY not in meta:
        raise FormatError("payload carries no sealedckpt structure of a known version")
    got = payload.strict_json(meta[payload.STRUCTURE_KEY], "structure")
    want = json.loads(structure.dumps(structure.state_dict([(x.name, x.dtype, x.shape) for x in entries])))
    if got != want:
        raise FormatError("sealed entry does not hold a plain state_dict of its header's tensors")
    if kind == "blob" and (BLOB_KEY not in meta or [(x.name, x.dtype) for x in entries] != [("blob", "U8")]):
        raise FormatError("sealed file is not a blob")
    return data_start


def _write_blob(reader: container.SealedReader, out: Any) -> None:
    """Stream a blob payload's bytes (its single entry, the whole data section) into ``out``."""
    reader.write_plaintext(out, skip=check_payload(reader, "blob"))

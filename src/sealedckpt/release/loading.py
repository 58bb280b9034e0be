"""Loading a sealed model directory into one state_dict (torch needed only here)."""

from __future__ import annotations

import hashlib
import io
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .. import container
from .._json import strict_loads
from ..container.signatures import Verifier
from ..errors import FormatError, IntegrityError
from . import directory as distdir
from ._safeio import open_regular, read_regular
from .policy import DirReleaseCheck

if TYPE_CHECKING:
    from ..payload.codec import MapLocation


#: The most bytes a non-weight file (config, tokenizer, index) may hold when read into memory.
MAX_FILE_BYTES = 256 << 20


def file_bytes(
    root: Path, e: distdir.DirEntry, keys: container.KeySource, rc: DirReleaseCheck, limit: int = MAX_FILE_BYTES
) -> bytes:
    """The original bytes of a non-shard entry (public, or sealed as a blob), checked against the
    manifest (a sealed one: every chunk authenticated and its content root equal to the listed one)."""
    if e.kind == "public":
        raw = read_regular(root / e.path, limit)
        if len(raw) != e.size or "sha256:" + hashlib.sha256(raw).hexdigest() != e.digest:
            raise IntegrityError(f"{e.path}: content differs from the manifest")
        return raw
    buf = io.BytesIO()
    with open_regular(root / e.path) as fh:
        reader = container.open_sealed(fh, keys)
        reader.expect_root(distdir.expected_root(e))
        rc.sealed_file(reader.content.metadata)
        if reader.content.payload_len > limit:
            raise FormatError(f"{e.path}: too large to read into memory (at most {limit} bytes)")
        distdir._write_blob(reader, buf)
    return buf.getvalue()


def _check_index(raw: bytes, origin: dict[str, str]) -> None:
    """The merged tensors must be exactly those of the index's ``weight_map``, each from its shard."""
    index = strict_loads(raw, "index.json")
    weight_map = index.get("weight_map") if isinstance(index, dict) else None
    if not isinstance(weight_map, dict):
        raise FormatError("index.json has no weight_map")
    if set(weight_map) != set(origin):
        missing, extra = set(weight_map) - set(origin), set(origin) - set(weight_map)
        raise IntegrityError(
            f"shards do not match the index (missing {sorted(missing)[:3]}, extra {sorted(extra)[:3]})"
        )
    for name, shard_name in weight_map.items():
        if origin[name] != shard_name:
            raise IntegrityError(f"tensor {name!r} came from {origin[name]}, the index says {shard_name}")


def load_state(
    d: str | os.PathLike[str],
    keys: container.KeySource,
    *,
    trusted_signers: Sequence[Verifier] | None,
    map_location: MapLocation = None,
    release: DirReleaseCheck | None = None,
    on_verified: Callable[[distdir.DirVerifyResult], None] | None = None,
) -> dict[str, Any]:
    """Verify the manifest (and the release's model/version, see :class:`DirReleaseCheck`), then
    merge every shard into one state_dict, checked against the index; other files are checked
    against the manifest, not decrypted."""
    return read_release(d, keys, trusted_signers=trusted_signers, map_location=map_location, release=release,
                        other_files=False, on_verified=on_verified).state  # fmt: skip


def _read_shard(
    root: Path,
    e: distdir.DirEntry,
    keys: container.KeySource,
    rc: DirReleaseCheck,
    map_location: MapLocation,
    state: dict[str, Any],
    origin: dict[str, str],
) -> None:
    """Decrypt one shard (checked against its manifest root) into ``state``."""
    from ..payload.codec import decode_payload

    with open_regular(root / e.path) as fh:
        reader = container.open_sealed(fh, keys)
        reader.expect_root(distdir.expected_root(e))
        rc.sealed_file(reader.content.metadata)
        shard = decode_payload(reader, map_location)
    if not isinstance(shard, dict):
        raise FormatError(f"{e.path} does not hold a state_dict")
    for name, tensor in shard.items():
        if name in state:
            raise FormatError(f"tensor {name!r} appears in two shards")
        state[name] = tensor
        origin[name] = os.path.basename(e.source)


@dataclass
class Release:
    """A sealed model directory read into memory: the merged weights (``state``, empty unless
    asked for), every other file's original bytes by its original name, and the verified manifest."""

    state: dict[str, Any]
    files: dict[str, bytes]
    manifest: distdir.DirVerifyResult


def read_release(
    d: str | os.PathLike[str],
    keys: container.KeySource,
    *,
    trusted_signers: Sequence[Verifier] | None,
    map_location: MapLocation = None,
    release: DirReleaseCheck | None = None,
    weights: bool = True,
    other_files: bool = True,
    on_verified: Callable[[distdir.DirVerifyResult], None] | None = None,
) -> Release:
    """Verify the manifest, then read every file into memory: shards merged into one state_dict
    (checked against the index) when ``weights``, every other file as bytes (at most
    ``MAX_FILE_BYTES`` each). With ``weights=False`` the shards are neither read nor hashed; with
    ``other_files=False`` only the index is decrypted, every other file only checked."""
    root = Path(d)
    res = distdir.verify_dir(root, trusted_signers=trusted_signers, check_files=False)
    if on_verified is not None:
        on_verified(res)  # the trust policy, before anything is decrypted
    rc = release or DirReleaseCheck()
    rc.manifest(res.signers, res.metadata, key_holder=True)
    state: dict[str, Any] = {}
    origin: dict[str, str] = {}
    files: dict[str, bytes] = {}
    for e in res.entries:
        if e.kind == "safetensors":
            if weights:
                _read_shard(root, e, keys, rc, map_location, state, origin)
        elif e.source.endswith(".index.json"):
            files[e.source] = file_bytes(root, e, keys, rc, distdir.MAX_MANIFEST)
        elif other_files:
            files[e.source] = file_bytes(root, e, keys, rc, MAX_FILE_BYTES)
        else:
            distdir.check_entry(root, e)  # not loaded, but part of the signed set
    rc.done()
    if weights:
        for name, raw in files.items():
            if name.endswith(".index.json"):
                _check_index(raw, origin)
    return Release(state, files, res)

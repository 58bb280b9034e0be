"""Loading a sealed model directory into one state_dict (torch needed only here)."""

from __future__ import annotations

import hashlib
import io
import os
from collections.abc import Callable, Sequence
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


def _index_bytes(root: Path, e: distdir.DirEntry, keys: container.KeySource, rc: DirReleaseCheck) -> bytes:
    """The bytes of the ``*.index.json`` entry (public, or sealed as a blob), checked against the manifest."""
    if e.kind == "public":
        raw = read_regular(root / e.path, distdir.MAX_MANIFEST)
        if len(raw) != e.size or "sha256:" + hashlib.sha256(raw).hexdigest() != e.digest:
            raise IntegrityError(f"{e.path}: content differs from the manifest")
        return raw
    buf = io.BytesIO()
    with open_regular(root / e.path) as fh:
        reader = container.open_sealed(fh, keys)
        reader.expect_root(distdir.expected_root(e))
        rc.sealed_file(reader.content.metadata)
        if reader.content.payload_len > distdir.MAX_MANIFEST:
            raise FormatError(f"{e.path}: index too large")
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
    merge every shard into one state_dict, checked against the index."""
    from ..payload.codec import decode_payload

    root = Path(d)
    res = distdir.verify_dir(root, trusted_signers=trusted_signers, check_files=False)
    if on_verified is not None:
        on_verified(res)  # the trust policy, before anything is decrypted
    rc = release or DirReleaseCheck()
    rc.manifest(res.signers, res.metadata, key_holder=True)
    state: dict[str, Any] = {}
    origin: dict[str, str] = {}
    index: bytes | None = None
    for e in res.entries:
        if e.kind == "safetensors":
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
        elif e.source.endswith(".index.json"):
            index = _index_bytes(root, e, keys, rc)
        else:
            distdir.check_entry(root, e)  # not loaded, but part of the signed set
    rc.done()
    if index is not None:
        _check_index(index, origin)
    return state

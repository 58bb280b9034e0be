"""``SealedStorageReader``: DCP's storage reader over a sealed checkpoint; nothing is unpickled.

``read_metadata`` (every rank) opens ``.metadata`` (key, signature policy), checks that every
data file it lists is present with its listed size and that no other is, and parses DCP's
``Metadata`` from strict JSON. ``read_data`` opens each data file it needs, binds it to the
listing (key commitment; content root when signed) and reads only the chunks that hold the
items asked for, each authenticated before use. Non-tensor values come back through the
structure codec and are handed to the planner as objects (never ``torch.load``).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Sequence
from typing import Any

import torch
from torch.distributed.checkpoint._traverse import set_element
from torch.distributed.checkpoint.default_planner import DefaultLoadPlanner
from torch.distributed.checkpoint.metadata import Metadata, MetadataIndex, StorageMeta
from torch.distributed.checkpoint.planner import LoadItemType, LoadPlan, LoadPlanner, ReadItem
from torch.distributed.checkpoint.storage import StorageReader
from torch.futures import Future

from .. import container
from ..api import _keys
from ..api._keys import LoadKey, Trusted
from ..api._trust import keys_of
from ..errors import FormatError, IntegrityError, InvalidArgumentError, SealedCkptError
from ..payload.decode import decode_payload
from ..payload.lazy import SealedFile
from ..stores.keystore import Keystore
from . import _io, _listing, _schema
from ._listing import DataFile
from ._schema import Location


class SealedStorageReader(_io.AtCheckpointDir, StorageReader):
    """A ``torch.distributed.checkpoint`` storage reader for checkpoints written by
    :class:`SealedStorageWriter`: ``dcp.load(state_dict, storage_reader=SealedStorageReader(path, key=...))``.

    ``trusted_signers`` (verify keys, or ``"store"``) requires a signature by one of them on the
    metadata and on every data file; ``SEALEDCKPT_REQUIRE_SIGNATURE=1`` makes the trust store
    the default, as for :func:`sealedckpt.load`. ``path`` may be a ``scheme://`` URL (fsspec,
    ``storage_options`` for its file system): data files are then read by ranged GETs, only the
    chunks that hold the items asked for (large blocks when every item of a file is).
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        key: LoadKey | Sequence[LoadKey] | None = None,
        trusted_signers: Trusted = None,
        keystore: Keystore | None = None,
        storage_options: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        self.path = _io.checkpoint_dir(path, storage_options)
        self._keys = _keys.load_keys(key, keystore)
        self._trusted = _keys.trusted(trusted_signers)
        self.load_id = uuid.uuid4().hex
        self._storage: dict[MetadataIndex, Location] = {}
        self._files: dict[str, DataFile] = {}
        self._primed: Metadata | None = None
        self._failure: SealedCkptError | None = None

    def __repr__(self) -> str:
        return f"SealedStorageReader({str(self.path)!r})"

    def reset(self, checkpoint_id: str | os.PathLike[str] | None = None) -> None:
        self._storage, self._files = {}, {}
        self._move_to(checkpoint_id)
        self.load_id = uuid.uuid4().hex

    def prime_metadata(self) -> None:
        """Read and check the metadata now; the next :meth:`read_metadata` returns it."""
        self._primed = self._read_metadata()

    def read_metadata(self, *args: Any, **kwargs: Any) -> Metadata:
        if kwargs.get("rank") is not None:  # DCP's rank-local fallback: say why the global one failed
            if self._failure is not None:
                raise self._failure
            raise FormatError(f"{self.path}: a sealed DCP checkpoint has one global metadata file, no rank-local one")
        primed, self._primed = self._primed, None
        if primed is not None:
            return primed
        try:
            return self._read_metadata()
        except SealedCkptError as exc:
            self._failure = exc
            raise

    def _read_metadata(self) -> Metadata:
        with _io.open_read(self.path, _io.METADATA_NAME, _io.MAX_METADATA_FILE, whole=True) as f:
            reader = container.open_sealed(f, self._keys, trusted_signers=keys_of(self._trusted))
            if self._trusted is not None:
                self._trusted.check(reader.unverified_signers, reader.content.metadata)
            files = _listing.decode(reader.content.metadata)
            doc = decode_payload(reader)
        if (
            not isinstance(doc, dict)
            or set(doc) != {"metadata", "planner_data"}
            or not isinstance(doc["metadata"], str)
        ):
            raise FormatError(f"{self.path.show(_io.METADATA_NAME)}: not a sealed DCP metadata payload")
        _listing.check_present(self.path, files)
        md, storage = _schema.from_json(doc["metadata"], {f.name for f in files})
        md.planner_data = doc["planner_data"]
        md.storage_data = storage
        if md.storage_meta is None:
            md.storage_meta = StorageMeta()
        md.storage_meta.load_id = self.load_id
        self._files = {f.name: f for f in files}
        return md

    def set_up_storage_reader(self, metadata: Metadata, is_coordinator: bool, *args: Any, **kwargs: Any) -> None:
        if kwargs.get("use_collectives", True) is False:
            raise InvalidArgumentError("a sealed DCP checkpoint is read with collectives")
        storage = metadata.storage_data
        if not isinstance(storage, dict) or not all(isinstance(v, Location) for v in storage.values()):
            raise FormatError("the metadata was not read by a SealedStorageReader")
        self._storage = storage

    def prepare_local_plan(self, plan: LoadPlan) -> LoadPlan:
        return plan

    def prepare_global_plan(self, plans: list[LoadPlan]) -> list[LoadPlan]:
        return plans

    def read_data(self, plan: LoadPlan, planner: LoadPlanner) -> Future[None]:
        per_file: dict[str, list[tuple[ReadItem, Location]]] = {}
        for item in plan.items:
            loc = self._storage.get(item.storage_index)
            if loc is None:
                raise FormatError(f"the checkpoint metadata has no storage entry for {item.storage_index.fqn!r}")
            per_file.setdefault(loc.file, []).append((item, loc))
        stored: dict[str, set[str]] = {}
        for loc in self._storage.values():
            stored.setdefault(loc.file, set()).add(loc.key)
        for name, reqs in sorted(per_file.items()):
            # at a URL, a file read whole goes in large ranged GETs; one read in part, chunk by chunk
            whole = {loc.key for _, loc in reqs} >= stored.get(name, set())
            with _io.open_read(self.path, name, whole=whole) as f, self._open(name, f) as sf:
                rest = _read_direct(reqs, sf, planner)
                for item, loc in rest:
                    _deliver(item, loc, sf, planner, name)
        fut: Future[None] = Future()
        fut.set_result(None)
        return fut

    def _open(self, name: str, f: Any) -> SealedFile:
        """A data file opened and bound to the listing before any of its chunks is read."""
        facts = self._files.get(name)
        if facts is None:
            raise FormatError(f"{name}: not a data file of this checkpoint")
        if _io.opened_size(f) != facts.size:
            raise IntegrityError(f"{self.path.show(name)}: size differs from the checkpoint metadata's (changed since)")
        reader = container.open_sealed(f, self._keys, trusted_signers=keys_of(self._trusted))
        facts.check_commitment(reader.content.commitment)
        if reader.trailer.root is not None:
            facts.check_root(reader.trailer.root)  # every chunk read is then checked against it
        return SealedFile(reader)


def _read_direct(
    reqs: list[tuple[ReadItem, Location]], sf: SealedFile, planner: LoadPlanner
) -> list[tuple[ReadItem, Location]]:
    """Decrypt every whole stored tensor whose target can take its bytes as they are straight
    into the target, in one parallel pass over the file; returns the requests left to do."""
    direct: list[tuple[int, memoryview, ReadItem, Location, torch.Tensor]] = []
    rest = []
    for item, loc in reqs:
        region = None
        if item.type != LoadItemType.BYTE_IO and loc.kind == "tensor" and not any(item.storage_offsets):
            target = planner.resolve_tensor(item).detach()
            if list(target.shape) == list(item.lengths) and loc.key in sf:
                region = sf.direct_region(loc.key, target)
        if region is None:
            rest.append((item, loc))
        else:
            direct.append((region[0], region[1], item, loc, target))
    direct.sort(key=lambda d: d[0])
    regions: list[tuple[int, memoryview]] = []
    done: list[tuple[ReadItem, torch.Tensor]] = []
    end = -1
    for off, mv, item, loc, target in direct:
        if off < end:  # two items over the same stored bytes: the general path copies
            rest.append((item, loc))
            continue
        regions.append((off, mv))
        done.append((item, target))
        end = off + len(mv)
    if regions:
        sf.read_regions(regions)
    for item, target in done:
        planner.commit_tensor(item, target)
    return rest


def _deliver(item: ReadItem, loc: Location, sf: SealedFile, planner: LoadPlanner, name: str) -> None:
    is_tensor = item.type != LoadItemType.BYTE_IO
    if is_tensor != (loc.kind == "tensor"):
        raise FormatError(f"{name}: item {item.storage_index.fqn!r} is stored as {loc.kind}")
    try:
        value = sf.get_tensor(loc.key) if is_tensor else sf.get(loc.key)
    except KeyError:
        raise IntegrityError(f"{name}: holds no item {loc.key!r} that the checkpoint metadata lists") from None
    if not is_tensor:
        load_object(planner, item, value)
        return
    src = _narrow(value, item.storage_offsets, item.lengths)
    target = planner.resolve_tensor(item).detach()
    if target.size() != src.size():
        raise FormatError(f"{item.storage_index.fqn!r}: stored chunk is {tuple(src.size())}, the planner wants "
                          f"{tuple(target.size())}")  # fmt: skip
    target.copy_(src)
    planner.commit_tensor(item, target)


def _narrow(t: torch.Tensor, offsets: Sequence[int], lengths: Sequence[int]) -> torch.Tensor:
    for dim, (off, n) in enumerate(zip(offsets, lengths, strict=True)):
        if off != 0 or n != t.size(dim):
            t = t.narrow(dim, off, n)
    return t


def load_object(planner: LoadPlanner, item: ReadItem, value: Any) -> None:
    """Hand a decoded non-tensor value to the planner, as ``load_bytes`` would after unpickling.

    A planner with a ``load_object(read_item, value)`` method gets it; DCP's ``DefaultLoadPlanner``
    (whose ``load_bytes`` would ``torch.load``) gets the value set where ``load_bytes`` sets it.
    """
    custom = getattr(planner, "load_object", None)
    if custom is not None:
        custom(item, value)
    elif isinstance(planner, DefaultLoadPlanner) and type(planner).load_bytes is DefaultLoadPlanner.load_bytes:
        fqn = item.dest_index.fqn
        if planner.flatten_state_dict:
            set_element(planner.original_state_dict, planner.mappings[fqn], value)
        else:
            planner.state_dict[fqn] = value
    else:
        raise InvalidArgumentError(
            f"{type(planner).__name__} reads non-tensor values only as pickled bytes (load_bytes)",
            hint="give the planner a load_object(read_item, value) method, or use DefaultLoadPlanner",
        )


__all__ = ["SealedStorageReader", "load_object"]

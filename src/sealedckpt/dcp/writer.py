"""``SealedStorageWriter``: DCP's storage writer, every file sealed, metadata without pickle.

Each rank writes its items into sealed checkpoint files ``__<rank>_<n>.sealed`` (a safetensors
payload: tensors as entries, non-tensor values through the structure codec, never pickled). The
coordinator then writes ``.metadata`` last and atomically: a sealed, signed file holding DCP's
``Metadata`` as strict JSON and naming every data file with its size, key commitment and content
root. A previous checkpoint's metadata is removed before any data file is written, so the
directory holds a complete checkpoint or none.
"""

from __future__ import annotations

import dataclasses
import os
import threading
import uuid
from collections.abc import Sequence
from typing import Any

import torch
from torch.distributed.checkpoint.metadata import Metadata, MetadataIndex, StorageMeta
from torch.distributed.checkpoint.planner import SavePlan, SavePlanner, WriteItem, WriteItemType
from torch.distributed.checkpoint.storage import StorageWriter, WriteResult
from torch.futures import Future

from .. import container
from .._pool import run_all
from ..api import _keys
from ..api._keys import SaveKey
from ..crypto import SigningKey
from ..errors import ArgumentTypeError, InvalidArgumentError, UnsupportedTypeError
from ..payload.codec import plan_payload
from ..stores.keystore import Keystore
from . import _io, _listing, _schema
from ._listing import DataFile
from ._schema import Location


@dataclasses.dataclass(frozen=True)
class _Prefix:
    """A rank's file-name prefix, chosen by the coordinator (travels in DCP's plan exchange)."""

    prefix: str


@dataclasses.dataclass(frozen=True)
class _Written:
    """A write result's storage data: where the item went and the facts of its file."""

    location: Location
    file: DataFile


class SealedStorageWriter(_io.AtCheckpointDir, StorageWriter):
    """A ``torch.distributed.checkpoint`` storage writer whose files are all sealed.

    ``dcp.save(state_dict, storage_writer=SealedStorageWriter(path, key=..., sign_with=...))``;
    ``thread_count`` files per rank are sealed in parallel. ``key=None`` uses the default key
    (``$SEALEDCKPT_KEY`` or the keystore), as :func:`sealedckpt.save` does. ``path`` may be a
    ``scheme://`` URL (``s3://bucket/prefix``; fsspec, ``storage_options`` for its file system):
    every file is then one object, uploaded whole or not at all, ``.metadata`` last.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        key: SaveKey | Sequence[SaveKey] | None = None,
        sign_with: SigningKey | Sequence[SigningKey] | None = None,
        thread_count: int = 1,
        keystore: Keystore | None = None,
        storage_options: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        if type(thread_count) is not int or thread_count < 1:
            raise ArgumentTypeError(f"thread_count must be a positive int, not {thread_count!r}")
        self.path = _io.checkpoint_dir(path, storage_options)
        self._keys = _keys.save_keys(key, keystore)
        self._signers = _keys.signers(sign_with)
        self.thread_count = thread_count
        self.save_id = uuid.uuid4().hex
        self.rank: int | None = None

    def __repr__(self) -> str:
        return f"SealedStorageWriter({str(self.path)!r}, signed={bool(self._signers)})"

    def reset(self, checkpoint_id: str | os.PathLike[str] | None = None) -> None:
        self._move_to(checkpoint_id)
        self.save_id = uuid.uuid4().hex

    def set_up_storage_writer(self, is_coordinator: bool, *args: Any, **kwargs: Any) -> None:
        self.rank = kwargs.get("rank")
        if kwargs.get("use_collectives", True) is False:
            raise InvalidArgumentError("a sealed DCP checkpoint needs collectives (one global metadata file)")

    def prepare_local_plan(self, plan: SavePlan) -> SavePlan:
        _io.make_dir(self.path)
        return plan

    def prepare_global_plan(self, plans: list[SavePlan]) -> list[SavePlan]:
        # The coordinator, before any rank writes: the old checkpoint stops being one (no
        # metadata), and data files of an earlier save are removed (they would be extra files).
        _io.remove(self.path, _io.METADATA_NAME)
        for name in _io.list_sizes(self.path):
            if _io.is_data_name(name):
                _io.remove(self.path, name)
        return [dataclasses.replace(p, storage_data=_Prefix(f"__{i}_")) for i, p in enumerate(plans)]

    def write_data(self, plan: SavePlan, planner: SavePlanner) -> Future[list[WriteResult]]:
        prefix = plan.storage_data.prefix if isinstance(plan.storage_data, _Prefix) else f"__{self.rank or 0}_"
        buckets = _split(plan.items, self.thread_count)
        results: list[list[WriteResult]] = [[] for _ in buckets]
        lock = threading.Lock()  # planners are not documented as thread-safe

        def job(i: int) -> None:
            results[i] = self._write_file(f"{prefix}{i}{_io.DATA_SUFFIX}", buckets[i], planner, lock)

        run_all(job, list(range(len(buckets))), len(buckets), "sealedckpt-dcp")
        fut: Future[list[WriteResult]] = Future()
        fut.set_result([r for rs in results for r in rs])
        return fut

    def _write_file(
        self, name: str, items: list[WriteItem], planner: SavePlanner, lock: threading.Lock
    ) -> list[WriteResult]:
        values: dict[str, Any] = {}
        kinds: list[str] = []
        sizes: list[int] = []
        with lock:
            for j, item in enumerate(items):
                values[str(j)], kind, size = _resolve(item, planner)
                kinds.append(kind)
                sizes.append(size)
        plan = plan_payload(values)
        workers = max(1, container.default_workers() // self.thread_count)
        with _io.write_atomic(self.path, name) as out:
            summary = container.seal(out, plan.payload_len, plan.segments(), keys=self._keys, signers=self._signers,
                                     want_root=True, workers=workers)  # fmt: skip
        assert summary.root is not None
        facts = DataFile(name, summary.bytes_written, summary.commitment.hex(), summary.root.hex())
        return [
            WriteResult(item.index, sizes[j], _Written(Location(name, str(j), kinds[j]), facts))
            for j, item in enumerate(items)
        ]  # fmt: skip

    def finish(self, metadata: Metadata, results: list[list[WriteResult]]) -> None:
        storage: dict[MetadataIndex, Location] = {}
        files: dict[str, DataFile] = {}
        for wr in (w for ws in results for w in ws):
            if not isinstance(wr.storage_data, _Written):
                raise InvalidArgumentError("a rank wrote with another storage writer")
            storage[wr.index] = wr.storage_data.location
            files[wr.storage_data.file.name] = wr.storage_data.file
        metadata.storage_meta = self.storage_meta()
        doc = _schema.to_json(metadata, storage)
        payload = plan_payload({"metadata": doc, "planner_data": metadata.planner_data})
        public = _listing.encode(list(files.values()))
        with _io.write_atomic(self.path, _io.METADATA_NAME) as out:
            container.seal(out, payload.payload_len, payload.segments(), keys=self._keys, signers=self._signers,
                           metadata=public)  # fmt: skip

    def storage_meta(self) -> StorageMeta | None:
        return StorageMeta(checkpoint_id=str(self.path), save_id=self.save_id)


def _resolve(item: WriteItem, planner: SavePlanner) -> tuple[Any, str, int]:
    """The value to store for ``item``: a CPU tensor, or the object itself (never DCP's pickle of
    it: a planner that can look objects up hands the object, one that cannot is refused)."""
    if item.type == WriteItemType.BYTE_IO:
        lookup = getattr(planner, "lookup_object", None)
        if lookup is None:
            raise UnsupportedTypeError(item.index.fqn, "this planner hands only pickled bytes for non-tensor values",
                                       hint="use DefaultSavePlanner (or a planner with lookup_object)")  # fmt: skip
        return lookup(item.index), "object", 0
    t = planner.resolve_data(item)
    if not isinstance(t, torch.Tensor):
        raise UnsupportedTypeError(item.index.fqn, f"the planner resolved a tensor item to {type(t).__name__}")
    t = t.detach()
    if t.device.type != "cpu":
        t = t.cpu()
    return t, "tensor", t.numel() * t.element_size()


def _split(items: list[WriteItem], n: int) -> list[list[WriteItem]]:
    """``items`` into at most ``n`` buckets of similar byte size (largest first); at least one."""

    def size(it: WriteItem) -> int:
        td = it.tensor_data
        if td is None:
            return 0
        return int(torch.Size(td.size).numel()) * torch.empty((), dtype=td.properties.dtype).element_size()

    buckets: list[list[WriteItem]] = [[] for _ in range(max(1, min(n, len(items))))]
    loads = [0] * len(buckets)
    for it in sorted(items, key=size, reverse=True):
        k = loads.index(min(loads))
        buckets[k].append(it)
        loads[k] += size(it)
    return buckets

"""``save`` / ``load``: DCP's own calls with the sealed storage, failures as SealedCkptError.

DCP reports a failure on any rank to every rank as a ``CheckpointException`` (its collective
error path); these wrappers re-raise it on every rank as the first failing rank's sealedckpt
error class (an IntegrityError stays an IntegrityError), naming the rank.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch.distributed as dist
from torch.distributed.checkpoint.api import CheckpointException
from torch.distributed.checkpoint.state_dict_loader import load as dcp_load
from torch.distributed.checkpoint.state_dict_saver import save as dcp_save

from ..api._keys import LoadKey, SaveKey, Trusted
from ..crypto import SigningKey
from ..errors import SealedCkptError
from ..stores.keystore import Keystore
from .reader import SealedStorageReader
from .writer import SealedStorageWriter


def sealed_failure(exc: CheckpointException) -> SealedCkptError | None:
    """The lowest rank's sealedckpt error inside a DCP ``CheckpointException``, re-made to name its
    rank (the same class when it can be, else the base class); None when no rank had one."""
    for rank in sorted(exc.failures):
        err = exc.failures[rank][0]
        if isinstance(err, SealedCkptError):
            return _remake(type(err), f"rank {rank}: {err.args[0] if err.args else err}", err.hint)
    return None


@contextmanager
def _translated() -> Iterator[None]:
    try:
        yield
    except CheckpointException as exc:
        err = sealed_failure(exc)
        if err is None:
            raise
        raise err from None


def _check_metadata_everywhere(reader: SealedStorageReader, process_group: Any) -> None:
    """Open the metadata on every rank first and fail every rank alike when any rank cannot:
    DCP itself reports a metadata failure as a bare AssertionError (the class is lost)."""
    err: SealedCkptError | None = None
    try:
        reader.prime_metadata()
    except SealedCkptError as exc:
        err = exc
    if dist.is_available() and dist.is_initialized():
        found: list[Any] = [None] * dist.get_world_size(process_group)
        mine = None if err is None else (type(err).__name__, str(err.args[0]) if err.args else str(err), err.hint)
        dist.all_gather_object(found, mine, group=process_group)  # in memory, as DCP's own plan exchange
        if err is None:
            for rank, got in enumerate(found):
                if got is not None:
                    cls = next((c for c in _error_classes() if c.__name__ == got[0]), SealedCkptError)
                    err = _remake(cls, f"rank {rank}: {got[1]}", got[2])
                    break
    if err is not None:
        raise err


def _error_classes() -> list[type[SealedCkptError]]:
    from .. import errors

    return [c for c in vars(errors).values() if isinstance(c, type) and issubclass(c, SealedCkptError)]


def _remake(cls: type[SealedCkptError], msg: str, hint: str | None) -> SealedCkptError:
    try:
        out = cls(msg)
    except TypeError:  # a class with another constructor: the base class says the same
        out = SealedCkptError(msg)
    out.hint = hint
    return out


def save(
    state_dict: dict[str, Any],
    path: str | os.PathLike[str],
    *,
    key: SaveKey | Sequence[SaveKey] | None = None,
    sign_with: SigningKey | Sequence[SigningKey] | None = None,
    thread_count: int = 1,
    keystore: Keystore | None = None,
    process_group: Any = None,
    planner: Any = None,
) -> Any:
    """``torch.distributed.checkpoint.save`` into a sealed checkpoint directory ``path``."""
    writer = SealedStorageWriter(path, key=key, sign_with=sign_with, thread_count=thread_count, keystore=keystore)
    with _translated():
        return dcp_save(state_dict, storage_writer=writer, planner=planner, process_group=process_group)


def load(
    state_dict: dict[str, Any],
    path: str | os.PathLike[str],
    *,
    key: LoadKey | Sequence[LoadKey] | None = None,
    trusted_signers: Trusted = None,
    keystore: Keystore | None = None,
    process_group: Any = None,
    planner: Any = None,
) -> None:
    """``torch.distributed.checkpoint.load`` from a sealed checkpoint directory, in place."""
    reader = SealedStorageReader(path, key=key, trusted_signers=trusted_signers, keystore=keystore)
    _check_metadata_everywhere(reader, process_group)
    with _translated():
        dcp_load(state_dict, storage_reader=reader, planner=planner, process_group=process_group)

"""A directory of step checkpoints for a training job: atomic saves, retention, resume, background saves.

Each step is one file, ``step-<12-digit step>.sealed``, written by :func:`save` (temp file,
fsync, rename, fsync of the directory), so a name in the directory is always a complete file
and listing the directory is the index. Temp files a killed writer may leave are hidden
``.step-<12 digits>.sealed.<12 hex>.tmp`` names (only where O_TMPFILE is not available); a
manager removes those not modified for :data:`STALE_TEMP_SECONDS` when it starts (a live
writer keeps writing to its temp file) and skips younger ones silently (a save in flight);
a stale one that remains, and anything else in the directory, is skipped with a
:class:`SealedCkptWarning` (once per name), never counted as a step and never deleted.

``directory`` may be a ``scheme://`` URL (fsspec, e.g. ``s3://bucket/run1``): the same names,
listing and retention, over :mod:`sealedckpt._remote`. On S3 a step object appears only whole
(one PUT or a completed multipart upload), so there are no temp objects; other stores write a
hidden temp name and move it, and the manager skips (never removes) such names.
"""

from __future__ import annotations

import contextlib
import os
import re
import threading
import time
import warnings
from collections.abc import Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Any

from .. import _remote
from .._fs import fsync_dir
from ..crypto import SigningKey
from ..errors import (
    ArgumentTypeError,
    InvalidArgumentError,
    NoCheckpointError,
    SealedCkptError,
    SealedCkptWarning,
    StorageError,
)
from . import checkpoint
from ._keys import LoadKey, Trusted

if TYPE_CHECKING:
    from ..payload.codec import MapLocation
    from ._snapshot import Snapshotter

STEP_DIGITS = 12
STALE_TEMP_SECONDS = 30.0
_STEP = re.compile(rf"step-(\d{{{STEP_DIGITS}}})\.sealed")
_TEMP = re.compile(rf"\.step-\d{{{STEP_DIGITS}}}\.sealed\.[0-9a-f]{{12}}\.tmp")
_RETRIES = 5  # load(step=None): files deleted by a concurrent writer's retention between list and open


def step_name(step: int) -> str:
    """The file name of ``step``: ``step-000000001234.sealed``."""
    return f"step-{step:0{STEP_DIGITS}d}.sealed"


class CheckpointManager:
    """Step checkpoints in ``directory``: ``save(step, obj)``, ``latest()``, ``load()``, ``steps()``.

    ``keep_last`` newest steps are kept, plus every step divisible by ``keep_every``; older
    files are deleted only after the new one is durable (the step just saved is never deleted).
    ``metadata`` (plus ``step``) is written as public metadata, readable by :func:`inspect`.
    ``key`` must open what it seals (a SymmetricKey, RecipientKey, Passphrase or raw bytes), or
    ``None`` for the keystore's default key. With ``async_save=True``, :meth:`save` copies the
    checkpoint (tensors into reused host buffers: one checkpoint's tensor bytes) and returns;
    sealing and writing run in one background thread, one save at a time, and an error there is
    raised by the next :meth:`save`, :meth:`wait` or :meth:`close`.
    """

    def __init__(
        self,
        directory: str | os.PathLike[str],
        *,
        key: LoadKey | Sequence[LoadKey] | None = None,
        keep_last: int = 3,
        keep_every: int | None = None,
        sign_with: SigningKey | Sequence[SigningKey] | None = None,
        metadata: dict[str, str] | None = None,
        async_save: bool = False,
        storage_options: dict[str, Any] | None = None,
    ) -> None:
        if type(keep_last) is not int or keep_last < 1:
            raise InvalidArgumentError(f"keep_last must be an int >= 1, not {keep_last!r}")
        if keep_every is not None and (type(keep_every) is not int or keep_every < 1):
            raise InvalidArgumentError(f"keep_every must be None or an int >= 1, not {keep_every!r}")
        if metadata is not None and "step" in metadata:
            raise InvalidArgumentError("metadata key 'step' is the manager's own (the step number)")
        self.remote = _remote.is_url(directory)
        self.storage_options = storage_options
        if self.remote:
            self.directory = str(directory).rstrip("/")
        else:
            self.directory = os.path.abspath(os.fspath(directory))
            os.makedirs(self.directory, exist_ok=True)
        self.key, self.sign_with, self.metadata = key, sign_with, dict(metadata or {})
        self.keep_last, self.keep_every, self.async_save = keep_last, keep_every, async_save
        #: The step the last :meth:`load` returned, and the ``(step, error)`` pairs it skipped.
        self.loaded_step: int | None = None
        self.skipped: list[tuple[int, BaseException]] = []
        self._warned: set[str] = set()
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None
        self._snap: Snapshotter | None = None
        self._closed = False
        self._remove_stale_temps()

    # -- the directory ---------------------------------------------------------------------

    def path(self, step: int) -> str:
        """Where ``step`` is (or would be) stored."""
        return self._join(step_name(step))

    def _join(self, name: str) -> str:
        return _remote.join(self.directory, name) if self.remote else os.path.join(self.directory, name)

    def _names(self) -> list[str]:
        if self.remote:
            return _remote.listdir(self.directory, self.storage_options)
        return os.listdir(self.directory)

    def steps(self) -> list[int]:
        """Every complete step in the directory, oldest first; other names are skipped (warned once)."""
        found = []
        for name in self._names():
            if m := _STEP.fullmatch(name):
                found.append(int(m.group(1)))
            elif name not in self._warned and not (_TEMP.fullmatch(name) and not self._stale(name)):
                self._warned.add(name)
                what = "a stale temp file" if _TEMP.fullmatch(name) else "not a checkpoint of this manager"
                shown = _remote.redact(self._join(name))
                warnings.warn(f"{shown}: {what}; skipped", SealedCkptWarning, 2)
        return sorted(found)

    def _stale(self, name: str) -> bool:
        """A temp file not written to for STALE_TEMP_SECONDS (a live save writes continuously)."""
        if self.remote:
            return False  # remote temp names are skipped, never removed (no reliable mtime)
        try:
            return time.time() - os.lstat(os.path.join(self.directory, name)).st_mtime > STALE_TEMP_SECONDS
        except OSError:
            return False  # already renamed into place or removed

    def latest(self) -> int | None:
        """The newest step on disk (its file is complete: files appear only by atomic rename)."""
        steps = self.steps()
        return steps[-1] if steps else None

    def _remove_stale_temps(self) -> None:
        if self.remote:
            return
        for name in os.listdir(self.directory):
            if _TEMP.fullmatch(name) and self._stale(name):
                with contextlib.suppress(OSError):
                    os.unlink(os.path.join(self.directory, name))

    def _retire(self, saved: int) -> None:
        steps = self.steps()
        keep = set(steps[-self.keep_last :]) | {saved}
        if self.keep_every is not None:
            keep |= {s for s in steps if s % self.keep_every == 0}
        gone = [s for s in steps if s not in keep]
        for s in gone:
            with contextlib.suppress(FileNotFoundError):
                if self.remote:
                    _remote.delete(self.path(s), self.storage_options)
                else:
                    os.unlink(self.path(s))
        if gone and not self.remote:
            fsync_dir(self.directory)

    # -- saving ----------------------------------------------------------------------------

    def save(self, step: int, obj: Any) -> None:
        """Store ``obj`` as ``step`` (replacing that step if present), then apply retention.

        With ``async_save``, first waits for the save in flight (raising its error, if any),
        then snapshots ``obj`` and returns while the snapshot is sealed in the background.
        """
        if type(step) is not int or step < 0 or step >= 10**STEP_DIGITS:
            raise InvalidArgumentError(f"step must be an int in [0, 10**{STEP_DIGITS}), not {step!r}")
        if self._closed:
            raise InvalidArgumentError("the checkpoint manager is closed")
        self.wait()
        if not self.async_save:
            self._write(step, obj)
            return
        if self._snap is None:
            from ._snapshot import Snapshotter

            self._snap = Snapshotter()
        snap = self._snap.take(obj)
        self._thread = threading.Thread(
            target=self._background, args=(step, snap), name=f"sealedckpt-save-{step}", daemon=False
        )
        self._thread.start()

    def _write(self, step: int, obj: Any) -> None:
        meta = {**self.metadata, "step": str(step)}
        checkpoint.save(obj, self.path(step), key=self.key, sign_with=self.sign_with, metadata=meta,
                        storage_options=self.storage_options)  # fmt: skip
        self._retire(step)

    def _background(self, step: int, snap: Any) -> None:
        try:
            assert self._snap is not None
            self._snap.ready()
            self._write(step, snap)
        except BaseException as exc:
            self._error = exc

    @property
    def snapshot_bytes(self) -> int:
        """Host memory held for background snapshots (0 before the first background save)."""
        return self._snap.nbytes if self._snap is not None else 0

    def wait(self) -> None:
        """Block until the background save in flight (if any) is on disk; raise its error, once."""
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        if self._error is not None:
            err, self._error = self._error, None
            raise err

    def close(self) -> None:
        """Finish the save in flight (raising its error) and refuse further saves."""
        self._closed = True
        self.wait()

    def __enter__(self) -> CheckpointManager:
        return self

    def __exit__(self, et: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        if exc is None:
            self.close()
            return
        try:
            self.close()
        except BaseException as bg:  # the body's exception propagates; the save's is attached
            exc.add_note(f"and the background checkpoint save failed: {type(bg).__name__}: {bg}")

    # -- loading ---------------------------------------------------------------------------

    def load(
        self,
        step: int | None = None,
        *,
        map_location: MapLocation = None,
        trusted_signers: Trusted = None,
        fallback: bool = False,
    ) -> Any:
        """The checkpoint of ``step`` (default: the newest), opened with the manager's key.

        A step that fails to open raises its typed error (with a note naming the step). With
        ``fallback=True``, steps that fail to open are passed over for the next older one, each
        with a :class:`SealedCkptWarning`; :attr:`skipped` lists them and :attr:`loaded_step`
        names the step returned. :class:`NoCheckpointError` when there is none.
        """
        self.skipped = []
        self.loaded_step = None
        for _ in range(_RETRIES):
            steps = self.steps()
            if step is not None:
                if step not in steps and not fallback:
                    raise NoCheckpointError(f"no checkpoint of step {step} in {_remote.redact(self.directory)}")
                steps = [s for s in steps if s <= step]
            if not steps:
                upto = f" up to step {step}" if step is not None else ""
                raise NoCheckpointError(f"no checkpoint in {_remote.redact(self.directory)}{upto}")
            try:
                return self._load_newest(steps[::-1], map_location, trusted_signers, fallback)
            except FileNotFoundError:
                if step is not None and not fallback:
                    raise
                self.skipped = []  # deleted by a writer's retention meanwhile: look again
        raise NoCheckpointError(f"checkpoints in {_remote.redact(self.directory)} kept vanishing while being opened")

    def _load_newest(self, steps: list[int], map_location: MapLocation, trusted: Trusted, fallback: bool) -> Any:
        first: BaseException | None = None
        for s in steps:
            try:
                obj = checkpoint.load(self.path(s), key=self.key, map_location=map_location, trusted_signers=trusted,
                                      storage_options=self.storage_options)  # fmt: skip
            except (FileNotFoundError, ArgumentTypeError, InvalidArgumentError, StorageError):
                raise  # a missing file (retried by load), a caller's mistake, the store failing: not a bad step
            except (SealedCkptError, OSError) as exc:
                exc.add_note(f"checkpoint step {s}: {self.path(s)}")
                if not fallback:
                    raise
                first = first or exc
                self.skipped.append((s, exc))
                warnings.warn(f"skipped checkpoint step {s}: {type(exc).__name__}: {exc}", SealedCkptWarning, 3)
                continue
            self.loaded_step = s
            return obj
        assert first is not None
        raise first

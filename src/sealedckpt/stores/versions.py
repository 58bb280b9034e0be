"""Remembered versions (rollback state): the highest version of each model that a load under
the stored trust policy accepted, in ``$SEALEDCKPT_HOME/versions.json`` next to the trust store.

A later load of that model below it is refused (a replayed old release) unless the caller allows
it. It cannot protect a first install, nor a home that is wiped or restored (docs/DISTRIBUTION.md).
"""

from __future__ import annotations

import contextlib
import json
import re
from pathlib import Path

from .._fs import atomic_write
from ..errors import KeystoreError, RollbackError
from ._records import read_doc
from .backends import check_private, default_home, home_lock

_VERSION = re.compile(r"[0-9]{1,18}")
MAX_MODELS = 100_000


class VersionMemory:
    def __init__(self, home: Path | None = None) -> None:
        self.home = Path(home) if home is not None else default_home()

    @property
    def path(self) -> Path:
        return self.home / "versions.json"

    def _locked(self) -> contextlib.AbstractContextManager[None]:
        return home_lock(self.home, "versions.lock")

    def all(self) -> dict[str, int]:
        if not self.path.exists() and not self.path.is_symlink():
            return {}
        check_private(self.path, want_dir=False)
        doc = read_doc(self.path, "version memory")
        models = doc.get("models") if isinstance(doc, dict) and set(doc) == {"version", "models"} else None
        if doc.get("version") != 1 or not isinstance(models, dict) or len(models) > MAX_MODELS:
            raise KeystoreError(f"version memory {self.path} is damaged")
        if not all(isinstance(k, str) and type(v) is int and v >= 0 for k, v in models.items()):
            raise KeystoreError(f"version memory {self.path} is damaged: versions must be integers")
        return dict(models)

    def _write(self, models: dict[str, int]) -> None:
        with atomic_write(self.path, mode=0o600) as f:
            f.write(json.dumps({"version": 1, "models": models}, indent=2, sort_keys=True).encode() + b"\n")

    def check(self, metadata: dict[str, str], allow_rollback: bool) -> int | None:
        """The numeric version of ``metadata``'s model (None without a model); raise
        :class:`RollbackError` when it is below the remembered one (unless ``allow_rollback``)."""
        model = metadata.get("model")
        if model is None:
            return None
        seen = self.all().get(model)
        raw = metadata.get("version")
        version = int(raw) if raw is not None and _VERSION.fullmatch(raw) else None
        if seen is None or allow_rollback:
            return version
        if version is None:
            raise RollbackError(f"model {model!r} was loaded at version {seen}; this one has no numeric version",
                                hint="pass allow_rollback=True (--allow-rollback) if you mean it")  # fmt: skip
        if version < seen:
            raise RollbackError(
                f"model {model!r} is version {version}, older than version {seen} already loaded here (replayed?)",
                hint="pass allow_rollback=True (--allow-rollback) if you mean it; "
                "`sealedckpt trust versions` shows what is remembered",
            )
        return version

    def record(self, model: str, version: int) -> None:
        """Remember ``version`` of ``model`` if it is the highest so far (atomic, locked)."""
        with self._locked():
            models = self.all()
            if models.get(model, -1) < version:
                models[model] = version
                self._write(models)

    def reset(self, model: str | None = None) -> list[str]:
        """Forget ``model`` (every model when None); returns what was forgotten."""
        with self._locked():
            models = self.all()
            if model is None:
                gone = sorted(models)
                models = {}
            elif model in models:
                gone = [model]
                del models[model]
            else:
                raise KeystoreError(f"no remembered version for {model!r}")
            self._write(models)
        return gone

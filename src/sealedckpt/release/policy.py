"""Rollback protection: the public ``model`` / ``version`` metadata a release must carry."""

from __future__ import annotations

from ..errors import RollbackError


def check_release(metadata: dict[str, str], min_version: int | None, expect_model: str | None) -> None:
    """Raise :class:`RollbackError` unless the signed public ``model``/``version`` metadata match."""
    if expect_model is not None and metadata.get("model") != expect_model:
        raise RollbackError(f"file is model {metadata.get('model')!r}, expected {expect_model!r}")
    if min_version is None:
        return
    raw = metadata.get("version")
    if raw is None or not raw.isdigit() or len(raw) > 18:
        raise RollbackError(f"file has no numeric public 'version' metadata (got {raw!r}); min_version={min_version}")
    if int(raw) < min_version:
        raise RollbackError(f"file is version {int(raw)}, older than the required minimum {min_version} (replayed?)")

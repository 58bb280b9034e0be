"""Rollback protection: the public ``model`` / ``version`` metadata a release must carry.

A check is only ever made against authenticated metadata: a single file's header (its MAC,
checked by whoever holds a key; its signatures, checked by :func:`sealedckpt.verify`), a
directory manifest with a verified trusted signature, or, for a key holder, the header of
every sealed file of a directory. Anything else is refused, never silently passed.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from ..container import Signer
from ..errors import RollbackError

_VERSION = re.compile(r"[0-9]{1,18}")
_TRUST_HINT = "pass --trust PUBKEY (trusted_signers=...) so the manifest's model/version are authenticated"


def check_release(metadata: dict[str, str], min_version: int | None, expect_model: str | None) -> None:
    """Raise :class:`RollbackError` unless the authenticated public ``model``/``version`` metadata match."""
    if expect_model is not None and metadata.get("model") != expect_model:
        got = metadata.get("model")
        what = "has no public 'model' metadata" if got is None else f"is model {got!r}"
        raise RollbackError(f"file {what}, expected {expect_model!r}")
    if min_version is None:
        return
    raw = metadata.get("version")
    if raw is None or not _VERSION.fullmatch(raw):
        got = "" if raw is None else f" (it has {raw!r})"
        raise RollbackError(f"file has no numeric public 'version' metadata{got}; min_version={min_version}")
    if int(raw) < min_version:
        raise RollbackError(f"file is version {int(raw)}, older than the required minimum {min_version} (replayed?)")


@dataclass
class DirReleaseCheck:
    """The rollback check of a sealed directory: against a manifest with a verified trusted
    signature, or (``key_holder``) against every sealed file's MAC-checked header."""

    min_version: int | None = None
    expect_model: str | None = None
    per_file: bool = False
    files_checked: int = 0

    @property
    def wanted(self) -> bool:
        return self.min_version is not None or self.expect_model is not None

    def manifest(self, signers: Sequence[Signer], metadata: dict[str, str], *, key_holder: bool) -> None:
        """Check the manifest's metadata if a trusted signature authenticates it; else defer to
        the sealed files (``key_holder``) or refuse."""
        if not self.wanted:
            return
        if any(s.trusted for s in signers):
            check_release(metadata, self.min_version, self.expect_model)
        elif key_holder:
            self.per_file = True
        else:
            raise RollbackError(
                "cannot check model/version without a key: the manifest is authenticated only by a "
                "verified trusted signature, and none was required",
                hint=_TRUST_HINT,
            )

    def sealed_file(self, metadata: dict[str, str]) -> None:
        """Check one sealed file's header metadata (call only after its header MAC verified)."""
        if self.per_file:
            check_release(metadata, self.min_version, self.expect_model)
            self.files_checked += 1

    def done(self) -> None:
        """Refuse a per-file check that saw no sealed file (nothing authenticated was checked)."""
        if self.per_file and not self.files_checked:
            raise RollbackError("cannot check model/version: no sealed file carries authenticated metadata",
                                hint=_TRUST_HINT)  # fmt: skip

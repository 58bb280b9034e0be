"""Finding sealed files under directories (``rewrap -r``, ``key rm --check``) without following symlinks."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator, Sequence

from .. import api
from ..errors import SealedCkptError
from .output import safe

SUFFIX = ".sealed"


def sealed_files(paths: Sequence[str]) -> Iterator[str]:
    """Each path that is a file, and every ``*.sealed`` file under each directory (sorted; symlinks
    are skipped and reported on stderr, never followed)."""
    for top in paths:
        if not os.path.isdir(top) or os.path.islink(top):
            yield top
            continue
        for root, dirs, names in os.walk(top, followlinks=False):
            dirs.sort()
            for d in dirs:
                if os.path.islink(os.path.join(root, d)):
                    print(safe(f"sealedckpt: note: skipping symlink {os.path.join(root, d)}"), file=sys.stderr)
            for name in sorted(names):
                path = os.path.join(root, name)
                if not name.endswith(SUFFIX):
                    continue
                if os.path.islink(path):
                    print(safe(f"sealedckpt: note: skipping symlink {path}"), file=sys.stderr)
                    continue
                yield path


def files_naming(key_id: str, paths: Sequence[str], secret: object = None) -> tuple[list[str], list[str]]:
    """The sealed files under ``paths`` with a key slot for ``key_id`` (recipient slots are anonymous:
    they count when ``secret`` opens them), and those that could not be read."""
    from ..api.files import opens_with

    naming: list[str] = []
    unreadable: list[str] = []
    for path in sealed_files(paths):
        try:
            slots = api.inspect(path).key_slots
            if any(slot.get("key_id") == key_id for slot in slots) or (
                secret is not None
                and any(slot.get("type") in ("recipient", "pq-recipient") and "key_id" not in slot for slot in slots)
                and opens_with(path, secret)  # type: ignore[arg-type]
            ):
                naming.append(path)
        except (SealedCkptError, OSError):
            unreadable.append(path)
    return naming, unreadable

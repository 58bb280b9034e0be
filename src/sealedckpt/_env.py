"""Boolean switches from the environment: security switches fail closed on values they don't know."""

from __future__ import annotations

import os

from .errors import SealedCkptError

_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off"})


def switch(name: str, default: bool, error: type[SealedCkptError]) -> bool:
    """``$name`` as a boolean: unset or empty gives ``default``; an unknown value raises ``error``."""
    raw = os.environ.get(name, "").strip().lower()
    if not raw:
        return default
    if raw in _TRUE:
        return True
    if raw in _FALSE:
        return False
    raise error(f"{name} must be 1 or 0, not {raw!r}", hint=f"unset {name}, or set it to 1 (on) or 0 (off)")

"""Strict JSON for everything sealedckpt parses: no duplicate keys, no NaN/Infinity, UTF-8, bounded depth."""

from __future__ import annotations

import json
from typing import Any

from .errors import FormatError, SealedCkptError


class _Refused(Exception):
    pass


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out = dict(pairs)
    if len(out) != len(pairs):
        seen: set[str] = set()
        dup = next(k for k, _ in pairs if k in seen or seen.add(k))  # type: ignore[func-returns-value]
        raise _Refused(f"duplicate key {dup!r}")
    return out


def _no_constants(name: str) -> Any:
    raise _Refused(f"non-standard constant {name}")


def strict_loads(raw: bytes | str, what: str, error: type[SealedCkptError] = FormatError) -> Any:
    """``raw`` parsed as JSON, or ``error("<what> is not valid JSON: <why>")``."""
    try:
        text = raw.decode("utf-8") if isinstance(raw, bytes) else raw
        return json.loads(text, object_pairs_hook=_no_duplicates, parse_constant=_no_constants)
    except _Refused as exc:
        raise error(f"{what} is not valid JSON: {exc}") from None
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise error(f"{what} is not valid JSON: {type(exc).__name__}") from None

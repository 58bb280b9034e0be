"""The manifest signature file (``sealedckpt-manifest.sig``): parsed strictly, written canonically.

Each entry is a DSSE-style signature over a signed statement (docs/FORMAT.md §8.1, §13): the
algorithm, the raw public key, the exact statement bytes and the signature, all base64.
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .._json import strict_loads
from ..container import format as fmt
from ..errors import FormatError
from ._safeio import read_regular

SIGNATURES = "sealedckpt-manifest.sig"
VERSION = 1
MAX_SIG_FILE = 1 << 20
MAX_SIGNATURES = 16
_FILE_FIELDS = frozenset(("version", "signatures"))
_SIG_FIELDS = frozenset(("alg", "public_key", "statement", "signature"))
_CAPS = {"public_key": fmt.MAX_SIG_PUBLIC, "statement": 4096, "signature": fmt.MAX_SIG_BYTES}


@dataclass(frozen=True)
class ManifestSignature:
    """One parsed entry: algorithm, raw public key, exact statement bytes, signature bytes."""

    alg: str
    public_key: bytes
    statement: bytes
    signature: bytes

    def as_json(self) -> dict[str, Any]:
        """The entry as the signature file stores it."""
        b64 = {k: base64.b64encode(getattr(self, k)).decode() for k in ("public_key", "statement", "signature")}
        return {"alg": self.alg, **b64}


def _malformed(why: str) -> FormatError:
    return FormatError(f"manifest signature file is malformed: {why}")


def _parse_entry(s: object) -> ManifestSignature:
    if not isinstance(s, dict) or set(s) != _SIG_FIELDS:
        raise _malformed(f"an entry must have exactly the fields {sorted(_SIG_FIELDS)}")
    if not all(isinstance(v, str) for v in s.values()):
        raise _malformed("wrong field type")
    if s["alg"] not in fmt.SIG_ALGS.values():
        raise _malformed(f"unknown signature algorithm {s['alg'][:40]!r}")
    raw: dict[str, bytes] = {}
    for k, cap in _CAPS.items():
        if len(s[k]) > 2 * cap:
            raise _malformed(f"{k} too long")
        try:
            raw[k] = base64.b64decode(s[k], validate=True)
        except binascii.Error:
            raise _malformed(f"{k} is not base64") from None
        if len(raw[k]) > cap or base64.b64encode(raw[k]).decode() != s[k]:
            raise _malformed(f"{k} is over its cap or not canonical base64")
    return ManifestSignature(s["alg"], raw["public_key"], raw["statement"], raw["signature"])


def parse_signatures(raw: bytes) -> list[ManifestSignature]:
    """The entries of a signature file: exact fields and types, bounded count, no signer twice."""
    doc = strict_loads(raw, "manifest signature file")
    if not isinstance(doc, dict) or set(doc) != _FILE_FIELDS:
        raise _malformed(f"it must have exactly the fields {sorted(_FILE_FIELDS)}")
    if type(doc["version"]) is not int or doc["version"] != VERSION:
        raise _malformed("unsupported version")
    sigs = doc["signatures"]
    if not isinstance(sigs, list) or len(sigs) > MAX_SIGNATURES:
        raise _malformed(f"signatures must be a list of at most {MAX_SIGNATURES}")
    out = [_parse_entry(s) for s in sigs]
    if len({s.public_key for s in out}) != len(out):
        raise _malformed("a key signs twice")
    return out


def read_signatures(d: Path) -> list[ManifestSignature]:
    """The parsed signature file of ``d`` (none if it has none); read safely and bounded."""
    p = d / SIGNATURES
    if not p.exists() and not p.is_symlink():
        return []
    return parse_signatures(read_regular(p, MAX_SIG_FILE))


def dumps(sigs: list[ManifestSignature]) -> bytes:
    """The canonical bytes of a signature file."""
    doc = {"version": VERSION, "signatures": [s.as_json() for s in sigs]}
    return (json.dumps(doc, indent=2, sort_keys=True, ensure_ascii=False) + "\n").encode("utf-8")


def parse_envelope(raw: bytes) -> ManifestSignature:
    """A standalone signed statement (a revocation file): one entry object, as in a signature file."""
    if len(raw) > MAX_SIG_FILE:
        raise _malformed(f"larger than {MAX_SIG_FILE} bytes")
    return _parse_entry(strict_loads(raw, "signed statement file"))


def dump_envelope(sig: ManifestSignature) -> bytes:
    """The canonical bytes of a standalone signed statement."""
    return (json.dumps(sig.as_json(), indent=2, sort_keys=True) + "\n").encode("utf-8")

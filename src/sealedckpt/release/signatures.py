"""The manifest signature file (``sealedckpt-manifest.sig``): parsed strictly, written canonically."""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .._json import strict_loads
from ..crypto import ED25519_SIG_SIZE, CompositeVerifyKey, VerifyKey, textkeys
from ..crypto.pq import COMPOSITE_SIG_SIZE
from ..errors import FormatError, InvalidArgumentError
from ._safeio import read_regular

SIGNATURES = "sealedckpt-manifest.sig"
VERSION = 1
MAX_SIG_FILE = 1 << 20
MAX_SIGNATURES = 16
#: ``signed_at`` bound: 9999-12-31T23:59:59Z, the last second every date formatter can show.
MAX_SIGNED_AT = 253_402_300_799
_DOMAIN = b"sealedckpt/v1 manifest\x00"
_FILE_FIELDS = frozenset(("version", "signatures"))
_SIG_FIELDS = frozenset(("public_key", "signed_at", "signature"))


@dataclass(frozen=True)
class ManifestSignature:
    """One parsed signature entry: verify key, signing time (Unix seconds), signature bytes."""

    key: VerifyKey
    signed_at: int
    signature: bytes

    def as_json(self) -> dict[str, Any]:
        """The entry as the signature file stores it."""
        return {"public_key": textkeys.verify_key_to_text(self.key), "signed_at": self.signed_at,
                "signature": base64.b64encode(self.signature).decode()}  # fmt: skip


def sig_message(pub: bytes, signed_at: int, manifest: bytes) -> bytes:
    """What a manifest signature signs: domain, public key, time, SHA-256 of the manifest bytes."""
    return _DOMAIN + pub + struct.pack("<Q", signed_at) + hashlib.sha256(manifest).digest()


def _malformed(why: str) -> FormatError:
    return FormatError(f"manifest signature file is malformed: {why}")


def _parse_entry(s: object) -> ManifestSignature:
    if not isinstance(s, dict) or set(s) != _SIG_FIELDS:
        raise _malformed(f"an entry must have exactly the fields {sorted(_SIG_FIELDS)}")
    public_key, signed_at, sig = s["public_key"], s["signed_at"], s["signature"]
    if not isinstance(public_key, str) or type(signed_at) is not int or not isinstance(sig, str):
        raise _malformed("wrong field type")
    if not 0 <= signed_at <= MAX_SIGNED_AT:
        raise _malformed(f"signed_at {signed_at} out of range (0..{MAX_SIGNED_AT})")
    try:
        vk = textkeys.verify_key_from_text(public_key)
    except InvalidArgumentError:
        raise _malformed("bad public_key") from None
    try:
        raw = base64.b64decode(sig, validate=True)
    except binascii.Error:
        raise _malformed("signature is not base64") from None
    want = COMPOSITE_SIG_SIZE if isinstance(vk, CompositeVerifyKey) else ED25519_SIG_SIZE  # by the key's type
    if len(raw) != want:
        raise _malformed(f"signature is not {want} bytes")
    return ManifestSignature(vk, signed_at, raw)


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
    if len({s.key.to_bytes() for s in out}) != len(out):
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

"""Signed statements (docs/FORMAT.md §8.1): what a signature vouches for, independent of the
signature algorithm.

A signature never signs a bare digest: it signs a typed statement (release, counter-signature,
audit, revocation) naming the subject (a file's content root, a directory's manifest digest, a
revoked key), the model, the version and when it was made and expires. The statement travels
as its exact canonical bytes; signers sign ``pae(statement)`` (DSSE's pre-authentication
encoding), so one statement is signed the same way by any algorithm.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

from .._json import strict_loads
from ..errors import FormatError, InvalidArgumentError

STATEMENT_TYPE = "sealedckpt/statement/v1"
PAYLOAD_TYPE = "application/vnd.sealedckpt.statement+json"
RELEASE, COUNTER, AUDIT, REVOCATION = "release", "counter-signature", "audit", "revocation"
TYPES = (RELEASE, COUNTER, AUDIT, REVOCATION)
MAX_STATEMENT = 4096
#: ``signed_at`` / ``expires_at`` bound: 9999-12-31T23:59:59Z.
MAX_TIME = 253_402_300_799
_REQUIRED = frozenset(("_type", "type", "subject", "signed_at"))
_OPTIONAL = frozenset(("model", "version", "expires_at"))
_SUBJECT = re.compile(r"(blake3|sha256):[0-9a-f]{64}|key:[a-z0-9+]{1,32}:[0-9a-f]{2,16384}")


@dataclass(frozen=True)
class Statement:
    """A parsed statement. ``model``/``version`` are the release's public metadata (None when
    it has none); ``subject`` is ``blake3:<root>``, ``sha256:<manifest>`` or ``key:<alg>:<hex>``."""

    type: str
    subject: str
    signed_at: int
    model: str | None = None
    version: str | None = None
    expires_at: int | None = None

    def encode(self) -> bytes:
        """The canonical bytes: JSON, keys sorted, no whitespace, UTF-8, absent fields omitted."""
        check(self)
        doc: dict[str, object] = {"_type": STATEMENT_TYPE, "type": self.type, "subject": self.subject,
                                  "signed_at": self.signed_at}  # fmt: skip
        for k in ("model", "version", "expires_at"):
            v = getattr(self, k)
            if v is not None:
                doc[k] = v
        raw = json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
        if len(raw) > MAX_STATEMENT:
            raise InvalidArgumentError(f"a statement is at most {MAX_STATEMENT} bytes (model or version too long)")
        return raw


def check(st: Statement) -> None:
    """Refuse a statement that could not be encoded canonically or parsed back."""
    if st.type not in TYPES:
        raise InvalidArgumentError(f"unknown statement type {st.type!r} (one of {', '.join(TYPES)})")
    if not _SUBJECT.fullmatch(st.subject):
        raise InvalidArgumentError(f"malformed statement subject {st.subject[:80]!r}")
    for name in ("signed_at", "expires_at"):
        v = getattr(st, name)
        if v is not None and (type(v) is not int or not 0 <= v <= MAX_TIME):
            raise InvalidArgumentError(f"statement {name} {v!r} out of range (0..{MAX_TIME})")
    if st.expires_at is not None and st.expires_at <= st.signed_at:
        raise InvalidArgumentError("a statement must expire after it is signed")
    for name in ("model", "version"):
        v = getattr(st, name)
        if v is not None and not isinstance(v, str):
            raise InvalidArgumentError(f"statement {name} must be a string")


def pae(statement: bytes) -> bytes:
    """DSSE's pre-authentication encoding of a statement: what every algorithm signs."""
    t = PAYLOAD_TYPE.encode("ascii")
    return b"DSSEv1 %d %s %d %s" % (len(t), t, len(statement), statement)


def parse(raw: bytes) -> Statement:
    """A statement from its bytes: strict JSON, exact fields and types, and canonical (the bytes
    MUST be exactly what :meth:`Statement.encode` gives for it)."""
    if len(raw) > MAX_STATEMENT:
        raise FormatError(f"statement of {len(raw)} bytes (cap {MAX_STATEMENT})")
    doc = strict_loads(raw, "signed statement")
    if not isinstance(doc, dict) or not _REQUIRED <= set(doc) <= _REQUIRED | _OPTIONAL:
        raise FormatError(f"signed statement must have the fields {sorted(_REQUIRED)} (and optionally "
                          f"{sorted(_OPTIONAL)})")  # fmt: skip
    if doc["_type"] != STATEMENT_TYPE:
        raise FormatError(f"unknown statement _type {str(doc['_type'])[:60]!r}")
    for k in ("type", "subject", "model", "version"):
        if k in doc and not isinstance(doc[k], str):
            raise FormatError(f"statement field {k!r} must be a string")
    for k in ("signed_at", "expires_at"):
        if k in doc and type(doc[k]) is not int:
            raise FormatError(f"statement field {k!r} must be an integer")
    st = Statement(doc["type"], doc["subject"], doc["signed_at"], doc.get("model"), doc.get("version"),
                   doc.get("expires_at"))  # fmt: skip
    try:
        canonical = st.encode()
    except InvalidArgumentError as exc:
        raise FormatError(f"signed statement is invalid: {exc}") from None
    if canonical != raw:
        raise FormatError("signed statement is not in canonical form")
    return st


def key_subject(alg: str, public_key: bytes) -> str:
    """The subject of a revocation statement: the revoked key, by algorithm and public bytes."""
    return f"key:{alg}:{public_key.hex()}"

"""Signatures: the signed content root, signed statements about it, the trailer, and the
signature policy (docs/FORMAT.md §8)."""

from __future__ import annotations

import struct
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from .. import crypto
from ..crypto import COMPOSITE_ALG, DIGEST_SIZE, CompositeVerifyKey, VerifyKey
from ..errors import FormatError, IntegrityError, InvalidArgumentError, SignatureError
from . import format as fmt
from . import statement as st
from .header import Header
from .stream import Source

_ROOT_DOMAIN = b"sealedckpt/v1 root\x00"


class Verifier(Protocol):
    """What a signature entry's public key must offer, whatever its algorithm."""

    @property
    def alg(self) -> str: ...

    @property
    def key_id(self) -> str: ...

    def to_bytes(self) -> bytes: ...

    def verify(self, signature: bytes, message: bytes) -> None: ...


class StatementSigner(Protocol):
    """What signs a statement: its algorithm name, public half and ``sign(message)``."""

    @property
    def alg(self) -> str: ...

    @property
    def key_id(self) -> str: ...

    @property
    def public(self) -> Verifier: ...

    def sign(self, message: bytes) -> bytes: ...


#: Verifier constructors by algorithm name (a new algorithm registers here and in ``fmt.SIG_ALGS``).
VERIFIERS: dict[str, Callable[[bytes], Verifier]] = {"ed25519": VerifyKey, COMPOSITE_ALG: CompositeVerifyKey}


def load_verifier(alg: str, public_key: bytes) -> Verifier:
    """The verifier of ``alg`` for ``public_key``; an unknown algorithm or a bad key is a SignatureError."""
    make = VERIFIERS.get(alg)
    if make is None:
        raise SignatureError(f"unknown signature algorithm {alg!r}")
    try:
        return make(public_key)
    except InvalidArgumentError as exc:
        raise SignatureError(f"bad {alg} public key: {exc}") from None


@dataclass(frozen=True)
class Signer:
    """A signature that verified: who signed (public key), what (the statement), and whether
    the caller's trusted set holds the key."""

    public_key: Verifier
    statement: st.Statement
    trusted: bool

    @property
    def key_id(self) -> str:
        return self.public_key.key_id

    @property
    def signed_at(self) -> int:
        return self.statement.signed_at

    @property
    def alg(self) -> str:
        return self.public_key.alg


def content_root(content_bytes: bytes, n_chunks: int, table: bytes) -> bytes:
    """The digest every signature signs: the content header and every chunk's BLAKE3 digest."""
    return crypto.content_hash(
        _ROOT_DOMAIN + struct.pack("<I", len(content_bytes)) + content_bytes + struct.pack("<Q", n_chunks) + table
    )


def root_label(root: bytes) -> str:
    """A content root as printed and recorded: ``blake3:<hex>``."""
    return f"blake3:{root.hex()}"


def content_digest(root: bytes | None, commitment: bytes) -> str:
    """How audit records name a file's content: its signed root, else its key commitment
    (unique per file; free to read, while a root costs a hash of every chunk)."""
    return root_label(root) if root is not None else f"commitment:{commitment.hex()}"


def make_statement(
    kind: str, subject: str, metadata: Mapping[str, str], now: Callable[[], float], expires_at: int | None
) -> st.Statement:
    """The statement a signer signs about ``subject``, naming the release's public model/version."""
    return st.Statement(kind, subject, int(now()), metadata.get("model"), metadata.get("version"), expires_at)


def sign_statement(signer: StatementSigner, statement: st.Statement) -> tuple[bytes, bytes]:
    """(the statement's canonical bytes, ``signer``'s signature over their DSSE PAE)."""
    raw = statement.encode()
    return raw, signer.sign(st.pae(raw))


def verify_statement(
    i: int, alg: str, public_key: bytes, raw: bytes, signature: bytes
) -> tuple[Verifier, st.Statement]:
    """Check one entry's signature over its statement bytes, then parse the statement."""
    try:
        vk = load_verifier(alg, public_key)
    except SignatureError as exc:  # a small-order or non-canonical key (docs/FORMAT.md §8)
        raise SignatureError(f"signature entry {i}: {exc}") from None
    try:
        vk.verify(signature, st.pae(raw))
    except SignatureError:
        raise SignatureError(
            f"signature by key {vk.key_id} does not verify: the content or the signature was altered"
        ) from None
    return vk, st.parse(raw)


def check_subject(vk: Verifier, statement: st.Statement, subject: str, metadata: Mapping[str, str]) -> None:
    """A statement must be about this very content and repeat its authenticated model/version."""
    if statement.type == st.REVOCATION:
        raise SignatureError(f"key {vk.key_id} signed a revocation statement, not a release")
    if statement.subject != subject:
        raise SignatureError(f"the statement signed by {vk.key_id} is about other content ({statement.subject[:80]})")
    for k in ("model", "version"):
        if getattr(statement, k) != metadata.get(k):
            raise SignatureError(
                f"the statement signed by {vk.key_id} names {k} {getattr(statement, k)!r}, "
                f"the content says {metadata.get(k)!r}"
            )


def sign(
    signers: Sequence[StatementSigner],
    root: bytes,
    metadata: Mapping[str, str],
    now: Callable[[], float],
    kind: str = st.RELEASE,
    expires_at: int | None = None,
) -> list[fmt.SignatureEntry]:
    """One signature entry per signer over the same statement about ``root``."""
    statement = make_statement(kind, root_label(root), metadata, now, expires_at)
    entries = []
    for s in signers:
        raw, sig = sign_statement(s, statement)
        entries.append(fmt.SignatureEntry(s.alg, s.public.to_bytes(), raw, sig))
    return entries


@dataclass(frozen=True)
class Trailer:
    table: bytes  # n_chunks digests, empty when unsigned
    signers: list[Signer]  # signatures valid over ``root``; the chunks are checked separately
    root: bytes | None  # None when unsigned
    entries: list[fmt.SignatureEntry]  # as stored


def trailer_count(src: Source, header: Header) -> tuple[int, int]:
    """The trailer's signature count and signature block length, once the file's length matches
    what they imply."""
    off = header.trailer_offset
    if src.size < off + 2:
        raise IntegrityError("file truncated: the payload or the trailer is incomplete")
    (count,) = struct.unpack("<H", src.read_exact(off, 2, "trailer"))
    block = 0
    if count:
        at = off + 2 + header.content.n_chunks * DIGEST_SIZE
        if src.size < at + 4:
            raise IntegrityError("file truncated inside the signature trailer")
        (block,) = struct.unpack("<I", src.read_exact(at, 4, "signature block length"))
    # Length first: an appended chunk or a cut shows up as a length mismatch, whatever it holds.
    expected = off + fmt.trailer_len(count, header.content.n_chunks, block)
    if src.size < expected:
        raise IntegrityError("file truncated inside the signature trailer")
    if src.size > expected:
        raise IntegrityError(f"{src.size - expected} bytes of trailing data after the end of the file")
    if count > fmt.MAX_SIGNATURES:
        raise FormatError(f"{count} signatures (cap {fmt.MAX_SIGNATURES})")
    if block > fmt.MAX_SIG_BLOCK:
        raise FormatError(f"signature block of {block} bytes (cap {fmt.MAX_SIG_BLOCK})")
    return int(count), int(block)


def read_trailer(src: Source, header: Header, trusted: Sequence[Verifier]) -> Trailer:
    """Read the trailer and verify every signature in it (docs/FORMAT.md §8, reader rules)."""
    count, block = trailer_count(src, header)
    if count == 0:
        return Trailer(b"", [], None, [])
    c = header.content
    off = header.trailer_offset + 2
    table = src.read_exact(off, c.n_chunks * DIGEST_SIZE, "chunk digest table")
    raw = src.read_exact(off + len(table) + 4, block, "signatures")
    entries = fmt.parse_signature_entries(raw, count)
    root = content_root(header.content_bytes, c.n_chunks, table)
    trusted_raw = {(k.alg, k.to_bytes()) for k in trusted}
    signers = []
    for i, e in enumerate(entries):
        vk, statement = verify_statement(i, e.alg, e.public_key, e.statement, e.signature)
        check_subject(vk, statement, root_label(root), c.metadata)
        signers.append(Signer(vk, statement, (e.alg, e.public_key) in trusted_raw))
    return Trailer(table, signers, root, entries)


def apply_policy(trailer: Trailer, trusted: Sequence[Verifier] | None, require: bool | None) -> bool:
    """Enforce the signature policy; True when one applies. (A signed file's chunk digests are
    checked whether or not one does: docs/FORMAT.md §8.)"""
    must = bool(require) or trusted is not None
    if not must:
        return False
    if not trailer.signers:
        raise SignatureError("the file is not signed, but a trusted signature is required")
    if not trusted:
        raise SignatureError(
            "a signature is required but no trusted signers were given",
            hint="name the trusted signers (--trust PUBKEY; trusted_signers=[VerifyKey, ...] in Python)",
        )
    require_trusted_release(trailer.signers)
    return True


def require_trusted_release(signers: Sequence[Signer]) -> None:
    """At least one trusted key must have signed a *release* statement: trusted
    counter-signatures or audits alone publish nothing (docs/FORMAT.md §8.1)."""
    if not any(s.trusted for s in signers):
        ids = ", ".join(s.key_id for s in signers)
        raise SignatureError(f"signed only by untrusted keys ({ids})")
    if not any(s.trusted and s.statement.type == st.RELEASE for s in signers):
        ids = ", ".join(f"{s.key_id} ({s.statement.type})" for s in signers if s.trusted)
        raise SignatureError(
            f"no trusted key signed a release statement (trusted signatures: {ids}); "
            "missing requirement: a release statement by a trusted publisher",
            hint="a counter-signature or an audit vouches for a release; it cannot stand in for one",
        )

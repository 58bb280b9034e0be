"""Signatures: the signed content root, the trailer, and the signature policy (docs/FORMAT.md §8)."""

from __future__ import annotations

import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from .. import crypto
from ..crypto import DIGEST_SIZE, CompositeVerifyKey, SigningKey, VerifyKey
from ..crypto.pq import composite_key_id
from ..errors import FormatError, IntegrityError, SignatureError
from . import format as fmt
from .header import Header
from .stream import Source

_ROOT_DOMAIN = b"sealedckpt/v1 root\x00"
_SIG_DOMAIN = b"sealedckpt/v1 signature\x00"


@dataclass(frozen=True)
class Signer:
    """A signature that verified: who signed (public key) and when (seconds since epoch)."""

    public_key: VerifyKey
    signed_at: int
    trusted: bool

    @property
    def key_id(self) -> str:
        return self.public_key.key_id


def content_root(content_bytes: bytes, n_chunks: int, table: bytes) -> bytes:
    """The digest every signature signs: the content header and every chunk's BLAKE3 digest."""
    return crypto.content_hash(
        _ROOT_DOMAIN + struct.pack("<I", len(content_bytes)) + content_bytes + struct.pack("<Q", n_chunks) + table
    )


def signed_message(public_key: bytes, signed_at: int, root: bytes) -> bytes:
    return _SIG_DOMAIN + public_key + struct.pack("<Q", signed_at) + root


def root_label(root: bytes) -> str:
    """A content root as printed and recorded: ``blake3:<hex>``."""
    return f"blake3:{root.hex()}"


def content_digest(root: bytes | None, commitment: bytes) -> str:
    """How audit records name a file's content: its signed root, else its key commitment
    (unique per file; free to read, while a root costs a hash of every chunk)."""
    return root_label(root) if root is not None else f"commitment:{commitment.hex()}"


def sign(signers: Sequence[SigningKey], root: bytes, now: Callable[[], float]) -> list[fmt.SignatureEntry]:
    """One signature entry per signer over ``root``, all with the same time."""
    signed_at = int(now())
    entries = []
    for s in signers:
        pub = s.public.to_bytes()
        sig_type = fmt.SIG_TYPE_OF_ALG[s.alg]
        entries.append(fmt.SignatureEntry(sig_type, pub, signed_at, s.sign(signed_message(pub, signed_at, root))))
    return entries


@dataclass(frozen=True)
class Trailer:
    table: bytes  # n_chunks digests, empty when unsigned
    signers: list[Signer]  # signatures valid over ``root``; the chunks are checked separately
    root: bytes | None  # None when unsigned
    entries: list[fmt.SignatureEntry]  # as stored


def _entries_block(src: Source, start: int, count: int) -> bytes | None:
    """The ``count`` entries from ``start``, read once (at most ``count`` of the largest entry) and
    sized by their type bytes (docs/FORMAT.md §8); None when the file ends first."""
    avail = src.size - start
    if avail <= 0:
        return None
    block = src.read_exact(start, min(avail, count * fmt.MAX_SIG_ENTRY_SIZE), "signatures")
    pos = 0
    for _ in range(count):
        if pos >= len(block):
            return None
        pos += fmt.sig_entry_size(block[pos])
    return block[:pos] if pos <= len(block) else None


def _checked_trailer(src: Source, header: Header) -> tuple[int, bytes]:
    """The signature count and the entries' bytes, once the file's length matches what they imply."""
    off = header.trailer_offset
    if src.size < off + 2:
        raise IntegrityError("file truncated: the payload or the trailer is incomplete")
    (count,) = struct.unpack("<H", src.read_exact(off, 2, "trailer"))
    n_chunks = header.content.n_chunks
    # Length first: an appended chunk or a cut shows up as a length mismatch, whatever it holds.
    # Entries are sized by their types; past the count cap, as if all were Ed25519 (docs/FORMAT.md §8).
    capped = 0 < count <= fmt.MAX_SIGNATURES
    block = _entries_block(src, off + 2 + n_chunks * DIGEST_SIZE, count) if capped else None
    expected = off + fmt.trailer_len(count, n_chunks, None if block is None else len(block))
    if src.size < expected or (capped and block is None):
        raise IntegrityError("file truncated inside the signature trailer")
    if src.size > expected:
        raise IntegrityError(f"{src.size - expected} bytes of trailing data after the end of the file")
    if count > fmt.MAX_SIGNATURES:
        raise FormatError(f"{count} signatures (cap {fmt.MAX_SIGNATURES})")
    return int(count), block or b""


def trailer_count(src: Source, header: Header) -> int:
    """The trailer's signature count, once the file's length matches what it implies."""
    return _checked_trailer(src, header)[0]


def read_entries(src: Source, header: Header) -> tuple[bytes, list[fmt.SignatureEntry]]:
    """The chunk digest table and the signature entries of a length-checked trailer (none if unsigned)."""
    count, block = _checked_trailer(src, header)
    if count == 0:
        return b"", []
    table = src.read_exact(header.trailer_offset + 2, header.content.n_chunks * DIGEST_SIZE, "chunk digest table")
    return table, fmt.parse_signature_entries(block, count)


def entry_key_id(e: fmt.SignatureEntry) -> str:
    """The key id an entry names, without checking the key."""
    return composite_key_id(e.public_key) if e.type == fmt.SIG_COMPOSITE else crypto.ed25519_key_id(e.public_key)


def _verify_key(e: fmt.SignatureEntry) -> VerifyKey:
    return CompositeVerifyKey(e.public_key) if e.type == fmt.SIG_COMPOSITE else VerifyKey(e.public_key)


def read_trailer(src: Source, header: Header, trusted: Sequence[VerifyKey]) -> Trailer:
    """Read the trailer and verify every signature in it (docs/FORMAT.md §8, reader rules)."""
    table, entries = read_entries(src, header)
    if not entries:
        return Trailer(b"", [], None, [])
    root = content_root(header.content_bytes, header.content.n_chunks, table)
    # A trusted key is its type and its exact bytes: a classical entry never counts for a composite key.
    trusted_raw = {(k.alg, k.to_bytes()) for k in trusted}
    signers = []
    for i, e in enumerate(entries):
        try:
            vk = _verify_key(e)
        except SignatureError as exc:  # a small-order or non-canonical key (docs/FORMAT.md §8)
            raise SignatureError(f"signature entry {i}: {exc}") from None
        try:
            vk.verify(e.signature, signed_message(e.public_key, e.signed_at, root))
        except SignatureError:
            raise SignatureError(
                f"signature by key {vk.key_id} does not verify: the file or the signature was altered"
            ) from None
        signers.append(Signer(vk, e.signed_at, (vk.alg, e.public_key) in trusted_raw))
    return Trailer(table, signers, root, entries)


def apply_policy(trailer: Trailer, trusted: Sequence[VerifyKey] | None, require: bool | None) -> bool:
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
    if not any(s.trusted for s in trailer.signers):
        ids = ", ".join(s.key_id for s in trailer.signers)
        raise SignatureError(f"signed only by untrusted keys ({ids})")
    return True

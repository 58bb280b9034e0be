"""Whole-file operations: rewrap, counter-sign, verify and inspect (the last three need no key)."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import BinaryIO

from .. import crypto
from ..crypto import DIGEST_SIZE, SigningKey
from ..errors import FormatError, IntegrityError, InvalidArgumentError, SealedCkptError, SignatureError
from . import format as fmt
from .header import Header, read_header, slot_ids
from .reader import KeySource, Progress, unlock
from .signatures import Signer, Verifier, apply_policy, content_root, load_verifier, read_trailer, sign, trailer_count
from .slots import KeySlot, SealKey, make_slots
from .statement import COUNTER
from .statement import parse as parse_statement
from .stream import ChunkStream, Source, hash_streams


@dataclass(frozen=True)
class VerifyResult:
    signers: list[Signer]
    root: bytes
    metadata: dict[str, str]


@dataclass(frozen=True)
class PublicInfo:
    """What anyone can read from a sealed file without a key. Signers here are NOT verified."""

    version: int
    payload_type: str
    chunk_size: int
    payload_len: int
    file_size: int
    metadata: dict[str, str]
    key_slots: list[dict[str, str]]
    signatures: list[dict[str, object]]
    chunks: int = 1
    head_len: int = 0  # the payload header's length: the head run of chunks (docs/FORMAT.md §7)


def rewrap(
    src_file: BinaryIO,
    out: BinaryIO,
    open_with: KeySource,
    add: Sequence[SealKey],
    *,
    keep: bool = False,
    remove: Sequence[str] = (),
    copy_block: int = 1 << 22,
    progress: Progress | None = None,
) -> list[str]:
    """Re-wrap a file's data key: new key slots, same content header, chunks and signatures.

    The result's slots are ``add``, plus the existing slots when ``keep`` (minus those whose
    label from :func:`slot_ids` is in ``remove``). Nothing is re-encrypted; signatures stay valid.
    Returns the new slot labels.
    """
    src = Source(src_file)
    header, dek = unlock(src, open_with)
    read_trailer(src, header, ())  # length and signatures checked before anything is written
    kept: list[KeySlot] = []
    if keep:
        labels = slot_ids(header)
        unknown = set(remove) - set(labels)
        if unknown:
            raise FormatError(f"no key slot {sorted(unknown)[0]!r} in this file (slots: {', '.join(labels)})")
        kept = [s for s, lab in zip(header.slots, labels, strict=True) if lab not in remove]
    elif remove:
        raise InvalidArgumentError("remove= only makes sense with keep=True")
    fresh = [k for k in add if not any(s.names(k) for s in kept)]
    slots = kept + (make_slots(dek, header.content.salt, fresh) if fresh else [])
    if not slots:
        raise InvalidArgumentError("rewrap would leave the file with no key slot")
    fk = crypto.derive_file_keys(dek, header.content.salt)
    authenticated = fmt.build_preamble(len(header.content_bytes)) + header.content_bytes + fmt.build_slots(slots)
    out.write(authenticated)
    out.write(crypto.header_mac(fk.header_mac_key, authenticated))
    buf = memoryview(bytearray(copy_block))
    pos, end = header.size, src.size
    while pos < end:
        n = src.read_into(pos, buf[: min(copy_block, end - pos)])
        if n == 0:
            raise IntegrityError("file shrank while it was being rewrapped")
        out.write(buf[:n])
        pos += n
        if progress is not None:
            progress(n)
    return slot_ids(Header(header.content_bytes, header.content, slots, authenticated, b""))


def add_signatures(
    src_file: BinaryIO,
    out: BinaryIO,
    signers: Sequence[SigningKey],
    *,
    trusted_signers: Sequence[Verifier] | None = None,
    now: Callable[[], float] = time.time,
    progress: Progress | None = None,
    kind: str = COUNTER,
    expires_at: int | None = None,
) -> VerifyResult:
    """Sign a file without any decryption key (a ``kind`` statement, by default a
    counter-signature): every existing signature and every chunk digest is checked first (for an
    unsigned file the digest table is computed), then the new signatures are appended. Earlier
    signatures stay valid: all sign statements about the same root."""
    if not signers:
        raise InvalidArgumentError("no signing key given")
    src = Source(src_file)
    header = read_header(src)
    trailer = read_trailer(src, header, trusted_signers or ())
    if trusted_signers is not None:
        apply_policy(trailer, trusted_signers, True)
    c = header.content
    have = {s.public_key.to_bytes() for s in trailer.signers}
    for s in signers:
        if s.public.to_bytes() in have:
            raise SignatureError(f"key {s.key_id} has already signed this file")
    if len(trailer.signers) + len(signers) > fmt.MAX_SIGNATURES:
        raise SignatureError(f"a file holds at most {fmt.MAX_SIGNATURES} signatures")
    out.write(header.authenticated + header.mac)
    digests = []
    for ct, d in ChunkStream(src, header.size, c, trailer.table).scan(check=bool(trailer.signers)):
        digests.append(d)
        out.write(ct)
        if progress is not None:
            progress(len(ct))
    table = b"".join(digests)
    root = content_root(header.content_bytes, c.n_chunks, table)
    new = sign(signers, root, c.metadata, now, kind, expires_at)
    out.write(fmt.build_trailer(table, [*trailer.entries, *new]))
    trusted_raw = {k.to_bytes() for k in trusted_signers or ()}
    everyone = [(s.public_key, s.statement) for s in trailer.signers]
    everyone += [(s.public, parse_statement(e.statement)) for s, e in zip(signers, new, strict=True)]
    return VerifyResult([Signer(k, t, k.to_bytes() in trusted_raw) for k, t in everyone], root, dict(c.metadata))


def compute_root(
    f: BinaryIO, progress: Progress | None = None, workers: int | None = None
) -> tuple[bytes, fmt.Content]:
    """The content root of any sealed file, signed or not, without a key (hashes every chunk on
    ``workers`` threads, default one per core up to 4)."""
    return compute_roots([f], workers, progress)[0]


def compute_roots(
    files: Sequence[BinaryIO], workers: int | None = None, progress: Progress | None = None
) -> list[tuple[bytes, fmt.Content]]:
    """:func:`compute_root` of several files (a directory's shards), their chunks hashed on one
    pool of ``workers`` threads, so that no core idles while another file finishes."""
    heads = []
    for f in files:
        src = Source(f)
        header = read_header(src)
        trailer = read_trailer(src, header, ())
        heads.append((header, ChunkStream(src, header.size, header.content, trailer.table), trailer.root is not None))
    digests = hash_streams([(stream, check) for _, stream, check in heads], workers, progress)
    return [
        (content_root(h.content_bytes, h.content.n_chunks, b"".join(d)), h.content)
        for (h, _, _), d in zip(heads, digests, strict=True)
    ]


def verify_file(
    f: BinaryIO,
    trusted_signers: Sequence[Verifier] | None,
    progress: Progress | None = None,
    workers: int | None = None,
) -> VerifyResult:
    """Check signatures and every chunk's digest without any decryption key (chunks hashed on
    ``workers`` threads, default one per core up to 4)."""
    src = Source(f)
    header = read_header(src)
    trailer = read_trailer(src, header, trusted_signers or ())
    if not trailer.signers or trailer.root is None:
        raise SignatureError("the file is not signed: nothing to verify without a key")
    if trusted_signers is not None:
        apply_policy(trailer, trusted_signers, True)
    c = header.content
    ChunkStream(src, header.size, c, trailer.table).digests(True, workers, progress)
    return VerifyResult(trailer.signers, trailer.root, dict(c.metadata))


def _key_id(alg: str, public_key: bytes) -> str:
    """A key id as shown by ``inspect``, computed without accepting the key."""
    if alg == "ed25519" and len(public_key) == crypto.ED25519_PUB_SIZE:
        return crypto.ed25519_key_id(public_key)
    try:
        return load_verifier(alg, public_key).key_id
    except SignatureError:
        return "invalid"


def read_public_info(f: BinaryIO) -> PublicInfo:
    """The public view of a file (``inspect``); a malformed trailer just shows no signatures."""
    src = Source(f)
    header = read_header(src)
    c = header.content
    sigs: list[dict[str, object]] = []
    off = header.trailer_offset
    with contextlib.suppress(SealedCkptError):
        count, block = trailer_count(src, header)
        base = off + 2 + c.n_chunks * DIGEST_SIZE + 4
        for e in fmt.parse_signature_entries(src.read(base, block), count) if count else []:
            row: dict[str, object] = {"key_id": _key_id(e.alg, e.public_key), "alg": e.alg}
            with contextlib.suppress(SealedCkptError):  # shown unverified; a bad statement shows less
                stmt = parse_statement(e.statement)
                row.update(type=stmt.type, signed_at=stmt.signed_at, expires_at=stmt.expires_at)
            sigs.append(row)
    slots = [s.describe() for s in header.slots]
    meta = dict(c.metadata)
    return PublicInfo(
        fmt.VERSION, "safetensors", c.chunk_size, c.payload_len, src.size, meta, slots, sigs, c.n_chunks, c.head_len
    )

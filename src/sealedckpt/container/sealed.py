"""The sealed container: key slots, chunked STREAM encryption, header MAC, signatures.

Works on bytes and buffers only (no torch). ``seal`` streams a payload given as memoryview
segments; ``open_sealed`` authenticates the header, the slots and the signatures and returns
a :class:`SealedReader` that decrypts chunks into caller-provided buffers.
"""

from __future__ import annotations

import io
import itertools
import os
import struct
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import BinaryIO

from .. import crypto
from ..crypto import (
    ChunkCipher,
    Passphrase,
    RecipientKey,
    RecipientPublicKey,
    SigningKey,
    SymmetricKey,
    VerifyKey,
)
from ..errors import DecryptionError, FormatError, IntegrityError, SignatureError
from . import format as fmt
from .sniff import HEAD_SIZE, TAIL_SIZE, refuse_unsealed

_ROOT_DOMAIN = b"sealedckpt/v1 root\x00"
_SIG_DOMAIN = b"sealedckpt/v1 signature\x00"
_SLOT_AAD = b"sealedckpt/v1 symmetric slot\x00"
_X25519_AAD = b"sealedckpt/v1 x25519 slot\x00"
_SCRYPT_AAD = b"sealedckpt/v1 scrypt slot\x00"

Region = tuple[int, memoryview]  # (payload offset, destination buffer)
Progress = Callable[[int], None]  # called with a number of bytes just processed


def default_workers() -> int:
    return max(1, min(4, os.cpu_count() or 1))


_MAX_SPARE = 4  # scratch buffers a reader keeps for reuse: one per worker at most


# --- reading files ---------------------------------------------------------------------------


class _Source:
    """Positional reads from a path-backed fd or from any seekable binary file object."""

    def __init__(self, f: BinaryIO) -> None:
        self._f = f
        self._lock = threading.Lock()
        self._fd: int | None = None
        try:
            fd = f.fileno()
            os.fstat(fd)
            self._fd = fd
        except (AttributeError, OSError, io.UnsupportedOperation):
            self._fd = None
        try:
            if not f.seekable():
                raise FormatError(
                    "sealedckpt.load needs a seekable file", hint="pass a path or read it into io.BytesIO"
                )
            self.size = f.seek(0, io.SEEK_END)
        except (AttributeError, OSError) as exc:
            raise FormatError("sealedckpt.load needs a seekable file") from exc

    def read_into(self, offset: int, buf: memoryview) -> int:
        n = len(buf)
        if self._fd is not None:
            got = 0
            while got < n:
                k = os.preadv(self._fd, [buf[got:]], offset + got)
                if k == 0:
                    break
                got += k
            return got
        with self._lock:
            self._f.seek(offset)
            got = 0
            while got < n:
                k = self._f.readinto(buf[got:])  # type: ignore[attr-defined]
                if not k:
                    break
                got += k
            return got

    def read(self, offset: int, n: int) -> bytes:
        buf = bytearray(n)
        got = self.read_into(offset, memoryview(buf))
        return bytes(buf[:got])

    def read_exact(self, offset: int, n: int, what: str) -> bytes:
        data = self.read(offset, n)
        if len(data) != n:
            raise IntegrityError(f"file truncated inside the {what}")
        return data


# --- header --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Header:
    content_bytes: bytes
    content: fmt.Content
    slots: list[fmt.Slot]
    authenticated: bytes  # preamble || content || slots section: what the header MAC covers
    mac: bytes

    @property
    def size(self) -> int:
        return len(self.authenticated) + fmt.MAC_SIZE

    @property
    def trailer_offset(self) -> int:
        return self.size + self.content.ciphertext_len


def _read_header(src: _Source) -> Header:
    head = src.read(0, HEAD_SIZE)
    if not head.startswith(fmt.MAGIC):
        tail = src.read(max(0, src.size - TAIL_SIZE), TAIL_SIZE)
        refuse_unsealed(head, tail)
    preamble = src.read_exact(0, fmt.PREAMBLE_SIZE, "preamble")
    content_len = fmt.parse_preamble(preamble)
    content_bytes = src.read_exact(fmt.PREAMBLE_SIZE, content_len, "content header")
    content = fmt.parse_content(content_bytes)
    pos = fmt.PREAMBLE_SIZE + content_len
    slots_len_raw = src.read_exact(pos, 4, "key slots")
    (slots_len,) = struct.unpack("<I", slots_len_raw)
    if not 2 <= slots_len <= fmt.MAX_SLOTS_LEN:
        raise FormatError(f"key slot section length {slots_len} outside 2..{fmt.MAX_SLOTS_LEN}")
    slots_bytes = src.read_exact(pos + 4, slots_len, "key slots")
    slots = fmt.parse_slots(slots_bytes)
    pos += 4 + slots_len
    mac = src.read_exact(pos, fmt.MAC_SIZE, "header MAC")
    authenticated = preamble + content_bytes + slots_len_raw + slots_bytes
    return Header(content_bytes, content, slots, authenticated, mac)


# --- signatures ----------------------------------------------------------------------------


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


@dataclass(frozen=True)
class Trailer:
    table: bytes  # n_chunks * 32 bytes, empty when unsigned
    signers: list[Signer]
    root: bytes | None  # None when unsigned


def _read_trailer(src: _Source, header: Header, trusted: Sequence[VerifyKey]) -> Trailer:
    c = header.content
    off = header.trailer_offset
    if src.size < off + 2:
        raise IntegrityError("file truncated: the payload or the trailer is incomplete")
    (count,) = struct.unpack("<H", src.read_exact(off, 2, "trailer"))
    # Length first: an appended chunk or a cut shows up as a length mismatch, whatever it holds.
    expected = off + fmt.trailer_len(count, c.n_chunks)
    if src.size < expected:
        raise IntegrityError("file truncated inside the signature trailer")
    if src.size > expected:
        raise IntegrityError(f"{src.size - expected} bytes of trailing data after the end of the file")
    if count > fmt.MAX_SIGNATURES:
        raise FormatError(f"{count} signatures (cap {fmt.MAX_SIGNATURES})")
    if count == 0:
        return Trailer(b"", [], None)
    table = src.read_exact(off + 2, c.n_chunks * fmt.DIGEST_SIZE, "chunk digest table")
    entries = fmt.parse_signature_entries(
        src.read_exact(off + 2 + len(table), count * fmt.SIG_ENTRY_SIZE, "signatures"), count
    )
    root = content_root(header.content_bytes, c.n_chunks, table)
    trusted_raw = {k.to_bytes() for k in trusted}
    signers = []
    for e in entries:
        vk = VerifyKey(e.public_key)
        try:
            vk.verify(e.signature, signed_message(e.public_key, e.signed_at, root))
        except SignatureError:
            raise SignatureError(
                f"signature by key {vk.key_id} does not verify: the file or the signature was altered"
            ) from None
        signers.append(Signer(vk, e.signed_at, e.public_key in trusted_raw))
    return Trailer(table, signers, root)


def _apply_policy(trailer: Trailer, trusted: Sequence[VerifyKey] | None, require: bool | None) -> bool:
    """Enforce the signature policy; True when chunk digests must be checked."""
    must = bool(require) or trusted is not None
    if not must:
        return False
    if not trailer.signers:
        raise SignatureError("the file is not signed, but a trusted signature is required")
    if not trusted:
        raise SignatureError(
            "a signature is required but no trusted signers were given", hint="pass trusted_signers=[VerifyKey, ...]"
        )
    if not any(s.trusted for s in trailer.signers):
        ids = ", ".join(s.key_id for s in trailer.signers)
        raise SignatureError(f"signed only by untrusted keys ({ids})")
    return True


# --- opening -------------------------------------------------------------------------------


OpenKey = SymmetricKey | RecipientKey | Passphrase
SealKey = SymmetricKey | RecipientPublicKey | Passphrase
KeySource = Sequence[OpenKey] | Callable[["Header"], Sequence[OpenKey]]


def _open_slots(header: Header, keys: Sequence[OpenKey]) -> bytes:
    """Recover the DEK from the first slot that one of ``keys`` opens."""
    if not keys:
        raise DecryptionError("no key given to open the file")
    salt = header.content.salt
    sym = [fmt.SymmetricSlot.parse(s.body) for s in header.slots if s.type == fmt.SLOT_SYMMETRIC]
    x25519 = [fmt.X25519Slot.parse(s.body) for s in header.slots if s.type == fmt.SLOT_X25519]
    scrypt = [fmt.ScryptSlot.parse(s.body) for s in header.slots if s.type == fmt.SLOT_SCRYPT]
    symmetric_keys = [k for k in keys if isinstance(k, SymmetricKey)]
    identities = [k for k in keys if isinstance(k, RecipientKey)]
    passphrases = [k for k in keys if isinstance(k, Passphrase)]
    by_id = {k.key_id_bytes: k for k in symmetric_keys}
    tampered = False
    # Slots whose key-id hint names one of our keys first; then every symmetric slot with
    # every key, since the hint is unauthenticated until the header MAC is checked.
    aad = _SLOT_AAD + salt
    for slot in sym:
        k = by_id.get(slot.key_id)
        if k is not None:
            dek = crypto.unwrap_dek(k, slot.nonce, slot.wrapped, aad)
            if dek is not None:
                return dek
            tampered = True
    for slot in sym:
        for k in symmetric_keys:
            if by_id.get(slot.key_id) is k:
                continue
            dek = crypto.unwrap_dek(k, slot.nonce, slot.wrapped, aad)
            if dek is not None:
                return dek
    for xslot in x25519:
        for ident in identities:
            dek = crypto.x25519_unwrap(ident, xslot.share, xslot.wrapped, _X25519_AAD + salt)
            if dek is not None:
                return dek
    for pslot in scrypt:
        for p in passphrases:
            if pslot.log2n > p.max_log2n:
                raise FormatError(
                    f"passphrase slot demands scrypt work factor 2**{pslot.log2n}, above the cap 2**{p.max_log2n}",
                    hint="raise Passphrase(..., max_log2n=...) only for a file you expect to be that costly",
                )
            dek = crypto.scrypt_unwrap(p, pslot.log2n, pslot.salt, pslot.wrapped, _SCRYPT_AAD + salt)
            if dek is not None:
                return dek
    if tampered:
        raise IntegrityError("the key slot for the given key does not open: the header was modified")
    if scrypt and passphrases:
        raise DecryptionError("wrong passphrase")
    kinds = []
    if sym:
        kinds.append("symmetric key ids " + ", ".join(s.key_id.hex() for s in sym))
    if x25519:
        kinds.append(f"{len(x25519)} recipient slot(s)")
    if scrypt:
        kinds.append("a passphrase")
    if len(kinds) == 0:
        kinds.append("no slot type this version knows")
    raise DecryptionError(f"none of the {len(keys)} key(s) given opens this file (it is sealed for {'; '.join(kinds)})")


def make_slots(
    dek: bytes, salt: bytes, recipients: Sequence[SealKey], random_bytes: Callable[[int], bytes] = os.urandom
) -> list[fmt.Slot]:
    """One key slot per recipient, wrapping ``dek``."""
    if not recipients:
        raise ValueError("at least one key is needed to seal")
    ids = [r.key_id for r in recipients if not isinstance(r, Passphrase)]
    if len(set(ids)) != len(ids):
        raise ValueError("the same key was given twice")
    if any(isinstance(r, Passphrase) for r in recipients) and len(recipients) != 1:
        raise ValueError("a passphrase must be the only key of a file (like age)")
    slots = []
    for r in recipients:
        if isinstance(r, SymmetricKey):
            nonce = random_bytes(12)
            slots.append(
                fmt.SymmetricSlot(r.key_id_bytes, nonce, crypto.wrap_dek(r, dek, nonce, _SLOT_AAD + salt)).build()
            )
        elif isinstance(r, RecipientPublicKey):
            body = crypto.x25519_wrap(r, dek, _X25519_AAD + salt, random_bytes)
            slots.append(fmt.X25519Slot(body[:32], body[32:]).build())
        elif isinstance(r, Passphrase):
            psalt = random_bytes(16)
            slots.append(fmt.ScryptSlot(r.log2n, psalt, crypto.scrypt_wrap(r, dek, psalt, _SCRYPT_AAD + salt)).build())
        else:
            raise TypeError(f"cannot seal for a {type(r).__name__}")
    return slots


def slot_ids(header: Header) -> list[str]:
    """A public label per slot: the key id hint, or ``#index:kind`` where there is none."""
    out = []
    for i, s in enumerate(header.slots):
        if s.type == fmt.SLOT_SYMMETRIC:
            out.append(fmt.SymmetricSlot.parse(s.body).key_id.hex())
        else:
            kind = {fmt.SLOT_X25519: "recipient", fmt.SLOT_SCRYPT: "passphrase"}.get(s.type, f"type{s.type}")
            out.append(f"#{i}:{kind}")
    return out


class SealedReader:
    """An authenticated, opened sealed file. Chunks are verified as they are decrypted."""

    def __init__(self, src: _Source, header: Header, dek: bytes, trailer: Trailer, check_digests: bool) -> None:
        self._src = src
        self.header = header
        self.content = header.content
        self.trailer = trailer
        self._cipher = ChunkCipher(crypto.derive_file_keys(dek, header.content.salt).payload_key)
        self._check_digests = check_digests
        self._expect_root: bytes | None = None
        self._digests: list[bytes] = []
        self._prefix: list[tuple[memoryview, memoryview]] = []  # (scratch, plaintext) of chunks 0..k
        self._spare: list[memoryview] = []  # scratch buffers for reuse (page faults cost more than AES)
        self._spare_lock = threading.Lock()

    def expect_root(self, root: bytes) -> None:
        """Require the content root (as a signed manifest lists it): every chunk is hashed while
        it is decrypted and the root compared before decryption counts as done."""
        if self.trailer.root is not None:
            if not crypto.equal(self.trailer.root, root):
                raise IntegrityError("file content does not match the digest the manifest lists")
            self._check_digests = True
            return
        self._expect_root = root
        self._digests = [b""] * self.content.n_chunks

    def finish(self) -> None:
        """After chunks were decrypted piecemeal (``only_covering``): run the whole-file checks."""
        self._finish()

    def _finish(self) -> None:
        if self._expect_root is not None:
            got = content_root(self.header.content_bytes, self.content.n_chunks, b"".join(self._digests))
            if not crypto.equal(got, self._expect_root):
                raise IntegrityError("file content does not match the digest the manifest lists")

    @property
    def signers(self) -> list[Signer]:
        return self.trailer.signers

    def _chunk_offset(self, i: int) -> int:
        return self.header.size + i * (self.content.chunk_size + fmt.TAG_SIZE)

    def _scratch(self) -> memoryview:
        """A buffer for one chunk's ciphertext and tag, no larger than the largest chunk."""
        c = self.content
        return memoryview(bytearray(min(c.chunk_size, c.payload_len) + fmt.TAG_SIZE))

    def _take_scratch(self) -> memoryview:
        with self._spare_lock:
            if self._spare:
                return self._spare.pop()
        return self._scratch()

    def _give_scratch(self, buf: memoryview) -> None:
        with self._spare_lock:
            if len(self._spare) < _MAX_SPARE:
                self._spare.append(buf)

    def _decrypt_chunk(self, i: int, ct_buf: memoryview, out: memoryview | None = None) -> memoryview:
        """Read, check and decrypt chunk ``i`` into ``out`` (or in place); return the plaintext view."""
        c = self.content
        plen = c.plain_len(i)
        ct = ct_buf[: plen + fmt.TAG_SIZE]
        if self._src.read_into(self._chunk_offset(i), ct) != len(ct):
            raise IntegrityError(f"file truncated inside chunk {i}")
        if self._check_digests:
            want = self.trailer.table[i * fmt.DIGEST_SIZE : (i + 1) * fmt.DIGEST_SIZE]
            if not crypto.equal(crypto.content_hash(ct), want):
                raise IntegrityError(f"chunk {i} does not match its signed digest")
        elif self._digests:
            self._digests[i] = crypto.content_hash(ct)
        plain = ct[:plen] if out is None else out[:plen]
        if not self._cipher.decrypt_into(i, i == c.n_chunks - 1, ct, plain):
            raise IntegrityError(f"chunk {i} of {c.n_chunks} failed authentication (tampered, reordered or spliced)")
        return plain

    def read_prefix(self, n: int) -> bytes:
        """Decrypt and return the first ``n`` payload bytes (used to read the payload's own header)."""
        c = self.content
        if n > c.payload_len:
            raise FormatError("payload shorter than its own header claims")
        while len(self._prefix) * c.chunk_size < n:
            buf = self._take_scratch()  # decrypted in place and kept: no second copy of the chunk
            self._prefix.append((buf, self._decrypt_chunk(len(self._prefix), buf)))
        cs = c.chunk_size
        return b"".join(plain[: max(0, min(cs, n - i * cs))] for i, (_, plain) in enumerate(self._prefix))

    def release_prefix(self) -> None:
        """Hand the chunks ``read_prefix`` keeps back for reuse (once the payload header is parsed)."""
        for buf, _ in self._prefix:
            self._give_scratch(buf)
        self._prefix = []

    def write_plaintext(self, out: BinaryIO, progress: Progress | None = None, skip: int = 0) -> int:
        """Decrypt the payload chunk by chunk into ``out``, leaving out its first ``skip`` bytes
        (write to a temp file; publish it only after this returns, since bytes are written before
        the last chunk is checked)."""
        buf = self._scratch()
        total = 0
        pos = 0
        for i in range(self.content.n_chunks):
            plain = self._decrypt_chunk(i, buf)
            start = min(max(skip - pos, 0), len(plain))
            pos += len(plain)
            out.write(plain[start:])
            total += len(plain) - start
            if progress is not None:
                progress(len(plain))
        self._finish()
        return total

    def decrypt_regions(
        self, regions: Sequence[Region], workers: int | None = None, *, only_covering: bool = False
    ) -> None:
        """Decrypt every chunk; bytes under a region land in it, the rest are checked and dropped.

        With ``only_covering``, decrypt only the chunks that overlap a region (lazy reads of one
        tensor); every chunk read is still authenticated, and digest-checked under a policy.

        Regions are sorted, non-overlapping ``(payload_offset, buffer)`` pairs. Raises on the first
        chunk that fails; the caller must then discard every region's buffer. A chunk that lies
        inside one region is decrypted straight into it; one that spans regions is decrypted in
        place in a per-thread scratch buffer and its pieces copied out.
        """
        c = self.content
        plan = _RegionIndex(regions)

        def job(i: int) -> None:
            buf = self._take_scratch()
            start = i * c.chunk_size
            plen = c.plain_len(i)
            direct = plan.covering(start, plen)
            if direct is not None:
                self._decrypt_chunk(i, buf, direct)
            else:
                plain = self._decrypt_chunk(i, buf)
                for dst, src_off, k in plan.pieces(start, plen):
                    dst[:] = plain[src_off : src_off + k]
            self._give_scratch(buf)  # not on failure: that buffer is simply dropped

        if only_covering:
            todo = sorted({i for off, mv in regions if len(mv) for i in self._chunks_for(off, len(mv))})
        else:
            todo = list(range(c.n_chunks))
        # a thread and its fresh scratch buffer cost more than decrypting one more 4 MiB chunk
        workers = max(1, min(workers or default_workers(), len(todo) // 2))
        if workers <= 1:
            for i in todo:
                job(i)
        else:
            with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="sealedckpt-open") as pool:
                futures = [pool.submit(job, i) for i in todo]
                try:
                    for fut in futures:
                        fut.result()
                finally:
                    for fut in futures:
                        fut.cancel()
        if not only_covering:
            self._finish()

    def _chunks_for(self, start: int, n: int) -> range:
        cs = self.content.chunk_size
        return range(start // cs, (start + n - 1) // cs + 1)


class _RegionIndex:
    def __init__(self, regions: Sequence[Region]) -> None:
        self._starts = [r[0] for r in regions]
        self._regions = list(regions)
        for (a, ma), (b, _) in itertools.pairwise(regions):
            if a + len(ma) > b:
                raise ValueError("regions overlap or are unsorted")

    def _first(self, start: int) -> int:
        import bisect

        return max(0, bisect.bisect_right(self._starts, start) - 1)

    def covering(self, start: int, n: int) -> memoryview | None:
        """A view of one region holding all of ``[start, start+n)``, if one does."""
        if not self._regions:
            return None
        off, mv = self._regions[self._first(start)]
        if off <= start and start + n <= off + len(mv):
            return mv[start - off : start - off + n]
        return None

    def pieces(self, start: int, n: int) -> Iterator[tuple[memoryview, int, int]]:
        """(destination view, offset within chunk, length) for each region overlapping the chunk."""
        end = start + n
        j = self._first(start)
        while j < len(self._regions):
            off, mv = self._regions[j]
            if off >= end:
                break
            lo, hi = max(start, off), min(end, off + len(mv))
            if lo < hi:
                yield mv[lo - off : hi - off], lo - start, hi - lo
            j += 1


def _unlock(src: _Source, keys: KeySource) -> tuple[Header, bytes]:
    """Parse the header, open a slot, check the key commitment and the header MAC."""
    header = _read_header(src)
    dek = _open_slots(header, keys(header) if callable(keys) else keys)
    fk = crypto.derive_file_keys(dek, header.content.salt)
    if not crypto.equal(fk.commitment, header.content.commitment):
        raise IntegrityError("key commitment does not match: the header was modified or forged")
    if not crypto.equal(crypto.header_mac(fk.header_mac_key, header.authenticated), header.mac):
        raise IntegrityError("header MAC does not verify: the header or a key slot was modified")
    return header, dek


def open_sealed(
    f: BinaryIO,
    keys: KeySource,
    *,
    trusted_signers: Sequence[VerifyKey] | None = None,
    require_signature: bool | None = None,
) -> SealedReader:
    """Authenticate header, key slot, key commitment, header MAC and signature policy.

    ``keys`` is a list of keys, or a function that picks keys after seeing the (unauthenticated)
    header, e.g. a keystore looking up the key ids its slots name.
    """
    src = _Source(f)
    header, dek = _unlock(src, keys)
    trailer = _read_trailer(src, header, trusted_signers or ())
    check = _apply_policy(trailer, trusted_signers, require_signature)
    return SealedReader(src, header, dek, trailer, check)


# --- keyless views -------------------------------------------------------------------------


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


def read_public_info(f: BinaryIO) -> PublicInfo:
    src = _Source(f)
    header = _read_header(src)
    slots = []
    for s in header.slots:
        if s.type == fmt.SLOT_SYMMETRIC:
            slots.append({"type": "symmetric", "key_id": fmt.SymmetricSlot.parse(s.body).key_id.hex()})
        elif s.type == fmt.SLOT_X25519:
            slots.append({"type": "recipient"})
        elif s.type == fmt.SLOT_SCRYPT:
            slots.append({"type": "passphrase", "work_factor": f"2**{fmt.ScryptSlot.parse(s.body).log2n}"})
        else:
            slots.append({"type": f"unknown-{s.type}"})
    sigs: list[dict[str, object]] = []
    off = header.trailer_offset
    if src.size >= off + 2:
        (count,) = struct.unpack("<H", src.read(off, 2))
        if count <= fmt.MAX_SIGNATURES and src.size == off + fmt.trailer_len(count, header.content.n_chunks):
            base = off + 2 + (header.content.n_chunks * fmt.DIGEST_SIZE if count else 0)
            for e in fmt.parse_signature_entries(src.read(base, count * fmt.SIG_ENTRY_SIZE), count):
                sigs.append({"key_id": VerifyKey(e.public_key).key_id, "signed_at": e.signed_at})
    c = header.content
    return PublicInfo(fmt.VERSION, "safetensors", c.chunk_size, c.payload_len, src.size, dict(c.metadata), slots, sigs)


def compute_root(f: BinaryIO, progress: Progress | None = None) -> tuple[bytes, fmt.Content]:
    """The content root of any sealed file, signed or not, without a key (hashes every chunk)."""
    src = _Source(f)
    header = _read_header(src)
    trailer = _read_trailer(src, header, ())
    c = header.content
    buf = memoryview(bytearray(min(c.chunk_size, c.payload_len) + fmt.TAG_SIZE))
    digests = []
    for i in range(c.n_chunks):
        ct = buf[: c.plain_len(i) + fmt.TAG_SIZE]
        if src.read_into(header.size + i * (c.chunk_size + fmt.TAG_SIZE), ct) != len(ct):
            raise IntegrityError(f"file truncated inside chunk {i}")
        d = crypto.content_hash(ct)
        if trailer.root is not None and not crypto.equal(d, trailer.table[i * 32 : (i + 1) * 32]):
            raise IntegrityError(f"chunk {i} does not match its signed digest")
        digests.append(d)
        if progress is not None:
            progress(len(ct))
    return content_root(header.content_bytes, c.n_chunks, b"".join(digests)), c


@dataclass(frozen=True)
class VerifyResult:
    signers: list[Signer]
    root: bytes
    metadata: dict[str, str]


def verify_file(
    f: BinaryIO, trusted_signers: Sequence[VerifyKey] | None, progress: Progress | None = None
) -> VerifyResult:
    """Check signatures and every chunk's digest without any decryption key."""
    src = _Source(f)
    header = _read_header(src)
    trailer = _read_trailer(src, header, trusted_signers or ())
    if not trailer.signers or trailer.root is None:
        raise SignatureError("the file is not signed: nothing to verify without a key")
    if trusted_signers is not None:
        _apply_policy(trailer, trusted_signers, True)
    c = header.content
    buf = memoryview(bytearray(c.chunk_size + fmt.TAG_SIZE))
    for i in range(c.n_chunks):
        ct = buf[: c.plain_len(i) + fmt.TAG_SIZE]
        if src.read_into(header.size + i * (c.chunk_size + fmt.TAG_SIZE), ct) != len(ct):
            raise IntegrityError(f"file truncated inside chunk {i}")
        if not crypto.equal(crypto.content_hash(ct), trailer.table[i * 32 : (i + 1) * 32]):
            raise IntegrityError(f"chunk {i} does not match its signed digest")
        if progress is not None:
            progress(len(ct))
    return VerifyResult(trailer.signers, trailer.root, dict(c.metadata))


# --- writing -------------------------------------------------------------------------------


def root_label(root: bytes) -> str:
    """A content root as printed and recorded: ``blake3:<hex>``."""
    return f"blake3:{root.hex()}"


def content_digest(root: bytes | None, commitment: bytes) -> str:
    """How audit records name a file's content: its signed root, else its key commitment
    (unique per file; free to read, while a root costs a hash of every chunk)."""
    return root_label(root) if root is not None else f"commitment:{commitment.hex()}"


@dataclass(frozen=True)
class SealSummary:
    bytes_written: int
    key_ids: list[str]
    signer_ids: list[str]
    root: bytes | None
    commitment: bytes = b""

    @property
    def digest(self) -> str:
        return content_digest(self.root, self.commitment)


def _chunk_pieces(segments: Iterable[memoryview], chunk_size: int) -> Iterator[list[memoryview]]:
    """Group the payload's segments into chunk-sized lists of views (no copying here)."""
    pieces: list[memoryview] = []
    have = 0
    yielded = False
    for seg in segments:
        mv = seg.cast("B") if seg.format != "B" or seg.ndim != 1 else seg
        pos = 0
        while pos < len(mv):
            take = min(chunk_size - have, len(mv) - pos)
            pieces.append(mv[pos : pos + take])
            have += take
            pos += take
            if have == chunk_size:
                yield pieces
                pieces, have, yielded = [], 0, True
    if pieces or not yielded:
        yield pieces  # the final partial chunk, or the single empty chunk of an empty payload


def seal(
    out: BinaryIO,
    payload_len: int,
    segments: Iterable[memoryview],
    *,
    keys: Sequence[SealKey],
    signers: Sequence[SigningKey] = (),
    metadata: dict[str, str] | None = None,
    chunk_log2: int = fmt.DEFAULT_CHUNK_LOG2,
    random_bytes: Callable[[int], bytes] = os.urandom,
    now: Callable[[], float] = time.time,
    workers: int | None = None,
    progress: Progress | None = None,
    want_root: bool = False,
) -> SealSummary:
    """Encrypt ``segments`` (exactly ``payload_len`` bytes in total) into ``out``.

    The summary's ``root`` is set when signing, or when ``want_root`` (a manifest lists it)."""
    if len({s.key_id for s in signers}) != len(signers):
        raise ValueError("the same signing key was given twice")
    dek = random_bytes(crypto.KEY_SIZE)
    salt = random_bytes(fmt.SALT_SIZE)
    fk = crypto.derive_file_keys(dek, salt)
    content = fmt.Content(fmt.PAYLOAD_SAFETENSORS, chunk_log2, payload_len, salt, fk.commitment, dict(metadata or {}))
    content_bytes = fmt.build_content(content)
    slots = make_slots(dek, salt, keys, random_bytes)
    authenticated = fmt.build_preamble(len(content_bytes)) + content_bytes + fmt.build_slots(slots)
    out.write(authenticated)
    out.write(crypto.header_mac(fk.header_mac_key, authenticated))
    written = len(authenticated) + fmt.MAC_SIZE

    cipher = ChunkCipher(fk.payload_key)
    n = content.n_chunks
    hashing = bool(signers) or want_root
    digests: list[bytes] = [b""] * n if hashing else []
    workers = min(workers or default_workers(), n)
    # One buffer per chunk in flight: a chunk made of several pieces is gathered into it and
    # encrypted in place; a chunk inside one segment is encrypted from the caller's memory.
    window = workers + 1
    bufsize = min(content.chunk_size, payload_len) + fmt.TAG_SIZE
    bufs = [memoryview(bytearray(bufsize)) for _ in range(min(window, n))]

    def job(i: int, plain: memoryview, ct: memoryview) -> memoryview:
        cipher.encrypt_into(i, i == n - 1, plain, ct)
        if hashing:
            digests[i] = crypto.content_hash(ct)
        return ct

    pending: deque[Future[memoryview]] = deque()
    total = 0
    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="sealedckpt-seal") if workers > 1 else None
    try:
        for i, pieces in enumerate(_chunk_pieces(segments, content.chunk_size)):
            if i >= n:
                raise ValueError("payload is longer than declared")
            if len(pending) == len(bufs):
                ct_done = pending.popleft().result()
                out.write(ct_done)
                written += len(ct_done)
                if progress is not None:
                    progress(len(ct_done))
            plen = sum(len(p) for p in pieces)
            total += plen
            if plen != content.plain_len(i):
                raise ValueError("payload is shorter than declared")
            ct = bufs[i % len(bufs)][: plen + fmt.TAG_SIZE]
            if len(pieces) == 1:
                plain = pieces[0]
            else:
                pos = 0
                for p in pieces:
                    ct[pos : pos + len(p)] = p
                    pos += len(p)
                plain = ct[:plen]
            if pool is None:
                fut: Future[memoryview] = Future()
                fut.set_result(job(i, plain, ct))
            else:
                fut = pool.submit(job, i, plain, ct)
            pending.append(fut)
        while pending:
            ct_done = pending.popleft().result()
            out.write(ct_done)
            written += len(ct_done)
            if progress is not None:
                progress(len(ct_done))
    finally:
        for fut in pending:
            fut.cancel()
        if pool is not None:
            pool.shutdown(wait=True)
    if total != payload_len:
        raise ValueError(f"payload is {total} bytes, declared {payload_len}")

    root = content_root(content_bytes, n, b"".join(digests)) if hashing else None
    entries = []
    if signers:
        assert root is not None
        table = b"".join(digests)
        signed_at = int(now())
        for s in signers:
            pub = s.public.to_bytes()
            entries.append(
                fmt.SignatureEntry(fmt.SIG_ED25519, pub, signed_at, s.sign(signed_message(pub, signed_at, root)))
            )
    else:
        table = b""
    trailer = fmt.build_trailer(table, entries)
    out.write(trailer)
    written += len(trailer)
    return SealSummary(written, [_label(k) for k in keys], [s.key_id for s in signers], root, fk.commitment)


def _label(k: SealKey) -> str:
    return "passphrase" if isinstance(k, Passphrase) else k.key_id


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
    src = _Source(src_file)
    header, dek = _unlock(src, open_with)
    _read_trailer(src, header, ())  # length and signatures checked before anything is written
    kept: list[fmt.Slot] = []
    if keep:
        labels = slot_ids(header)
        unknown = set(remove) - set(labels)
        if unknown:
            raise FormatError(f"no key slot {sorted(unknown)[0]!r} in this file (slots: {', '.join(labels)})")
        kept = [s for s, lab in zip(header.slots, labels, strict=True) if lab not in remove]
    elif remove:
        raise ValueError("remove= only makes sense with keep=True")
    existing_ids = {fmt.SymmetricSlot.parse(s.body).key_id.hex() for s in kept if s.type == fmt.SLOT_SYMMETRIC}
    fresh = [k for k in add if not (isinstance(k, SymmetricKey) and k.key_id in existing_ids)]
    slots = kept + (make_slots(dek, header.content.salt, fresh) if fresh else [])
    if not slots:
        raise ValueError("rewrap would leave the file with no key slot")
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
    new_header = Header(header.content_bytes, header.content, slots, authenticated, b"")
    return slot_ids(new_header)


def add_signatures(
    src_file: BinaryIO,
    out: BinaryIO,
    signers: Sequence[SigningKey],
    *,
    trusted_signers: Sequence[VerifyKey] | None = None,
    now: Callable[[], float] = time.time,
    progress: Progress | None = None,
) -> VerifyResult:
    """Counter-sign a file without any decryption key: every existing signature and every chunk
    digest is checked first (for an unsigned file the digest table is computed), then the new
    signatures are appended. Earlier signatures stay valid: all sign the same root."""
    if not signers:
        raise ValueError("no signing key given")
    src = _Source(src_file)
    header = _read_header(src)
    trailer = _read_trailer(src, header, trusted_signers or ())
    if trusted_signers is not None:
        _apply_policy(trailer, trusted_signers, True)
    c = header.content
    have = {s.public_key.to_bytes() for s in trailer.signers}
    for s in signers:
        if s.public.to_bytes() in have:
            raise SignatureError(f"key {s.key_id} has already signed this file")
    if len(trailer.signers) + len(signers) > fmt.MAX_SIGNATURES:
        raise SignatureError(f"a file holds at most {fmt.MAX_SIGNATURES} signatures")
    buf = memoryview(bytearray(min(c.chunk_size, c.payload_len) + fmt.TAG_SIZE))
    digests = []
    out.write(header.authenticated + header.mac)
    for i in range(c.n_chunks):
        ct = buf[: c.plain_len(i) + fmt.TAG_SIZE]
        if src.read_into(header.size + i * (c.chunk_size + fmt.TAG_SIZE), ct) != len(ct):
            raise IntegrityError(f"file truncated inside chunk {i}")
        d = crypto.content_hash(ct)
        if trailer.signers and not crypto.equal(d, trailer.table[i * 32 : (i + 1) * 32]):
            raise IntegrityError(f"chunk {i} does not match its signed digest")
        digests.append(d)
        out.write(ct)
        if progress is not None:
            progress(len(ct))
    table = b"".join(digests)
    root = content_root(header.content_bytes, c.n_chunks, table)
    entries: list[fmt.SignatureEntry] = []
    if trailer.signers:  # existing entries, verbatim
        off = header.trailer_offset + 2 + len(table)
        raw = src.read_exact(off, len(trailer.signers) * fmt.SIG_ENTRY_SIZE, "signatures")
        entries = fmt.parse_signature_entries(raw, len(trailer.signers))
    signed_at = int(now())
    new_signers = []
    for s in signers:
        pub = s.public.to_bytes()
        entries.append(
            fmt.SignatureEntry(fmt.SIG_ED25519, pub, signed_at, s.sign(signed_message(pub, signed_at, root)))
        )
        new_signers.append(Signer(s.public, signed_at, False))
    out.write(fmt.build_trailer(table, entries))
    trusted_raw = {k.to_bytes() for k in trusted_signers or ()}
    all_signers = [*trailer.signers, *new_signers]
    all_signers = [Signer(s.public_key, s.signed_at, s.public_key.to_bytes() in trusted_raw) for s in all_signers]
    return VerifyResult(all_signers, root, dict(c.metadata))
